"""Variational Bayes (gmm_jax.variational, fit(variational=...), BayesianGaussianMixture): equal to scikit-learn's
from the same initial responsibilities, lower bound monotone, priors validated."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.mixture import BayesianGaussianMixture as SkBGM

import gmm_jax
from gmm_jax.em import sufficient_stats
from gmm_jax.params import covariances_from_prec_chol
from gmm_jax.variational import mixture_weights, resolve_vb_prior, vb_m_step

K = 5


def _data():
    rng = np.random.default_rng(0)
    return np.concatenate([rng.normal(size=(60, 3)) + c for c in ([0, 0, 0], [4, 0, 1], [0, 5, -2])])


def _sklearn_from(X, resp, covariance_type, weight_prior, max_iter, tol):
    """scikit-learn's loop (its own E-step, M-step and lower bound) from responsibilities ``resp``."""
    sk = SkBGM(n_components=K, covariance_type=covariance_type, weight_concentration_prior_type=weight_prior)
    sk._check_parameters(X)
    sk._initialize(X, resp)
    prev, bounds = -np.inf, []
    for _ in range(max_iter):
        log_prob_norm, log_resp = sk._e_step(X)
        sk._m_step(X, log_resp)
        bounds.append(float(np.squeeze(sk._compute_lower_bound(log_resp, log_prob_norm))))
        if abs(bounds[-1] - prev) < tol:
            break
        prev = bounds[-1]
    sk._set_parameters(sk._get_parameters())
    return sk, bounds


@pytest.mark.parametrize("weight_prior", ["dirichlet_process", "dirichlet_distribution"])
def test_fit_equals_sklearn_from_the_same_responsibilities(covariance_type, weight_prior):
    X = _data()
    resp = np.random.default_rng(1).uniform(size=(X.shape[0], K))
    resp /= resp.sum(1, keepdims=True)
    tol = 1e-6
    sk, bounds = _sklearn_from(X, resp, covariance_type, weight_prior, 300, tol)
    prior = resolve_vb_prior(gmm_jax.VBPrior(weight_prior), X, K, covariance_type, np.float64)
    c = jnp.zeros((K, 3))
    vb0 = vb_m_step(sufficient_stats(jnp.asarray(X), jnp.asarray(resp), c, covariance_type), c, covariance_type, 1e-6,
                    prior)
    res = gmm_jax.fit(jax.random.key(0), X, K, covariance_type=covariance_type, init_params=vb0, max_iter=300, tol=tol,
                      variational=gmm_jax.VBPrior(weight_prior))
    p = res.params
    n = X.shape[0]
    assert int(res.n_iter[0]) == len(bounds) and bool(res.converged[0])
    np.testing.assert_allclose(np.asarray(res.trace[0])[: len(bounds)] * n, bounds, rtol=1e-10)
    np.testing.assert_allclose(float(res.lower_bound[0]) * n, bounds[-1], rtol=1e-10)
    np.testing.assert_allclose(p.means, sk.means_, rtol=0, atol=1e-8)
    np.testing.assert_allclose(covariances_from_prec_chol(p.prec_chol, covariance_type), sk.covariances_, atol=1e-8)
    np.testing.assert_allclose(p.degrees_of_freedom, sk.degrees_of_freedom_, atol=1e-8)
    np.testing.assert_allclose(p.mean_precision, sk.mean_precision_, atol=1e-8)
    np.testing.assert_allclose(mixture_weights(p), sk.weights_, atol=1e-10)
    if weight_prior == "dirichlet_process":
        np.testing.assert_allclose(p.weight_concentration, sk.weight_concentration_[0], atol=1e-8)
        np.testing.assert_allclose(p.weight_concentration_b, sk.weight_concentration_[1], atol=1e-8)
    else:
        assert p.weight_concentration_b is None
        np.testing.assert_allclose(p.weight_concentration, sk.weight_concentration_, atol=1e-8)
    # the lower bound never decreases
    tr = np.asarray(res.trace[0])[: int(res.n_iter[0])]
    assert np.all(np.diff(tr) >= -1e-12 * np.abs(tr[1:]))


def test_estimator_keeps_few_components_and_predicts_like_sklearn():
    X = _data()
    from gmm_jax.sklearn import BayesianGaussianMixture

    ours = BayesianGaussianMixture(n_components=8, random_state=0, max_iter=300).fit(X)
    theirs = SkBGM(n_components=8, random_state=0, max_iter=300).fit(X)
    assert int(np.sum(ours.weights_ > 0.02)) == int(np.sum(theirs.weights_ > 0.02)) == 3
    # different K-means seeds (ours and scikit-learn's): two fits of the same 3 clusters, not the same iterates
    assert abs(ours.score(X) - theirs.score(X)) < 0.02
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(ours.predict(X), theirs.predict(X)) > 0.99
    assert isinstance(ours.weight_concentration_, tuple) and ours.lower_bounds_[-1] == ours.lower_bound_


