"""Sufficient statistics and the closed-form M-step: what every pass produces and every variant consumes.

Statistics are sums over points of moments about a per-component reference point ``center`` (K, D) (normally the
current means), so that blocks, batches and shards add and the second moment does not cancel catastrophically in
float32.  :func:`block_stats` is the reference computation of a block's statistics; the fast forms of the pass
(:mod:`gmm_jax.forms`) produce the same :class:`SuffStats`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from gmm_jax.config import HIGHEST
from gmm_jax.params import GMMParams, check_covariance_type, from_covariances
from gmm_jax.precision import EXACT, PassPrecision


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


def small_full_stats(xc, resp) -> SuffStats:
    """Full-covariance statistics from component-major differences ``xc`` (K, D, B) and weighted responsibilities
    ``resp`` (K, B), elementwise (few features)."""
    rx = resp[:, None, :] * xc
    sxx = jnp.stack([jnp.sum(rx * xc[:, j, None, :], axis=-1) for j in range(xc.shape[1])], axis=1)
    return SuffStats(jnp.sum(resp, axis=1), jnp.sum(rx, axis=-1), sxx)


def block_stats(xs, resp, center, covariance_type: str, component_major: bool = False, small_d: int = 3,
                precision: PassPrecision = EXACT) -> SuffStats:
    """Sufficient statistics of a block of points ``xs`` (B, D) about ``center`` (K, D), with weighted
    responsibilities ``resp``: (B, K), or (K, B) with ``component_major`` (full and tied only).  Full covariances
    with D <= ``small_d`` take the elementwise form; full/tied second moments are K-batched products (at
    ``precision``, :mod:`gmm_jax.precision`)."""
    if covariance_type not in ("full", "tied"):
        return stats_centered(xs[:, None, :] - center[None], resp, covariance_type)
    if covariance_type == "full" and xs.shape[1] <= small_d:
        return small_full_stats(xs.T[None] - center[:, :, None], resp if component_major else resp.T)
    # S_k = sum_b r_bk xc xc^T = (sqrt(r) xc)^T (sqrt(r) xc): one symmetric product per component.  Only
    # s = sqrt(r) (x - c) is formed (component-major, (K, B, D)); the first moments come from s as well.
    rt = resp if component_major else resp.T
    sq = jnp.sqrt(rt)
    nk = jnp.sum(rt, axis=1)
    s = sq[:, :, None] * (xs[None, :, :] - center[:, None, :])
    sx = precision.einsum("kb,kbd->kd", sq, s)
    if covariance_type == "full":
        sxx = precision.matmul(jnp.swapaxes(s, 1, 2), s)
    else:
        kb = s.shape[0] * s.shape[1]
        sxx = precision.matmul(s.reshape(kb, -1).T, s.reshape(kb, -1))
    return SuffStats(nk, sx, sxx)


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


def m_step_covariances(stats: SuffStats, center: jax.Array, covariance_type: str = "full", reg_covar=1e-6,
                       keep_means: bool = False):
    """Closed-form M-step returning ``(weights (K,), means (K, D), covariances)``.

    ``keep_means``: the means stay at ``center`` and the covariances are the maximisers for those means (the second
    moments about ``center``, ``Sigma_k = S2_k / N_k + reg_covar I``).

    ``nk`` is offset by ``10 eps`` (as scikit-learn) so an empty component keeps a finite mean (its reference
    point) and a covariance of ``reg_covar * I`` instead of 0/0.
    """
    check_covariance_type(covariance_type)
    dtype = stats.sx.dtype
    nk = stats.nk + 10 * jnp.finfo(dtype).eps
    n_total = jnp.sum(nk)
    weights = nk / n_total
    shift = jnp.zeros_like(stats.sx) if keep_means else stats.sx / nk[:, None]  # mu_k - c_k
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


FIXABLE = ("weights", "means", "covariances")
INACTIVE = -1e30  # the log-weight of a masked-out component: below any real one (>= log(10 eps / n)), finite


def active_mask(params: GMMParams) -> jax.Array:
    """(K,) whether each component is active (its log-weight above :data:`INACTIVE` / 2)."""
    return params.log_weights > INACTIVE / 2


def mask_components(params: GMMParams, active) -> GMMParams:
    """The weights renormalised over the ``active`` components, the others' log-weights set to :data:`INACTIVE`: a
    masked-out component takes no point in the E-step (responsibility exactly 0), and after the M-step (which gives
    it weight ``10 eps / n``) this masks it out again (:func:`gmm_jax.fit_path`)."""
    lw = jnp.where(active, params.log_weights, -jnp.inf)
    lw = lw - logsumexp(lw)
    return params._replace(log_weights=jnp.where(active, lw, jnp.asarray(INACTIVE, lw.dtype)))


def constrained_m_step(stats: SuffStats, current: GMMParams, covariance_type: str = "full", reg_covar=1e-6,
                       fixed: tuple = ()) -> GMMParams:
    """The M-step with the parameter blocks named in ``fixed`` (any of :data:`FIXABLE`) held at their ``current``
    values, from statistics about ``current.means``: the maximiser of the ELBO over the other blocks.

    The weights' update does not involve the means or covariances, nor the means' update the covariances, so they
    are :func:`m_step`'s; with the means fixed the covariances are the second moments about them
    (``Sigma_k = S2_k / N_k + reg_covar I``, no ``- (mu_k - c_k)(mu_k - c_k)^T``).  ``fixed=()`` is :func:`m_step`.
    """
    if not fixed:
        return m_step(stats, current.means, covariance_type, reg_covar)
    new = from_covariances(*m_step_covariances(stats, current.means, covariance_type, reg_covar, "means" in fixed),
                           covariance_type)
    if "weights" in fixed:
        new = new._replace(log_weights=current.log_weights)
    if "covariances" in fixed:
        new = new._replace(prec_chol=current.prec_chol)
    return new


__all__ = ["FIXABLE", "INACTIVE", "SuffStats", "active_mask", "add_stats", "block_stats", "constrained_m_step",
           "m_step", "m_step_covariances", "mask_components", "recenter_stats", "small_full_stats", "stats_centered"]
