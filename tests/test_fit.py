"""The jitted fit: restarts, best selection, monotone log-likelihood, float32 numerics, dtypes, validation."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.mixture import GaussianMixture

import gmm_jax
from tests.conftest import make_blobs, random_params


@pytest.mark.parametrize("init,in_sequence", [("k-means++", False), ("kmeans", False), ("kmeans", True)])
def test_restarts_equal_separate_fits_and_best_is_highest(init, in_sequence):
    """Vmapped restarts (with init='kmeans' on a CPU the Lloyd initialisation runs restart after restart), or
    restarts whose EM runs one after another (``Config.restarts_in_sequence``), equal separate one-restart fits with
    the same keys."""
    X, _ = make_blobs(seed=20, n_per=60, k=4, sep=3.0)
    key = jax.random.key(3)
    R = 4
    res = gmm_jax.fit(key, X, 4, n_restarts=R, init=init, max_iter=50, block_size=100,
                      config=gmm_jax.Config(restarts_in_sequence=in_sequence))
    keys = gmm_jax.restart_keys(key, R)
    singles = [gmm_jax.fit(keys[r : r + 1], X, 4, init=init, max_iter=50, block_size=100) for r in range(R)]
    for r, s in enumerate(singles):
        np.testing.assert_allclose(res.log_likelihood[r], s.log_likelihood[0], rtol=1e-10)
        np.testing.assert_array_equal(res.n_iter[r], s.n_iter[0])
        chex.assert_trees_all_close(jax.tree.map(lambda a, r=r: a[r], res.all_params),
                                    jax.tree.map(lambda a: a[0], s.all_params), rtol=1e-8, atol=1e-10)
    lls = np.asarray(res.log_likelihood)
    assert len(set(np.round(lls, 6))) > 1, "restarts should differ (distinct keys)"
    assert int(res.best) == int(np.argmax(lls))
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a[int(res.best)], b), res.all_params, res.params)
    # the reported final log-likelihood is that of the returned parameters
    np.testing.assert_allclose(res.log_likelihood[res.best], gmm_jax.score(jnp.asarray(X), res.params), rtol=1e-12)


@settings(max_examples=100, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    covariance_type=st.sampled_from(["full", "tied", "diag", "spherical"]),
    init=st.sampled_from(["kmeans", "k-means++", "random", "random_from_data"]),
    scale=st.floats(0.1, 100.0),
    sep=st.floats(0.0, 6.0),
)
def test_log_likelihood_never_decreases(seed, covariance_type, init, scale, sep):
    """Theorem 3 (monotone likelihood) as a property: every EM iteration's log-likelihood is >= the previous.

    Values vary (data, seeds, scales, separations), shapes do not (K = 3, 48 x 2): each (covariance type, init)
    pair is one compilation, 16 in all (K in {2, 3} doubled them to 32, about 18 s of the suite)."""
    k = 3
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(3, 2)) * sep
    X = (centers[rng.integers(0, 3, 48)] + rng.normal(size=(48, 2)) * rng.uniform(0.3, 2.0, size=2)) * scale
    res = gmm_jax.fit(jax.random.key(seed), X, k, covariance_type=covariance_type, init=init, max_iter=25, tol=0.0,
                      reg_covar=0.0)
    tr = np.asarray(res.trace[0])
    tr = tr[np.isfinite(tr)]
    if tr.size == 0:
        # reg_covar=0: a start with a singular covariance (e.g. a K-means cluster of one point among 48) cannot run;
        # it must be reported as such, not hidden behind NaNs
        assert not bool(res.finite[0]) and int(res.n_iter[0]) == 0
        p0 = gmm_jax.initialize(gmm_jax.restart_keys(jax.random.key(seed), 1)[0], X, k,
                                covariance_type=covariance_type, init=init, reg_covar=0.0)
        assert not all(bool(np.all(np.isfinite(np.asarray(a)))) for a in p0)
        return
    final = float(res.log_likelihood[0])
    if np.isfinite(final):
        tr = np.append(tr, final)
    slack = 1e-10 * np.maximum(1.0, np.abs(tr[:-1]))
    assert np.all(np.diff(tr) >= -slack), np.diff(tr).min()


def test_float32_large_offset_fits_like_centred():
    """X + 1e6 in float32 gives the responsibilities of X.

    X is quantised to multiples of 1/16, the spacing of float32 at 1e6, so X + 1e6 is exact and any difference is
    the algorithm's; the clusters' scale (tens) is far above that spacing.  Raw second moments (E[xx^T] - mu mu^T)
    would lose everything here: 1e12 against variances of ~1e3 in 24-bit arithmetic.
    """
    Xc, _ = make_blobs(seed=30, n_per=200, d=3, k=3, sep=6.0)
    X = np.round(Xc * 20 * 16) / 16
    X32 = X.astype(np.float32)
    Xo = (X + 1e6).astype(np.float32)
    assert np.array_equal(Xo.astype(np.float64) - 1e6, X)
    for ct in ("full", "diag"):
        a = gmm_jax.fit(jax.random.key(0), X32, 3, covariance_type=ct)
        b = gmm_jax.fit(jax.random.key(0), Xo, 3, covariance_type=ct)
        assert a.params.means.dtype == jnp.float32 and b.params.means.dtype == jnp.float32
        ra = np.asarray(gmm_jax.predict_proba(jnp.asarray(X32), a.params, ct))
        rb = np.asarray(gmm_jax.predict_proba(jnp.asarray(Xo), b.params, ct))
        assert np.max(np.abs(ra - rb)) < 1e-3
        np.testing.assert_allclose(a.log_likelihood, b.log_likelihood, rtol=1e-5)


def test_float32_matches_float64_reference():
    X, _ = make_blobs(seed=31, n_per=100, d=4, k=3)
    params, _ = random_params(np.random.default_rng(32), 3, 4, "full")
    r64 = gmm_jax.fit(jax.random.key(0), X, 3, init_params=params, max_iter=30, tol=0.0)
    p32 = gmm_jax.GMMParams(*(jnp.asarray(p, jnp.float32) for p in params))
    r32 = gmm_jax.fit(jax.random.key(0), X.astype(np.float32), 3, init_params=p32, max_iter=30, tol=0.0)
    assert r64.params.means.dtype == jnp.float64 and r32.params.means.dtype == jnp.float32
    np.testing.assert_allclose(r32.params.means, r64.params.means, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(r32.log_likelihood, r64.log_likelihood, rtol=1e-5)


def test_model_functions_match_sklearn(covariance_type):
    X, _ = make_blobs(seed=33, n_per=50)
    res = gmm_jax.fit(jax.random.key(1), X, 3, covariance_type=covariance_type, n_restarts=2)
    p = res.params
    gm = GaussianMixture(3, covariance_type=covariance_type)
    gm.weights_ = np.exp(np.asarray(p.log_weights))
    gm.means_ = np.asarray(p.means)
    gm.precisions_cholesky_ = np.asarray(p.prec_chol)
    gm.covariances_ = np.asarray(gmm_jax.covariances_from_prec_chol(p.prec_chol, covariance_type))
    Xj = jnp.asarray(X)
    np.testing.assert_allclose(gmm_jax.predict_proba(Xj, p, covariance_type), gm.predict_proba(X), rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(gmm_jax.predict(Xj, p, covariance_type), gm.predict(X))
    np.testing.assert_allclose(gmm_jax.bic(Xj, p, covariance_type), gm.bic(X), rtol=1e-10)
    np.testing.assert_allclose(gmm_jax.aic(Xj, p, covariance_type), gm.aic(X), rtol=1e-10)
    np.testing.assert_allclose(gmm_jax.score(Xj, p, covariance_type), gm.score(X), rtol=1e-10)


def test_sample_shapes_and_determinism(covariance_type):
    params, _ = random_params(np.random.default_rng(34), 3, 2, covariance_type)
    x, lab = gmm_jax.sample(jax.random.key(0), params, 7, covariance_type)
    assert x.shape == (7, 2) and lab.shape == (7,)
    x2, lab2 = gmm_jax.sample(jax.random.key(0), params, 7, covariance_type)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(lab, lab2)
    assert gmm_jax.sample_component(jax.random.key(0), params, 1, 5, covariance_type).shape == (5, 2)
    assert gmm_jax.sample_component(jax.random.key(0), params, jnp.array([0, 2]), 5, covariance_type).shape == (2, 5, 2)


def test_x64_input_keeps_float64_and_ints_become_float32():
    X, _ = make_blobs(seed=35, n_per=20)
    assert gmm_jax.fit(jax.random.key(0), X, 2, max_iter=3).params.means.dtype == jnp.float64
    Xi = np.round(X * 10).astype(np.int64)
    assert gmm_jax.fit(jax.random.key(0), Xi, 2, max_iter=3).params.means.dtype == jnp.float32


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(X=np.array([[0.0, np.nan]] * 10)), "NaN"),
        (dict(X=np.zeros(10)), "2-D"),
        (dict(X=np.zeros((2, 2)), n_components=3), "too few points"),
        (dict(n_components=0), "n_components"),
        (dict(covariance_type="banana"), "covariance_type"),
        (dict(init="bogus"), "init"),
        (dict(reg_covar=-1.0), "reg_covar"),
        (dict(sample_weight=np.ones(3)), "sample_weight must have shape"),
        (dict(sample_weight=-np.ones(30)), "non-negative"),
        (dict(max_iter=-1), "max_iter"),
        (dict(X=[["a", "b"]] * 5), "numeric"),
    ],
)
def test_validation_errors(kwargs, message):
    X = kwargs.pop("X", np.random.default_rng(0).normal(size=(30, 2)))
    args = dict(n_components=2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        gmm_jax.fit(jax.random.key(0), X, **args)


def test_max_iter_zero_returns_the_initial_parameters():
    """max_iter=0 (scikit-learn allows it): the initial parameters, no iteration, not converged, lower bound -inf
    (none computed); ``init_lower_bound`` continues a previous fit's bound (the warm start)."""
    X = np.random.default_rng(0).normal(size=(30, 2))
    p0, _ = random_params(np.random.default_rng(1), 2, 2, "full")
    res = gmm_jax.fit(jax.random.key(0), X, 2, init_params=p0, max_iter=0)
    chex.assert_trees_all_close(res.params, jax.tree.map(jnp.asarray, p0), rtol=1e-12)
    assert int(res.n_iter[0]) == 0 and not bool(res.converged[0]) and float(res.lower_bound[0]) == -np.inf
    one = gmm_jax.fit(jax.random.key(0), X, 2, init_params=p0, max_iter=1)
    two = gmm_jax.fit(jax.random.key(0), X, 2, init_params=one.params, max_iter=1, tol=1e9,
                      init_lower_bound=float(one.lower_bound[0]))
    assert bool(two.converged[0])  # |change| <= tol against the previous fit's bound: converged at its first step
    assert not bool(gmm_jax.fit(jax.random.key(0), X, 2, init_params=one.params, max_iter=1, tol=1e9).converged[0])