def test_prior_errors_name_the_problem():
    X = _data()
    with pytest.raises(ValueError, match="degrees_of_freedom_prior"):
        gmm_jax.fit(jax.random.key(0), X, 3, variational=gmm_jax.VBPrior(degrees_of_freedom_prior=1.0))
    with pytest.raises(ValueError, match="weight_concentration_prior_type"):
        gmm_jax.fit(jax.random.key(0), X, 3, variational=gmm_jax.VBPrior("dirichlet"))
    with pytest.raises(ValueError, match="covariance_prior"):
        gmm_jax.fit(jax.random.key(0), X, 3, covariance_type="diag", variational=gmm_jax.VBPrior(covariance_prior=-1.0))
    with pytest.raises(ValueError, match="random_from_data"):
        gmm_jax.fit(jax.random.key(0), X, 3, init="random_from_data", variational=gmm_jax.VBPrior())
    with pytest.raises(ValueError, match="variational"):
        gmm_jax.fit(jax.random.key(0), X, 3, prior=gmm_jax.Prior(), variational=gmm_jax.VBPrior())


def test_stationarity_rows_can_fail():
    """The verification's gradient rows see a wrong update: the precisions' block with one degree of freedom too
    many (nu_k = nu0 + N_k + 1, a common slip) and the weights' with the prior concentration left out."""
    from gmm_jax.verify_vb import block_gradients, full_elbo, vb_problem

    X = vb_problem()
    prior = resolve_vb_prior(gmm_jax.VBPrior("dirichlet_distribution"), np.asarray(X), 4, "full", X.dtype)
    res = gmm_jax.fit(jax.random.key(1), X, 4, variational=gmm_jax.VBPrior("dirichlet_distribution"), max_iter=5,
                      reg_covar=0.0)
    resp = jnp.exp(gmm_jax.e_step(X, gmm_jax.variational.effective_params(res.params), "full")[0])
    good = vb_m_step(sufficient_stats(X, resp, res.params.means, "full"), res.params.means, "full", 0.0, prior)
    scale = abs(float(full_elbo(X, resp, good, prior)))
    assert float(block_gradients(X, resp, good, prior)["precisions"]) / scale < 1e-9
    wrong_nu = good._replace(degrees_of_freedom=good.degrees_of_freedom + 1)
    assert float(block_gradients(X, resp, wrong_nu, prior)["precisions"]) / scale > 1e-4
    wrong_w = good._replace(weight_concentration=good.weight_concentration - prior.alpha)
    assert float(block_gradients(X, resp, wrong_w, prior)["weights"]) / scale > 1e-4


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_streamed_variational_fit_equals_the_in_memory_fit(covariance_type):
    """fit_stream(variational=...) over batches (the prior's defaults from its own first pass) runs the in-memory
    fit's iterations."""
    X = _data()
    prior = gmm_jax.VBPrior("dirichlet_process")
    vb0 = gmm_jax.fit(jax.random.key(2), X, K, covariance_type=covariance_type, variational=prior, max_iter=0).params
    ref = gmm_jax.fit(jax.random.key(0), X, K, covariance_type=covariance_type, init_params=vb0, variational=prior,
                      tol=1e-6, max_iter=200)
    got = gmm_jax.fit_stream(gmm_jax.array_batches(X, 50), vb0, covariance_type=covariance_type, variational=prior,
                             tol=1e-6, max_iter=200)
    assert got.converged and got.n_iter == int(ref.n_iter[0])
    np.testing.assert_allclose(got.trace, np.asarray(ref.trace[0])[: got.n_iter], rtol=1e-10)
    pairs = [(got.params.means, ref.params.means), (got.params.prec_chol, ref.params.prec_chol),
             (got.params.degrees_of_freedom, ref.params.degrees_of_freedom),
             (got.params.weight_concentration_b, ref.params.weight_concentration_b)]
    for a, b in pairs:
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)
    with pytest.raises(ValueError, match="VBParams"):  # Gaussian initial parameters for a variational fit
        gmm_jax.fit_stream([X], gmm_jax.initialize(jax.random.key(0), X, K), variational=prior)
