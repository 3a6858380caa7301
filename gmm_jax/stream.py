"""Exact EM over data that arrive in batches (a list, a generator factory, or row slices of a ``np.memmap``).

Each EM iteration is one pass over the batches accumulating the additive sufficient statistics (about the
current means) and the log-likelihood, then the closed-form M-step: the same iteration as the in-memory
:func:`gmm_jax.fit`, with host memory of one batch.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np

from gmm_jax.em import add_stats, m_step
from gmm_jax.fit import _block_log_prob, _block_stats, _log_prob_factors
from gmm_jax.params import GMMParams


@partial(jax.jit, static_argnames=("covariance_type",))
def _batch_pass(x, params: GMMParams, covariance_type: str):
    factors = _log_prob_factors(params, covariance_type)
    lj = _block_log_prob(x, factors, covariance_type) + params.log_weights
    ln = jax.nn.logsumexp(lj, axis=-1)
    resp = jnp.exp(lj - ln[:, None])
    return _block_stats(x, resp, params.means, covariance_type), jnp.sum(ln), x.shape[0]


def fit_stream(batches: Callable[[], Iterable] | Iterable, init_params: GMMParams, *, covariance_type: str = "full",
               max_iter: int = 100, tol: float = 1e-3, reg_covar: float = 1e-6):
    """EM over batches until the mean log-likelihood changes by less than ``tol``.

    Args:
      batches: a callable returning a fresh iterable of (b, D) arrays for each pass, or a re-iterable (list).
      init_params: initial ``GMMParams`` (e.g. :func:`gmm_jax.initialize` on a subsample).
      covariance_type, max_iter, tol, reg_covar: as :func:`gmm_jax.fit`.

    Returns:
      (params, trace): final parameters and the mean log-likelihood of each iteration's E-step.

    Batches of a repeated shape reuse one compiled pass; give equal-size batches (the last may differ) to keep
    compilations to two.  Data are not re-centred here: for float32 data with a large offset, subtract a reference
    point first.
    """
    params = init_params
    trace = []
    prev = -np.inf
    for _ in range(max_iter):
        stats, ll, n = None, 0.0, 0
        for xb in (batches() if callable(batches) else batches):
            xb = jnp.asarray(xb, params.means.dtype)
            s, l_b, n_b = _batch_pass(xb, params, covariance_type)
            stats = s if stats is None else add_stats(stats, s)
            ll += float(l_b)
            n += int(n_b)
        if stats is None:
            raise ValueError("batches produced no data")
        mean_ll = ll / n
        trace.append(mean_ll)
        params = m_step(stats, params.means, covariance_type, reg_covar)
        if abs(mean_ll - prev) < tol:
            break
        prev = mean_ll
    return params, np.asarray(trace)
