"""Sampling: per-component moments within sampling error, labels follow the weights (chi-square)."""

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

import gmm_jax
from tests.conftest import random_params


def test_component_moments_and_label_frequencies(covariance_type):
    rng = np.random.default_rng(70)
    k, d, n = 3, 3, 60000
    params, _ = random_params(rng, k, d, covariance_type)
    X, labels = gmm_jax.sample(jax.random.key(0), params, n, covariance_type)
    X, labels = np.asarray(X), np.asarray(labels)
    covs = np.asarray(gmm_jax.covariances_from_prec_chol(params.prec_chol, covariance_type))
    full = {"full": covs, "tied": np.broadcast_to(covs, (k, d, d)),
            "diag": np.stack([np.diag(c) for c in covs]) if covariance_type == "diag" else None,
            "spherical": np.stack([c * np.eye(d) for c in covs]) if covariance_type == "spherical" else None}[covariance_type]
    for j in range(k):
        xj = X[labels == j]
        m = xj.shape[0]
        # mean: each coordinate's error is N(0, Sigma_ii / m); 5 standard errors
        se = np.sqrt(np.diag(full[j]) / m)
        assert np.all(np.abs(xj.mean(0) - np.asarray(params.means[j])) < 5 * se)
        # covariance entries: var(x_a x_b) = S_aa S_bb + S_ab^2 for Gaussians; 5 standard errors
        s = np.cov(xj.T, bias=True)
        se_cov = np.sqrt((np.outer(np.diag(full[j]), np.diag(full[j])) + full[j] ** 2) / m)
        assert np.all(np.abs(s - full[j]) < 5 * se_cov)
    counts = np.bincount(labels, minlength=k)
    expected = n * np.exp(np.asarray(params.log_weights))
    assert stats.chisquare(counts, expected).pvalue > 1e-3


def test_sample_component_moments():
    rng = np.random.default_rng(71)
    params, cov = random_params(rng, 3, 2, "full")
    xs = np.asarray(gmm_jax.sample_component(jax.random.key(1), params, jnp.array([0, 2]), 40000))
    for row, j in zip(xs, (0, 2)):
        se = np.sqrt(np.diag(cov[j]) / row.shape[0])
        assert np.all(np.abs(row.mean(0) - np.asarray(params.means[j])) < 5 * se)
        np.testing.assert_allclose(np.cov(row.T), cov[j], rtol=0.05, atol=0.05 * np.abs(cov[j]).max())


def test_supervised_conditional_generation():
    """Fit by labels, then sample a class: the samples sit on that class."""
    rng = np.random.default_rng(72)
    y = rng.integers(0, 3, 900)
    X = np.array([[0, 0], [10, 0], [0, 10]])[y] + rng.normal(size=(900, 2))
    p = gmm_jax.fit_supervised(X, y, 3, "full")
    s = np.asarray(gmm_jax.sample_component(jax.random.key(0), p, 1, 500, "full"))
    assert np.mean(np.asarray(gmm_jax.predict(jnp.asarray(s), p)) == 1) > 0.99
