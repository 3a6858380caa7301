"""Mixture parameters, covariance types and the maps between parametrisations.

The canonical parametrisation stores the Cholesky factor of each *precision* (as scikit-learn's
``precisions_cholesky_``): an upper-triangular ``U`` with ``U @ U.T = inv(Sigma)``.  Log-densities then need one
matrix product and a sum of log-diagonals; no inverse or determinant is ever formed.

Shapes of ``prec_chol`` per covariance type (K components, D features)::

    full       (K, D, D)   upper-triangular, positive diagonal
    tied       (D, D)      one factor shared by all components
    diag       (K, D)      1 / sqrt(variance) per feature
    spherical  (K,)        1 / sqrt(variance), one per component
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular

from gmm_jax.config import HIGHEST

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


class GMMParams(NamedTuple):
    """Parameters of a Gaussian mixture.

    Attributes:
      log_weights: (K,) log mixing proportions, ``logsumexp(log_weights) == 0``.
      means: (K, D) component means.
      prec_chol: precision Cholesky factor; shape depends on the covariance type (see module docstring).
    """

    log_weights: jax.Array  # (K,)
    means: jax.Array  # (K, D)
    prec_chol: jax.Array  # (K, D, D) full; (D, D) tied; (K, D) diag; (K,) spherical


class StudentTParams(NamedTuple):
    """Parameters of a Student-t mixture: :class:`GMMParams`' fields (``prec_chol`` the Cholesky factor of the
    inverse *scale* matrix; the covariance of component k is ``dof_k / (dof_k - 2)`` times the scale for dof > 2)
    and the degrees of freedom.

    Attributes:
      log_weights, means, prec_chol: as :class:`GMMParams`.
      dof: (K,) degrees of freedom, positive (large: near-Gaussian).
    """

    log_weights: jax.Array
    means: jax.Array
    prec_chol: jax.Array
    dof: jax.Array  # (K,)


def is_student(params) -> bool:
    """Whether ``params`` are a Student-t mixture's (:class:`StudentTParams`)."""
    return isinstance(params, StudentTParams)


def with_dof(params: GMMParams, dof) -> StudentTParams:
    """Student-t parameters from Gaussian ones and degrees of freedom (a number or (K,))."""
    k = params.means.shape[0]
    return StudentTParams(*params[:3], jnp.broadcast_to(jnp.asarray(dof, params.means.dtype), (k,)))


class UnconstrainedParams(NamedTuple):
    """Unconstrained parametrisation for gradient methods.

    Attributes:
      logits: (K,) mixing logits; weights are ``softmax(logits)``.
      means: (K, D) component means.
      chol_raw: same shape as ``prec_chol``; for triangular factors the strict upper triangle is free and the
        diagonal holds ``log`` of the factor's diagonal; for diag/spherical it is ``log(prec_chol)``.
    """

    logits: jax.Array
    means: jax.Array
    chol_raw: jax.Array


def check_covariance_type(covariance_type: str) -> None:
    if covariance_type not in COVARIANCE_TYPES:
        raise ValueError(
            f"unknown covariance_type {covariance_type!r}; expected one of {', '.join(COVARIANCE_TYPES)}"
        )


def prec_chol_shape(covariance_type: str, n_components: int, n_features: int) -> tuple[int, ...]:
    """Shape of ``prec_chol`` for a covariance type."""
    check_covariance_type(covariance_type)
    return {
        "full": (n_components, n_features, n_features),
        "tied": (n_features, n_features),
        "diag": (n_components, n_features),
        "spherical": (n_components,),
    }[covariance_type]


def _eye_like(a: jax.Array) -> jax.Array:
    return jnp.broadcast_to(jnp.eye(a.shape[-1], dtype=a.dtype), a.shape)


def lower_triangular_inverse(chol: jax.Array) -> jax.Array:
    """Inverse of lower-triangular matrices (..., D, D) by forward substitution over rows.

    Equivalent to ``solve_triangular(L, I, lower=True)``; written as D small vectorised steps because XLA's CPU
    triangular-solve expansion, placed in the same program as the EM pass, slowed the whole iteration by ~30%.
    Row ``i`` of ``X = inv(L)`` is ``(e_i - L[i, :i] X[:i]) / L[i, i]``; rows not yet computed are zero, so the
    full-row product needs no mask.
    """
    d = chol.shape[-1]
    eye = jnp.eye(d, dtype=chol.dtype)

    def body(i, x):
        li = chol[..., i, :]  # (..., D)
        row = (eye[i] - jnp.einsum("...j,...je->...e", li, x, precision=HIGHEST)) / chol[..., i, i][..., None]
        return x.at[..., i, :].set(row)

    return jax.lax.fori_loop(0, d, body, jnp.zeros_like(chol))


def prec_chol_from_covariances(covariances: jax.Array, covariance_type: str) -> jax.Array:
    """Precision Cholesky factors from covariances.

    For triangular types: ``L = cholesky(Sigma)`` (lower), ``U = inv(L).T`` (upper), so that
    ``U @ U.T = inv(L L^T)``.  A covariance that is not positive definite gives NaN (never raises); callers
    check ``jnp.isfinite``.

    Args:
      covariances: (K, D, D) full, (D, D) tied, (K, D) diag, (K,) spherical.
      covariance_type: one of ``COVARIANCE_TYPES``.
    """
    if covariance_type in ("full", "tied"):
        chol = jnp.linalg.cholesky(covariances)
        return jnp.swapaxes(lower_triangular_inverse(chol), -1, -2)
    return jax.lax.rsqrt(covariances)


