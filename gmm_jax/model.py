"""Functions of a fitted mixture: predict, predict_proba, predict_log_proba, score, sample, sample_component, bic,
aic.

They run the fit's E-step (:func:`gmm_jax.density.block_posteriors`) over row blocks, so memory is O(n K) for
outputs plus one block of scratch.  Each public function checks its inputs first (X 2-D, numeric and finite; the
parameters' shapes against X and the covariance type, finite, weights summing to one, positive-definite factors; for
traced inputs inside a caller's ``jit`` only the shapes), then calls a jitted core with the covariance type static.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gmm_jax.config import Config, any_traced, resolve_config, to_device
from gmm_jax.density import about_reference_point, block_posteriors
from gmm_jax.missing import impute_block, missing_posteriors
from gmm_jax.params import GMMParams, cov_chol_from_prec_chol, is_student, n_parameters
from gmm_jax.rows import bucket_rows, bucketed_rows, map_blocks, resolve_block_size, row_bucket, row_map
from gmm_jax.validation import check_component, check_positive_int, model_inputs, model_params


def posterior_blocks(X, params: GMMParams, covariance_type: str, config: Config | None, out, missing: bool = False):
    """``out(log_joint, log_resp, log_norm)`` of every row block of X: the E-step of the fused pass
    (:func:`gmm_jax.density.block_posteriors`; ``missing``: NaN entries marginalised,
    :func:`gmm_jax.missing.missing_posteriors`) in coordinates about the mixture's mean, stitched back to rows."""
    k, d = params.means.shape
    bs = resolve_block_size(None, X.shape[0], k, d, config=config)
    c, p, factors = about_reference_point(params, covariance_type)

    def one(xb):
        if not missing:
            return out(*block_posteriors(xb - c, p, factors, covariance_type))
        lj = missing_posteriors(xb - c, p, covariance_type)[0]
        ln = jax.nn.logsumexp(lj, axis=1)
        return out(lj, lj - ln[:, None], ln)

    return map_blocks(one, X, bs)


_STATICS = ("covariance_type", "config", "missing")


@partial(jax.jit, static_argnames=_STATICS)
def _predict_log_proba(X, params: GMMParams, covariance_type: str, config=None, missing=False):
    return posterior_blocks(X, params, covariance_type, config, lambda lj, lr, ln: lr, missing)


@partial(jax.jit, static_argnames=_STATICS)
def _predict_proba(X, params: GMMParams, covariance_type: str, config=None, missing=False):
    return posterior_blocks(X, params, covariance_type, config, lambda lj, lr, ln: jnp.exp(lr), missing)


@partial(jax.jit, static_argnames=_STATICS)
def _predict(X, params: GMMParams, covariance_type: str, config=None, missing=False):
    return posterior_blocks(X, params, covariance_type, config, lambda lj, lr, ln: jnp.argmax(lj, 1).astype(jnp.int32),
                            missing)


@partial(jax.jit, static_argnames=_STATICS)
def score_samples_blocked(X, params: GMMParams, covariance_type: str = "full", config=None, missing=False):
    """Per-point log-likelihood log p(x_i) (n,), over row blocks.  Inputs unchecked (the jitted core of the
    checked functions here and of scikit-learn's ``score_samples``)."""
    return posterior_blocks(X, params, covariance_type, config, lambda lj, lr, ln: ln, missing)


@partial(jax.jit, static_argnames=_STATICS)
def _impute(X, params: GMMParams, covariance_type: str, config=None, missing=True):
    k, d = params.means.shape
    c, p, _ = about_reference_point(params, covariance_type)
    bs = resolve_block_size(None, X.shape[0], k, d, config=config)
    return map_blocks(lambda xb: jnp.where(jnp.isnan(xb), impute_block(xb - c, p, covariance_type) + c, xb), X, bs)


@partial(jax.jit, static_argnames=_STATICS)
def weighted_log_likelihood(X, w, params: GMMParams, covariance_type: str, config=None, missing=False):
    """sum_i w_i log p(x_i) (w None: unweighted), over row blocks."""
    ll = posterior_blocks(X, params, covariance_type, config, lambda lj, lr, ln: ln, missing)
    return jnp.sum(ll if w is None else w * ll)


