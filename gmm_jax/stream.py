"""EM over data that arrive in batches: exact (one pass per iteration) and online (one pass in all).

:func:`fit_stream` is exact: each EM iteration is one pass over the batches accumulating the additive sufficient
statistics and the log-likelihood, then the closed-form M-step, i.e. the same iterations as the in-memory
:func:`gmm_jax.fit` with host memory of one batch.  :func:`fit_online` is stepwise EM (Cappe & Moulines, 2009): a
single pass in which running per-point statistics move towards each batch's statistics with step
``gamma_t = (t + 1) ** -alpha`` and the M-step follows every batch; it is approximate (its accuracy against the
exact fit is measured in ``benchmarks/bench_stream.py`` and the tests).  :func:`array_batches` reads row batches of
an array or ``np.memmap`` and hands the pages of a memmap back to the OS after each batch, so resident memory
stays near one batch even for files larger than memory.
"""

from __future__ import annotations

import mmap
from functools import partial
from typing import Callable, Iterable, Iterator, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gmm_jax.config import Config, all_finite, resolve_config, to_device
from gmm_jax.density import reference_point
from gmm_jax.engine import em_pass, product_applies
from gmm_jax.forms import data_extent
from gmm_jax.params import GMMParams, check_covariance_type
from gmm_jax.rows import default_block_size
from gmm_jax.stats import SuffStats, add_stats, m_step, recenter_stats
from gmm_jax.validation import as_data, check_nonneg_float, check_positive_int, model_params
from gmm_jax.variational import (
    VBPrior,
    check_vb_inputs,
    effective_params,
    lower_bound,
    resp_entropy,
    vb_m_step,
    vb_prior_from_moments,
)


def _batch_pass(x, shift, params: GMMParams, covariance_type: str, config: Config):
    """Statistics about ``params.means`` (shifted coordinates) and the log-likelihood sum of one batch: the fit's
    fused pass (:func:`gmm_jax.engine.em_pass`) over row blocks (scratch of one block, whatever the batch size)."""
    k, d = params.means.shape
    return _em_pass_jit(x, shift, params, covariance_type, default_block_size(x.shape[0], k, d, config=config), config)


@partial(jax.jit, static_argnames=("covariance_type", "bs", "config"))
def _em_pass_jit(x, shift, params, covariance_type, bs, config):
    extent = data_extent(x, None, shift, bs) if product_applies(covariance_type, *x.shape, config) else None
    return em_pass(x, None, shift, params, covariance_type, bs, config, extent=extent)


def array_batches(X, batch_rows: int) -> Callable[[], Iterator[np.ndarray]]:
    """A factory of row batches of ``X`` (array or ``np.memmap``), for :func:`fit_stream` / :func:`fit_online`.

    Each batch is a copy of ``batch_rows`` rows (the last may be shorter).  For a memmap, the pages of each batch are
    released after it is copied (``madvise(MADV_DONTNEED)``; the file is read-only to us), so resident memory does
    not grow with the file.
    """
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
    n = X.shape[0]
    mm = getattr(X, "_mmap", None) if isinstance(X, np.memmap) else None
    row_bytes = X.strides[0] if isinstance(X, np.ndarray) else None
    offset = getattr(X, "offset", 0) if mm is not None else 0

    def gen():
        for start in range(0, n, batch_rows):
            batch = np.array(X[start:start + batch_rows])
            if mm is not None and hasattr(mm, "madvise"):
                lo = (offset + start * row_bytes) // mmap.PAGESIZE * mmap.PAGESIZE
                hi = offset + min(n, start + batch_rows) * row_bytes
                mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
            yield batch

    return gen


def _check_batches(batches):
    if not (callable(batches) or isinstance(batches, (list, tuple))):
        raise TypeError("batches must be a callable returning a fresh iterable per pass, or a list/tuple of arrays "
                        "(a one-shot generator cannot be read twice)")


def _batch(xb, i: int, d: int, dtype, check_values: bool):
    """Batch ``i`` as a (b, D) array of ``dtype``: 2-D with the parameters' D always; non-empty, numeric and finite
    when ``check_values`` (the first pass over the data; a host-side scan of the batch)."""
    if check_values:
        xb = as_data(xb, f"batch {i}")
    elif np.ndim(xb) != 2:
        raise ValueError(f"batch {i} must be 2-D (rows, features), got shape {np.shape(xb)}")
    if np.shape(xb)[1] != d:
        raise ValueError(f"batch {i} has {np.shape(xb)[1]} features, but the initial parameters have {d}")
    return to_device(xb, dtype)


