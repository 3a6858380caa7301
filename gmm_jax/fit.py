"""EM for Gaussian mixtures: one jitted entry point, ``lax.while_loop`` iterations, restarts by ``vmap``.

Each iteration is one pass over row blocks that computes the E-step and accumulates the sufficient statistics
(about the current means) block by block, so scratch memory is one block's worth, then the closed-form M-step.
The data are never copied: a reference point near the data's mean is subtracted block by block, which keeps
float32 accurate for data with a large offset.
"""

from __future__ import annotations

import functools
import math
import sys
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.special import logsumexp

from gmm_jax._blocks import (
    any_traced,
    block_reduce,
    block_slices,
    bucket_rows,
    data_shift,
    n_blocks,
    on_accelerator,
    psum,
    resolve_block_size,
)
from gmm_jax.em import SuffStats, m_step, stats_centered
from gmm_jax.kmeans import _assign_block, _lloyd, kmeans_plusplus, kmeans_tolerance, lloyd_restarts
from gmm_jax.params import GMMParams, log_det_prec_chol, prec_chol_from_covariances

# float32 products at full precision on every backend (GPUs would otherwise use TF32 for float32)
HIGHEST = lax.Precision.HIGHEST


class FitResult(NamedTuple):
    """Result of :func:`fit` (R = number of restarts, T = max_iter).

    Attributes:
      params: ``GMMParams`` of the best restart (highest final log-likelihood among finite restarts).
      best: () index of the best restart.
      log_likelihood: (R,) mean (weighted) log-likelihood per point of each restart's returned parameters.
      lower_bound: (R,) scikit-learn's ``lower_bound_``: the mean log-likelihood computed in the last iteration's
        E-step, i.e. of the parameters *before* the last M-step.
      n_iter: (R,) EM iterations run.
      converged: (R,) |change of mean log-likelihood| < tol reached within max_iter.
      finite: (R,) False if an update produced non-finite values (the last finite parameters are kept).
      trace: (R, T) mean log-likelihood at each iteration's E-step; entries at and after ``n_iter`` are NaN.
      counts: (R, K) effective (weighted) number of points per component under the returned parameters; a
        component with a count below 1 is (near-)empty.
      all_params: ``GMMParams`` with a leading (R,) axis: every restart's parameters.
    """

    params: GMMParams
    best: jax.Array
    log_likelihood: jax.Array
    lower_bound: jax.Array
    n_iter: jax.Array
    converged: jax.Array
    finite: jax.Array
    trace: jax.Array
    counts: jax.Array
    all_params: GMMParams


def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def _stats_pass(X, w, shift, center, resp_fn, covariance_type, bs, axis_name=None):
    """Sufficient statistics about ``center`` with responsibilities ``resp_fn(xs, i) -> (B, K)`` per block."""

    def fn(xb, wb, i):
        xs = xb - shift
        resp = resp_fn(xs, i) * wb[:, None]
        return _block_stats(xs, resp, center, covariance_type)

    return block_reduce(fn, X, bs, w, axis_name)


def _log_prob_factors(params: GMMParams, covariance_type: str):
    """Per-pass constants of the blocked log-density, computed once outside the block loop."""
    k, d = params.means.shape
    const = -0.5 * d * math.log(2 * math.pi) + log_det_prec_chol(params.prec_chol, covariance_type, d)
    if covariance_type == "full":
        u_all = jnp.transpose(params.prec_chol, (1, 0, 2)).reshape(d, k * d)
        return u_all, jnp.einsum("kd,kde->ke", params.means, params.prec_chol, precision=HIGHEST), const
    if covariance_type == "tied":
        return params.prec_chol, jnp.matmul(params.means, params.prec_chol, precision=HIGHEST), const
    return params.prec_chol, params.means, const


def _block_log_prob(xs, factors, covariance_type: str):
    """Log-densities of a block of shifted points: component-major (K, B) for full and tied covariances (one large
    matrix product), point-major (B, K) for diagonal and spherical ones (broadcasts).

    For full covariances ``(x - mu_k) U_k = x U_k - mu_k U_k`` computes every component's whitened residual with a
    single (K D, D) x (D, B) product instead of K small ones; the data are already centred on the data's mean, so
    the subtraction only loses precision for clusters thousands of standard deviations from that mean.  The
    component-major orientation makes the sums over D and the log-sum-exp over K run across contiguous rows of
    length B (XLA's CPU backend vectorises those; along 8-64-wide minor axes it does not): one full pass 1.3x
    faster at n=1e5, d=16, K=16 and 1.6x at n=1e6, d=8, K=16 than the (B, K D) product, equal at d=64.
    """
    a, b, const = factors
    if covariance_type in ("full", "tied"):
        z = jnp.matmul(a.T, xs.T, precision=HIGHEST)  # (K D, B) full, (D, B) tied
        z = z.reshape(b.shape + (xs.shape[0],)) if covariance_type == "full" else z[None]
        y = z - b[:, :, None]  # (K, D, B)
        return -0.5 * jnp.sum(jnp.square(y), axis=1) + jnp.expand_dims(const, -1)
    if covariance_type == "diag":
        y = (xs[:, None, :] - b[None]) * a[None]
    else:
        y = (xs[:, None, :] - b[None]) * a[None, :, None]
    return -0.5 * jnp.sum(jnp.square(y), axis=-1) + const