def test_bad_initial_parameters_are_rejected():
    X = np.random.default_rng(0).normal(size=(30, 2))
    good, _ = random_params(np.random.default_rng(1), 2, 2, "full")
    cases = [
        (good._replace(means=np.zeros((3, 2))), "means must have shape"),
        (good._replace(log_weights=np.log(np.array([0.5, 0.7]))), "sum to one"),
        (good._replace(prec_chol=np.array(good.prec_chol) * np.array([1.0, -1.0])[None, None, :]), "positive definite"),
        (good._replace(prec_chol=np.zeros((2, 2))), "prec_chol"),
        (good._replace(means=np.full((2, 2), np.nan)), "NaN"),
    ]
    for params, message in cases:
        with pytest.raises(ValueError, match=message):
            gmm_jax.fit(jax.random.key(0), X, 2, init_params=params)


def test_fit_composes_inside_user_jit():
    """fit is usable inside a caller's jit (validation is skipped for traced inputs)."""
    X, _ = make_blobs(seed=36, n_per=20)

    @jax.jit
    def f(X):
        return gmm_jax.fit(jax.random.key(0), X, 2, max_iter=5).log_likelihood

    np.testing.assert_allclose(f(jnp.asarray(X)), gmm_jax.fit(jax.random.key(0), X, 2, max_iter=5).log_likelihood)