def per_row(core, X, params: GMMParams, covariance_type: str, config: Config | None = None, missing=None):
    """``core(X, params, covariance_type, config)`` (a jitted per-row function) on checked inputs.  Outside a
    caller's jit X is padded to its row bucket (:func:`gmm_jax.rows.row_bucket`) and the result cut back to n rows
    on the host, so that nearby row counts share one compiled program.  ``missing='marginalize'``: NaN entries
    of X are missing values, marginalised."""
    cfg = resolve_config(config)
    m = check_missing(missing)
    X, params = model_inputs(X, params, covariance_type, allow_nan=m)
    return bucketed_rows(core, X, params, covariance_type, cfg, m, max_rows=cfg.bucket_max_rows)


def _total_log_likelihood(X, params: GMMParams, covariance_type: str, config: Config | None, missing=None):
    """(sum_i log p(x_i), n, params) on checked inputs, X padded to its row bucket (the padding rows weigh 0)."""
    cfg = resolve_config(config)
    m = check_missing(missing)
    X, params = model_inputs(X, params, covariance_type, allow_nan=m)
    Xp, w, _, _ = bucket_rows(X, None, any_traced(X, params), cfg.bucket_max_rows)  # w: None, or the padding mask
    return weighted_log_likelihood(Xp, w, params, covariance_type, cfg, m), X.shape[0], params


def predict_log_proba(X, params: GMMParams, covariance_type: str = "full", config: Config | None = None, missing=None):
    """Log-responsibilities (n, K) = the E-step, computed over row blocks (``missing='marginalize'``: NaN entries
    marginalised, as in ``fit``; the same for the functions below)."""
    return per_row(_predict_log_proba, X, params, covariance_type, config, missing)


def predict_proba(X, params: GMMParams, covariance_type: str = "full", config: Config | None = None, missing=None):
    """Posterior probabilities p(z = k | x_i) (n, K); rows sum to one."""
    return per_row(_predict_proba, X, params, covariance_type, config, missing)


def predict(X, params: GMMParams, covariance_type: str = "full", config: Config | None = None, missing=None):
    """Most probable component (n,) int32 (maximum a posteriori)."""
    return per_row(_predict, X, params, covariance_type, config, missing)


def score(X, params: GMMParams, covariance_type: str = "full", config: Config | None = None, missing=None):
    """Mean per-point log-likelihood (scikit-learn's ``score``)."""
    total, n, _ = _total_log_likelihood(X, params, covariance_type, config, missing)
    return total / n


def impute(X, params: GMMParams, covariance_type: str = "full", config: Config | None = None):
    """X with every NaN entry replaced by its conditional mean under the mixture, ``sum_k p(k | x_o) E[x_m | x_o,
    k]`` (observed entries unchanged)."""
    return per_row(_impute, X, params, covariance_type, config, "marginalize")


def check_missing(missing) -> bool:
    """The model functions' ``missing``: None (NaN is an error) or 'marginalize'."""
    if missing not in (None, "marginalize"):
        raise ValueError(f"missing must be None or 'marginalize', got {missing!r}")
    return missing is not None


def free_parameters(params, covariance_type: str) -> int:
    """Free parameters of a fitted mixture (a Student-t one: its K degrees of freedom as well)."""
    k, d = params.means.shape
    return n_parameters(covariance_type, k, d) + (k if is_student(params) else 0)


def bic(X, params: GMMParams, covariance_type: str = "full", config: Config | None = None, missing=None):
    """Bayesian information criterion ``-2 log L + p log n`` (lower is better)."""
    total, n, params = _total_log_likelihood(X, params, covariance_type, config, missing)
    return -2.0 * total + free_parameters(params, covariance_type) * math.log(n)


def aic(X, params: GMMParams, covariance_type: str = "full", config: Config | None = None, missing=None):
    """Akaike information criterion ``-2 log L + 2 p`` (lower is better)."""
    total, _, params = _total_log_likelihood(X, params, covariance_type, config, missing)
    return -2.0 * total + 2.0 * free_parameters(params, covariance_type)


