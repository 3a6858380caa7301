"""The math layer of EM for Gaussian mixtures: pure, whole-array, never jitted here.

Notation: X (n, D) data, K components, ``q`` (n, K) responsibilities, ``theta = (log phi, mu, U)`` with ``U`` the
precision Cholesky factor (see :mod:`gmm_jax.params`).  Everything is in log space:

    log p(x, z=k; theta) = log phi_k + log N(x | mu_k, Sigma_k)                       (log joint)
    log N(x | mu, Sigma) = -D/2 log(2 pi) + log det U - 1/2 ||(x - mu) U||^2
    log p(x; theta)      = logsumexp_k log p(x, z=k; theta)                            (log-likelihood)
    log q_k(x)           = log p(x, z=k; theta) - log p(x; theta)                      (E-step)
    ELBO(theta, q)       = sum_i sum_k q_ik (log p(x_i, z=k; theta) - log q_ik)        (entropy term included)

Sufficient statistics are sums over points of moments about a reference point ``center`` (K, D) (normally the
current means), so that batches and shards add and the second moment does not cancel catastrophically in float32.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp, xlogy

from gmm_jax.params import (
    HIGHEST,
    GMMParams,
    check_covariance_type,
    from_covariances,
    log_det_prec_chol,
    prec_chol_from_covariances,
    prec_chol_shape,
)


class SuffStats(NamedTuple):
    """Weighted sufficient statistics of a GMM, moments about a per-component reference point ``c``.

    All fields are sums over data points, so statistics of disjoint batches combine by ``+`` (tree_map add) and
    across devices by ``psum``, as long as every batch used the same ``center``.

    Attributes:
      nk: (K,) sum_i w_i q_ik.
      sx: (K, D) sum_i w_i q_ik (x_i - c_k).
      sxx: sum of second moments about ``c``: (K, D, D) full; (D, D) tied (pooled over components);
        (K, D) diag (per-feature squares); (K,) spherical (squared norms).
    """

    nk: jax.Array
    sx: jax.Array
    sxx: jax.Array


def centered(X: jax.Array, center: jax.Array) -> jax.Array:
    """``X[:, None, :] - center[None]``: (n, K, D) differences to each component's reference point."""
    xs, cs = jnp.shape(X), jnp.shape(center)
    if len(xs) != 2 or len(cs) != 2 or xs[1] != cs[1]:
        raise ValueError(f"X must be (n, D) and the means / reference points (K, D) with the same D, got shapes {xs} "
                         f"and {cs}")
    return X[:, None, :] - center[None, :, :]


def log_prob_centered(xc: jax.Array, prec_chol: jax.Array, covariance_type: str) -> jax.Array:
    """Gaussian log-densities (n, K) from differences ``xc = x - mu_k`` of shape (n, K, D)."""
    k, d = xc.shape[-2:]
    want = prec_chol_shape(covariance_type, k, d)  # also rejects an unknown covariance type
    if tuple(jnp.shape(prec_chol)) != want:
        raise ValueError(f"prec_chol for covariance_type={covariance_type!r} with K={k}, D={d} must have shape {want}, "
                         f"got {tuple(jnp.shape(prec_chol))}")
    if covariance_type == "full":
        y = jnp.einsum("nkd,kde->nke", xc, prec_chol, precision=HIGHEST)
    elif covariance_type == "tied":
        y = jnp.einsum("nkd,de->nke", xc, prec_chol, precision=HIGHEST)
    elif covariance_type == "diag":
        y = xc * prec_chol[None]
    else:
        y = xc * prec_chol[None, :, None]
    maha = jnp.sum(jnp.square(y), axis=-1)
    return -0.5 * (d * math.log(2 * math.pi) + maha) + log_det_prec_chol(prec_chol, covariance_type, d)


def log_gaussian(X: jax.Array, means: jax.Array, prec_chol: jax.Array, covariance_type: str = "full") -> jax.Array:
    """``log N(x_i | mu_k, Sigma_k)`` for every point and component, shape (n, K).

    Args:
      X: (n, D) points.
      means: (K, D).
      prec_chol: precision Cholesky factors of ``covariance_type``.
      covariance_type: 'full', 'tied', 'diag' or 'spherical'.
    """
    return log_prob_centered(centered(X, means), prec_chol, covariance_type)


def log_joint(X: jax.Array, params: GMMParams, covariance_type: str = "full") -> jax.Array:
    """``log phi_k + log N(x_i | mu_k, Sigma_k)``, shape (n, K)."""
    return log_gaussian(X, params.means, params.prec_chol, covariance_type) + params.log_weights


