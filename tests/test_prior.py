"""MAP EM with conjugate priors: the log-posterior never decreases, the fit runs the MAP M-step, the empty prior is
maximum likelihood, and the prior keeps a fit finite where maximum likelihood degenerates.  The M-step's
optimality is a verification row (tests/test_verify.py)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gmm_jax
from gmm_jax import em
from gmm_jax.prior import log_prior, map_m_step, resolve_prior
from gmm_jax.verify_variants import TEST_PRIOR
from tests.conftest import COV_TYPES, make_blobs


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_map_em_climbs_the_log_posterior_and_is_what_fit_runs(covariance_type):
    X, _ = make_blobs(seed=31, n_per=30, d=2, sep=3.0)
    Xj = jnp.asarray(X)
    prior = resolve_prior(TEST_PRIOR, X, Xj.dtype)
    p = gmm_jax.initialize(jax.random.key(0), X, 3, covariance_type=covariance_type)
    start = p

    @jax.jit
    def step(p):
        q = jnp.exp(em.e_step(Xj, p, covariance_type)[0])
        new = map_m_step(em.sufficient_stats(Xj, q, p.means, covariance_type), p.means, covariance_type, 1e-6, prior)
        return new, em.log_likelihood(Xj, new, covariance_type) + log_prior(new, prior, covariance_type)

    posts = []
    for _ in range(12):
        p, post = step(p)
        posts.append(float(post))
    assert np.all(np.diff(posts) >= -1e-10 * np.abs(posts[1:])), np.diff(posts)
    res = gmm_jax.fit(jax.random.key(0), X, 3, covariance_type=covariance_type, init_params=start, prior=TEST_PRIOR,
                      max_iter=12, tol=0.0)
    chex.assert_trees_all_close(res.params, p, rtol=1e-9, atol=1e-11)


def test_empty_prior_is_maximum_likelihood_and_a_prior_pulls_the_means():
    X, _ = make_blobs(seed=32, n_per=30, d=2)
    none = gmm_jax.Prior(weight_concentration=1.0, mean_precision=0.0, strength=0.0)
    a = gmm_jax.fit(jax.random.key(1), X, 3, prior=none)
    b = gmm_jax.fit(jax.random.key(1), X, 3)
    chex.assert_trees_all_close(a.params, b.params, rtol=1e-9, atol=1e-11)
    m0 = np.array([50.0, 50.0])
    strong = gmm_jax.fit(jax.random.key(1), X, 3, prior=gmm_jax.Prior(mean_precision=1e6, mean=m0))
    np.testing.assert_allclose(strong.params.means, np.broadcast_to(m0, (3, 2)), atol=0.05)


def test_prior_keeps_a_degenerate_component_finite():
    """A component holding a single point (reg_covar=0): maximum likelihood collapses (non-finite), the covariance
    prior keeps it at (n0 Psi) / (1 + n0)."""
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(size=(40, 2)), rng.normal(size=(40, 2)) + 8, [[30.0, 30.0]]])
    init = gmm_jax.from_covariances(jnp.array([0.45, 0.45, 0.1]), jnp.array([[0.0, 0.0], [8.0, 8.0], [30.0, 30.0]]),
                                    jnp.stack([jnp.eye(2)] * 3), "full")
    ml = gmm_jax.fit(jax.random.key(0), X, 3, init_params=init, reg_covar=0.0, max_iter=5, tol=0.0)
    assert not bool(ml.finite[0])
    psi = 0.25
    mp = gmm_jax.fit(jax.random.key(0), X, 3, init_params=init, reg_covar=0.0, max_iter=5, tol=0.0,
                     prior=gmm_jax.Prior(covariance=psi, strength=2.0))
    assert bool(mp.finite[0])
    cov = gmm_jax.covariances_from_prec_chol(mp.params.prec_chol, "full")[2]
    np.testing.assert_allclose(cov, 2.0 * psi / 3.0 * np.eye(2), rtol=1e-6, atol=1e-9)


def test_prior_is_checked():
    X, _ = make_blobs(seed=3, n_per=10, d=2)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="weight_concentration must be >= 1"):
        gmm_jax.fit(key, X, 3, prior=gmm_jax.Prior(weight_concentration=0.5))
    with pytest.raises(ValueError, match=r"prior mean must be a finite \(2,\) array"):
        gmm_jax.fit(key, X, 3, prior=gmm_jax.Prior(mean=[1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="prior covariance must be"):
        gmm_jax.fit(key, X, 3, prior=gmm_jax.Prior(covariance=-np.eye(2)))
    with pytest.raises(ValueError, match="MAP EM is for Gaussian mixtures"):
        gmm_jax.fit(key, X, 3, prior=gmm_jax.Prior(), family="student-t")