class StreamResult(NamedTuple):
    """Result of :func:`fit_stream`.

    Attributes:
      params: final ``GMMParams`` (the last finite M-step).
      trace: (n_iter,) mean log-likelihood of each iteration's E-step.
      n_iter: EM iterations completed (a pass over the data and a finite M-step each; ``len(trace)``).
      converged: whether the change of the mean log-likelihood fell below ``tol`` before ``max_iter``.
      finite: whether every pass gave a finite log-likelihood and M-step (if not, the loop stopped there and
        ``params`` are the previous ones).
    """

    params: GMMParams
    trace: np.ndarray
    n_iter: int
    converged: bool
    finite: bool


class OnlineResult(NamedTuple):
    """Result of :func:`fit_online`.

    Attributes:
      params: final ``GMMParams``.
      trace: (T,) each batch's mean log-likelihood under the parameters before its update (a prequential score).
      finite: whether every update was finite (a non-finite update is skipped).
    """

    params: GMMParams
    trace: np.ndarray
    finite: bool


def _check_options(init_params, covariance_type: str, reg_covar):
    check_covariance_type(covariance_type)
    check_nonneg_float(reg_covar, "reg_covar")
    return model_params(init_params, covariance_type, name="init_params")


def fit_stream(batches: Callable[[], Iterable] | Iterable, init_params: GMMParams, *, covariance_type: str = "full",
               max_iter: int = 100, tol: float = 1e-3, reg_covar: float = 1e-6,
               config: Config | None = None, variational: VBPrior | None = None) -> StreamResult:
    """Exact EM over batches until the mean log-likelihood changes by less than ``tol``.

    Args:
      batches: a callable returning a fresh iterable of (b, D) arrays for each pass (e.g. :func:`array_batches`),
        or a list/tuple of arrays.  Every batch is checked on the first pass (2-D, D features, finite values:
        ValueError naming the batch, row and column); later passes check shapes only.
      init_params: initial ``GMMParams`` (e.g. :func:`gmm_jax.initialize` on a subsample), checked as
        :func:`gmm_jax.fit` checks them.
      covariance_type, max_iter, tol, reg_covar, config: as :func:`gmm_jax.fit`.
      variational: a :class:`gmm_jax.VBPrior`: variational Bayes (:mod:`gmm_jax.variational`), ``init_params``
        then :class:`gmm_jax.VBParams` (e.g. ``gmm_jax.fit(..., variational=..., max_iter=0)`` on a subsample); a
        first pass over the batches computes the prior's data-dependent defaults; ``trace`` holds the lower bound
        per point and ``tol`` applies to the total, as in :func:`gmm_jax.fit`.

    Returns:
      :class:`StreamResult` (params, trace, n_iter, converged, finite).

    Batches of a repeated shape reuse one compiled pass; give equal-size batches (the last may differ) to keep
    compilations to two.
    """
    _check_batches(batches)
    cfg = resolve_config(config)
    check_positive_int(max_iter, "max_iter")
    check_nonneg_float(tol, "tol")
    prior = None
    if variational is None:
        init_params = _check_options(init_params, covariance_type, reg_covar)
        shift = reference_point(init_params)
    else:
        init_params, prior = _variational_setup(batches, init_params, variational, covariance_type, reg_covar)
        shift = reference_point(effective_params(init_params))
        prior = prior._replace(mean=prior.mean - shift)
    dtype = init_params.means.dtype
    d = init_params.means.shape[1]
    params = init_params._replace(means=init_params.means - shift)
    trace = []
    prev = -np.inf
    converged = False
    finite = True
    for it in range(max_iter):
        pp = params if prior is None else effective_params(params)  # variational Bayes: its E-step's Gaussians
        stats, ll, n = None, 0.0, 0
        for i, xb in enumerate(batches() if callable(batches) else batches):
            xb = _batch(xb, i, d, dtype, check_values=it == 0)
            s, l_b = _batch_pass(xb, shift, pp, covariance_type, cfg)
            stats = s if stats is None else add_stats(stats, s)
            ll = ll + l_b  # summed on the device: no synchronisation per batch
            n += xb.shape[0]
        if stats is None:
            raise ValueError("batches produced no data")
        if prior is None:
            new = m_step(stats, params.means, covariance_type, reg_covar)
            value = float(ll)
        else:
            new = vb_m_step(stats, pp.means, covariance_type, reg_covar, prior)
            value = float(lower_bound(new, resp_entropy(stats, pp, ll, covariance_type), covariance_type))
        if not (np.isfinite(value) and bool(all_finite(new))):
            finite = False
            break
        trace.append(value / n)
        params = new
        if abs(value / n - prev) < tol if prior is None else abs(value - prev) < tol:  # VB: the total, as fit
            converged = True
            break
        prev = value / n if prior is None else value
    return StreamResult(params._replace(means=params.means + shift), np.asarray(trace), len(trace), converged, finite)


