"""The one engine: the fused pass and its forms equal the math layer (the reference), the forms are chosen by one
rule from the configuration, and the configuration is part of the compiled program."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gmm_jax
from gmm_jax.config import Config
from gmm_jax.engine import em_pass
from gmm_jax.forms import data_extent, product_error_bound
from tests.conftest import make_blobs, random_params

CFG = Config()  # the CPU defaults


def test_cpu_compiler_options_keep_the_fit():
    """On a CPU, full-covariance fits from ``Config.product_min_rows`` rows are compiled with XLA's YNNPACK dot fusion
    off and, when asked for, smaller fits with LLVM optimisation level 1 (where this XLA has the options): the same
    fits as the default compilation (float64, 1e-10), separate compiled programs; none inside a caller's jit, for
    large fits of the other types, or without options (small fits by default)."""
    from gmm_jax.config import SMALL_FIT_OPTIONS, compiler_options_supported
    from gmm_jax.loop import FIT_STATICS, fit_body, fit_program, key_input, program

    base = program(fit_body, FIT_STATICS, ())
    cfg = Config(product_min_rows=100, small_fit_options=SMALL_FIT_OPTIONS)  # a value: no module is patched
    small_cfg = Config(product_min_rows=1000, small_fit_options=SMALL_FIT_OPTIONS)  # 120 rows: a small fit
    X, _ = make_blobs(seed=41, n_per=40, d=5)
    key = jax.random.key(6)
    keys, _, n_split = key_input(key, 1)
    b = base(keys, jnp.asarray(X), None, None, jnp.asarray(0.0), jnp.asarray(1e-6), n_components=3,
             covariance_type="full", init="kmeans", max_iter=12, block_size=120, init_block_size=120,
             n_split=n_split, config=cfg)
    for c in (cfg, small_cfg):
        a = gmm_jax.fit(key, X, 3, covariance_type="full", max_iter=12, tol=0.0, config=c)
        chex.assert_trees_all_close(a.all_params, b.all_params, rtol=1e-10, atol=1e-12)
    assert (fit_program("full", 120, cfg) is base) == (not compiler_options_supported(cfg.cpu_dot_options))
    assert (fit_program("full", 99, cfg) is base) == (not compiler_options_supported(cfg.small_fit_options))
    assert fit_program("full", 99, cfg) is fit_program("diag", 99, cfg)  # one option set for every small fit
    assert fit_program("full", 120, cfg, traced=True) is base and fit_program("full", 99, cfg, traced=True) is base
    assert fit_program("diag", 120, cfg) is base and fit_program("tied", 120, cfg) is base
    assert fit_program("full", 120, Config(product_min_rows=100, cpu_dot_options=())) is base
    assert fit_program("full", 99, Config(product_min_rows=100)) is base


@pytest.mark.parametrize("d", [1, 3, 4, 6])
def test_blocked_pass_matches_the_math_layer(d):
    """The fused pass of the fit (component-major elementwise for D <= SMALL_D, product form above it; blocks with
    a shifted last block) equals the whole-array E-step and statistics of gmm_jax.em (float64)."""
    from gmm_jax import em

    rng = np.random.default_rng(d)
    k, n = 4, 203
    p, _ = random_params(rng, k, d, "full")
    X = jnp.asarray(rng.normal(size=(n, d)) * 2 + 0.5)
    w = jnp.asarray(rng.uniform(0.2, 2.0, n))
    shift = jnp.asarray(rng.normal(size=d))
    stats, ll = jax.jit(em_pass, static_argnums=(4, 5, 6))(X, w, shift, p._replace(means=p.means - shift), "full", 64, CFG)
    log_resp, log_norm = em.e_step(X, p, "full")
    ref = em.sufficient_stats(X, jnp.exp(log_resp), p.means, "full", w)
    assert (d <= CFG.small_full_max_d) == (d < 4)  # both forms are covered
    np.testing.assert_allclose(float(ll), float(jnp.sum(w * log_norm)), rtol=1e-12)
    for a, b in zip(stats, ref):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-10)
    if d > CFG.small_full_max_d:  # the product form of a single fit (quadratic features, raw moments)
        ps = p._replace(means=p.means - shift)
        extent = data_extent(X, w, shift, 64)
        assert d <= CFG.quad_max_d and float(product_error_bound(extent, ps, "full")) <= CFG.product_tol_full
        pstats, pll = jax.jit(lambda X, w, p, e: em_pass(X, w, shift, p, "full", 64, CFG, extent=e))(X, w, ps, extent)
        np.testing.assert_allclose(float(pll), float(ll), rtol=1e-12)
        for a, b in zip(pstats, ref):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-10)
    # the initialisation's pass: hard assignments to the nearest centre, statistics about those centres
    from gmm_jax.engine import stats_pass
    from gmm_jax.initialization import hard_resp

    centers = X[:k] + 0.3
    hard = jax.jit(lambda X, w, c: stats_pass(X, w, shift, c - shift, hard_resp(c - shift), "full", 64))(X, w, centers)
    lab = jnp.argmin(jnp.sum(jnp.square(X[:, None, :] - centers[None]), -1), axis=1)
    ref = em.sufficient_stats(X, jax.nn.one_hot(lab, k, dtype=X.dtype), centers, "full", w)
    assert len(set(np.asarray(lab).tolist())) == k
    for a, b in zip(hard, ref):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("covariance_type", ["tied", "diag", "spherical"])
def test_blocked_pass_matches_the_math_layer_other_covariances(covariance_type):
    """As above for the other covariance types (tied: component-major product form; diag/spherical: broadcasts),
    and with their product form (raw moments), which a single fit takes when the data's extent allows."""
    from gmm_jax import em

    rng = np.random.default_rng(7)
    k, n, d = 4, 203, 5
    p, _ = random_params(rng, k, d, covariance_type)
    X = jnp.asarray(rng.normal(size=(n, d)) * 2 + 0.5)
    w = jnp.asarray(rng.uniform(0.2, 2.0, n))
    shift = jnp.asarray(rng.normal(size=d))
    run = jax.jit(em_pass, static_argnums=(4, 5, 6, 7))
    stats, ll = run(X, w, shift, p._replace(means=p.means - shift), covariance_type, 64, CFG, True)
    counts, ll2 = run(X, w, shift, p._replace(means=p.means - shift), covariance_type, 64, CFG, False)
    log_resp, log_norm = em.e_step(X, p, covariance_type)
    ref = em.sufficient_stats(X, jnp.exp(log_resp), p.means, covariance_type, w)
    np.testing.assert_allclose(float(ll), float(jnp.sum(w * log_norm)), rtol=1e-12)
    np.testing.assert_allclose(float(ll2), float(ll), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(counts), np.asarray(ref.nk), rtol=1e-10)
    for a, b in zip(stats, ref):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-10)
    # the product form of a single fit (raw moments, then moments about the means)
    ps = p._replace(means=p.means - shift)
    extent = data_extent(X, w, shift, 64)
    x2 = np.square(np.asarray(X - shift))
    np.testing.assert_allclose(extent[0], np.max(x2, axis=0), rtol=1e-15)
    np.testing.assert_allclose(extent[1], np.max(np.sum(x2, axis=1)), rtol=1e-15)
    assert float(product_error_bound(extent, ps, covariance_type)) <= CFG.product_tol  # the product branch is taken
    prod = jax.jit(lambda X, w, p, e, s: em_pass(X, w, shift, p, covariance_type, 64, CFG, s, extent=e),
                   static_argnums=4)
    pstats, pll = prod(X, w, ps, extent, True)
    pcounts, pll2 = prod(X, w, ps, extent, False)
    np.testing.assert_allclose(float(pll), float(ll), rtol=1e-12)
    np.testing.assert_allclose(float(pll2), float(ll), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(pcounts), np.asarray(ref.nk), rtol=1e-10)
    for a, b in zip(pstats, ref):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("covariance_type", ["full", "diag", "spherical", "tied"])
