"""Checks against independent oracles (NumPy, SciPy, scikit-learn), so that a broken piece of the engine cannot hide
behind a comparison of the library with itself: sampling moments, the streamed and product-form fits against
scikit-learn, parametrisation round trips, supervised fits of every covariance type, and the matching metrics."""

import itertools
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from sklearn.mixture import GaussianMixture

import gmm_jax
from tests.conftest import COV_TYPES, make_blobs, random_params


def _cov_of(params, covariance_type, k):
    """Component covariances (K, D, D) of any covariance type."""
    cov = np.asarray(gmm_jax.covariances_from_prec_chol(params.prec_chol, covariance_type))
    d = params.means.shape[1]
    if covariance_type == "tied":
        return np.broadcast_to(cov, (k, d, d))
    if covariance_type == "diag":
        return np.stack([np.diag(c) for c in cov])
    if covariance_type == "spherical":
        return cov[:, None, None] * np.eye(d)
    return cov


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_sample_component_moments(covariance_type):
    """Mean and covariance of 40,000 draws of each component equal its parameters within 6 standard errors (the
    scale of every covariance type: a wrong factor for diag or spherical covariances fails here)."""
    rng = np.random.default_rng(60)
    k, d, n = 3, 3, 40_000
    p, _ = random_params(rng, k, d, covariance_type)
    cov = _cov_of(p, covariance_type, k)
    draws = np.asarray(gmm_jax.sample_component(jax.random.key(1), p, jnp.arange(k), n, covariance_type))
    for c in range(k):
        x = draws[c]
        se_mean = np.sqrt(np.diag(cov[c]) / n)
        assert np.all(np.abs(x.mean(0) - np.asarray(p.means[c])) < 6 * se_mean)
        se_cov = np.sqrt((np.outer(np.diag(cov[c]), np.diag(cov[c])) + cov[c] ** 2) / n)
        assert np.all(np.abs(np.cov(x.T) - cov[c]) < 6 * se_cov), covariance_type
    # sample(): the components' frequencies and the per-label moments
    xs, zs = gmm_jax.sample(jax.random.key(2), p, n, covariance_type)
    xs, zs = np.asarray(xs), np.asarray(zs)
    freq = np.bincount(zs, minlength=k) / n
    w = np.exp(np.asarray(p.log_weights))
    assert np.all(np.abs(freq - w) < 6 * np.sqrt(w * (1 - w) / n))
    for c in range(k):
        x = xs[zs == c]
        assert np.all(np.abs(x.mean(0) - np.asarray(p.means[c])) < 6 * np.sqrt(np.diag(cov[c]) / len(x)))
        assert np.all(np.abs(x.var(0) - np.diag(cov[c])) < 6 * np.diag(cov[c]) * np.sqrt(2 / len(x)))