def _variational_setup(batches, init_params, variational, covariance_type: str, reg_covar):
    """(the VB initial parameters as device arrays, the prior's arrays from one pass over the batches: the data's
    mean and unbiased covariance, accumulated in float64 about the first batch's mean)."""
    check_covariance_type(covariance_type)
    check_nonneg_float(reg_covar, "reg_covar")
    k, d = np.shape(getattr(init_params, "means", np.zeros((0, 0))))
    dtype = np.asarray(getattr(init_params, "means", np.zeros(0))).dtype
    init_params = check_vb_inputs(variational, init_params, k, d, dtype, required=True)
    n, c, s1, s2 = 0, None, np.zeros(d), np.zeros((d, d))
    for i, xb in enumerate(batches() if callable(batches) else batches):
        x = np.asarray(as_data(xb, f"batch {i}"), np.float64)
        if x.shape[1] != d:
            raise ValueError(f"batch {i} has {x.shape[1]} features, but the initial parameters have {d}")
        c = x.mean(axis=0) if c is None else c
        xc = x - c
        n, s1, s2 = n + x.shape[0], s1 + xc.sum(axis=0), s2 + xc.T @ xc
    if n == 0:
        raise ValueError("batches produced no data")
    mean = s1 / n
    cov = (s2 - n * np.outer(mean, mean)) / (n - 1) if n > 1 else np.eye(d)
    prior = vb_prior_from_moments(variational, c + mean, cov, k, covariance_type, dtype)
    return init_params, prior


@partial(jax.jit, static_argnames=("covariance_type", "config"))
def _online_step(running: SuffStats, center, x, shift, params: GMMParams, gamma, reg_covar, *, covariance_type, config):
    stats, ll = _batch_pass(x, shift, params, covariance_type, config)
    stats = jax.tree.map(lambda a: a / x.shape[0], stats)  # per point, so batches of any size mix alike
    running = recenter_stats(running, center, params.means, covariance_type)
    running = jax.tree.map(lambda a, b: (1 - gamma) * a + gamma * b, running, stats)
    new = m_step(running, params.means, covariance_type, reg_covar)
    ok = all_finite(new)
    new = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, params)
    return running, params.means, new, ll / x.shape[0], ok


def fit_online(batches: Iterable, init_params: GMMParams, *, covariance_type: str = "full", step_exponent: float = 0.6,
               reg_covar: float = 1e-6, config: Config | None = None):
    """Online (stepwise) EM: one pass over ``batches``, an M-step after every batch (approximate).

    With ``s_t`` the running per-point sufficient statistics and ``s(B; theta)`` a batch's per-point statistics
    under the current parameters, ``s_t = (1 - gamma_t) s_{t-1} + gamma_t s(B_t; theta_{t-1})``,
    ``gamma_t = (t + 1) ** -step_exponent`` (t = 0, 1, ...; the first batch replaces the initial statistics) and
    ``theta_t = M(s_t)``.  Convergence needs ``0.5 < step_exponent <= 1`` (Cappe & Moulines, 2009).

    Args:
      batches: an iterable (or a callable returning one) of (b, D) arrays, read once.
      init_params: initial ``GMMParams``.
      step_exponent: alpha.
      config: :class:`gmm_jax.Config` (default: the backend's).

    Every batch is checked as it arrives (2-D, D features, finite values: ValueError naming the batch, row and
    column); the updates of the batches before it are then lost with the call.

    Returns:
      :class:`OnlineResult` (params, trace, finite): final parameters, each batch's mean log-likelihood under the
      parameters before its update (a prequential score), and whether every update was finite (a non-finite update
      is skipped).
    """
    if isinstance(step_exponent, bool) or not isinstance(step_exponent, (int, float)) or not 0.5 < step_exponent <= 1.0:
        raise ValueError(f"step_exponent must be in (0.5, 1], got {step_exponent}")
    init_params = _check_options(init_params, covariance_type, reg_covar)
    cfg = resolve_config(config)
    dtype = init_params.means.dtype
    shift = reference_point(init_params)
    params = init_params._replace(means=init_params.means - shift)
    k, d = params.means.shape
    zero = SuffStats(jnp.zeros((k,), dtype), jnp.zeros((k, d), dtype),
                     jnp.zeros(_sxx_shape(covariance_type, k, d), dtype))
    running, center = zero, params.means
    trace, oks = [], []
    for t, xb in enumerate(batches() if callable(batches) else batches):
        gamma = jnp.asarray((t + 1.0) ** (-step_exponent), dtype)
        xb = _batch(xb, t, d, dtype, check_values=True)
        running, center, params, ll, ok = _online_step(running, center, xb, shift, params, gamma,
                                                       jnp.asarray(reg_covar, dtype), covariance_type=covariance_type,
                                                       config=cfg)
        trace.append(ll)
        oks.append(ok)  # kept on the device: no synchronisation per batch
    if not trace:
        raise ValueError("batches produced no data")
    return OnlineResult(params._replace(means=params.means + shift), np.asarray(jnp.stack(trace)),
                        bool(jnp.all(jnp.stack(oks))))


def _sxx_shape(covariance_type, k, d):
    return {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}[covariance_type]