def test_product_form_accuracy_and_guard_in_float32(covariance_type):
    """float32 passes of a single fit against the float64 centred pass (full: d = 8, quadratic features).

    Moderate extent (blobs 4 standard deviations apart, the bench_em data): the product form is taken and its
    errors stay within the bound ``g`` it is chosen by (measured up to 0.22 g, full covariances up to 1.25 g:
    asserted <= g and <= 2 g).  Large extent (clusters of unit width 300 apart): ``g`` exceeds the tolerance, the
    pass takes the centred form and keeps the second moments to 1e-5,
    where the product form would be wrong by more than 1e-3 (checked here too, so the guard is shown to matter)."""
    rng = np.random.default_rng(11)
    k, d, n = 4, 8, 4096
    for scale, product_taken in ((4.0, True), (300.0, False)):
        c = rng.normal(size=(k, d)) * scale
        lab = rng.integers(0, k, n)
        X64 = c[lab] + rng.normal(size=(n, d)) * rng.uniform(0.5, 1.5, size=(k, d))[lab] + 100.0
        shift64 = X64.mean(0)
        means = np.stack([X64[lab == j].mean(0) for j in range(k)]) - shift64
        var = np.stack([X64[lab == j].var(0) for j in range(k)])
        cov = {"diag": var, "spherical": var.mean(1),
               "tied": sum(np.cov(X64[lab == j].T) * np.mean(lab == j) for j in range(k)),
               "full": np.stack([np.cov(X64[lab == j].T) for j in range(k)])}[covariance_type]
        p64 = gmm_jax.from_covariances(jnp.full((k,), 1.0 / k), jnp.asarray(means), jnp.asarray(cov), covariance_type)
        p32 = jax.tree.map(lambda t: t.astype(jnp.float32), p64)
        X32, shift32 = jnp.asarray(X64, jnp.float32), jnp.asarray(shift64, jnp.float32)

        def run(X, shift, p, extent, cfg=CFG):
            return jax.jit(lambda X, s, p, e: em_pass(X, None, s, p, covariance_type, 1024, cfg, extent=e))(
                X, shift, p, extent)

        ref, ll_ref = run(jnp.asarray(X32, jnp.float64), jnp.asarray(shift32, jnp.float64), p64, None)
        extent = data_extent(X32, None, shift32, 1024)
        g = float(product_error_bound(extent, p32, covariance_type))
        tol = CFG.product_tol_full if covariance_type == "full" else CFG.product_tol
        assert (g <= tol) == product_taken, g
        stats, ll = run(X32, shift32, p32, extent)

        def rel(sxx, ref=ref):  # relative error of the second moments (full/tied: against the smallest variance)
            if covariance_type in ("full", "tied"):
                r = np.asarray(ref.sxx)
                return float(np.max(np.abs(np.asarray(sxx) - r)) / np.min(np.diagonal(r, axis1=-2, axis2=-1)))
            return float(np.max(np.abs(np.asarray(sxx) / np.asarray(ref.sxx) - 1)))

        var_err = rel(stats.sxx)
        ll_err = abs(float(ll) - float(ll_ref)) / n  # mean log-density error per point, nats
        if product_taken:
            assert var_err <= (2 if covariance_type == "full" else 1) * g and ll_err <= g, (var_err, ll_err, g)
        else:
            assert var_err < 1e-5, var_err
            forced, _ = run(X32, shift32, p32, extent, Config(product_tol=np.inf, product_tol_full=np.inf))
            assert rel(forced.sxx) > 1e-3