def _sklearn_after(X, p0, covariance_type, n_iter, reg_covar=1e-6):
    gm = GaussianMixture(p0.means.shape[0], covariance_type=covariance_type, max_iter=n_iter, tol=0.0,
                         reg_covar=reg_covar, weights_init=np.exp(np.asarray(p0.log_weights)),
                         means_init=np.asarray(p0.means),
                         precisions_init=np.asarray(gmm_jax.precisions_from_prec_chol(p0.prec_chol, covariance_type)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # max_iter reached: ConvergenceWarning
        gm.fit(X)
    return gm


def _assert_equals_sklearn(params, gm, covariance_type, rtol):
    np.testing.assert_allclose(np.exp(np.asarray(params.log_weights)), gm.weights_, rtol=rtol)
    np.testing.assert_allclose(params.means, gm.means_, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(gmm_jax.covariances_from_prec_chol(params.prec_chol, covariance_type), gm.covariances_,
                               rtol=rtol, atol=rtol)


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_stream_and_product_form_fits_equal_sklearn(covariance_type):
    """float64, 12 EM iterations from the same start, reg_covar = 1e-2 (so a dropped reg_covar shows): the streamed
    fit (batches of 100 rows) and the in-memory fit with the raw-moment product form forced on small data
    (``Config(product_min_rows=0)``; full covariances: D = 4, above the small-D form) each equal scikit-learn."""
    d = 4 if covariance_type == "full" else 3
    X, _ = make_blobs(seed=61, n_per=100, d=d, k=3, sep=4.0)
    X = X + 50.0
    p0 = gmm_jax.initialize(jax.random.key(0), X, 3, covariance_type=covariance_type, init="k-means++")
    gm = _sklearn_after(X, p0, covariance_type, 12, reg_covar=1e-2)
    stream = gmm_jax.fit_stream(gmm_jax.array_batches(X, 100), p0, covariance_type=covariance_type, max_iter=12,
                                tol=0.0, reg_covar=1e-2)
    assert stream.n_iter == 12
    _assert_equals_sklearn(stream.params, gm, covariance_type, 1e-8)
    cfg = gmm_jax.Config(product_min_rows=0, bucket_max_rows=0)
    import gmm_jax.engine as engine

    assert engine.pass_form(covariance_type, d, cfg, True) == "guarded"
    res = gmm_jax.fit(jax.random.key(0), X, 3, covariance_type=covariance_type, init_params=p0, max_iter=12, tol=0.0,
                      reg_covar=1e-2, config=cfg)
    _assert_equals_sklearn(res.params, gm, covariance_type, 1e-8)


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_unconstrained_round_trip(covariance_type):
    rng = np.random.default_rng(62)
    p, _ = random_params(rng, 4, 3, covariance_type)
    u = gmm_jax.to_unconstrained(p, covariance_type)
    back = gmm_jax.from_unconstrained(u, covariance_type)
    chex.assert_trees_all_close(back, p, rtol=1e-12, atol=1e-12)
    # and the other way: any unconstrained value maps to valid parameters and back
    u2 = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape)), u)
    p2 = gmm_jax.from_unconstrained(u2, covariance_type)
    np.testing.assert_allclose(jax.scipy.special.logsumexp(p2.log_weights), 0.0, atol=1e-12)
    u3 = gmm_jax.to_unconstrained(p2, covariance_type)
    chex.assert_trees_all_close(gmm_jax.from_unconstrained(u3, covariance_type), p2, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_fit_supervised_every_type_with_weights(covariance_type):
    """Weighted class frequencies, means and (pooled / diagonal / mean-variance) covariances, computed in NumPy."""
    X, y = make_blobs(seed=63, n_per=50, d=3, k=3)
    w = np.random.default_rng(64).uniform(0.1, 3.0, X.shape[0])
    p = gmm_jax.fit_supervised(X, y, 3, covariance_type, sample_weight=w)
    wk = np.array([w[y == c].sum() for c in range(3)])
    np.testing.assert_allclose(np.exp(np.asarray(p.log_weights)), wk / wk.sum(), rtol=1e-12)
    means = np.stack([np.average(X[y == c], axis=0, weights=w[y == c]) for c in range(3)])
    np.testing.assert_allclose(p.means, means, rtol=1e-10)
    scat = [np.einsum("n,nd,ne->de", w[y == c], X[y == c] - means[c], X[y == c] - means[c]) for c in range(3)]
    ref = {"full": np.stack([scat[c] / wk[c] for c in range(3)]), "tied": sum(scat) / wk.sum(),
           "diag": np.stack([np.diag(scat[c]) / wk[c] for c in range(3)]),
           "spherical": np.array([np.trace(scat[c]) / wk[c] / 3 for c in range(3)])}[covariance_type]
    np.testing.assert_allclose(gmm_jax.covariances_from_prec_chol(p.prec_chol, covariance_type), ref, rtol=1e-9)


def test_matching_metrics_on_imperfect_and_rectangular_tables():
    rng = np.random.default_rng(65)
    for shape in ((3, 5), (5, 3), (4, 4)):
        for _ in range(10):
            c = rng.normal(size=shape)
            for maximize in (False, True):
                r, col = gmm_jax.match_components(c, maximize=maximize)
                rr, cc = linear_sum_assignment(c, maximize=maximize)
                assert len(r) == min(shape) and np.all(np.diff(r) > 0)
                np.testing.assert_allclose(c[r, col].sum(), c[rr, cc].sum(), rtol=1e-12)
    # an imperfect clustering with more components (5) than classes (3): brute force over injective maps
    labels = rng.integers(0, 3, 200)
    pred = np.where(rng.random(200) < 0.7, labels + 2 * (labels == 2), rng.integers(0, 5, 200))
    best = max(sum(np.sum((pred == comp) & (labels == cls)) for cls, comp in enumerate(perm))
               for perm in itertools.permutations(range(5), 3))
    assert gmm_jax.matched_accuracy(labels, pred, n_components=5) == pytest.approx(best / 200)
    assert gmm_jax.matched_accuracy(labels, pred, n_components=5) < 1.0
    mapping = gmm_jax.component_to_class(labels, pred, n_components=5)
    assert mapping.shape == (5,) and np.sum(mapping >= 0) == 3 and sorted(mapping[mapping >= 0]) == [0, 1, 2]
    assert sum(np.sum((pred == comp) & (labels == mapping[comp])) for comp in range(5) if mapping[comp] >= 0) == best
