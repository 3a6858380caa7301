"""The fused pass of the EM loop: one pass over row blocks computes the E-step and the sufficient statistics.

:func:`em_pass` is what ``fit``, ``fit_stream`` and ``fit_sharded`` run each iteration.  Its block is
:func:`gmm_jax.density.centred_block` or one of the fast forms of :mod:`gmm_jax.forms` (same signature, same
results), chosen by one rule, :func:`pass_form`, from the covariance type, the dimension and the configuration.
"""

from __future__ import annotations

import functools

from jax import lax

from gmm_jax.config import Config
from gmm_jax.density import centred_block, log_prob_factors
from gmm_jax.forms import product_block, product_error_bound, product_factors, raw_to_centred, small_full_block
from gmm_jax.missing import missing_block
from gmm_jax.params import GMMParams, is_student
from gmm_jax.precision import EXACT, PassPrecision
from gmm_jax.rows import block_reduce, block_rows, psum
from gmm_jax.stats import block_stats
from gmm_jax.student import student_block


def has_product_form(covariance_type: str, d: int, config: Config) -> bool:
    """Whether passes of this covariance type and dimension have a product form (full: only for
    ``small_full_max_d < d <= quad_max_d``)."""
    return covariance_type != "full" or config.small_full_max_d < d <= config.quad_max_d


def product_applies(covariance_type: str, n: int, d: int, config: Config) -> bool:
    """Whether a single fit of this shape compiles the product form (from ``config.product_min_rows`` rows: below,
    compiling both branches costs more than the pass)."""
    return n >= config.product_min_rows and has_product_form(covariance_type, d, config)


def pass_form(covariance_type: str, d: int, config: Config, extent_known: bool) -> str:
    """The one rule: 'small' (full, D <= ``small_full_max_d``), 'guarded' (the product form where its error bound
    allows it, else 'centred'; needs the data's extent), or 'centred' (the reference form)."""
    if covariance_type == "full" and d <= config.small_full_max_d:
        return "small"
    if extent_known and has_product_form(covariance_type, d, config):
        return "guarded"
    return "centred"


def em_pass(X, w, shift, params: GMMParams, covariance_type: str, bs: int, config: Config, with_stats: bool = True,
            axis_name=None, extent=None, labels=None, missing: bool = False, precision: PassPrecision = EXACT):
    """One fused pass over the rows of X: E-step per block, statistics about the current means (or only the
    counts), and the weighted log-likelihood sum.  Parameters in coordinates about ``shift``.

    ``extent`` (:func:`gmm_jax.forms.data_extent`): the pass takes the product form when
    :func:`gmm_jax.forms.product_error_bound` is at most ``config.product_tol`` (full: ``product_tol_full``), else
    the centred form.  Leave it None under ``vmap`` (restarts), where both branches of the ``lax.cond`` would run.
    ``labels``: optional (n,) known labels of the rows (-1: unknown), semi-supervised EM
    (:func:`gmm_jax.density.known_labels`); the log-likelihood is then ``log p(x)`` of the unlabelled rows plus
    ``log p(x, y)`` of the labelled ones.  ``missing``: NaN entries of X are marginalised
    (:func:`gmm_jax.missing.missing_block`; Gaussian mixtures).  ``precision``: of the Gaussian blocks' matrix
    products (:mod:`gmm_jax.precision`; the EM loop chooses it).

    Returns:
      (SuffStats or counts (K,), sum_i w_i log p(x_i)), summed over the devices of ``axis_name``.
    """
    factors = log_prob_factors(params, covariance_type)
    form = pass_form(covariance_type, params.means.shape[1], config, extent is not None)

    def block(fn, f):
        def one(xb, wb, i):
            lab = None if labels is None else block_rows(labels, bs, i)
            return fn(xb - shift, wb, params, f, covariance_type, with_stats, lab)
        return one

    if missing:  # missing values marginalised: its block (reference form only)
        return block_reduce(block(missing_block, factors), X, bs, w, axis_name)
    if is_student(params):  # the Student-t family: its block (reference form only)
        return block_reduce(block(student_block, factors), X, bs, w, axis_name)
    if form == "small":
        return block_reduce(block(small_full_block, factors), X, bs, w, axis_name)
    centred = block(functools.partial(centred_block, small_d=config.small_full_max_d, precision=precision), factors)
    if form == "centred":
        return block_reduce(centred, X, bs, w, axis_name)

    def product_pass():  # raw moments summed over the blocks, then (a linear map) moments about the means
        out = block_reduce(block(functools.partial(product_block, precision=precision),
                                 product_factors(params, covariance_type, factors)), X, bs, w)
        return (raw_to_centred(out[0], params.means, covariance_type), out[1]) if with_stats else out

    tol = config.product_tol_full if covariance_type == "full" else config.product_tol
    ok = product_error_bound(extent, params, covariance_type, precision.unit) <= tol
    # the same branch on every device (``extent`` is their maximum); the device sum after the conditional
    out = lax.cond(ok, product_pass, lambda: block_reduce(centred, X, bs, w))
    return psum(out, axis_name)


def stats_pass(X, w, shift, center, resp_fn, covariance_type: str, bs: int, axis_name=None):
    """Sufficient statistics about ``center`` with given responsibilities ``resp_fn(xs, i) -> (B, K)`` per block
    (initialisations: hard K-means assignments, random responsibilities)."""

    def fn(xb, wb, i):
        xs = xb - shift
        resp = resp_fn(xs, i) * wb[:, None]
        return block_stats(xs, resp, center, covariance_type)

    return block_reduce(fn, X, bs, w, axis_name)


__all__ = ["em_pass", "has_product_form", "pass_form", "product_applies", "stats_pass"]
