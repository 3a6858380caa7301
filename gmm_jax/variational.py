"""Variational Bayes for Gaussian mixtures (scikit-learn's ``BayesianGaussianMixture``), on the same engine.

The ELBO of the notes' section 2 taken over the parameters as well as the labels: a factorised posterior
``q(z) q(phi) prod_k q(mu_k, Lambda_k)`` under conjugate priors (Bishop, PRML 10.2)::

    phi ~ Dirichlet(alpha0, ..., alpha0)                 or a Dirichlet process (stick-breaking, Beta(1, alpha0))
    Lambda_k ~ Wishart(W0, nu0),  mu_k | Lambda_k ~ N(m0, (beta0 Lambda_k)^-1)

* E-step: ``log rho_nk = E[log phi_k] + E[log N(x_n | mu_k, Lambda_k^-1)]``, which is a Gaussian log-density with
  mean ``m_k`` and precision ``nu_k W_k`` plus a per-component constant (:func:`effective_params`).  The E-step is
  therefore the engine's own (:func:`gmm_jax.engine.em_pass`) on those effective parameters: same blocks, forms,
  restarts, streaming and sharding.
* M-step (:func:`vb_m_step`): the posterior hyper-parameters from the same sufficient statistics (N_k, xbar_k,
  S_k), closed form, all four covariance types as scikit-learn restricts them.
* :func:`lower_bound`: scikit-learn's ``lower_bound_`` (the ELBO up to constants that do not depend on q), its
  responsibilities' entropy from the pass's statistics and log-normaliser (no extra pass).

The fitted hyper-parameters are :class:`VBParams` (scikit-learn's attribute names); ``covariances`` are
scikit-learn's ``covariances_`` (``W_k^-1 / nu_k``), ``prec_chol`` their precision Cholesky factors.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import digamma, gammaln

from gmm_jax.config import HIGHEST, any_traced, to_device
from gmm_jax.params import GMMParams, log_det_prec_chol, prec_chol_from_covariances, precisions_from_prec_chol
from gmm_jax.stats import SuffStats, m_step_covariances

WEIGHT_PRIORS = ("dirichlet_process", "dirichlet_distribution")


class VBPrior(NamedTuple):
    """The prior of variational Bayes, scikit-learn's constructor arguments and defaults (``None``: from the data,
    :func:`resolve_vb_prior`).

    Attributes:
      weight_concentration_prior_type: 'dirichlet_process' (stick-breaking) or 'dirichlet_distribution'.
      weight_concentration_prior: alpha0 > 0 (default 1 / K).
      mean_precision_prior: beta0 > 0 (default 1).
      mean_prior: m0 (D,) (default: the data's mean).
      degrees_of_freedom_prior: nu0 > D - 1 (default D).
      covariance_prior: W0^-1: (D, D) full/tied (default: the data's covariance), (D,) diag (the variances),
        a number spherical (their mean).
    """

    weight_concentration_prior_type: str = "dirichlet_process"
    weight_concentration_prior: float | None = None
    mean_precision_prior: float | None = None
    mean_prior: object = None
    degrees_of_freedom_prior: float | None = None
    covariance_prior: object = None


class VBPriorArrays(NamedTuple):
    """A :class:`VBPrior` resolved for a data set (arrays of the data's dtype; ``covariance`` shaped for the
    covariance type)."""

    alpha: jax.Array
    beta: jax.Array
    mean: jax.Array
    dof: jax.Array
    covariance: jax.Array


class DPPriorArrays(VBPriorArrays):
    """:class:`VBPriorArrays` of a Dirichlet-process prior on the weights (the type is what tells the two apart in
    a compiled program)."""


def is_dirichlet_process(prior: VBPriorArrays) -> bool:
    return isinstance(prior, DPPriorArrays)


class VBParams(NamedTuple):
    """The variational posterior (scikit-learn's fitted attribute names).

    Attributes:
      weight_concentration: (K,) Dirichlet parameters, or the stick-breaking Beta's first parameters (DP).
      weight_concentration_b: (K,) the stick-breaking Beta's second parameters (DP); None for a Dirichlet
        distribution (the pytree's structure tells the two apart).
      mean_precision: (K,) beta_k.
      means: (K, D) m_k.
      degrees_of_freedom: (K,) nu_k (tied: ()).
      prec_chol: precision Cholesky factors of ``W_k^-1 / nu_k`` (the shapes of ``GMMParams.prec_chol``).
    """

    weight_concentration: jax.Array
    weight_concentration_b: jax.Array | None
    mean_precision: jax.Array
    means: jax.Array
    degrees_of_freedom: jax.Array
    prec_chol: jax.Array


def is_vb(params) -> bool:
    return isinstance(params, VBParams)


def resolve_vb_prior(prior: VBPrior, X, n_components: int, covariance_type: str, dtype) -> VBPriorArrays:
    """The prior's defaults from X (host; ValueError names a bad field), as scikit-learn computes them."""
    x = np.asarray(X, np.float64)
    cov = np.atleast_2d(np.cov(x.T)) if x.shape[0] > 1 else np.eye(x.shape[1])
    return vb_prior_from_moments(prior, x.mean(axis=0), cov, n_components, covariance_type, dtype)


def vb_prior_from_moments(prior: VBPrior, mean, cov, n_components: int, covariance_type: str,
                          dtype) -> VBPriorArrays:
    """:func:`resolve_vb_prior` from the data's mean (D,) and unbiased covariance (D, D) (streamed data: one pass
    accumulates them)."""
    mean, cov = np.asarray(mean, np.float64), np.asarray(cov, np.float64)
    d = mean.shape[0]
    if prior.weight_concentration_prior_type not in WEIGHT_PRIORS:
        raise ValueError(f"weight_concentration_prior_type must be one of {WEIGHT_PRIORS}, got "
                         f"{prior.weight_concentration_prior_type!r}")
    alpha = 1.0 / n_components if prior.weight_concentration_prior is None else float(prior.weight_concentration_prior)
    beta = 1.0 if prior.mean_precision_prior is None else float(prior.mean_precision_prior)
    if not (alpha > 0 and beta > 0 and np.isfinite(alpha) and np.isfinite(beta)):
        raise ValueError(f"weight_concentration_prior and mean_precision_prior must be finite and > 0, got {alpha}, "
                         f"{beta}")
    m0 = mean if prior.mean_prior is None else np.asarray(prior.mean_prior, np.float64)
    if m0.shape != (d,) or not np.all(np.isfinite(m0)):
        raise ValueError(f"mean_prior must be a finite ({d},) array, got shape {m0.shape}")
    dof = float(d) if prior.degrees_of_freedom_prior is None else float(prior.degrees_of_freedom_prior)
    if not dof > d - 1.0:
        raise ValueError(f"degrees_of_freedom_prior should be greater than {d - 1}, got {dof:.3f}")
    c = _covariance_prior(prior.covariance_prior, cov, covariance_type)
    cls = DPPriorArrays if prior.weight_concentration_prior_type == "dirichlet_process" else VBPriorArrays
    return cls(*(to_device(a, dtype) for a in (alpha, beta, m0, dof, c)))


def _covariance_prior(value, data_cov, covariance_type: str):
    d = data_cov.shape[0]
    if value is None:
        var = np.diagonal(data_cov)
        if covariance_type in ("full", "tied"):
            return data_cov
        return var if covariance_type == "diag" else var.mean()
    c = np.asarray(value, np.float64)
    want = {"full": (d, d), "tied": (d, d), "diag": (d,), "spherical": ()}[covariance_type]
    if c.shape != want:
        raise ValueError(f"covariance_prior for covariance_type={covariance_type!r} must have shape {want}, got "
                         f"{c.shape}")
    if covariance_type in ("full", "tied"):
        if not np.allclose(c, c.T) or np.any(np.linalg.eigvalsh(c) <= 0):
            raise ValueError(f"{covariance_type} covariance_prior must be symmetric, positive-definite")
    elif np.any(c <= 0):
        raise ValueError(f"{covariance_type} covariance_prior must be positive")
    return c


def check_vb_inputs(variational, init_params, n_components: int, n_features: int, dtype, required: bool = False):
    """``variational`` a :class:`VBPrior`, ``init_params`` None (unless ``required``) or :class:`VBParams` of K
    components and D features (ValueError names the problem); returns ``init_params`` as device arrays of ``dtype``
    (the fit, the streamed and the sharded fit check through here)."""
    if not isinstance(variational, VBPrior):
        raise ValueError(f"variational must be a gmm_jax.VBPrior, got {type(variational).__name__}")
    if init_params is None and not required:
        return None
    if not isinstance(init_params, VBParams):
        raise ValueError(f"variational: init_params must be VBParams, got {type(init_params).__name__}")
    if np.shape(init_params.means) != (n_components, n_features):
        raise ValueError(f"init_params.means must have shape {(n_components, n_features)}, got "
                         f"{np.shape(init_params.means)}")
    return jax.tree.map(lambda a: to_device(a, dtype), init_params)


def check_variational(variational, init_params, X, w, n_components: int, covariance_type: str, init: str, tol):
    """(the prior's arrays, VBParams or None, tol per unit of weight) of a variational fit, checked on the host."""
    init_params = check_vb_inputs(variational, init_params, n_components, X.shape[1], X.dtype)
    if any_traced(X, w):
        raise ValueError("variational: the prior's defaults are computed from X on the host; call fit outside jit")
    if init_params is None and init == "random_from_data":
        raise ValueError("variational: init='random_from_data' is not supported; use 'kmeans', 'k-means++', 'random' "
                         "or explicit VBParams")
    arrays = resolve_vb_prior(variational, X, n_components, covariance_type, X.dtype)
    total = X.shape[0] if w is None else float(np.sum(np.asarray(w)))
    return arrays, init_params, tol / total


def expected_log_weights(vb: VBParams) -> jax.Array:
    """``E_q[log phi_k]`` (K,): Dirichlet ``psi(a_k) - psi(sum a)``; stick-breaking ``E[log v_k] + sum_{j<k}
    E[log(1 - v_j)]``."""
    a = vb.weight_concentration
    if vb.weight_concentration_b is None:
        return digamma(a) - digamma(jnp.sum(a))
    b = vb.weight_concentration_b
    ds = digamma(a + b)
    tail = jnp.cumsum(digamma(b) - ds)
    return digamma(a) - ds + jnp.concatenate([jnp.zeros((1,), a.dtype), tail[:-1]])


def expected_log_det(vb: VBParams, d: int) -> jax.Array:
    """``E_q[log |Lambda_k|] - D log nu_k - 2 log|U_k|`` as scikit-learn writes it (``log_lambda``): ``D log 2 +
    sum_{i<D} psi((nu_k - i) / 2)``."""
    nu = vb.degrees_of_freedom
    i = jnp.arange(d, dtype=nu.dtype).reshape((d,) + (1,) * nu.ndim)
    return d * math.log(2.0) + jnp.sum(digamma(0.5 * (nu - i)), axis=0)


def effective_params(vb: VBParams) -> GMMParams:
    """The Gaussian parameters whose E-step is variational Bayes': mean ``m_k``, precision factor ``prec_chol``
    (that of ``covariances``, i.e. precision ``nu_k W_k``), and log-weights ``E[log phi_k] - D/2 log nu_k +
    (log_lambda_k - D / beta_k) / 2``, so that ``log N(x | m_k, .) + log-weight = E_q[log phi_k + log N(x | mu_k,
    Lambda_k^-1)]``."""
    d = vb.means.shape[1]
    lw = (expected_log_weights(vb) - 0.5 * d * jnp.log(vb.degrees_of_freedom)
          + 0.5 * (expected_log_det(vb, d) - d / vb.mean_precision))
    return GMMParams(lw, vb.means, vb.prec_chol)


def vb_m_step(stats: SuffStats, center, covariance_type: str, reg_covar, prior: VBPriorArrays) -> VBParams:
    """The posterior hyper-parameters from statistics about ``center`` (scikit-learn's ``_m_step``; N_k offset by
    10 eps and ``reg_covar`` added to S_k, as its ``_estimate_gaussian_parameters``); stick-breaking weights for a
    :class:`DPPriorArrays` prior."""
    nk = stats.nk + 10 * jnp.finfo(stats.sx.dtype).eps
    _, xk, sk = m_step_covariances(stats, center, covariance_type, reg_covar)
    k = nk.shape[0]
    if is_dirichlet_process(prior):
        rest = jnp.concatenate([jnp.cumsum(nk[::-1])[-2::-1], jnp.zeros((1,), nk.dtype)])
        a, b = 1.0 + nk, prior.alpha + rest
    else:
        a, b = prior.alpha + nk, None
    beta = prior.beta + nk
    means = (prior.beta * prior.mean + nk[:, None] * xk) / beta[:, None]
    diff = xk - prior.mean
    if covariance_type == "full":
        nu = prior.dof + nk
        outer = diff[:, :, None] * diff[:, None, :]
        cov = prior.covariance + nk[:, None, None] * sk + (nk * prior.beta / beta)[:, None, None] * outer
        cov = cov / nu[:, None, None]
    elif covariance_type == "tied":
        nu = prior.dof + jnp.sum(nk) / k
        pooled = jnp.einsum("k,kd,ke->de", nk / beta, diff, diff, precision=HIGHEST)
        cov = (prior.covariance + sk * jnp.sum(nk) / k + prior.beta / k * pooled) / nu
    elif covariance_type == "diag":
        nu = prior.dof + nk
        cov = (prior.covariance + nk[:, None] * (sk + (prior.beta / beta)[:, None] * jnp.square(diff))) / nu[:, None]
    else:
        nu = prior.dof + nk
        cov = (prior.covariance + nk * (sk + prior.beta / beta * jnp.mean(jnp.square(diff), axis=1))) / nu
    return VBParams(a, b, beta, means, nu, prec_chol_from_covariances(cov, covariance_type))


def log_wishart_norm(nu, log_det_chol, d: int):
    """scikit-learn's ``_log_wishart_norm`` (without its log(pi) term)."""
    i = jnp.arange(d, dtype=nu.dtype).reshape((d,) + (1,) * jnp.ndim(nu))
    return -(nu * log_det_chol + nu * d * 0.5 * math.log(2.0) + jnp.sum(gammaln(0.5 * (nu - i)), axis=0))


def resp_entropy(stats: SuffStats, eff: GMMParams, ll_sum, covariance_type: str):
    """``-sum_n w_n sum_k r_nk log r_nk`` of the pass that produced ``stats`` (about ``eff.means``) and ``ll_sum``
    (``sum_n w_n log sum_k rho_nk``) under the effective parameters ``eff``:  ``sum r log r = sum r log rho -
    sum log-normaliser``, and ``sum_n r_nk log rho_nk = N_k (log-weight_k + log|U_k| - D/2 log 2 pi) -
    tr(Lambda_k S_k) / 2`` with S_k the scatter about ``m_k`` (the statistics' second moments)."""
    d = eff.means.shape[1]
    logdet = log_det_prec_chol(eff.prec_chol, covariance_type, d)
    prec = precisions_from_prec_chol(eff.prec_chol, covariance_type)
    if covariance_type == "full":
        quad = jnp.einsum("kde,ked->k", prec, stats.sxx, precision=HIGHEST)
    elif covariance_type == "tied":
        quad = jnp.sum(prec * stats.sxx)
    elif covariance_type == "diag":
        quad = jnp.sum(prec * stats.sxx, axis=1)
    else:
        quad = prec * stats.sxx
    r_log_rho = jnp.sum(stats.nk * (eff.log_weights + logdet - 0.5 * d * math.log(2 * math.pi))) - 0.5 * jnp.sum(quad)
    return ll_sum - r_log_rho


def lower_bound(vb: VBParams, entropy, covariance_type: str):
    """scikit-learn's ``lower_bound_`` after an M-step to ``vb`` from responsibilities of ``entropy``
    (:func:`resp_entropy`)."""
    k, d = vb.means.shape
    log_det_chol = log_det_prec_chol(vb.prec_chol, covariance_type, d) - 0.5 * d * jnp.log(vb.degrees_of_freedom)
    wishart = log_wishart_norm(vb.degrees_of_freedom, log_det_chol, d)
    log_wishart = k * wishart if covariance_type == "tied" else jnp.sum(wishart)
    if vb.weight_concentration_b is None:
        a = vb.weight_concentration
        log_norm_weight = gammaln(jnp.sum(a)) - jnp.sum(gammaln(a))
    else:
        a, b = vb.weight_concentration, vb.weight_concentration_b  # log B(a, b) from log-gammas: jax's betaln is
        log_norm_weight = -jnp.sum(gammaln(a) + gammaln(b) - gammaln(a + b))  # off by up to 4e-10 in float64
    return entropy - log_wishart - log_norm_weight - 0.5 * d * jnp.sum(jnp.log(vb.mean_precision))


def mixture_weights(vb: VBParams) -> jax.Array:
    """scikit-learn's ``weights_``: the posterior mean of the weights (stick-breaking: renormalised over the K
    sticks)."""
    a = vb.weight_concentration
    if vb.weight_concentration_b is None:
        return a / jnp.sum(a)
    s = a + vb.weight_concentration_b
    stick = jnp.concatenate([jnp.ones((1,), a.dtype), jnp.cumprod(vb.weight_concentration_b / s)[:-1]])
    w = a / s * stick
    return w / jnp.sum(w)


def point_params(vb: VBParams) -> GMMParams:
    """The mixture scikit-learn predicts and samples with: ``weights_``, ``means_`` and ``covariances_``."""
    return GMMParams(jnp.log(mixture_weights(vb)), vb.means, vb.prec_chol)


__all__ = ["DPPriorArrays", "VBParams", "VBPrior", "VBPriorArrays", "WEIGHT_PRIORS", "check_variational", "check_vb_inputs",
           "effective_params", "expected_log_det", "expected_log_weights", "is_dirichlet_process", "is_vb",
           "log_wishart_norm", "lower_bound", "mixture_weights", "point_params", "resolve_vb_prior", "resp_entropy",
           "vb_m_step", "vb_prior_from_moments"]