def prec_chol_from_precisions(precisions: jax.Array, covariance_type: str) -> jax.Array:
    """Precision Cholesky factors from precision matrices (scikit-learn's ``precisions_init`` convention).

    For triangular types the factor is upper-triangular ``U`` with ``U U^T = P``; it is obtained from the
    lower Cholesky of the row/column-reversed matrix, which avoids forming the covariance.
    """
    if covariance_type in ("full", "tied"):
        rev = precisions[..., ::-1, ::-1]
        chol = jnp.linalg.cholesky(rev)
        return chol[..., ::-1, ::-1]
    return jnp.sqrt(precisions)


def covariances_from_prec_chol(prec_chol: jax.Array, covariance_type: str) -> jax.Array:
    """Covariances ``inv(U U^T) = inv(U)^T inv(U)`` from precision Cholesky factors."""
    if covariance_type in ("full", "tied"):
        u_inv = solve_triangular(prec_chol, _eye_like(prec_chol), lower=False)
        return jnp.matmul(jnp.swapaxes(u_inv, -1, -2), u_inv, precision=HIGHEST)
    return 1.0 / jnp.square(prec_chol)


def precisions_from_prec_chol(prec_chol: jax.Array, covariance_type: str) -> jax.Array:
    """Precision matrices ``U U^T`` (full, tied) or precision vectors/scalars (diag, spherical)."""
    if covariance_type in ("full", "tied"):
        return jnp.matmul(prec_chol, jnp.swapaxes(prec_chol, -1, -2), precision=HIGHEST)
    return jnp.square(prec_chol)


def cov_chol_from_prec_chol(prec_chol: jax.Array, covariance_type: str) -> jax.Array:
    """Cholesky factor ``L`` (lower) of the covariance, ``L L^T = Sigma``; ``L = inv(U)^T``.

    For diag/spherical types it is the standard deviation (same shape as ``prec_chol``).
    """
    if covariance_type in ("full", "tied"):
        u_inv = solve_triangular(prec_chol, _eye_like(prec_chol), lower=False)
        return jnp.swapaxes(u_inv, -1, -2)
    return 1.0 / prec_chol


def log_det_prec_chol(prec_chol: jax.Array, covariance_type: str, n_features: int) -> jax.Array:
    """``log det U`` = ``-0.5 log det Sigma``: shape (K,) for full/diag/spherical, () for tied."""
    if covariance_type in ("full", "tied"):
        return jnp.sum(jnp.log(jnp.diagonal(prec_chol, axis1=-2, axis2=-1)), axis=-1)
    if covariance_type == "diag":
        return jnp.sum(jnp.log(prec_chol), axis=-1)
    return n_features * jnp.log(prec_chol)


def from_covariances(weights: jax.Array, means: jax.Array, covariances: jax.Array, covariance_type: str) -> GMMParams:
    """Build ``GMMParams`` from weights (K,), means (K, D) and covariances."""
    return GMMParams(jnp.log(weights), means, prec_chol_from_covariances(covariances, covariance_type))


def to_unconstrained(params: GMMParams, covariance_type: str) -> UnconstrainedParams:
    """Map to the unconstrained parametrisation (inverse of :func:`from_unconstrained`)."""
    logits = params.log_weights - jnp.mean(params.log_weights)
    u = params.prec_chol
    if covariance_type in ("full", "tied"):
        diag = jnp.diagonal(u, axis1=-2, axis2=-1)
        raw = jnp.triu(u, 1) + _diag_embed(jnp.log(diag))
    else:
        raw = jnp.log(u)
    return UnconstrainedParams(logits, params.means, raw)


def from_unconstrained(uparams: UnconstrainedParams, covariance_type: str) -> GMMParams:
    """Map unconstrained values to valid ``GMMParams`` (softmax weights, positive Cholesky diagonal)."""
    log_weights = jax.nn.log_softmax(uparams.logits)
    raw = uparams.chol_raw
    if covariance_type in ("full", "tied"):
        diag = jnp.diagonal(raw, axis1=-2, axis2=-1)
        u = jnp.triu(raw, 1) + _diag_embed(jnp.exp(diag))
    else:
        u = jnp.exp(raw)
    return GMMParams(log_weights, uparams.means, u)


def _diag_embed(d: jax.Array) -> jax.Array:
    return d[..., :, None] * jnp.eye(d.shape[-1], dtype=d.dtype)


def n_parameters(covariance_type: str, n_components: int, n_features: int) -> int:
    """Number of free parameters (for BIC/AIC)."""
    check_covariance_type(covariance_type)
    k, d = n_components, n_features
    cov = {"full": k * d * (d + 1) // 2, "tied": d * (d + 1) // 2, "diag": k * d, "spherical": k}[covariance_type]
    return cov + k * d + k - 1
