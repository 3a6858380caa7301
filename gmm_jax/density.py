"""The one E-step: per covariance type one blocked log-density, one normalisation, one block pass.

Everything that evaluates a mixture's densities goes through these functions: the whole-array math layer
(:func:`gmm_jax.e_step`, :func:`gmm_jax.log_likelihood`, ...), the model functions (``predict*``, ``score``), and
the fused pass of ``fit``, ``fit_stream`` and ``fit_sharded`` (:func:`gmm_jax.engine.em_pass`, whose fast forms
in :mod:`gmm_jax.forms` have the signature of :func:`centred_block` and are tested equal to it).

Points arrive shifted by a reference point near the data (``xs = x - shift``) and the parameters are in the same
coordinates, so float32 stays accurate for data with a large offset.

    log N(x | mu, Sigma) = -D/2 log(2 pi) + log det U - 1/2 ||(x - mu) U||^2      (U: precision Cholesky factor)
    log q_k(x)           = log phi_k + log N(x | mu_k, Sigma_k) - log p(x)          (E-step)
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.special import gammaln, logsumexp

from gmm_jax.config import HIGHEST
from gmm_jax.params import GMMParams, is_student, log_det_prec_chol, prec_chol_shape
from gmm_jax.precision import EXACT, PassPrecision
from gmm_jax.stats import block_stats


def component_major(covariance_type: str) -> bool:
    """Whether :func:`block_log_joint` returns (K, B) (full, tied: one large matrix product) rather than (B, K)."""
    return covariance_type in ("full", "tied")


def log_prob_factors(params: GMMParams, covariance_type: str):
    """Per-pass constants of the blocked log-density, computed once outside the block loop: (a, b, const) with
    full: a = [U_1 ... U_K] (D, K D), b = mu_k U_k (K, D); tied: a = U, b = mu U; diag/spherical: a = U, b = mu;
    const (K,) (tied: ()) the normalising constants."""
    k, d = params.means.shape
    want = prec_chol_shape(covariance_type, k, d)  # also rejects an unknown covariance type
    if tuple(jnp.shape(params.prec_chol)) != want:
        raise ValueError(f"prec_chol for covariance_type={covariance_type!r} with K={k}, D={d} must have shape {want}, "
                         f"got {tuple(jnp.shape(params.prec_chol))}")
    const = -0.5 * d * math.log(2 * math.pi) + log_det_prec_chol(params.prec_chol, covariance_type, d)
    if covariance_type == "full":
        u_all = jnp.transpose(params.prec_chol, (1, 0, 2)).reshape(d, k * d)
        return u_all, jnp.einsum("kd,kde->ke", params.means, params.prec_chol, precision=HIGHEST), const
    if covariance_type == "tied":
        return params.prec_chol, jnp.matmul(params.means, params.prec_chol, precision=HIGHEST), const
    return params.prec_chol, params.means, const


def block_log_prob(xs, factors, covariance_type: str, precision: PassPrecision = EXACT):
    """Gaussian log-densities of a block of shifted points ``xs`` (B, D): (K, B) for full and tied covariances,
    (B, K) for diagonal and spherical ones (see :func:`component_major`).

    Full: ``(x - mu_k) U_k = x U_k - mu_k U_k``, every component's whitened residual from one (K D, D) x (D, B)
    product; the component-major orientation makes the sums over D and the normalisation over K run across
    contiguous rows of length B (XLA's CPU backend vectorises those).  ``precision``: of that product
    (:mod:`gmm_jax.precision`; diagonal and spherical covariances have none).
    """
    a, b, const = factors
    if covariance_type in ("full", "tied"):
        z = precision.matmul(a.T, xs.T)  # (K D, B) full, (D, B) tied
        z = z.reshape(b.shape + (xs.shape[0],)) if covariance_type == "full" else z[None]
        y = z - b[:, :, None]  # (K, D, B)
        return -0.5 * jnp.sum(jnp.square(y), axis=1) + jnp.expand_dims(const, -1)
    if covariance_type == "diag":
        y = (xs[:, None, :] - b[None]) * a[None]
    else:
        y = (xs[:, None, :] - b[None]) * a[None, :, None]
    return -0.5 * jnp.sum(jnp.square(y), axis=-1) + const


def student_log_prob(xs, params, factors, covariance_type: str):
    """Student-t log-densities of a block (:func:`block_log_prob`'s orientation) and the expected latent scales
    ``u = (nu + D) / (nu + delta)`` (delta: the squared Mahalanobis distance under the scale matrix), from the same
    whitened residuals as the Gaussian ones::

        log t(x | mu, S, nu) = lgamma((nu + D) / 2) - lgamma(nu / 2) - D/2 log(nu pi) + log det U
                               - (nu + D) / 2 log(1 + delta / nu)
    """
    a, b, const = factors
    d = params.means.shape[1]
    delta = -2.0 * block_log_prob(xs, (a, b, jnp.zeros_like(const)), covariance_type)
    nu = params.dof[:, None] if component_major(covariance_type) else params.dof[None, :]
    c = jnp.expand_dims(const, -1) if component_major(covariance_type) else const
    c = c + 0.5 * d * jnp.log(2.0 / nu) + gammaln(0.5 * (nu + d)) - gammaln(0.5 * nu)
    return c - 0.5 * (nu + d) * jnp.log1p(delta / nu), (nu + d) / (nu + delta)


def block_log_joint(xs, params: GMMParams, factors, covariance_type: str, precision: PassPrecision = EXACT):
    """``log phi_k + log p(x_b | component k)`` of a block, in :func:`block_log_prob`'s orientation: Gaussian
    densities, or Student-t ones for :class:`gmm_jax.params.StudentTParams` (:func:`student_log_prob`)."""
    lw = params.log_weights[:, None] if component_major(covariance_type) else params.log_weights[None, :]
    if is_student(params):
        return student_log_prob(xs, params, factors, covariance_type)[0] + lw
    return block_log_prob(xs, factors, covariance_type, precision) + lw


def log_normalizer(lj, axis: int):
    """The E-step's normalisation: ``log p(x) = logsumexp_k lj`` over the component ``axis`` of log-joints ``lj``;
    the log-responsibilities are ``lj - log p(x)``."""
    return logsumexp(lj, axis=axis)


def known_labels(lj, labels, axis: int):
    """Log-joints of points with known labels (semi-supervised EM): a point labelled ``y >= 0`` keeps only component
    ``y`` (the others become -inf), so its responsibility is one-hot and its log-normaliser is ``log p(x, y)``;
    points labelled -1 are unchanged.  ``labels`` (B,) int; ``lj`` with components on ``axis``."""
    k = jnp.arange(lj.shape[axis])
    keep = (labels[None, :] < 0) | (k[:, None] == labels[None, :])  # (K, B)
    return jnp.where(keep if axis == 0 else keep.T, lj, -jnp.inf)


def weighted_resp(lj, wb, axis: int, one_exp: bool = False, labels=None):
    """(responsibilities times the points' weights ``wb``, sum of ``wb log p(x)`` over the block) from log-joints.
    With ``labels`` (B,) (-1: unknown) the labelled points first go through :func:`known_labels`.

    Two forms of the same normalisation: by default :func:`log_normalizer` then ``exp(lj - log p(x))`` (XLA fuses
    the exponentials into their consumers); with ``one_exp`` one exponential per entry, reused by the
    responsibilities (``e = exp(lj - max)``, ``resp = e / sum e``: the product form's, whose consumers are matrix
    products)."""
    if labels is not None:
        lj = known_labels(lj, labels, axis)
    if one_exp:
        m = jnp.max(lj, axis=axis, keepdims=True)
        e = jnp.exp(lj - m)
        tot = jnp.sum(e, axis=axis, keepdims=True)
        ln = jnp.squeeze(m + jnp.log(tot), axis)
        resp = e * (jnp.expand_dims(wb, axis) / tot)
    else:
        ln = log_normalizer(lj, axis)
        resp = jnp.exp(lj - jnp.expand_dims(ln, axis)) * jnp.expand_dims(wb, axis)
    return resp, jnp.sum(jnp.where(wb > 0, wb * ln, 0.0))


def centred_block(xs, wb, params: GMMParams, factors, covariance_type: str, with_stats: bool, labels=None,
                  small_d: int = 3, precision: PassPrecision = EXACT):
    """The reference form of one block of the fused pass: E-step, then the block's statistics about the current
    means (or only the counts, ``with_stats`` False), and the weighted log-likelihood sum.

    Args:
      xs: (B, D) shifted points; wb: (B,) their weights (0 for rows outside the block).
      params: parameters in the shifted coordinates; factors: :func:`log_prob_factors` of them.
      labels: optional (B,) known labels of the points (-1: unknown), see :func:`known_labels`.
    Returns:
      (SuffStats about ``params.means``, or counts (K,)), sum_b w_b log p(x_b).
    """
    km = component_major(covariance_type)
    kax = 0 if km else 1
    resp, ll = weighted_resp(block_log_joint(xs, params, factors, covariance_type, precision), wb, kax, labels=labels)
    if with_stats:
        return block_stats(xs, resp, params.means, covariance_type, component_major=km, small_d=small_d,
                           precision=precision), ll
    return jnp.sum(resp, axis=1 - kax), ll


def block_posteriors(xs, params: GMMParams, factors, covariance_type: str):
    """Per-point E-step of a block: (log-joints (B, K), log-responsibilities (B, K), log p(x) (B,)), point-major."""
    lj = block_log_joint(xs, params, factors, covariance_type)
    if component_major(covariance_type):
        lj = lj.T
    ln = log_normalizer(lj, 1)
    return lj, lj - ln[:, None], ln


def reference_point(params: GMMParams) -> jax.Array:
    """A point near the mixture (its mean under the weights), held constant for gradients: the shift of the
    whole-array functions and the model functions (which evaluate in coordinates about it)."""
    phi = jax.nn.softmax(params.log_weights)
    return lax.stop_gradient(jnp.einsum("k,kd->d", phi, params.means, precision=HIGHEST))


def shifted(params: GMMParams, shift) -> GMMParams:
    """The parameters in coordinates about ``shift`` (means minus it)."""
    return params._replace(means=params.means - shift)


def about_reference_point(params: GMMParams, covariance_type: str):
    """(reference point c, the parameters about c, their :func:`log_prob_factors`): what every evaluation of the
    E-step on given parameters prepares once, before its blocks."""
    c = reference_point(params)
    p = shifted(params, c)
    return c, p, log_prob_factors(p, covariance_type)


def posteriors(X, params: GMMParams, covariance_type: str):
    """:func:`block_posteriors` of all of X as one block, about :func:`reference_point` (the math layer's E-step)."""
    c, p, factors = about_reference_point(params, covariance_type)
    return block_posteriors(X - c, p, factors, covariance_type)


__all__ = ["about_reference_point", "block_log_joint", "block_log_prob", "block_posteriors", "centred_block",
           "component_major", "known_labels", "log_normalizer", "log_prob_factors", "posteriors", "reference_point",
           "shifted", "student_log_prob", "weighted_resp"]
