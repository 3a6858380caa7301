"""Math layer: log-densities against scipy, EM steps against scikit-learn, ELBO identities, statistics."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
from scipy.stats import multivariate_normal
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

import gmm_jax
from gmm_jax.params import covariances_from_prec_chol, precisions_from_prec_chol
from tests.conftest import make_blobs, random_params


def _full_cov(cov, covariance_type, k, d):
    if covariance_type == "full":
        return cov
    if covariance_type == "tied":
        return np.broadcast_to(cov, (k, d, d))
    if covariance_type == "diag":
        return np.stack([np.diag(c) for c in cov])
    return np.stack([c * np.eye(d) for c in cov])


def test_log_gaussian_matches_scipy(covariance_type):
    rng = np.random.default_rng(1)
    k, d = 3, 4
    params, cov = random_params(rng, k, d, covariance_type)
    X = rng.normal(size=(50, d)) * 3
    got = np.asarray(gmm_jax.log_gaussian(jnp.asarray(X), params.means, params.prec_chol, covariance_type))
    covs = _full_cov(cov, covariance_type, k, d)
    want = np.stack([multivariate_normal(params.means[j], covs[j]).logpdf(X) for j in range(k)], axis=1)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    # the parametrisation round-trips to the covariances it was built from
    np.testing.assert_allclose(covariances_from_prec_chol(params.prec_chol, covariance_type), cov, rtol=1e-12)


def _sk_precisions(params, covariance_type):
    return np.asarray(precisions_from_prec_chol(params.prec_chol, covariance_type))


def test_twenty_em_iterations_equal_sklearn(covariance_type):
    """From identical initial parameters, each of 20 EM iterations equals scikit-learn's GaussianMixture."""
    X, _ = make_blobs(seed=2, n_per=80, d=3, k=3, sep=3.0)
    rng = np.random.default_rng(3)
    k = 3
    params, _ = random_params(rng, k, 3, covariance_type)
    gm = GaussianMixture(
        n_components=k,
        covariance_type=covariance_type,
        weights_init=np.exp(np.asarray(params.log_weights)),
        means_init=np.asarray(params.means),
        precisions_init=_sk_precisions(params, covariance_type),
        max_iter=1,
        tol=0.0,
        warm_start=True,
        reg_covar=1e-6,
    )
    Xj = jnp.asarray(X)
    p = params
    sk_lbs = []
    for _ in range(20):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            gm.fit(X)
        p, ll = gmm_jax.em_step(Xj, p, covariance_type, 1e-6)
        sk_lbs.append(gm.lower_bound_)
        np.testing.assert_allclose(np.exp(p.log_weights), gm.weights_, rtol=1e-8)
        np.testing.assert_allclose(p.means, gm.means_, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(covariances_from_prec_chol(p.prec_chol, covariance_type), gm.covariances_, rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(ll / X.shape[0], gm.lower_bound_, rtol=1e-8)
    # the jitted fit (blocked, while_loop) reproduces the same 20 iterations and lower bounds
    res = gmm_jax.fit(jax.random.key(0), X, k, covariance_type=covariance_type, init_params=params, max_iter=20,
                      tol=0.0, block_size=64)
    np.testing.assert_allclose(res.trace[0], sk_lbs, rtol=1e-8)
    np.testing.assert_allclose(res.lower_bound[0], gm.lower_bound_, rtol=1e-8)
    np.testing.assert_allclose(res.params.means, gm.means_, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(np.exp(res.params.log_weights), gm.weights_, rtol=1e-8)
    np.testing.assert_allclose(res.params.prec_chol, gm.precisions_cholesky_, rtol=1e-8, atol=1e-10)
    assert int(res.n_iter[0]) == 20 and not bool(res.converged[0])


def test_elbo_at_posterior_equals_log_likelihood_and_bounds_it(covariance_type):
    X, _ = make_blobs(seed=4, n_per=40)
    params, _ = random_params(np.random.default_rng(5), 3, 3, covariance_type)
    Xj = jnp.asarray(X)
    log_resp, log_norm = gmm_jax.e_step(Xj, params, covariance_type)
    ll = gmm_jax.log_likelihood(Xj, params, covariance_type)
    np.testing.assert_allclose(gmm_jax.elbo(Xj, params, jnp.exp(log_resp), covariance_type), ll, rtol=1e-12)
    np.testing.assert_allclose(jnp.sum(log_norm), ll, rtol=1e-12)
    np.testing.assert_allclose(jnp.sum(jnp.exp(log_resp), axis=1), 1.0, rtol=1e-12)
    q = jax.random.dirichlet(jax.random.key(0), jnp.ones(3), (X.shape[0],))
    assert gmm_jax.elbo(Xj, params, q, covariance_type) < ll


def test_statistics_add_across_batches_and_weights_equal_repeats(covariance_type):
    X, _ = make_blobs(seed=6, n_per=30)
    params, _ = random_params(np.random.default_rng(7), 3, 3, covariance_type)
    Xj = jnp.asarray(X)
    resp = jnp.exp(gmm_jax.e_step(Xj, params, covariance_type)[0])
    whole = gmm_jax.sufficient_stats(Xj, resp, params.means, covariance_type)
    parts = gmm_jax.add_stats(
        gmm_jax.sufficient_stats(Xj[:37], resp[:37], params.means, covariance_type),
        gmm_jax.sufficient_stats(Xj[37:], resp[37:], params.means, covariance_type),
    )
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12), whole, parts)
    # integer sample weights are the same as repeated rows
    w = np.random.default_rng(8).integers(0, 4, size=X.shape[0])
    rep = np.repeat(np.arange(X.shape[0]), w)
    pw, llw = gmm_jax.em_step(Xj, params, covariance_type, 1e-6, sample_weight=jnp.asarray(w, jnp.float64))
    pr, llr = gmm_jax.em_step(Xj[rep], params, covariance_type, 1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12), pw, pr)
    np.testing.assert_allclose(llw, llr, rtol=1e-12)


def test_m_step_center_invariance(covariance_type):
    """The M-step does not depend on the reference point (exact arithmetic), only its rounding does."""
    X, _ = make_blobs(seed=9, n_per=30)
    params, _ = random_params(np.random.default_rng(10), 3, 3, covariance_type)
    Xj = jnp.asarray(X)
    resp = jnp.exp(gmm_jax.e_step(Xj, params, covariance_type)[0])
    a = gmm_jax.m_step(gmm_jax.sufficient_stats(Xj, resp, params.means, covariance_type), params.means, covariance_type)
    c0 = jnp.zeros_like(params.means)
    b = gmm_jax.m_step(gmm_jax.sufficient_stats(Xj, resp, c0, covariance_type), c0, covariance_type)
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-9, atol=1e-10), a, b)


def test_empty_component_stays_finite(covariance_type):
    """A component that receives no points keeps a finite mean and gets reg_covar * I, never NaN."""
    X, _ = make_blobs(seed=11, n_per=30, k=2)
    rng = np.random.default_rng(12)
    params, _ = random_params(rng, 3, 3, covariance_type)
    means = np.array(params.means)
    means[2] = 1e6
    params = params._replace(means=jnp.asarray(means))  # no point is anywhere near component 2
    res = gmm_jax.fit(jax.random.key(0), X, 3, covariance_type=covariance_type, init_params=params, max_iter=10)
    assert bool(res.finite[0])
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in res.params)
    assert float(res.counts[0, 2]) < 1.0  # reported as empty
    assert np.isfinite(float(res.log_likelihood[0]))