def test_second_call_does_not_recompile():
    """Same shapes and static options: new data values, keys, tol and reg_covar reuse the compiled program."""
    from gmm_jax.loop import fit_program

    _fit_jit = fit_program("full", 64, gmm_jax.default_config())  # the jitted fit that fit() calls on 64 rows
    rng = np.random.default_rng(37)
    X = rng.normal(size=(64, 3)).astype(np.float32)
    gmm_jax.fit(jax.random.key(0), X, 2, max_iter=7)
    n = _fit_jit._cache_size()
    gmm_jax.fit(jax.random.key(1), X * 3 + 1, 2, max_iter=7, tol=1e-5, reg_covar=1e-3)
    assert _fit_jit._cache_size() == n
    gmm_jax.fit(jax.random.key(1), X, 2, max_iter=8)  # a new static option compiles once more
    assert _fit_jit._cache_size() == n + 1


def test_progress_callback_reports_every_iteration():
    X, _ = make_blobs(seed=38, n_per=20)
    seen = []
    res = gmm_jax.fit(jax.random.key(0), X, 2, max_iter=6, tol=0.0, progress=lambda it, ll: seen.append((int(it), float(ll[0]))))
    assert [s[0] for s in seen] == list(range(6))
    np.testing.assert_allclose([s[1] for s in seen], res.trace[0], rtol=1e-12)


