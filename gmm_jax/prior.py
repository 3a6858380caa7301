"""MAP estimation with conjugate priors: the M-step from the same sufficient statistics, maximising ELBO + log prior.

The prior (independent over components)::

    phi ~ Dirichlet(alpha)                                         (alpha >= 1; 1: no prior on the weights)
    Lambda_k: log p = (n0 / 2) log|Lambda_k| - (n0 / 2) tr(Psi Lambda_k)    (a Wishart in the precision;
              diag / spherical: the Gamma prior of each precision, tied: one shared Lambda)
    mu_k | Lambda_k ~ N(m0, (kappa0 Lambda_k)^-1)                  (kappa0 = 0: a flat prior on the means)

so that ``n0`` counts pseudo-points with covariance ``Psi``.  The MAP M-step (N_k, xbar_k, S_k: the weighted
count, mean and scatter about the mean of component k; j = 1 when kappa0 > 0, else 0)::

    phi_k   = (N_k + alpha - 1) / (N + K (alpha - 1))
    mu_k    = (N_k xbar_k + kappa0 m0) / (N_k + kappa0)
    Sigma_k = (S_k + n0 Psi + kappa0 N_k / (kappa0 + N_k) (xbar_k - m0)(xbar_k - m0)^T) / (N_k + n0 + j)

(diag: the diagonal; spherical: traces over D and D (N_k + n0 + j) below; tied: sums over components, one n0 Psi
and N + n0 + K j below), then ``+ reg_covar I`` as in the plain M-step.  With ``n0 = 0, kappa0 = 0, alpha = 1`` it
is the maximum-likelihood M-step.  EM with it never decreases the log-posterior ``log p(X | theta) + log p(theta)``
(test) and the closed form is the argmax of ELBO + log prior (``python -m gmm_jax.verify``, optax ascent).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gmm_jax.config import HIGHEST, to_device
from gmm_jax.params import GMMParams, from_covariances, log_det_prec_chol
from gmm_jax.stats import SuffStats


class Prior(NamedTuple):
    """A conjugate prior for MAP EM (module docstring).  ``None`` fields take their documented defaults from the
    data (:func:`resolve_prior`).

    Attributes:
      weight_concentration: alpha >= 1 of the symmetric Dirichlet on the weights (default 1: none).
      mean_precision: kappa0 >= 0 (default 0: a flat prior on the means).
      mean: m0 (D,) (default: the data's mean).
      covariance: Psi, a number (times I), (D,) (diagonal) or (D, D) (default: 1e-3 times the mean of the data's
        per-feature variances, times I: a scale-free stand-in for ``reg_covar``).
      strength: n0 >= 0, pseudo-points of covariance Psi (default 1).
    """

    weight_concentration: float = 1.0
    mean_precision: float = 0.0
    mean: object = None
    covariance: object = None
    strength: float = 1.0


class PriorArrays(NamedTuple):
    """A :class:`Prior` resolved for a data set: arrays of the data's dtype (a traced argument of the fit)."""

    alpha: jax.Array  # ()
    kappa: jax.Array  # ()
    mean: jax.Array  # (D,)
    psi: jax.Array  # (D, D)
    n0: jax.Array  # ()


def resolve_prior(prior: Prior, X, dtype) -> PriorArrays:
    """The prior's defaults filled in from X (host arrays, checked: ValueError names a bad field)."""
    d = X.shape[1]
    x = np.asarray(X, np.float64)
    alpha, kappa, n0 = (float(v) for v in (prior.weight_concentration, prior.mean_precision, prior.strength))
    if not alpha >= 1.0:
        raise ValueError(f"prior weight_concentration must be >= 1 (a MAP estimate needs it), got {alpha}")
    if not (kappa >= 0.0 and n0 >= 0.0 and np.isfinite(kappa) and np.isfinite(n0)):
        raise ValueError(f"prior mean_precision and strength must be finite and >= 0, got {kappa}, {n0}")
    m0 = np.nanmean(x, axis=0) if prior.mean is None else np.asarray(prior.mean, np.float64)
    if m0.shape != (d,) or not np.all(np.isfinite(m0)):
        raise ValueError(f"prior mean must be a finite ({d},) array, got shape {m0.shape}")
    psi = 1e-3 * float(np.mean(np.var(x, axis=0))) if prior.covariance is None else prior.covariance
    psi = np.asarray(psi, np.float64)
    psi = psi * np.eye(d) if psi.ndim == 0 else (np.diag(psi) if psi.ndim == 1 else psi)
    if psi.shape != (d, d) or not np.allclose(psi, psi.T) or np.any(np.linalg.eigvalsh(psi) < 0):
        raise ValueError(f"prior covariance must be a number, a ({d},) or a symmetric positive semi-definite "
                         f"({d}, {d}) array")
    return PriorArrays(*(to_device(a, dtype) for a in (alpha, kappa, m0, psi, n0)))


def map_m_step(stats: SuffStats, center, covariance_type: str, reg_covar, prior: PriorArrays) -> GMMParams:
    """The MAP M-step (module docstring) from statistics about ``center`` (K, D)."""
    eps = 10 * jnp.finfo(stats.sx.dtype).eps
    nk = stats.nk + eps
    k, d = center.shape
    xbar = center + stats.sx / nk[:, None]
    shift = xbar - center
    weights = (nk + prior.alpha - 1) / (jnp.sum(nk) + k * (prior.alpha - 1))
    means = (nk[:, None] * xbar + prior.kappa * prior.mean) / (nk + prior.kappa)[:, None]
    dm = xbar - prior.mean
    shrink = prior.kappa * nk / (prior.kappa + nk)
    j = (prior.kappa > 0).astype(nk.dtype)
    if covariance_type in ("full", "tied"):
        scatter = stats.sxx - (nk[:, None, None] * shift[:, :, None] * shift[:, None, :] if covariance_type == "full"
                               else jnp.einsum("k,kd,ke->de", nk, shift, shift, precision=HIGHEST))
        pull = shrink[:, None, None] * dm[:, :, None] * dm[:, None, :]
        if covariance_type == "full":
            cov = (scatter + pull + prior.n0 * prior.psi) / (nk + prior.n0 + j)[:, None, None]
        else:
            cov = (scatter + jnp.sum(pull, 0) + prior.n0 * prior.psi) / (jnp.sum(nk) + prior.n0 + k * j)
        cov = cov + reg_covar * jnp.eye(d, dtype=cov.dtype)
    elif covariance_type == "diag":
        scatter = stats.sxx - nk[:, None] * jnp.square(shift)
        cov = (scatter + shrink[:, None] * jnp.square(dm) + prior.n0 * jnp.diagonal(prior.psi)) \
            / (nk + prior.n0 + j)[:, None] + reg_covar
    else:
        scatter = stats.sxx - nk * jnp.sum(jnp.square(shift), axis=1)
        cov = (scatter + shrink * jnp.sum(jnp.square(dm), axis=1) + prior.n0 * jnp.trace(prior.psi)) \
            / (d * (nk + prior.n0 + j)) + reg_covar
    return from_covariances(weights, means, cov, covariance_type)


def log_prior(params: GMMParams, prior: PriorArrays, covariance_type: str):
    """``log p(theta)`` up to a constant (module docstring), with the precisions from ``params.prec_chol``."""
    k, d = params.means.shape
    u = params.prec_chol
    logdet = log_det_prec_chol(u, covariance_type, d) * 2.0  # log|Lambda_k| of the D x D precision (tied: one)
    if covariance_type == "full":
        lam = jnp.matmul(u, jnp.swapaxes(u, 1, 2), precision=HIGHEST)
    elif covariance_type == "tied":
        lam = jnp.broadcast_to(jnp.matmul(u, u.T, precision=HIGHEST), (k, d, d))
    elif covariance_type == "diag":
        lam = jax.vmap(jnp.diag)(jnp.square(u))
    else:
        lam = jnp.square(u)[:, None, None] * jnp.eye(d)
    tr = jnp.einsum("de,ked->k", prior.psi, lam, precision=HIGHEST)
    dm = params.means - prior.mean
    quad = jnp.einsum("kd,kde,ke->k", dm, lam, dm, precision=HIGHEST)
    j = (prior.kappa > 0).astype(dm.dtype)
    # tied: one precision, its Wishart term once (logdet is () and broadcasts in the means' Normal terms)
    wishart = 0.5 * prior.n0 * (logdet - tr[0]) if covariance_type == "tied" else jnp.sum(0.5 * prior.n0 * (logdet - tr))
    normal = jnp.sum(0.5 * j * logdet - 0.5 * prior.kappa * quad)
    return (prior.alpha - 1) * jnp.sum(params.log_weights) + wishart + normal


__all__ = ["Prior", "PriorArrays", "log_prior", "map_m_step", "resolve_prior"]