def _transform_noise(z, labels, params: GMMParams, covariance_type: str, block_size: int):
    """x_i = mu_{l_i} + L_{l_i} z_i with L the covariance Cholesky; no per-sample D x D gather.

    For full covariances every block computes ``z @ L_k^T`` for all K (one (B, D) x (D, K D) product) and keeps the
    labelled one: O(B K D) scratch per block, O(n D) in all.
    """
    chol = cov_chol_from_prec_chol(params.prec_chol, covariance_type)
    means = params.means
    if covariance_type == "full":
        k, d = means.shape
        lt = jnp.transpose(chol, (2, 0, 1)).reshape(d, k * d)  # z @ lt -> (K*D,) = [L_k z]_k

        def f(row):
            zi, li = row
            return means[li] + (zi @ lt).reshape(k, d)[li]

        return row_map(f, (z, labels), block_size)
    if covariance_type == "tied":
        return means[labels] + z @ chol.T
    if covariance_type == "diag":
        return means[labels] + z * chol[labels]
    return means[labels] + z * chol[labels][:, None]


def t_noise_scale(key, dof):
    """``1 / sqrt(g)``, ``g ~ Gamma(dof / 2, rate dof / 2)`` per entry of ``dof``: Gaussian noise times it is
    Student-t noise (the latent scale of :mod:`gmm_jax.student`)."""
    g = jax.random.gamma(key, 0.5 * dof, dtype=dof.dtype) / (0.5 * dof)
    return lax.rsqrt(g)


@partial(jax.jit, static_argnames=("n_samples", "covariance_type"))
def _sample(key, params: GMMParams, n_samples: int, covariance_type: str):
    k_lab, k_z = jax.random.split(key)
    k, d = params.means.shape
    labels = jax.random.categorical(k_lab, params.log_weights, shape=(n_samples,)).astype(jnp.int32)
    z = jax.random.normal(k_z, (n_samples, d), params.means.dtype)
    if is_student(params):
        z = z * t_noise_scale(jax.random.fold_in(key, 1), params.dof[labels])[:, None]
    bs = resolve_block_size(None, n_samples, k, d)
    return _transform_noise(z, labels, params, covariance_type, bs), labels


def sample(key, params: GMMParams, n_samples: int, covariance_type: str = "full"):
    """Draw ``n_samples`` (>= 1) points from the mixture.

    Outside a caller's ``jit`` the draw is of :func:`gmm_jax.rows.row_bucket` ``(n_samples)`` points, of which the
    first ``n_samples`` are returned: nearby sizes share one compiled program, and for one key a smaller sample is
    the beginning of a larger one in the same bucket.

    Returns:
      (X (n, D), labels (n,) int32): points and the component each was drawn from.
    """
    n_samples = check_positive_int(n_samples, "n_samples")
    params = model_params(params, covariance_type)
    if any_traced(key, params):
        return _sample(key, params, n_samples, covariance_type)
    X, labels = _sample(key, params, row_bucket(n_samples), covariance_type)
    return to_device(np.asarray(X)[:n_samples]), to_device(np.asarray(labels)[:n_samples])


@partial(jax.jit, static_argnames=("n_samples", "covariance_type"))
def _sample_component(key, params: GMMParams, component, n_samples: int, covariance_type: str):
    d = params.means.shape[1]
    chol = cov_chol_from_prec_chol(params.prec_chol, covariance_type)

    def one(key, c):
        z = jax.random.normal(key, (n_samples, d), params.means.dtype)
        if is_student(params):
            z = z * t_noise_scale(jax.random.fold_in(key, 1), jnp.full((n_samples,), params.dof[c]))[:, None]
        if covariance_type == "full":
            return params.means[c] + z @ chol[c].T
        if covariance_type == "tied":
            return params.means[c] + z @ chol.T
        return params.means[c] + z * chol[c]

    if component.ndim == 0:
        return one(key, component)
    keys = jax.random.split(key, component.shape[0])
    return jax.vmap(one)(keys, component)


def sample_component(key, params: GMMParams, component, n_samples: int, covariance_type: str = "full"):
    """Class-conditional generation: ``n_samples`` points from component(s) ``component``.

    Args:
      key: PRNG key.
      params: mixture parameters.
      component: an integer in [0, K), or an integer array of shape (m,) of them.
      n_samples: points per component (>= 1).

    Returns:
      (n_samples, D) for a scalar ``component``; (m, n_samples, D) for an array.
    """
    n_samples = check_positive_int(n_samples, "n_samples")
    params = model_params(params, covariance_type)
    check_component(component, params.means.shape[0])
    return _sample_component(key, params, to_device(component, jnp.int32), n_samples, covariance_type)