def test_progress_in_chunks_gives_the_same_fit():
    """With progress the loop runs in jitted chunks (host reports between them); the fit is unchanged, every
    iteration is reported once, and restarts that stopped report NaN."""
    X, _ = make_blobs(seed=40, n_per=40)
    seen = []
    a = gmm_jax.fit(jax.random.key(2), X, 3, n_restarts=3, max_iter=23, tol=1e-7, progress_every=4,
                    progress=lambda it, ll: seen.append((it, np.array(ll))))
    b = gmm_jax.fit(jax.random.key(2), X, 3, n_restarts=3, max_iter=23, tol=1e-7)
    chex.assert_trees_all_equal(a.all_params, b.all_params)
    np.testing.assert_array_equal(a.n_iter, b.n_iter)
    assert [it for it, _ in seen] == list(range(int(np.max(b.n_iter))))
    reported = np.stack([ll for _, ll in seen], axis=1)
    # the chunk is a separately compiled program: XLA may order the log-likelihood sum differently (seen: 1 ulp)
    np.testing.assert_allclose(reported, np.asarray(b.trace)[:, :reported.shape[1]], rtol=4e-16, atol=0)
    with pytest.raises(ValueError, match="progress_every"):
        gmm_jax.fit(jax.random.key(2), X, 3, progress=True, progress_every=0)
    with pytest.raises(ValueError, match="progress must be"):
        gmm_jax.fit(jax.random.key(2), X, 3, progress="yes")


def test_initialize_is_the_start_of_fit():
    """fit from a key equals fit warm-started from initialize() with the same restart key."""
    X, _ = make_blobs(seed=39, n_per=30)
    keys = gmm_jax.restart_keys(jax.random.key(4), 1)
    p0 = gmm_jax.initialize(keys[0], X, 3, init="k-means++")
    a = gmm_jax.fit(keys, X, 3, init="k-means++", max_iter=10, tol=0.0)
    b = gmm_jax.fit(jax.random.key(0), X, 3, init_params=p0, max_iter=10, tol=0.0)
    chex.assert_trees_all_close(a.params, b.params, rtol=1e-8, atol=1e-10)