def score_samples(X: jax.Array, params: GMMParams, covariance_type: str = "full") -> jax.Array:
    """Per-point log-likelihood ``log p(x_i; theta) = logsumexp_k log_joint``, shape (n,)."""
    return logsumexp(log_joint(X, params, covariance_type), axis=-1)


def log_likelihood(X: jax.Array, params: GMMParams, covariance_type: str = "full", sample_weight=None) -> jax.Array:
    """Total (weighted) log-likelihood ``sum_i w_i log p(x_i; theta)``, a scalar."""
    ll = score_samples(X, params, covariance_type)
    return jnp.sum(ll) if sample_weight is None else jnp.sum(sample_weight * ll)


def e_step(X: jax.Array, params: GMMParams, covariance_type: str = "full") -> tuple[jax.Array, jax.Array]:
    """E-step: log-responsibilities ``log q_ik = log p(z=k | x_i; theta)``.

    Returns:
      (log_resp (n, K), log_norm (n,)) where ``log_norm`` is the per-point log-likelihood.
    """
    lj = log_joint(X, params, covariance_type)
    log_norm = logsumexp(lj, axis=-1)
    return lj - log_norm[:, None], log_norm


def elbo(X: jax.Array, params: GMMParams, resp: jax.Array, covariance_type: str = "full", sample_weight=None) -> jax.Array:
    """Evidence lower bound ``sum_i w_i sum_k q_ik (log p(x_i, z=k; theta) - log q_ik)``.

    ``q`` is any row-stochastic (n, K) matrix.  Equals :func:`log_likelihood` when ``q`` is the posterior, and
    is below it by ``sum_i KL(q_i || p(z | x_i; theta))`` otherwise.  ``0 log 0`` is taken as 0.
    """
    lj = log_joint(X, params, covariance_type)
    # where q = 0 the joint term contributes nothing (also when the joint is -inf)
    per_point = jnp.sum(jnp.where(resp > 0, resp * lj, 0.0) - xlogy(resp, resp), axis=-1)
    return jnp.sum(per_point) if sample_weight is None else jnp.sum(sample_weight * per_point)


def stats_centered(xc: jax.Array, resp: jax.Array, covariance_type: str) -> SuffStats:
    """Sufficient statistics from differences ``xc`` (n, K, D) and *weighted* responsibilities (n, K)."""
    check_covariance_type(covariance_type)
    if tuple(jnp.shape(resp)) != tuple(xc.shape[:2]):
        raise ValueError(f"responsibilities must have shape (n, K) = {tuple(xc.shape[:2])}, got {tuple(jnp.shape(resp))}")
    nk = jnp.sum(resp, axis=0)
    rxc = resp[:, :, None] * xc
    sx = jnp.sum(rxc, axis=0)
    if covariance_type == "full":
        sxx = jnp.einsum("nkd,nke->kde", rxc, xc, precision=HIGHEST)
    elif covariance_type == "tied":
        sxx = jnp.einsum("nkd,nke->de", rxc, xc, precision=HIGHEST)
    elif covariance_type == "diag":
        sxx = jnp.sum(rxc * xc, axis=0)
    else:
        sxx = jnp.sum(rxc * xc, axis=(0, 2))
    return SuffStats(nk, sx, sxx)


def sufficient_stats(
    X: jax.Array, resp: jax.Array, center: jax.Array, covariance_type: str = "full", sample_weight=None
) -> SuffStats:
    """Weighted sufficient statistics about ``center``.

    Args:
      X: (n, D) points.
      resp: (n, K) responsibilities (rows sum to one; any non-negative weights are accepted).
      center: (K, D) reference points, normally the current means (any value gives the same M-step in exact
        arithmetic; the current means minimise cancellation).
      covariance_type: which second moments to keep.
      sample_weight: optional (n,) non-negative per-point weights.
    """
    if sample_weight is not None:
        resp = resp * sample_weight[:, None]
    return stats_centered(centered(X, center), resp, covariance_type)


def add_stats(a: SuffStats, b: SuffStats) -> SuffStats:
    """Statistics of the union of two batches (same ``center``)."""
    return jax.tree.map(jnp.add, a, b)