def _block_stats(xs, resp, center, covariance_type: str, component_major: bool = False) -> SuffStats:
    """Sufficient statistics of a block about ``center``; full/tied second moments as K-batched products (full
    covariances with D <= ``SMALL_D`` elementwise, component-major).  ``resp``: (B, K), or (K, B) with
    ``component_major`` (full and tied only)."""
    if covariance_type not in ("full", "tied"):
        return stats_centered(xs[:, None, :] - center[None], resp, covariance_type)
    if covariance_type == "full" and xs.shape[1] <= SMALL_D:
        return _small_full_stats(xs.T[None] - center[:, :, None], resp if component_major else resp.T)
    # S_k = sum_b r_bk xc xc^T = (sqrt(r) xc)^T (sqrt(r) xc): one symmetric product per component, which XLA's
    # CPU backend runs about twice as fast as scaling only one operand.  Only s = sqrt(r) (x - c) is formed
    # (component-major, (K, B, D)); the first moments come from s as well, so the differences x - c are never
    # written out on their own (11-22% faster per pass on the CPU grid than forming them first).
    rt = resp if component_major else resp.T
    sq = jnp.sqrt(rt)
    nk = jnp.sum(rt, axis=1)
    s = sq[:, :, None] * (xs[None, :, :] - center[:, None, :])
    sx = jnp.einsum("kb,kbd->kd", sq, s, precision=HIGHEST)
    if covariance_type == "full":
        sxx = jnp.matmul(jnp.swapaxes(s, 1, 2), s, precision=HIGHEST)
    else:
        kb = s.shape[0] * s.shape[1]
        sxx = jnp.matmul(s.reshape(kb, -1).T, s.reshape(kb, -1), precision=HIGHEST)
    return SuffStats(nk, sx, sxx)


# Full covariances with at most this many features take the component-major elementwise pass.
SMALL_D = 3


def _small_full_block(xs, wb, params, const, with_stats):
    """E-step and statistics of one block for full covariances with few features (D <= ``SMALL_D``).

    Component-major and elementwise: differences (K, D, B), whitened residuals by D unrolled multiply-adds, and
    every reduction (logsumexp over K, sums over the block) along rows or across contiguous rows of length B.
    Measured on a 2-core CPU (one pass, data passed as an argument) against the component-major product form:
    n=2000, K=5: D = 2 about equal for one restart, 1.7-2.7x faster for 32 vmapped restarts (whose batched
    (D, B) x (B, D) products are tiny); D = 3 1.7x / 2.8-3.6x; D = 4 0.75x / 0.65-0.9x; n=1e5, K=8, one restart:
    D = 3 2.1x, D = 4 1.0x; hence the threshold.
    """
    k, d = params.means.shape
    xc = xs.T[None] - params.means[:, :, None]  # (K, D, B)
    u = params.prec_chol
    y = xc[:, 0, None, :] * u[:, 0, :, None]
    for j in range(1, d):
        y = y + xc[:, j, None, :] * u[:, j, :, None]
    lj = (const + params.log_weights)[:, None] - 0.5 * jnp.sum(jnp.square(y), axis=1)  # (K, B)
    ln = logsumexp(lj, axis=0)
    resp = jnp.exp(lj - ln[None]) * wb[None]
    ll = jnp.sum(jnp.where(wb > 0, wb * ln, 0.0))
    if not with_stats:
        return jnp.sum(resp, axis=1), ll
    return _small_full_stats(xc, resp), ll


def _small_full_stats(xc, resp) -> SuffStats:
    """Full-covariance statistics from component-major differences ``xc`` (K, D, B) and weighted responsibilities
    ``resp`` (K, B), elementwise (D <= ``SMALL_D``)."""
    rx = resp[:, None, :] * xc
    sxx = jnp.stack([jnp.sum(rx * xc[:, j, None, :], axis=-1) for j in range(xc.shape[1])], axis=1)
    return SuffStats(jnp.sum(resp, axis=1), jnp.sum(rx, axis=-1), sxx)


# A pass takes the product form when ``g`` (:func:`product_error_bound`) is at most PRODUCT_TOL (diag, spherical,
# tied) or PRODUCT_TOL_FULL (full), otherwise the centred form.  Measured in float32 against float64 (one pass at
# fixed parameters; blobs with d = 4-64, components 1-16 standard deviations apart, offset 100): the relative error
# of the second moments (full/tied: against the smallest variance) was 0.003-0.22 g for diag/spherical/tied and
# 0.09-1.25 g for full (the centred form's 0.7-40e-7), the mean log-density per point off by at most 6e-5 nats;
# so at most ~2e-4 (diag/spherical/tied) and ~4e-4 (full) where the product form is taken -- below the sampling
# error of a variance estimated from fewer than 10^7 points.
PRODUCT_TOL = 1e-3
PRODUCT_TOL_FULL = 3e-4


def _product_factors(params: GMMParams, covariance_type: str, factors):
    """Factors of the log-densities as products with the raw (shifted) coordinates, from the centred ``factors``
    of :func:`_log_prob_factors` (full: those, the log-weights added to the offsets).

    diag/spherical, ``a = 1 / var``: ``log N(x) = sum_d (-a/2) x^2 + sum_d (a mu) x - sum_d a mu^2 / 2 + const``;
    returns (-a/2 (K, D), a mu (K, D), offsets (K,)); spherical: -a/2 (K,), applied to |x|^2.
    tied, ``z = U^T x``, ``b_k = U^T mu_k``: ``log N(x) = -|z|^2 / 2 + b_k . z - |b_k|^2 / 2 + const``; returns
    (U (D, D), b (K, D), offsets (K,))."""
    u, b, const = factors
    const = const + params.log_weights
    if covariance_type == "full":  # the centred log-densities (only the statistics take the product form)
        return u, b, const
    if covariance_type == "tied":
        return u, b, const - 0.5 * jnp.sum(jnp.square(b), axis=1)
    mu = params.means
    a = jnp.square(params.prec_chol)
    if covariance_type == "spherical":  # -a/2 multiplies |x|^2 (one number per point): (K,)
        return -0.5 * a, a[:, None] * mu, const - 0.5 * a * jnp.sum(jnp.square(mu), axis=1)
    return -0.5 * a, a * mu, const - 0.5 * jnp.sum(a * jnp.square(mu), axis=1)


