"""Missing values (NaN entries) marginalised in the E-step: exact EM for data missing at random.

For a point with observed coordinates ``o`` and missing ``m``, component k's density is the marginal
``N(x_o | mu_o, S_oo)``; the statistics use the conditional expectations of the missing coordinates::

    E[x_m | x_o, k]            = mu_m + S_mo S_oo^-1 (x_o - mu_o)
    Cov[x_m | x_o, k]          = S_mm - S_mo S_oo^-1 S_om
    E[(x - c)(x - c)^T | x_o, k] = (xhat - c)(xhat - c)^T + Cov (zero outside the m x m block)

so the M-step from these statistics is exact EM on the observed-data likelihood.  One computation serves every
pattern of missingness: with the mask ``M_i`` (1 observed) the matrix ``A = M S M + diag(1 - M)`` is ``S_oo`` on the
observed block and the identity elsewhere, so ``log|A| = log|S_oo|``, ``r^T A^-1 r = r_o^T S_oo^-1 r_o`` for the
residual ``r`` zeroed on ``m``, ``xhat = mu + S A^-1 r`` and ``Cov = S - S (A^-1 . M M^T) S``.  The cost is a D x D
Cholesky per point and component, O(n K D^3) per pass: meant for moderate D.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.scipy.linalg import cho_solve

from gmm_jax.config import HIGHEST
from gmm_jax.density import weighted_resp
from gmm_jax.params import GMMParams, covariances_from_prec_chol
from gmm_jax.stats import SuffStats


def dense_covariances(params: GMMParams, covariance_type: str) -> jax.Array:
    """(K, D, D) covariance matrices of any covariance type."""
    k, d = params.means.shape
    c = covariances_from_prec_chol(params.prec_chol, covariance_type)
    if covariance_type == "tied":
        return jnp.broadcast_to(c, (k, d, d))
    if covariance_type == "diag":
        return c[:, :, None] * jnp.eye(d, dtype=c.dtype)
    if covariance_type == "spherical":
        return c[:, None, None] * jnp.eye(d, dtype=c.dtype)
    return c


def marginal_terms(x, observed, mean, cov):
    """One point and one component: (log N(x_o | mu_o, S_oo), xhat (D,), conditional covariance (D, D)).
    ``x`` has zeros (or anything finite) at the missing coordinates, ``observed`` (D,) is 1/0."""
    d = x.shape[0]
    mm = observed[:, None] * observed[None, :]
    a = cov * mm + jnp.diag(1.0 - observed)
    chol = jnp.linalg.cholesky(a)
    r = (x - mean) * observed
    v = cho_solve((chol, True), r)
    logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol)))
    log_n = -0.5 * (jnp.sum(observed) * math.log(2 * math.pi) + logdet + jnp.dot(r, v))
    xhat = mean + jnp.matmul(cov, v, precision=HIGHEST)
    q = cho_solve((chol, True), jnp.eye(d, dtype=x.dtype)) * mm
    cond = cov - jnp.matmul(cov, jnp.matmul(q, cov, precision=HIGHEST), precision=HIGHEST)
    return log_n, xhat, cond


def missing_posteriors(xs, params: GMMParams, covariance_type: str):
    """Per point of a block (NaN: missing): (log-joints (B, K), xhat (B, K, D), conditional covariances
    (B, K, D, D))."""
    observed = (~jnp.isnan(xs)).astype(xs.dtype)
    x0 = jnp.where(observed > 0, xs, 0.0)
    cov = dense_covariances(params, covariance_type)
    per_k = jax.vmap(marginal_terms, in_axes=(None, None, 0, 0))
    log_n, xhat, cond = jax.vmap(per_k, in_axes=(0, 0, None, None))(x0, observed, params.means, cov)
    return log_n + params.log_weights[None, :], xhat, cond


def missing_block(xs, wb, params: GMMParams, factors, covariance_type: str, with_stats: bool, labels=None):
    """One block of the fused pass with missing values marginalised (the signature of
    :func:`gmm_jax.density.centred_block`): (SuffStats about the current means, or counts), sum w log p(x_o)."""
    lj, xhat, cond = missing_posteriors(xs, params, covariance_type)
    resp, ll = weighted_resp(lj, wb, 1, labels=labels)  # (B, K)
    if not with_stats:
        return jnp.sum(resp, axis=0), ll
    dx = xhat - params.means[None]  # (B, K, D)
    nk = jnp.sum(resp, axis=0)
    sx = jnp.einsum("bk,bkd->kd", resp, dx, precision=HIGHEST)
    second = jnp.einsum("bk,bkd,bke->kde", resp, dx, dx, precision=HIGHEST) + jnp.einsum(
        "bk,bkde->kde", resp, cond, precision=HIGHEST)
    if covariance_type == "tied":
        sxx = jnp.sum(second, axis=0)
    elif covariance_type == "diag":
        sxx = jnp.diagonal(second, axis1=1, axis2=2)
    elif covariance_type == "spherical":
        sxx = jnp.trace(second, axis1=1, axis2=2)
    else:
        sxx = second
    return SuffStats(nk, sx, sxx), ll


def column_mean_filled(X, w=None):
    """X with each NaN entry replaced by its column's (weighted) mean over the observed entries."""
    observed = ~jnp.isnan(X)
    wt = observed.astype(X.dtype) if w is None else observed * w[:, None]
    mean = jnp.sum(jnp.where(observed, X, 0.0) * wt, axis=0) / jnp.maximum(jnp.sum(wt, axis=0), jnp.finfo(X.dtype).tiny)
    return jnp.where(observed, X, mean)


def impute_block(xs, params: GMMParams, covariance_type: str):
    """Conditional means of a block's missing coordinates: sum_k q(k | x_o) xhat_k (observed ones unchanged)."""
    lj, xhat, _ = missing_posteriors(xs, params, covariance_type)
    q = jax.nn.softmax(lj, axis=1)
    out = jnp.einsum("bk,bkd->bd", q, xhat, precision=HIGHEST)
    return jnp.where(jnp.isnan(xs), out, xs)


__all__ = ["column_mean_filled", "dense_covariances", "impute_block", "marginal_terms", "missing_block", "missing_posteriors"]
