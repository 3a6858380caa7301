"""Config.precision (gmm_jax.precision): inert on a CPU, and, emulated, the accuracy of the reduced modes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gmm_jax
from gmm_jax import Config
from gmm_jax.engine import em_pass
from gmm_jax.forms import data_extent, product_error_bound
from gmm_jax.precision import EXACT, PassPrecision, pass_precision, unit_roundoff
from gmm_jax.stats import m_step


def _blobs(seed=0, n=600, d=6, spread=4.0):
    rng = np.random.default_rng(seed)
    parts = [rng.normal(size=(n // 3, d)) @ (np.eye(d) + 0.3 * rng.normal(size=(d, d))) * s + rng.normal(size=d) * spread
             for s in (0.5, 1.0, 2.0)]
    return np.concatenate(parts).astype(np.float32)


def _same(a, b):
    return all(np.array_equal(np.asarray(x), np.asarray(y), equal_nan=True)
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.parametrize("mode", ["default", "bfloat16"])
def test_reduced_precision_changes_nothing_on_cpu(mode):
    X = _blobs()
    ref = gmm_jax.fit(jax.random.key(0), X, 3, covariance_type="tied")
    got = gmm_jax.fit(jax.random.key(0), X, 3, covariance_type="tied", config=Config(precision=mode))
    assert _same(ref, got)
    assert pass_precision(Config(precision=mode), np.float32) == EXACT
    # float64 data are multiplied in float64 whatever the mode, emulated or not
    assert pass_precision(Config(precision=mode, emulate_precision=True), np.float64) == EXACT


def test_precision_is_validated():
    with pytest.raises(ValueError, match="precision must be one of"):
        Config(precision="tf32x")


def test_bfloat16_operands_equal_their_emulation():
    """The accelerator's bfloat16 mode (operands cast, float32 sums) computes what the emulation computes: the
    operands rounded to 7 mantissa bits, products summed in float32 (up to the order of the sums)."""
    rng = np.random.default_rng(1)
    a = jnp.asarray(rng.normal(size=(40, 30)) * 3, jnp.float32)
    b = jnp.asarray(rng.normal(size=(30, 20)), jnp.float32)
    cast = PassPrecision(operand_dtype=jnp.bfloat16).matmul(a, b)
    emul = PassPrecision(round_bits=7).matmul(a, b)
    exact = EXACT.matmul(a, b)
    assert cast.dtype == jnp.float32
    scale = float(jnp.max(jnp.abs(a)) * jnp.max(jnp.abs(b)) * a.shape[1])
    assert float(jnp.max(jnp.abs(cast - emul))) <= 1e-6 * scale
    assert float(jnp.max(jnp.abs(emul - exact))) > 1e-4 * float(jnp.max(jnp.abs(exact)))  # really rounded


@pytest.mark.parametrize("covariance_type", ["full", "tied"])
def test_emulated_tf32_pass_is_within_its_bound(covariance_type):
    """One emulated TF32 pass against the full-precision one: the mean log-likelihood per point is off by less than
    the error bound g (a bound on every log-joint's error in nats) and the M-step's means by a few units of the
    operands' rounding, in the components' standard deviations."""
    X = _blobs(seed=2)
    res = gmm_jax.fit(jax.random.key(0), X, 3, covariance_type=covariance_type)
    Xd = jnp.asarray(X)
    shift = jnp.mean(Xd, axis=0)
    p = res.params._replace(means=res.params.means - shift)
    cfg = Config(precision="default", emulate_precision=True)
    red = pass_precision(cfg, np.float32)
    run = jax.jit(em_pass, static_argnums=(4, 5, 6), static_argnames="precision")
    s_e, ll_e = run(Xd, None, shift, p, covariance_type, X.shape[0], cfg)
    s_r, ll_r = run(Xd, None, shift, p, covariance_type, X.shape[0], cfg, precision=red)
    g = float(product_error_bound(data_extent(Xd, None, shift, X.shape[0]), p, covariance_type, red.unit))
    err_ll = abs(float(ll_e - ll_r)) / X.shape[0]
    assert 0 < err_ll <= g
    new_e, new_r = m_step(s_e, p.means, covariance_type, 1e-6), m_step(s_r, p.means, covariance_type, 1e-6)
    sd = jnp.sqrt(jnp.diagonal(gmm_jax.covariances_from_prec_chol(new_e.prec_chol, covariance_type), axis1=-2,
                               axis2=-1))  # (K, D) full, (D,) tied
    err_mu = float(jnp.max(jnp.abs(new_e.means - new_r.means) / sd))
    assert err_mu <= 50 * unit_roundoff("default"), err_mu


def test_emulated_tf32_fit_ends_at_a_full_precision_fixed_point():
    """Reduced-precision iterations, then full precision until convergence: one more full-precision iteration from
    the result changes the mean log-likelihood by less than tol, and it matches the full-precision fit's."""
    X = _blobs(seed=3)
    tol = 1e-5
    cfg = Config(precision="default", emulate_precision=True)
    kw = dict(covariance_type="tied", tol=tol)  # tied: the bound g is 0.4-0.6 on these data, below precision_tol
    ref = gmm_jax.fit(jax.random.key(0), X, 3, **kw)
    got = gmm_jax.fit(jax.random.key(0), X, 3, config=cfg, **kw)
    assert not _same(ref.params, got.params)  # the reduced iterations ran
    assert bool(got.converged[0])
    more = gmm_jax.fit(jax.random.key(0), X, 3, init_params=got.params, max_iter=1, **kw)
    assert abs(float(more.log_likelihood[0] - got.log_likelihood[0])) < tol
    assert abs(float(ref.log_likelihood[0] - got.log_likelihood[0])) < 10 * tol


def test_guard_keeps_full_precision_where_the_bound_fails():
    """Clusters 1e4 standard deviations apart: the reduced products' error bound exceeds precision_tol from the
    start, so every iteration runs at full precision and the fit equals the full-precision one bit for bit."""
    rng = np.random.default_rng(4)
    X = np.concatenate([rng.normal(size=(150, 5)) + c for c in (0.0, 1e4, -1e4)]).astype(np.float32)
    ref = gmm_jax.fit(jax.random.key(0), X, 3, covariance_type="tied")
    got = gmm_jax.fit(jax.random.key(0), X, 3, covariance_type="tied",
                      config=Config(precision="default", emulate_precision=True))
    assert _same(ref, got)