def _quadratic_features(xs):
    """(B, D) -> (B, D (D + 1) / 2): the products x_i x_j, i <= j, in ``np.triu_indices`` order."""
    d = xs.shape[1]
    return jnp.concatenate([xs[:, i:i + 1] * xs[:, i:] for i in range(d)], axis=1)


# Full covariances take the product form (quadratic features) from SMALL_D + 1 up to this many features.  One
# pass, n = 2e5 (1e6 for D = 8), K = 16, against the centred form: D = 4 2.4x, 6 1.7x, 8 1.3x, 10 1.3x, 12 1.2x
# faster; D = 16 equal and D = 32 0.7x (writing the (B, D (D + 1) / 2) features costs what the products save).
QUAD_MAX_D = 12


# Fewer rows than this: no product form (both branches of the pass would be compiled, 0.2-0.4 s more for a first
# call at n=500, for a pass that takes well under a millisecond either way).
PRODUCT_MIN_ROWS = 16384


def _has_product_form(covariance_type: str, d: int) -> bool:
    """Whether passes of this covariance type and dimension have a product form (full: SMALL_D < d <= QUAD_MAX_D)."""
    return covariance_type != "full" or SMALL_D < d <= QUAD_MAX_D


def _product_applies(covariance_type: str, n: int, d: int) -> bool:
    """Whether a single fit of this covariance type and shape compiles the product form (see :func:`_em_pass`)."""
    return n >= PRODUCT_MIN_ROWS and _has_product_form(covariance_type, d)


def _product_block(xs, wb, params, pf, covariance_type, with_stats):
    """E-step and statistics of one block as matrix products with raw moments (every covariance type).

    diag: log-densities (K, D) x (D, B) with x*x and with x, statistics (K, B) x (B, D) with the same two: about
    8 n K D flops in products instead of broadcasts over (B, K, D) temporaries; spherical: the same with |x|^2 (one
    number per point) in place of x*x, so half the products.  tied: the whitening
    (D, D) x (D, B), log-densities (K, D) x (D, B), and as statistics the block's scatter x^T x (one (D, B) x (B, D)
    product: the responsibilities of a point sum to its weight) and (K, B) x (B, D) first moments, instead of K
    (D, B) x (B, D) products about the K means.  full (SMALL_D < D <= QUAD_MAX_D): the centred log-densities
    (whitening products; a product form of them with quadratic features was slower at D = 16 and 32 and only 1.1x
    faster at D = 8), then one (K, B) x (B, D (D + 1) / 2) product with the quadratic features x_i x_j instead of
    K (D, B) x (B, D) products about the means.  Returns raw moments about the reference point (summed over the
    blocks, then converted to moments about the current means by :func:`_raw_to_centred`).  These forms subtract
    terms of the size of the data's extent in units of the components' standard deviations, so their rounding
    error grows with it: :func:`product_error_bound` decides whether a pass may use them.
    """
    f1, f2, offsets = pf
    if covariance_type == "full":
        lj = _block_log_prob(xs, (f1, f2, 0.0), "full")
    elif covariance_type == "tied":
        z = jnp.matmul(f1.T, xs.T, precision=HIGHEST)  # (D, B)
        lj = jnp.matmul(f2, z, precision=HIGHEST) - 0.5 * jnp.sum(jnp.square(z), axis=0)[None]
    elif covariance_type == "spherical":
        x2 = jnp.sum(jnp.square(xs), axis=1)  # (B,)
        lj = f1[:, None] * x2[None] + jnp.matmul(f2, xs.T, precision=HIGHEST)
    else:
        x2 = jnp.square(xs)
        lj = jnp.matmul(f1, x2.T, precision=HIGHEST) + jnp.matmul(f2, xs.T, precision=HIGHEST)
    lj = lj + offsets[:, None]  # (K, B)
    # log-sum-exp over K with one exponential per entry (the responsibilities reuse it)
    m = jnp.max(lj, axis=0)
    e = jnp.exp(lj - m[None])
    tot = jnp.sum(e, axis=0)
    ln = m + jnp.log(tot)
    resp = e * (wb / tot)[None]
    ll = jnp.sum(jnp.where(wb > 0, wb * ln, 0.0))
    nk = jnp.sum(resp, axis=1)
    if not with_stats:
        return nk, ll
    s1 = jnp.matmul(resp, xs, precision=HIGHEST)  # sum_b r x
    if covariance_type == "full":
        s2 = jnp.matmul(resp, _quadratic_features(xs), precision=HIGHEST)  # (K, D (D+1) / 2): sum_b r x_i x_j
    elif covariance_type == "tied":
        sw = jnp.sqrt(wb)[:, None] * xs
        s2 = jnp.matmul(sw.T, sw, precision=HIGHEST)  # sum_b w x x^T
    else:
        s2 = jnp.matmul(resp, x2, precision=HIGHEST)  # sum_b r x^2: (K, D), spherical sum_b r |x|^2: (K,)
    return SuffStats(nk, s1, s2), ll


def _raw_to_centred(raw: SuffStats, c, covariance_type: str) -> SuffStats:
    """Raw moments of :func:`_product_block` (summed over blocks) -> moments about the current means ``c``."""
    nk, s1, s2 = raw
    if covariance_type == "full":
        d = c.shape[1]
        iu, ju = np.triu_indices(d)
        s2 = jnp.zeros((c.shape[0], d, d), s2.dtype).at[:, iu, ju].set(s2).at[:, ju, iu].set(s2)
        cs = c[:, :, None] * s1[:, None, :]  # c_k s1_k^T
        sxx = s2 - cs - jnp.swapaxes(cs, 1, 2) + nk[:, None, None] * c[:, :, None] * c[:, None, :]
    elif covariance_type == "tied":
        cs = jnp.matmul(c.T, s1, precision=HIGHEST)  # sum_k c_k s1_k^T
        sxx = s2 - cs - cs.T + jnp.matmul(c.T * nk[None], c, precision=HIGHEST)
    elif covariance_type == "spherical":
        sxx = s2 - 2 * jnp.sum(c * s1, axis=1) + nk * jnp.sum(jnp.square(c), axis=1)
    else:
        sxx = s2 - 2 * c * s1 + nk[:, None] * jnp.square(c)
    return SuffStats(nk, s1 - nk[:, None] * c, sxx)