def recenter_stats(stats: SuffStats, center: jax.Array, new_center: jax.Array, covariance_type: str) -> SuffStats:
    """The same statistics about ``new_center`` instead of ``center`` (both (K, D)): with ``delta = c - c'``,
    ``x - c' = (x - c) + delta``, so ``S1' = S1 + N delta`` and ``S2' = S2 + S1 delta^T + delta S1^T + N delta delta^T``
    (restricted to the diagonal / trace / sum over components for diag / spherical / tied)."""
    delta = center - new_center
    nk, sx, sxx = stats
    sx_new = sx + nk[:, None] * delta
    if covariance_type in ("full", "tied"):
        cross = jnp.einsum("kd,ke->kde", sx, delta, precision=HIGHEST)
        extra = cross + jnp.swapaxes(cross, 1, 2) + nk[:, None, None] * jnp.einsum("kd,ke->kde", delta, delta,
                                                                                   precision=HIGHEST)
        sxx_new = sxx + (extra if covariance_type == "full" else jnp.sum(extra, axis=0))
    else:
        extra = 2 * sx * delta + nk[:, None] * jnp.square(delta)
        sxx_new = sxx + (extra if covariance_type == "diag" else jnp.sum(extra, axis=1))
    return SuffStats(nk, sx_new, sxx_new)


def m_step_covariances(stats: SuffStats, center: jax.Array, covariance_type: str = "full", reg_covar=1e-6):
    """Closed-form M-step returning ``(weights (K,), means (K, D), covariances)``.

    ``nk`` is offset by ``10 eps`` (as scikit-learn) so an empty component keeps a finite mean (its reference
    point) and a covariance of ``reg_covar * I`` instead of 0/0.
    """
    check_covariance_type(covariance_type)
    dtype = stats.sx.dtype
    nk = stats.nk + 10 * jnp.finfo(dtype).eps
    n_total = jnp.sum(nk)
    weights = nk / n_total
    shift = stats.sx / nk[:, None]  # mu_k - c_k
    means = center + shift
    d = center.shape[-1]
    if covariance_type == "full":
        cov = stats.sxx / nk[:, None, None] - shift[:, :, None] * shift[:, None, :]
        cov = cov + reg_covar * jnp.eye(d, dtype=dtype)
    elif covariance_type == "tied":
        cov = (stats.sxx - jnp.einsum("k,kd,ke->de", nk, shift, shift, precision=HIGHEST)) / n_total
        cov = cov + reg_covar * jnp.eye(d, dtype=dtype)
    elif covariance_type == "diag":
        cov = stats.sxx / nk[:, None] - jnp.square(shift) + reg_covar
    else:
        cov = (stats.sxx / nk - jnp.sum(jnp.square(shift), axis=-1)) / d + reg_covar
    return weights, means, cov


def m_step(stats: SuffStats, center: jax.Array, covariance_type: str = "full", reg_covar=1e-6) -> GMMParams:
    """Closed-form M-step: the maximiser of the ELBO over theta for fixed q (see docs/derivations.md).

        phi_k   = N_k / sum_j N_j
        mu_k    = c_k + S1_k / N_k
        Sigma_k = S2_k / N_k - (mu_k - c_k)(mu_k - c_k)^T + reg_covar I        (full; the others restrict it)

    Returns ``GMMParams``; a covariance that is not positive definite yields NaN in ``prec_chol`` (check
    ``jnp.isfinite``), it never raises.
    """
    weights, means, cov = m_step_covariances(stats, center, covariance_type, reg_covar)
    return from_covariances(weights, means, cov, covariance_type)


def em_step(X: jax.Array, params: GMMParams, covariance_type: str = "full", reg_covar=1e-6, sample_weight=None):
    """One EM iteration on the whole array.

    Returns:
      (new_params, log_likelihood) where the log-likelihood (total, weighted) is that of the *input* params.
    """
    log_resp, log_norm = e_step(X, params, covariance_type)
    resp = jnp.exp(log_resp)
    stats = sufficient_stats(X, resp, params.means, covariance_type, sample_weight)
    ll = jnp.sum(log_norm) if sample_weight is None else jnp.sum(sample_weight * log_norm)
    return m_step(stats, params.means, covariance_type, reg_covar), ll


__all__ = [
    "SuffStats",
    "add_stats",
    "centered",
    "e_step",
    "elbo",
    "em_step",
    "log_gaussian",
    "log_joint",
    "log_likelihood",
    "log_prob_centered",
    "m_step",
    "m_step_covariances",
    "prec_chol_from_covariances",
    "score_samples",
    "stats_centered",
    "sufficient_stats",
]
