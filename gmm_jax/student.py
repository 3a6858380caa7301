"""The Student-t mixture family (EM with latent scales, Peel & McLachlan 2000) as a variant of the one engine.

Each point of component k has a latent scale ``g ~ Gamma(nu_k / 2, rate nu_k / 2)`` and ``x | g ~ N(mu_k, S_k / g)``,
so that ``x ~ t_nu(mu_k, S_k)``.  The E-step is the engine's (responsibilities ``tau`` from the Student-t
log-densities, :func:`gmm_jax.density.student_log_prob`, normalised by :func:`gmm_jax.density.weighted_resp`) plus
the expected scales ``u = E[g | x, k] = (nu + D) / (nu + delta)``.  The statistics are the shared ones
(:func:`gmm_jax.stats.block_stats`) with weights ``tau u``, plus ``sum tau`` and ``sum tau (log u - u)`` per
component.  The M-step (the maximiser of the expected complete-data log-likelihood Q)::

    phi_k = N_k / N,   N_k = sum_i tau_ik
    mu_k  = sum_i tau_ik u_ik x_i / sum_i tau_ik u_ik
    S_k   = sum_i tau_ik u_ik (x_i - mu_k)(x_i - mu_k)^T / N_k  (+ reg_covar I; tied/diag/spherical restrict it)
    nu_k  : the root of  log(nu/2) - psi(nu/2) + 1 + E_k[log g - g] = 0,
            E_k[log g - g] = sum_i tau_ik (log u_ik - u_ik) / N_k + psi((nu_old + D)/2) - log((nu_old + D)/2)

found by bisection in log(nu) on [``DOF_MIN``, ``DOF_MAX``] (no root: the data are lighter-tailed than any t, nu
goes to ``DOF_MAX``).  Q separates in (phi), (mu, S) and (nu), so each update is Q's maximiser and the observed
log-likelihood never decreases (tests, ``python -m gmm_jax.verify``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.special import digamma

from gmm_jax.density import component_major, student_log_prob, weighted_resp
from gmm_jax.params import StudentTParams, from_covariances
from gmm_jax.stats import SuffStats, block_stats, m_step_covariances

DOF_MIN, DOF_MAX = 0.05, 1e4


class TStats(NamedTuple):
    """Sufficient statistics of the Student-t M-step (all sums over points: additive over blocks and devices).

    Attributes:
      scaled: :class:`gmm_jax.stats.SuffStats` with weights ``w tau u`` about the current means.
      nk: (K,) sum_i w_i tau_ik.
      log_u: (K,) sum_i w_i tau_ik (log u_ik - u_ik).
    """

    scaled: SuffStats
    nk: jax.Array
    log_u: jax.Array


def student_block(xs, wb, params: StudentTParams, factors, covariance_type: str, with_stats: bool, labels=None):
    """One block of the fused pass for a Student-t mixture (the signature of
    :func:`gmm_jax.density.centred_block`): (TStats, or counts (K,)), sum_b w_b log p(x_b)."""
    km = component_major(covariance_type)
    kax = 0 if km else 1
    lt, u = student_log_prob(xs, params, factors, covariance_type)
    lw = params.log_weights[:, None] if km else params.log_weights[None, :]
    resp, ll = weighted_resp(lt + lw, wb, kax, labels=labels)
    nk = jnp.sum(resp, axis=1 - kax)
    if not with_stats:
        return nk, ll
    scaled = block_stats(xs, resp * u, params.means, covariance_type, component_major=km)
    return TStats(scaled, nk, jnp.sum(resp * (jnp.log(u) - u), axis=1 - kax)), ll


def dof_update(nk, log_u, dof_old, d: int, iters: int = 60):
    """The degrees of freedom maximising Q (module docstring), by bisection in log(nu); (K,)."""
    c = 1.0 + log_u / jnp.maximum(nk, jnp.finfo(nk.dtype).tiny) + digamma(0.5 * (dof_old + d)) \
        - jnp.log(0.5 * (dof_old + d))

    def f(nu):  # decreasing in nu, from +inf to 1 + c
        return jnp.log(0.5 * nu) - digamma(0.5 * nu) + c

    def body(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        pos = f(jnp.exp(mid)) > 0
        return jnp.where(pos, mid, lo), jnp.where(pos, hi, mid)

    lo = jnp.full_like(dof_old, jnp.log(DOF_MIN))
    lo, hi = lax.fori_loop(0, iters, body, (lo, jnp.full_like(dof_old, jnp.log(DOF_MAX))))
    return jnp.exp(0.5 * (lo + hi))


def student_m_step(stats: TStats, current: StudentTParams, covariance_type: str, reg_covar=1e-6,
                   fixed: tuple = ()) -> StudentTParams:
    """The Student-t M-step (module docstring) from statistics about ``current.means``; the blocks named in
    ``fixed`` (any of 'weights', 'means', 'covariances', 'dof') keep their current values."""
    su = stats.scaled  # weights tau u: the means are its weighted means, its centred second moments / N_k the scales
    eps = 10 * jnp.finfo(su.sx.dtype).eps
    _, means, cov_u = m_step_covariances(su, current.means, covariance_type, 0.0, "means" in fixed)
    nk = stats.nk + eps
    ratio = (su.nk + eps) / nk  # sum tau u / sum tau
    d = current.means.shape[1]
    if covariance_type == "tied":
        scale = cov_u * jnp.sum(su.nk + eps) / jnp.sum(nk) + reg_covar * jnp.eye(d, dtype=cov_u.dtype)
    elif covariance_type == "full":
        scale = cov_u * ratio[:, None, None] + reg_covar * jnp.eye(d, dtype=cov_u.dtype)
    elif covariance_type == "diag":
        scale = cov_u * ratio[:, None] + reg_covar
    else:
        scale = cov_u * ratio + reg_covar
    g = from_covariances(nk / jnp.sum(nk), means, scale, covariance_type)
    dof = current.dof if "dof" in fixed else dof_update(stats.nk, stats.log_u, current.dof, d)
    new = StudentTParams(*g, dof)
    if "weights" in fixed:
        new = new._replace(log_weights=current.log_weights)
    if "covariances" in fixed:
        new = new._replace(prec_chol=current.prec_chol)
    return new


__all__ = ["DOF_MAX", "DOF_MIN", "TStats", "dof_update", "student_block", "student_m_step"]