def data_extent(X, w, shift, bs, axis_name=None):
    """The data's extent about ``shift`` over the rows with positive weight: ``(max_b (x_b - shift)^2`` per feature
    (D,), ``max_b |x_b - shift|^2`` ()).  With ``axis_name`` the maximum over the devices as well."""

    def one(i):
        _, xb, wb = block_slices(X, bs, w, i)
        x2 = jnp.where(wb[:, None] > 0, jnp.square(xb - shift), 0)
        return jnp.max(x2, axis=0), jnp.max(jnp.sum(x2, axis=1))

    acc = one(0)
    nb = n_blocks(X.shape[0], bs)
    if nb > 1:
        acc = lax.fori_loop(1, nb, lambda i, a: jax.tree.map(jnp.maximum, a, one(i)), acc)
    return acc if axis_name is None else lax.pmax(acc, axis_name)


def product_error_bound(extent, params, covariance_type):
    """``g``: a bound on the size of the terms the product form subtracts, in units of float rounding (``eps``),
    for data within ``extent = (e, r2)`` (:func:`data_extent`) of the reference point.

    diag/spherical, ``a = 1 / var``: ``g = eps max_k (min(sum_d a_kd e_d, max_d a_kd r2) + sum_d a_kd mu_kd^2)``;
    tied and full: ``g = eps max_k (lam_k r2 + |U_k^T mu_k|^2)`` with ``lam_k = ||U_k||_1 ||U_k||_inf >=
    ||U_k||_2^2``, the largest eigenvalue of the precision or more.  Errors measured against float64: at
    ``PRODUCT_TOL``'s definition."""
    e, r2 = extent
    eps = jnp.finfo(params.means.dtype).eps
    if covariance_type in ("full", "tied"):
        u = jnp.abs(params.prec_chol)  # (K, D, D) or (D, D)
        lam = jnp.max(jnp.sum(u, axis=-2), axis=-1) * jnp.max(jnp.sum(u, axis=-1), axis=-1)  # (K,) or ()
        b = _log_prob_factors(params, covariance_type)[1]  # U_k^T mu_k
        return eps * jnp.max(lam * r2 + jnp.sum(jnp.square(b), axis=1))
    a = jnp.square(params.prec_chol)  # 1 / var
    if covariance_type == "spherical":
        a = jnp.broadcast_to(a[:, None], params.means.shape)
    xa = jnp.minimum(jnp.sum(a * e[None], axis=1), jnp.max(a, axis=1) * r2)
    return eps * jnp.max(xa + jnp.sum(a * jnp.square(params.means), axis=1))


def _em_pass(X, w, shift, params, covariance_type, bs, with_stats=True, axis_name=None, extent=None):
    """One fused pass: E-step per block, then statistics (or only counts), and the weighted log-likelihood sum.

    ``extent`` (:func:`data_extent`; every covariance type, full ones with SMALL_D < D <= QUAD_MAX_D): the pass
    takes the product form (:func:`_product_block`) when :func:`product_error_bound` is at most ``PRODUCT_TOL``
    (full: ``PRODUCT_TOL_FULL``), else the centred form.  Leave it None under ``vmap`` (restarts), where both
    branches of the ``lax.cond`` would run."""

    factors = _log_prob_factors(params, covariance_type)
    if covariance_type == "full" and params.means.shape[1] <= SMALL_D:
        def small(xb, wb, i):
            return _small_full_block(xb - shift, wb, params, factors[2], with_stats)

        return block_reduce(small, X, bs, w, axis_name)

    km = covariance_type in ("full", "tied")  # component-major (K, B) log-densities and responsibilities
    kax, bax = (0, 1) if km else (1, 0)  # the component axis and the point axis of (K, B) or (B, K)

    def fn(xb, wb, i):
        xs = xb - shift
        lj = _block_log_prob(xs, factors, covariance_type) + jnp.expand_dims(params.log_weights, bax)
        ln = logsumexp(lj, axis=kax)
        resp = jnp.exp(lj - jnp.expand_dims(ln, kax)) * jnp.expand_dims(wb, kax)
        ll = jnp.sum(jnp.where(wb > 0, wb * ln, 0.0))
        if with_stats:
            return _block_stats(xs, resp, params.means, covariance_type, component_major=km), ll
        return jnp.sum(resp, axis=bax), ll

    if extent is None or not _has_product_form(covariance_type, params.means.shape[1]):
        return block_reduce(fn, X, bs, w, axis_name)
    pf = _product_factors(params, covariance_type, factors)

    def prod(xb, wb, i):
        return _product_block(xb - shift, wb, params, pf, covariance_type, with_stats)

    def product_pass():  # raw moments summed over the blocks, then (a linear map) moments about the means
        out = block_reduce(prod, X, bs, w)
        return (_raw_to_centred(out[0], params.means, covariance_type), out[1]) if with_stats else out

    tol = PRODUCT_TOL_FULL if covariance_type == "full" else PRODUCT_TOL
    ok = product_error_bound(extent, params, covariance_type) <= tol
    # the same branch on every device (``extent`` is their maximum); the device sum after the conditional
    out = lax.cond(ok, product_pass, lambda: block_reduce(fn, X, bs, w))
    return psum(out, axis_name)


def _hard_resp(centers):
    c_sq = jnp.sum(jnp.square(centers), axis=1)
    k = centers.shape[0]
    return lambda xs, i: jax.nn.one_hot(_assign_block(xs, centers, c_sq)[0], k, dtype=xs.dtype)