@pytest.mark.parametrize("covariance_type,d", [("diag", 3), ("tied", 3), ("full", 4)])
def test_single_fit_takes_the_product_form_and_equals_the_centred_fit(covariance_type, d, monkeypatch):
    """End to end: a single fit of ``Config.product_min_rows`` rows compiles the product form (float64: always within
    the tolerance, so taken); its iterates equal those of the same restart vmapped beside another one (centred
    form)."""
    import gmm_jax.engine as engine

    traced = []
    to_centred = engine.raw_to_centred
    monkeypatch.setattr(engine, "raw_to_centred", lambda *a: traced.append(a[2]) or to_centred(*a))
    rng = np.random.default_rng(12)
    n = CFG.product_min_rows
    X = rng.normal(size=(n, d)) * rng.uniform(0.5, 2.0, size=d) + 5 * rng.normal(size=(3, d))[rng.integers(0, 3, n)]
    keys = gmm_jax.restart_keys(jax.random.key(4), 2)
    single = gmm_jax.fit(keys[:1], X, 3, covariance_type=covariance_type, max_iter=15, tol=0.0)
    assert traced == [covariance_type]
    pair = gmm_jax.fit(keys, X, 3, covariance_type=covariance_type, max_iter=15, tol=0.0)
    assert traced == [covariance_type]  # not in the vmapped fit
    np.testing.assert_allclose(single.log_likelihood[0], pair.log_likelihood[0], rtol=1e-12)
    chex.assert_trees_all_close(jax.tree.map(lambda a: a[0], single.all_params),
                                jax.tree.map(lambda a: a[0], pair.all_params), rtol=1e-8, atol=1e-10)


def test_accelerator_code_paths_give_the_same_results():
    """On a GPU/TPU the K-means initialisation and kmeans() restarts stay vmapped and blocks are sized for device
    memory; the accelerator configuration on the CPU gives the same fits as the CPU one (sequential Lloyd)."""
    X, _ = make_blobs(seed=31, n_per=50, k=3, sep=4.0)
    key = jax.random.key(5)
    acc = Config(accelerator=True)  # part of the compiled program's key: no stale program is reused
    a = gmm_jax.fit(key, X, 3, n_restarts=3, max_iter=37, config=CFG)
    ka = gmm_jax.kmeans(key, X, 3, n_restarts=3, max_iter=301, config=CFG)
    b = gmm_jax.fit(key, X, 3, n_restarts=3, max_iter=37, config=acc)
    kb = gmm_jax.kmeans(key, X, 3, n_restarts=3, max_iter=301, config=acc)
    assert bool(np.all(a.converged)) and bool(np.all(b.converged))
    np.testing.assert_array_equal(a.n_iter, b.n_iter)
    chex.assert_trees_all_close(a.all_params, b.all_params, rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(ka.all_n_iter, kb.all_n_iter)
    np.testing.assert_allclose(ka.all_centers, kb.all_centers, rtol=1e-10, atol=1e-10)
