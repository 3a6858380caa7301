"""Every number of components in one compiled program: model selection over K (BIC/AIC curves) without a
compilation per K.

Each K in ``n_components`` is a mixture of ``K_max = max(n_components)`` components whose components beyond K are
*inactive*: their log-weight is :data:`INACTIVE` (finite, so the loop's finiteness checks hold), they take no
point in the E-step (responsibility exactly 0) and the M-step keeps them so (:func:`mask_components` renormalises
the active weights).  The active components then follow exactly the iterates of a K-component fit from the same
initial parameters (tests).  All (K, restart) pairs run in one vmapped EM loop (:func:`gmm_jax.loop.em_run`).

Initialisation (``fit``'s ``init="kmeans"`` with the seeds shared along the path): per restart, greedy k-means++
draws ``K_max`` seeds once; the mixture with K components starts from the first K of them (nested seeds, as
k-means++ is sequential), refined by Lloyd's iterations on those K (:func:`masked_lloyd`), each point assigned to
its nearest centre, then the M-step.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gmm_jax.config import Config, any_traced, resolve_config, to_device
from gmm_jax.engine import stats_pass
from gmm_jax.initialization import init_context, map_restarts
from gmm_jax.lloyd import assign_block
from gmm_jax.loop import Context, compiler_options, em_finish, em_run, em_state, key_input, program, restart_keys
from gmm_jax.params import GMMParams, is_student, n_parameters, with_dof
from gmm_jax.rows import bucket_rows, resolve_block_size
from gmm_jax.seeding import kmeans_plusplus
from gmm_jax.stats import INACTIVE, active_mask, m_step, mask_components


class PathResult(NamedTuple):
    """Result of :func:`fit_path` (one entry per K of ``n_components``, the best restart of each).

    Attributes:
      n_components: (nK,) the K values, in the order given.
      params: tuple of ``GMMParams`` with K components each.
      log_likelihood: (nK,) mean (weighted) log-likelihood per point of ``params``.
      bic, aic: (nK,) ``-2 sum_i w_i log p(x_i) + p log(sum_i w_i)`` and ``... + 2 p`` (p: free parameters; without
        sample weights, :func:`gmm_jax.bic` / :func:`gmm_jax.aic` of ``params``).
      n_iter, converged, finite: (nK,) of the best restart.
      all_log_likelihood: (nK, R) every restart's final mean log-likelihood.
      best: the K with the lowest BIC.
    """

    n_components: np.ndarray
    params: tuple
    log_likelihood: np.ndarray
    bic: np.ndarray
    aic: np.ndarray
    n_iter: np.ndarray
    converged: np.ndarray
    finite: np.ndarray
    all_log_likelihood: np.ndarray
    best: int


def seeded_params(X, w, shift, seeds, active, reg_covar, covariance_type: str, bs: int) -> GMMParams:
    """Initial parameters from the active ``seeds`` (shifted): every point to its nearest active seed, the M-step,
    inactive components masked out."""
    c_sq = jnp.where(active, jnp.sum(jnp.square(seeds), axis=1), jnp.inf)  # an inactive seed is never nearest
    k = seeds.shape[0]

    def resp_fn(xs, i):
        return jax.nn.one_hot(assign_block(xs, seeds, c_sq)[0], k, dtype=xs.dtype)

    stats = stats_pass(X, w, shift, seeds, resp_fn, covariance_type, bs)
    return mask_components(m_step(stats, seeds, covariance_type, reg_covar), active)


def masked_lloyd(X, w, shift, seeds, active, tol, bs: int, max_iter: int = 300):
    """Lloyd's iterations on the ``active`` centres (shifted) until the squared shift of the centres is at most
    ``tol`` (K-means' tolerance) or ``max_iter`` steps; an active centre left without points stays where it is."""
    k = seeds.shape[0]

    def step(c):
        c_sq = jnp.where(active, jnp.sum(jnp.square(c), axis=1), jnp.inf)
        stats = stats_pass(X, w, shift, c, lambda xs, i: jax.nn.one_hot(assign_block(xs, c, c_sq)[0], k, dtype=xs.dtype),
                           "spherical", bs)
        return c + stats.sx / jnp.where(stats.nk > 0, stats.nk, 1)[:, None]

    def body(s):
        it, c, _ = s
        new = step(c)
        return it + 1, new, jnp.sum(jnp.square(new - c))

    s0 = (jnp.zeros((), jnp.int32), seeds, jnp.asarray(jnp.inf, seeds.dtype))
    return lax.while_loop(lambda s: (s[0] < max_iter) & (s[2] > tol), body, s0)[1]


def path_body(keys, X, w, tol, reg_covar, dof0=None, *, ks: tuple, covariance_type, max_iter, block_size, mask=None,
              weighted=True, config=None, fixed: tuple = ()):
    """All K and restarts as one traced function: per (K, restart) the outputs of :func:`gmm_jax.loop.em_finish`
    with a leading (nK, R) pair of axes; means in data coordinates.  ``dof0`` (K_max,): a Student-t path."""
    cfg = resolve_config(config)
    k_max, bs = max(ks), block_size
    shift, wsum, _, tol_kmeans = init_context(X, w, reg_covar, n_components=k_max, covariance_type=covariance_type,
                                              init="kmeans", bs=bs, mask=mask)

    def seed(key):
        return kmeans_plusplus(key, X, k_max, w if weighted else None, block_size=bs, mask=mask, config=cfg)[0] - shift

    seeds = map_restarts(seed, keys)  # (R, K_max, D)
    active = jnp.arange(k_max)[None, :] < jnp.asarray(ks)[:, None]  # (nK, K_max)
    r = seeds.shape[0]
    seeds_all = jnp.broadcast_to(seeds[None], (len(ks),) + seeds.shape).reshape((-1,) + seeds.shape[1:])
    active_all = jnp.repeat(active, r, axis=0)
    ctx = Context(X, w, shift, wsum, None)
    kw = dict(covariance_type=covariance_type, bs=bs, config=cfg)

    def one(s, a):
        centers = masked_lloyd(X, w, shift, s, a, tol_kmeans, bs)
        p0 = seeded_params(X, w, shift, centers, a, reg_covar, covariance_type, bs)
        if dof0 is not None:
            p0 = with_dof(p0, dof0)
        state = em_run(em_state(p0, max_iter, X.dtype), ctx, tol, reg_covar, max_iter, masked=True, fixed=fixed,
                       **kw)
        return em_finish(state, ctx, **kw)

    out = jax.vmap(one)(seeds_all, active_all)
    out = jax.tree.map(lambda a: a.reshape((len(ks), r) + a.shape[1:]), out)
    params = out[0]
    return (params._replace(means=params.means + shift),) + tuple(out[1:])


PATH_STATICS = ("ks", "covariance_type", "max_iter", "block_size", "weighted", "config", "fixed")


def fit_path(key, X, n_components=range(1, 9), *, covariance_type: str = "full", n_restarts: int = 1,
             max_iter: int = 100, tol: float = 1e-3, reg_covar: float = 1e-6, sample_weight=None, block_size=None,
             family: str = "gaussian", dof=None, fixed=(), config: Config | None = None) -> PathResult:
    """Fit a Gaussian mixture for every K in ``n_components``, all in one compiled program (one compilation for
    the whole path, whatever the number of K values), and score each by BIC and AIC.

    Each K's result equals :func:`gmm_jax.fit` with K components from the same initial parameters (see the module
    docstring for the initialisation: nested k-means++ seeds per restart).  Arguments as :func:`gmm_jax.fit`
    (``family``, ``dof``, ``fixed``: a Student-t path, its initial or fixed degrees of freedom, a number);
    ``key``: one PRNG key (split into ``n_restarts``) or a batch of restart keys, shared by every K.

    Returns:
      :class:`PathResult`; ``result.best`` is the K with the lowest BIC.

    Example:
      >>> path = gmm_jax.fit_path(jax.random.key(0), X, range(1, 9), n_restarts=4)
      >>> path.best, path.bic
    """
    from gmm_jax.validation import check_dof, check_family, check_fixed, check_positive_int, validate_fit

    ks = tuple(check_positive_int(k, "n_components") for k in np.atleast_1d(np.asarray(list(n_components))).tolist())
    if not ks:
        raise ValueError("n_components must name at least one K")
    cfg = resolve_config(config)
    family = check_family(family)
    fixed = check_fixed(fixed, family)
    keys, n_restarts, n_split = key_input(key, n_restarts)
    keys = restart_keys(keys, n_split) if n_split else keys
    X, w, _ = validate_fit(X, max(ks), covariance_type, "k-means++", None, max_iter, tol, reg_covar, sample_weight,
                           n_restarts)
    if any_traced(keys, X, w):
        raise ValueError("fit_path runs its own compiled program and returns host arrays: call it outside jit")
    n = X.shape[0]
    total_w = float(n if w is None else jnp.sum(w))
    X, w, mask, weighted = bucket_rows(X, w, False, cfg.bucket_max_rows)
    bs = resolve_block_size(block_size, X.shape[0], max(ks), X.shape[1], n_restarts * len(ks), cfg)
    dof0 = None if family == "gaussian" else check_dof(10.0 if dof is None else float(dof), max(ks), X.dtype)
    run = program(path_body, PATH_STATICS, compiler_options(covariance_type, X.shape[0], cfg))
    out = run(keys, X, w, jnp.asarray(tol, X.dtype), jnp.asarray(reg_covar, X.dtype), dof0, mask=mask, ks=ks,
              covariance_type=covariance_type, max_iter=max_iter, block_size=bs, weighted=weighted, config=cfg,
              fixed=fixed)
    return path_result(ks, out, covariance_type, X.shape[1], total_w, "dof" not in fixed)


def path_result(ks: tuple, out, covariance_type: str, d: int, total_w: float, dof_free: bool = True) -> PathResult:
    """The best restart of each K, trimmed to its K components, with its BIC and AIC (on the host; a Student-t
    path's free parameters include its K degrees of freedom when ``dof_free``)."""
    params, ll, _, n_iter, conv, finite, _, _ = jax.tree.map(np.asarray, out)
    score = np.where(finite & np.isfinite(ll), ll, -np.inf)
    best = np.argmax(score, axis=1)
    rows = np.arange(len(ks))
    student = is_student(params)

    def trim(i, k):
        pc = params.prec_chol[i, best[i]] if covariance_type == "tied" else params.prec_chol[i, best[i], :k]
        g = GMMParams(to_device(params.log_weights[i, best[i], :k]), to_device(params.means[i, best[i], :k]),
                      to_device(pc))
        return with_dof(g, to_device(params.dof[i, best[i], :k])) if student else g

    trimmed = tuple(trim(i, k) for i, k in enumerate(ks))
    best_ll = ll[rows, best]
    p = np.array([n_parameters(covariance_type, k, d) + (k if student and dof_free else 0) for k in ks], np.float64)
    bic = -2.0 * best_ll * total_w + p * math.log(total_w)
    aic = -2.0 * best_ll * total_w + 2.0 * p
    return PathResult(np.asarray(ks), trimmed, best_ll, bic, aic, n_iter[rows, best], conv[rows, best],
                      finite[rows, best], ll, int(ks[int(np.argmin(np.where(np.isfinite(bic), bic, np.inf)))]))


__all__ = ["INACTIVE", "PathResult", "active_mask", "fit_path", "mask_components", "masked_lloyd", "path_body", "path_result",
           "seeded_params"]