def _data_covariance(X, w, shift, wsum, covariance_type, n_components, reg_covar, bs):
    """Covariance of the whole data set, shaped for ``covariance_type`` and repeated over components."""

    def fn(xb, wb, i):
        xs = xb - shift
        return jnp.sum(wb[:, None] * xs, 0), jnp.matmul((wb[:, None] * xs).T, xs, precision=HIGHEST)

    s1, s2 = block_reduce(fn, X, bs, w)
    m = s1 / wsum
    cov = s2 / wsum - jnp.outer(m, m) + reg_covar * jnp.eye(X.shape[1], dtype=X.dtype)
    if covariance_type == "full":
        return jnp.broadcast_to(cov, (n_components,) + cov.shape)
    if covariance_type == "tied":
        return cov
    diag = jnp.diagonal(cov)
    if covariance_type == "diag":
        return jnp.broadcast_to(diag, (n_components, diag.shape[0]))
    return jnp.full((n_components,), jnp.mean(diag))


def _initial_params(key, X, w, shift, wsum, init_params, data_cov, tol_kmeans, reg_covar, *, n_components,
                    covariance_type, init, bs, mask=None, axis_name=None, weighted=True, centers=None):
    """Initial parameters in shifted coordinates.  Sharded (``axis_name``): ``w`` holds 0 on padding rows, ``mask``
    marks the real rows, ``weighted`` says whether ``w`` carries sample weights (else it is just the mask).
    ``centers``: the (shifted) K-means centres of this restart when already computed (init 'kmeans')."""
    k = n_components
    dtype = X.dtype
    if init_params is not None:
        return init_params._replace(means=init_params.means - shift)
    if init == "random":
        def resp_fn(xs, i):
            r = jax.random.uniform(jax.random.fold_in(key, i), (xs.shape[0], k), dtype)
            return r / jnp.sum(r, axis=1, keepdims=True)

        center = jnp.zeros((k, X.shape[1]), dtype)
        stats = _stats_pass(X, w, shift, center, resp_fn, covariance_type, bs)
        return m_step(stats, center, covariance_type, reg_covar)
    if init == "random_from_data":
        # always with probabilities (uniform when unweighted), so zero-weight padding rows change no draw
        p = (jnp.ones((X.shape[0],), dtype) if w is None else w) / wsum
        idx = jax.random.choice(key, X.shape[0], (k,), replace=False, p=p)
        means = X[idx] - shift
        log_w = jnp.full((k,), -jnp.log(k), dtype)
        return GMMParams(log_w, means, prec_chol_from_covariances(data_cov, covariance_type))
    if centers is not None:
        seeds = centers
    elif init == "kmeans":
        seeds = _kmeans_init_centers(key[None], X, w, shift, tol_kmeans, n_components=k, bs=bs, bs_lloyd=bs,
                                     mask=mask, axis_name=axis_name, weighted=weighted)[0]
    else:
        seeds = kmeans_plusplus(key, X, k, w if weighted else None, block_size=bs, mask=mask, axis_name=axis_name)[0]
        seeds = seeds - shift
    stats = _stats_pass(X, w, shift, seeds, _hard_resp(seeds), covariance_type, bs, axis_name)
    return m_step(stats, seeds, covariance_type, reg_covar)


def _print_progress(it, ll):
    ll = np.atleast_1d(np.asarray(ll))
    print(f"EM iteration {int(it) + 1}: mean log-likelihood " + " ".join(f"{v:.5f}" for v in ll),
          file=sys.stderr, flush=True)


def _init_context(X, w, reg_covar, *, n_components, covariance_type, init, bs, mask=None, axis_name=None):
    """What every restart shares: the reference point, the total weight, and what the initialisation needs (the
    data covariance for 'random_from_data', the K-means tolerance for 'kmeans')."""
    shift = data_shift(X, bs, w, axis_name)
    wsum = jnp.asarray(X.shape[0], X.dtype) if w is None else psum(jnp.sum(w), axis_name)
    data_cov = tol_kmeans = None
    if init == "random_from_data":
        data_cov = _data_covariance(X, w, shift, wsum, covariance_type, n_components, reg_covar, bs)
    if init == "kmeans":
        tol_kmeans = kmeans_tolerance(X, jnp.asarray(1e-4, X.dtype), bs, mask, axis_name, shift)
    return shift, wsum, data_cov, tol_kmeans


def _em_state(params, max_iter: int, dtype):
    """Loop state: (iterations run, params, last mean log-likelihood, trace (T,), converged, finite)."""
    return (
        jnp.zeros((), jnp.int32),
        params,
        jnp.array(-jnp.inf, dtype),
        jnp.full((max_iter,), jnp.nan, dtype),
        jnp.array(False),
        _all_finite(params),
    )


def _em_run(state, X, w, shift, wsum, tol, reg_covar, until, *, covariance_type, bs, axis_name=None, extent=None):
    """EM iterations from ``state`` until ``until`` iterations in all, convergence, or a non-finite update.
    ``extent``: see :func:`_em_pass` (None for a vmapped run)."""

    def cond(s):
        it, _, _, _, converged, finite = s
        return (it < until) & ~converged & finite

    def body(s):
        it, params, prev, trace, _, _ = s
        stats, ll_sum = _em_pass(X, w, shift, params, covariance_type, bs, axis_name=axis_name, extent=extent)
        ll = ll_sum / wsum
        new = m_step(stats, params.means, covariance_type, reg_covar)
        ok = _all_finite(new) & jnp.isfinite(ll)
        params = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, params)
        trace = trace.at[it].set(ll)
        return it + 1, params, ll, trace, jnp.abs(ll - prev) < tol, ok

    return lax.while_loop(cond, body, state)


