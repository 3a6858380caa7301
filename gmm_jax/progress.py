"""Progress reports of a fit: the loop runs in jitted chunks and the host reports between them.

The fit runs in three jitted pieces -- start (initialisation), a chunk of at most ``every`` iterations (called
repeatedly, the stop count a traced argument so it compiles once), finish -- compiled with the same options as the
whole fit.  Nothing runs on the host inside the loop; the cost is one dispatch and a copy of (R,) counters and the
(R, T) trace per chunk.
"""

from __future__ import annotations

import sys

import numpy as np

from gmm_jax.initialization import map_restarts
from gmm_jax.loop import FIT_STATICS, collect, compiler_options, em_finish, em_run, program, start


def print_progress(it, ll):
    """The default report: one line per iteration on stderr."""
    ll = np.atleast_1d(np.asarray(ll))
    print(f"EM iteration {int(it) + 1}: mean log-likelihood " + " ".join(f"{v:.5f}" for v in ll),
          file=sys.stderr, flush=True)


def fit_chunk(state, ctx, tol, reg_covar, until, *, covariance_type, block_size, config, fixed=(), missing=False):
    """EM iterations of every restart until ``until`` iterations in all (a traced bound)."""
    def one(s):
        return em_run(s, ctx, tol, reg_covar, until, covariance_type=covariance_type, bs=block_size, config=config,
                      fixed=fixed, missing=missing)

    return map_restarts(one, state)


def fit_finish(state, ctx, *, covariance_type, block_size, config, missing=False):
    """The :class:`gmm_jax.loop.FitResult` of the loop states."""
    def one(s):
        return em_finish(s, ctx, covariance_type=covariance_type, bs=block_size, config=config, missing=missing)

    return collect(map_restarts(one, state), ctx.shift)


def progress_programs(covariance_type: str, n: int, config):
    """(start, chunk, finish) jitted with the fit's compiler options."""
    opts = compiler_options(covariance_type, n, config)
    statics = ("covariance_type", "block_size", "config")
    return (program(start, FIT_STATICS, opts), program(fit_chunk, statics + ("fixed", "missing"), opts),
            program(fit_finish, statics + ("missing",), opts))


def fit_with_progress(keys, X, w, init_params, tol, reg_covar, report, every, *, n_components, covariance_type,
                      init, max_iter, block_size, init_block_size, n_split=0, mask=None, weighted=True, config=None,
                      init_lower_bound=None, labels=None, fixed=(), dof0=None, prior=None, missing=False):
    """:func:`gmm_jax.fit` with ``report(iteration, log_likelihoods (R,))`` called between chunks of ``every``."""
    fit_start, chunk, finish = progress_programs(covariance_type, X.shape[0], config)
    state, ctx = fit_start(keys, X, w, init_params, reg_covar, n_components=n_components,
                           covariance_type=covariance_type, init=init, max_iter=max_iter, block_size=block_size,
                           init_block_size=init_block_size, n_split=n_split, mask=mask, weighted=weighted,
                           config=config, init_lower_bound=init_lower_bound, labels=labels, dof0=dof0, prior=prior,
                           missing=missing)
    kw = dict(covariance_type=covariance_type, block_size=block_size, config=config)
    done = 0
    while done < max_iter:
        until = min(done + every, max_iter)
        state = chunk(state, ctx, tol, reg_covar, np.int32(until), fixed=fixed, missing=missing, **kw)
        n_iter, trace = np.asarray(state.n_iter), np.asarray(state.trace)
        top = int(n_iter.max())
        for it in range(done, top):  # one report per iteration, the restarts that already stopped show NaN
            report(it, trace[:, it])
        done = top
        stopped = np.asarray(state.converged) | ~np.asarray(state.finite) | (n_iter >= max_iter)
        if top < until or bool(np.all(stopped)):
            break
    return finish(state, ctx, missing=missing, **kw)


__all__ = ["fit_chunk", "fit_finish", "fit_with_progress", "print_progress", "progress_programs"]
