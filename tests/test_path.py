"""Every K in one program (``gmm_jax.fit_path``): each K equals the K-component fit from the same initial
parameters; BIC/AIC equal the model functions'; the masked-out components take no point."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gmm_jax
from gmm_jax.stats import INACTIVE, mask_components
from tests.conftest import make_blobs, random_params


@pytest.mark.parametrize("covariance_type", ["full", "tied"])
def test_each_k_equals_the_separate_fit_from_the_same_start(covariance_type):
    X, _ = make_blobs(seed=21, n_per=40, d=2, k=3)
    ks = (3, 1)  # any order
    key = jax.random.key(5)
    start = gmm_jax.fit_path(key, X, ks, covariance_type=covariance_type, max_iter=0)
    path = gmm_jax.fit_path(key, X, ks, covariance_type=covariance_type, tol=1e-6)
    np.testing.assert_array_equal(path.n_components, ks)
    for i, k in enumerate(ks):
        assert path.params[i].means.shape == (k, 2)
        sep = gmm_jax.fit(key, X, k, covariance_type=covariance_type, init_params=start.params[i], tol=1e-6)
        chex.assert_trees_all_close(path.params[i], sep.params, rtol=1e-9, atol=1e-11)
        assert int(path.n_iter[i]) == int(sep.n_iter[0]) and bool(path.converged[i])
        np.testing.assert_allclose(path.log_likelihood[i], sep.log_likelihood[0], rtol=1e-12)
        np.testing.assert_allclose(path.bic[i], gmm_jax.bic(X, path.params[i], covariance_type), rtol=1e-10)
        np.testing.assert_allclose(path.aic[i], gmm_jax.aic(X, path.params[i], covariance_type), rtol=1e-10)
    assert path.best == 3 and path.bic[0] < path.bic[1]


def test_restarts_best_per_k_and_bic_picks_the_blobs():
    """R restarts per K (the best by log-likelihood); on three separated axis-aligned blobs BIC picks K = 3 and
    that fit recovers them."""
    rng = np.random.default_rng(22)
    y = np.repeat(np.arange(3), 50)
    X = rng.normal(size=(3, 3))[y] * 8 + rng.normal(size=(150, 3)) * rng.uniform(0.5, 1.5, size=(3, 3))[y]  # diag
    path = gmm_jax.fit_path(jax.random.key(1), X, range(1, 6), covariance_type="diag", n_restarts=3)
    assert path.all_log_likelihood.shape == (5, 3)
    np.testing.assert_allclose(path.log_likelihood, path.all_log_likelihood.max(axis=1), rtol=1e-12)
    assert np.all(np.diff(path.log_likelihood) > -1e-9)  # more components fit at least as well here
    assert path.best == 3
    pred = np.asarray(gmm_jax.predict(X, path.params[2], "diag"))
    assert gmm_jax.matched_accuracy(y, pred) == 1.0


def test_masked_components_take_no_point():
    """An inactive component (log-weight INACTIVE) has responsibility exactly 0 in every form of the E-step, and
    the mixture's log-density is that of the active components renormalised."""
    rng = np.random.default_rng(0)
    p, _ = random_params(rng, 4, 2, "full")
    active = jnp.array([True, False, True, False])
    m = mask_components(p, active)
    assert float(m.log_weights[1]) == INACTIVE and float(m.log_weights[3]) == INACTIVE
    X = jnp.asarray(rng.normal(size=(30, 2)) * 3)
    proba = np.asarray(gmm_jax.predict_proba(X, m))
    assert np.all(proba[:, [1, 3]] == 0.0)
    sub = gmm_jax.GMMParams(p.log_weights[::2] - jax.scipy.special.logsumexp(p.log_weights[::2]), p.means[::2],
                            p.prec_chol[::2])
    np.testing.assert_allclose(gmm_jax.score(X, m), gmm_jax.score(X, sub), rtol=1e-12)


def test_fit_path_checks_its_input():
    X, _ = make_blobs(seed=3, n_per=10, d=2)
    with pytest.raises(ValueError, match="n_components"):
        gmm_jax.fit_path(jax.random.key(0), X, [0, 2])
    with pytest.raises(ValueError, match="at least one K"):
        gmm_jax.fit_path(jax.random.key(0), X, [])
    with pytest.raises(ValueError, match="n_components"):
        gmm_jax.fit_path(jax.random.key(0), X, [2, 40])  # more components than points