def _em_finish(state, X, w, shift, wsum, *, covariance_type, bs, axis_name=None, extent=None):
    n_iter, params, lower_bound, trace, converged, finite = state
    counts, ll_sum = _em_pass(X, w, shift, params, covariance_type, bs, with_stats=False, axis_name=axis_name,
                              extent=extent)
    return params, ll_sum / wsum, lower_bound, n_iter, converged, finite, trace, counts


def _start(keys, X, w, init_params, reg_covar, *, n_components, covariance_type, init, max_iter, block_size,
           init_block_size=None, mask=None, axis_name=None, weighted=True, n_split=0):
    """Initialisation of every restart: (loop states with a leading restart axis, reference point, total weight,
    the data's extent for the product form of the passes: None for R > 1 restarts and where
    :func:`_product_applies` says no, see :func:`_em_pass`).
    ``n_split`` > 0: ``keys`` is one key, split here into that many restart keys (inside the compiled program: an
    eager split is a compilation of its own, 0.13 s of the first call)."""
    if n_split:
        keys = restart_keys(keys, n_split)
    shift, wsum, data_cov, tol_kmeans = _init_context(X, w, reg_covar, n_components=n_components,
                                                      covariance_type=covariance_type, init=init, bs=block_size,
                                                      mask=mask, axis_name=axis_name)

    centers = None
    if init == "kmeans" and init_params is None and keys.shape[0] > 1:
        centers = _kmeans_init_centers(keys, X, w, shift, tol_kmeans, n_components=n_components, bs=block_size,
                                    bs_lloyd=init_block_size or block_size, mask=mask, axis_name=axis_name,
                                    weighted=weighted)

    def one(key, c):
        p0 = _initial_params(key, X, w, shift, wsum, init_params, data_cov, tol_kmeans, reg_covar,
                             n_components=n_components, covariance_type=covariance_type, init=init, bs=block_size,
                             mask=mask, axis_name=axis_name, weighted=weighted, centers=c)
        return _em_state(p0, max_iter, X.dtype)

    n_restarts = n_split or keys.shape[0]
    extent = None
    if _product_applies(covariance_type, *X.shape) and n_restarts == 1:
        extent = data_extent(X, w, shift, block_size, axis_name)
    return _map_restarts(one, keys, centers), shift, wsum, extent


def _kmeans_init_centers(keys, X, w, shift, tol_kmeans, *, n_components, bs, bs_lloyd, mask=None, axis_name=None,
                         weighted=True):
    """K-means initialisation of R restarts: k-means++ seeds vmapped, then Lloyd by
    :func:`gmm_jax.kmeans.lloyd_restarts` (one restart after another on a CPU, in blocks sized for one restart;
    vmapped on an accelerator; one restart unbatched).  Returns shifted centres (R, K, D)."""

    def seed(key):
        c = kmeans_plusplus(key, X, n_components, w if weighted else None, block_size=bs, mask=mask,
                            axis_name=axis_name)[0]
        return c - shift

    seeds = _map_restarts(seed, keys)
    # vmapped (accelerator) the Lloyd temporaries are R times larger: keep the restart-aware block size there
    bs_lloyd = bs if on_accelerator() else bs_lloyd
    return lloyd_restarts(lambda c: _lloyd(X, w, shift, c, tol_kmeans, 300, bs_lloyd, mask, axis_name, centers_only=True),
                          seeds)


def _fit_body(keys, X, w, init_params, tol, reg_covar, *, n_components, covariance_type, init, max_iter, block_size,
              init_block_size=None, mask=None, axis_name=None, weighted=True, n_split=0):
    """The whole fit (all restarts) as one traced function; also the per-device program of the sharded fit.
    ``init_block_size``: rows per block of the K-means initialisation's Lloyd steps for R > 1 restarts (default
    ``block_size``)."""
    state, shift, wsum, extent = _start(keys, X, w, init_params, reg_covar, n_components=n_components,
                                        covariance_type=covariance_type, init=init, max_iter=max_iter,
                                        block_size=block_size, init_block_size=init_block_size, mask=mask,
                                        axis_name=axis_name, weighted=weighted, n_split=n_split)
    kw = dict(covariance_type=covariance_type, bs=block_size, axis_name=axis_name, extent=extent)

    def one(s):
        s = _em_run(s, X, w, shift, wsum, tol, reg_covar, max_iter, **kw)
        return _em_finish(s, X, w, shift, wsum, **kw)

    return _collect(_map_restarts(one, state), shift)


def _map_restarts(fn, *args):
    """``vmap`` over the leading restart axis; a batch of one runs unbatched (XLA's CPU kernels are faster without
    the extra axis)."""
    if jax.tree.leaves(args)[0].shape[0] == 1:
        return jax.tree.map(lambda a: a[None], fn(*jax.tree.map(lambda a: a[0], args)))
    return jax.vmap(fn)(*args)


def _collect(out, shift):
    params, ll, lb, n_iter, conv, finite, trace, counts = out
    params = params._replace(means=params.means + shift)
    best = jnp.argmax(jnp.where(finite & jnp.isfinite(ll), ll, -jnp.inf))
    best_params = jax.tree.map(lambda a: a[best], params)
    return FitResult(best_params, best, ll, lb, n_iter, conv, finite, trace, counts, params)


_FIT_STATICS = ("n_components", "covariance_type", "init", "max_iter", "block_size", "init_block_size", "axis_name",
                "weighted", "n_split")

# On a CPU, full-covariance fits of at least PRODUCT_MIN_ROWS rows are compiled with XLA's YNNPACK dot fusion off,
# so their matrix products go to the default dot kernels.  Whole fits, per iteration, float32, interleaved A/B (best
# of 5, this 2-core machine): full 1e6x8x16 96.5 -> 65.1 ms, 1e5x16x16 26.0 -> 24.7, 1e5x64x8 124.7 -> 126.7.  Not
# for tied (5.8 -> 4.8, 21.5 -> 16.4, 27.3 -> 25.1 ms, but 0.3 s more XLA compile time, and its first call then
# reached 1.9-2.0 s against the 2 s target), diag/spherical (1e5x64x8: 6.3 -> 9.7 ms) or K-means (1e6x16x64: 45-53
# -> 53-55 ms).  The option is experimental in XLA: it is probed once and left out where this XLA does not know it.
_CPU_DOT_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


@functools.cache
def _cpu_dot_options_supported() -> bool:
    try:
        jax.jit(lambda x: x + 1, compiler_options=_CPU_DOT_OPTIONS)(np.zeros((), np.float32))
    except Exception:  # an XLA without this option: "No such compile option"
        return False
    return True


def _compiler_options(covariance_type: str, n: int, traced: bool = False) -> tuple:
    """Compiler options (as sorted items) for a fit of this covariance type on ``n`` rows on the current backend;
    none below PRODUCT_MIN_ROWS rows (there the option's 0.04-0.3 s of compile time outweighs any speed) and none
    when ``traced`` (the fit is part of a caller's jit, whose compilation options are the caller's)."""
    if traced or covariance_type != "full" or n < PRODUCT_MIN_ROWS or on_accelerator():
        return ()
    return tuple(sorted(_CPU_DOT_OPTIONS.items())) if _cpu_dot_options_supported() else ()


@functools.cache
def _program(fn, static_argnames: tuple, options: tuple):
    """``jax.jit(fn)`` with these compiler options (one jitted function per combination, so each keeps its cache)."""
    return jax.jit(fn, static_argnames=static_argnames, compiler_options=dict(options) or None)


_fit_jit = _program(_fit_body, _FIT_STATICS, ())


def _fit_program(covariance_type: str, n: int, traced: bool = False):
    """The jitted whole fit :func:`fit` calls for this covariance type and ``n`` rows (``traced``: inside a caller's
    jit)."""
    return _program(_fit_body, _FIT_STATICS, _compiler_options(covariance_type, n, traced))


# Progress: the fit runs in three jitted pieces -- start (initialisation), a chunk of at most ``every`` iterations
# (called repeatedly, the stop count a traced argument so it compiles once), finish -- and the host reports between
# chunks.  Nothing runs on the host inside the loop; the cost is one dispatch and a copy of (R,) counters and the
# (R, T) trace per chunk.  They are compiled with the same options as the whole fit.
def _fit_chunk(state, X, w, shift, wsum, extent, tol, reg_covar, until, *, covariance_type, block_size):
    def one(s):
        return _em_run(s, X, w, shift, wsum, tol, reg_covar, until, covariance_type=covariance_type, bs=block_size,
                       extent=extent)

    return _map_restarts(one, state)


def _fit_finish(state, X, w, shift, wsum, extent, *, covariance_type, block_size):
    def one(s):
        return _em_finish(s, X, w, shift, wsum, covariance_type=covariance_type, bs=block_size, extent=extent)

    return _collect(_map_restarts(one, state), shift)


def _progress_programs(covariance_type: str, n: int):
    """(start, chunk, finish) jitted with the fit's compiler options."""
    opts = _compiler_options(covariance_type, n)
    return (_program(_start, _FIT_STATICS, opts), _program(_fit_chunk, ("covariance_type", "block_size"), opts),
            _program(_fit_finish, ("covariance_type", "block_size"), opts))


def _fit_with_progress(keys, X, w, init_params, tol, reg_covar, report, every, *, n_components, covariance_type,
                       init, max_iter, block_size, init_block_size, n_split=0, mask=None, weighted=True):
    fit_start, fit_chunk, fit_finish = _progress_programs(covariance_type, X.shape[0])
    state, shift, wsum, extent = fit_start(keys, X, w, init_params, reg_covar, n_components=n_components,
                                           covariance_type=covariance_type, init=init, max_iter=max_iter,
                                           block_size=block_size, init_block_size=init_block_size, n_split=n_split,
                                           mask=mask, weighted=weighted)
    done = 0
    while done < max_iter:
        until = min(done + every, max_iter)
        state = fit_chunk(state, X, w, shift, wsum, extent, tol, reg_covar, jnp.asarray(until, jnp.int32),
                          covariance_type=covariance_type, block_size=block_size)
        n_iter, trace = np.asarray(state[0]), np.asarray(state[3])
        top = int(n_iter.max())
        for it in range(done, top):  # one report per iteration, the restarts that already stopped show NaN
            report(it, trace[:, it])
        done = top
        stopped = np.asarray(state[4]) | ~np.asarray(state[5]) | (n_iter >= max_iter)
        if top < until or bool(np.all(stopped)):
            break
    return fit_finish(state, X, w, shift, wsum, extent, covariance_type=covariance_type, block_size=block_size)


def restart_keys(key, n_restarts: int):
    """The per-restart keys :func:`fit` uses: ``jax.random.split(key, n_restarts)``."""
    return jax.random.split(key, n_restarts)


def key_input(key, n_restarts: int):
    """(key or keys, R, n_split) from one PRNG key (to be split into ``n_restarts``: n_split = R) or a 1-D batch of
    keys (typed or raw uint32; n_split = 0)."""
    from gmm_jax._validation import key_form

    keys, form = key_form(key)
    if form == "one":
        return keys, n_restarts, n_restarts
    if form == "batch":
        return keys, keys.shape[0], 0
    raise ValueError(f"key must be a PRNG key or a 1-D batch of keys (one per restart), got shape {keys.shape}")


def key_batch(key, n_restarts: int):
    """(keys (R,), R) from one PRNG key (split into ``n_restarts``) or a 1-D batch of keys (typed or raw uint32)."""
    keys, n_restarts, n_split = key_input(key, n_restarts)
    return (restart_keys(keys, n_split) if n_split else keys), n_restarts


def fit(
    key,
    X,
    n_components: int,
    *,
    covariance_type: str = "full",
    n_restarts: int = 1,
    init: str = "kmeans",
    init_params: GMMParams | None = None,
    max_iter: int = 100,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    sample_weight=None,
    block_size: int | None = None,
    progress=None,
    progress_every: int = 10,
) -> FitResult:
    """Fit a Gaussian mixture by EM, ``n_restarts`` restarts at once (vmapped); the best is returned.

    Iterates E-step / M-step until the mean log-likelihood changes by less than ``tol`` (absolute, per point) or
    ``max_iter`` iterations, as scikit-learn's ``GaussianMixture``.

    Args:
      key: a PRNG key (restart ``r`` uses ``jax.random.split(key, n_restarts)[r]``), or an array of R keys used
        directly, one per restart (``n_restarts`` is then R).
      X: (n, D) data; float64 is kept when ``jax_enable_x64`` is on, anything else becomes float32.
      n_components: K.
      covariance_type: 'full', 'tied', 'diag' or 'spherical'.
      n_restarts: R.
      init: 'kmeans' (k-means++ then Lloyd, hard assignments, M-step), 'k-means++' (seeds, hard assignments,
        M-step), 'random' (random responsibilities, M-step) or 'random_from_data' (K distinct points as means,
        the data covariance, equal weights). Ignored when ``init_params`` is given.
      init_params: explicit initial ``GMMParams`` (warm start), used by every restart.
      max_iter: maximum EM iterations (also the length of ``trace``).
      tol: convergence threshold on the change of the mean log-likelihood.
      reg_covar: added to the covariance diagonals (in data units squared).
      sample_weight: optional (n,) non-negative weights.
      block_size: rows per block (default: the (block, K, D) scratch near 8 MiB on a CPU, 4 MiB for R > 1 restarts
        together, 512 MiB on an accelerator).
      progress: ``True`` prints each iteration's mean log-likelihood per restart to stderr; a callable
        ``f(iteration, log_likelihoods (R,))`` receives them instead (NaN for restarts that already stopped).
        The loop then runs in jitted chunks of ``progress_every`` iterations and the host reports between chunks, so
        nothing leaves the device inside the loop; results are the same as without progress (log-likelihoods up to
        the last bit: the chunk is compiled separately).
      progress_every: iterations per chunk when ``progress`` is set.

    Returns:
      :class:`FitResult`.

    Example:
      >>> res = gmm_jax.fit(jax.random.key(0), X, 3, n_restarts=8)
      >>> labels = gmm_jax.predict(X, res.params)
    """
    from gmm_jax._validation import validate_fit

    keys, n_restarts, n_split = key_input(key, n_restarts)
    X, w, init_params = validate_fit(
        X, n_components, covariance_type, init, init_params, max_iter, tol, reg_covar, sample_weight, n_restarts
    )
    with_progress = not (progress is None or progress is False)
    if with_progress:
        if not (progress is True or callable(progress)):
            raise ValueError(f"progress must be True, False, None or a callable f(iteration, log_likelihoods), got "
                             f"{progress!r}")
        if isinstance(progress_every, bool) or not isinstance(progress_every, int) or progress_every < 1:
            raise ValueError(f"progress_every must be a positive integer, got {progress_every!r}")
    traced = any_traced(keys, X, w, init_params)
    X, w, mask, weighted = bucket_rows(X, w, traced)  # nearby row counts share one compiled fit
    bs = resolve_block_size(block_size, X.shape[0], n_components, X.shape[1], n_restarts)
    statics = dict(n_components=n_components, covariance_type=covariance_type,
                   init=init if init_params is None else "explicit", max_iter=max_iter, block_size=bs,
                   init_block_size=resolve_block_size(block_size, X.shape[0], n_components, X.shape[1]),
                   n_split=n_split, weighted=weighted)
    tol_a, reg_a = jnp.asarray(tol, X.dtype), jnp.asarray(reg_covar, X.dtype)
    if not with_progress:
        return _fit_program(covariance_type, X.shape[0], traced)(keys, X, w, init_params, tol_a, reg_a, mask=mask,
                                                                 **statics)
    return _fit_with_progress(keys, X, w, init_params, tol_a, reg_a, _print_progress if progress is True else progress,
                              progress_every, mask=mask, **statics)


@partial(jax.jit, static_argnames=("n_components", "covariance_type", "init", "block_size", "weighted"))
def _init_jit(key, X, w, reg_covar, mask=None, *, n_components, covariance_type, init, block_size, weighted=True):
    bs = block_size
    shift, wsum, data_cov, tol_kmeans = _init_context(X, w, reg_covar, n_components=n_components,
                                                      covariance_type=covariance_type, init=init, bs=bs, mask=mask)
    p = _initial_params(key, X, w, shift, wsum, None, data_cov, tol_kmeans, reg_covar, n_components=n_components,
                        covariance_type=covariance_type, init=init, bs=bs, mask=mask, weighted=weighted)
    return p._replace(means=p.means + shift)


def initialize(key, X, n_components: int, *, covariance_type: str = "full", init: str = "kmeans",
               reg_covar: float = 1e-6, sample_weight=None, block_size=None) -> GMMParams:
    """The initial parameters :func:`fit` would start one restart from (same key convention as a single key
    passed to ``fit`` with ``n_restarts=1`` is ``restart_keys(key, 1)[0]``)."""
    from gmm_jax._validation import validate_fit

    X, w, _ = validate_fit(X, n_components, covariance_type, init, None, 1, 0.0, reg_covar, sample_weight, 1)
    X, w, mask, weighted = bucket_rows(X, w, any_traced(key, X, w))  # as fit
    bs = resolve_block_size(block_size, X.shape[0], n_components, X.shape[1])
    return _init_jit(key, X, w, jnp.asarray(reg_covar, X.dtype), mask, n_components=n_components,
                     covariance_type=covariance_type, init=init, block_size=bs, weighted=weighted)
