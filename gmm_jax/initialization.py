"""Initialisation of the EM loop: 'kmeans' (k-means++ then Lloyd), 'k-means++', 'random' (random
responsibilities), 'random_from_data' (K data points as means), each followed by the M-step from the shared
statistics; all in shifted coordinates (about a reference point near the data's mean)."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from gmm_jax.clustering import kmeans_plusplus, kmeans_tolerance, lloyd, lloyd_restarts
from gmm_jax.config import HIGHEST, Config, any_traced, resolve_config
from gmm_jax.density import block_posteriors, log_prob_factors
from gmm_jax.engine import stats_pass
from gmm_jax.lloyd import assign_block
from gmm_jax.params import GMMParams, prec_chol_from_covariances
from gmm_jax.rows import block_reduce, block_rows, bucket_rows, data_shift, psum, resolve_block_size
from gmm_jax.stats import m_step
from gmm_jax.variational import vb_m_step


def map_restarts(fn, *args):
    """``vmap`` over the leading restart axis; a batch of one runs unbatched (XLA's CPU kernels are faster without
    the extra axis)."""
    if jax.tree.leaves(args)[0].shape[0] == 1:
        return jax.tree.map(lambda a: a[None], fn(*jax.tree.map(lambda a: a[0], args)))
    return jax.vmap(fn)(*args)


def hard_resp(centers):
    """Responsibilities of the nearest centre (one-hot), per block."""
    c_sq = jnp.sum(jnp.square(centers), axis=1)
    k = centers.shape[0]
    return lambda xs, i: jax.nn.one_hot(assign_block(xs, centers, c_sq)[0], k, dtype=xs.dtype)


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


def initial_params(key, X, w, shift, wsum, init_params, data_cov, tol_kmeans, reg_covar, *, n_components,
                   covariance_type, init, bs, mask=None, axis_name=None, weighted=True, centers=None, config=None,
                   vb_prior=None):
    """Initial parameters in shifted coordinates.  Sharded (``axis_name``): ``w`` holds 0 on padding rows, ``mask``
    marks the real rows, ``weighted`` says whether ``w`` carries sample weights (else it is just the mask).
    ``centers``: the (shifted) K-means centres of this restart when already computed (init 'kmeans').  ``vb_prior``
    (variational Bayes, :mod:`gmm_jax.variational`): the posterior's hyper-parameters from the initial
    responsibilities instead of the M-step ('kmeans', 'k-means++', 'random')."""
    k = n_components

    def update(stats, center):
        if vb_prior is not None:
            return vb_m_step(stats, center, covariance_type, reg_covar, vb_prior)
        return m_step(stats, center, covariance_type, reg_covar)

    dtype = X.dtype
    if init_params is not None:
        return init_params._replace(means=init_params.means - shift)
    if init == "random":
        def resp_fn(xs, i):
            r = jax.random.uniform(jax.random.fold_in(key, i), (xs.shape[0], k), dtype)
            return r / jnp.sum(r, axis=1, keepdims=True)

        center = jnp.zeros((k, X.shape[1]), dtype)
        stats = stats_pass(X, w, shift, center, resp_fn, covariance_type, bs)
        return update(stats, center)
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
        seeds = kmeans_init_centers(key[None], X, w, shift, tol_kmeans, n_components=k, bs=bs, bs_lloyd=bs,
                                    mask=mask, axis_name=axis_name, weighted=weighted, config=config)[0]
    else:
        seeds = kmeans_plusplus(key, X, k, w if weighted else None, block_size=bs, mask=mask, axis_name=axis_name,
                                config=config)[0]
        seeds = seeds - shift
    stats = stats_pass(X, w, shift, seeds, hard_resp(seeds), covariance_type, bs, axis_name)
    return update(stats, seeds)


def label_scores(X, w, shift, params: GMMParams, labels, covariance_type: str, bs: int):
    """(K classes, K components): sum over the rows labelled c of their responsibilities under ``params`` (shifted
    coordinates); rows labelled -1 add nothing."""
    factors = log_prob_factors(params, covariance_type)
    k = params.means.shape[0]

    def fn(xb, wb, i):
        log_resp = block_posteriors(xb - shift, params, factors, covariance_type)[1]
        onehot = jax.nn.one_hot(block_rows(labels, bs, i), k, dtype=xb.dtype) * wb[:, None]  # -1: a row of zeros
        return jnp.matmul(onehot.T, jnp.exp(log_resp), precision=HIGHEST)

    return block_reduce(fn, X, bs, w)


def greedy_matching(scores):
    """Component of each class (a permutation): repeatedly the largest remaining score, its class and component
    then removed; ties (e.g. classes without labelled rows) go to the lowest indices, so all-zero scores give the
    identity."""
    k = scores.shape[0]

    def step(_, c):
        match, free_r, free_c = c
        s = jnp.where(free_r[:, None] & free_c[None, :], scores, -jnp.inf)
        r, j = jnp.divmod(jnp.argmax(s).astype(jnp.int32), k)
        return match.at[r].set(j), free_r.at[r].set(False), free_c.at[j].set(False)

    init = (jnp.zeros((k,), jnp.int32), jnp.ones((k,), bool), jnp.ones((k,), bool))
    return lax.fori_loop(0, k, step, init)[0]


def labelled_means(X, w, shift, labels, n_components: int, bs: int):
    """(means (K, D) of each class's labelled rows, shifted; has (K,) whether the class has labelled weight)."""
    def resp_fn(xs, i):
        return jax.nn.one_hot(block_rows(labels, bs, i), n_components, dtype=xs.dtype)  # -1: a row of zeros

    center = jnp.zeros((n_components, X.shape[1]), X.dtype)
    stats = stats_pass(X, w, shift, center, resp_fn, "spherical", bs)
    has = stats.nk > 0
    return stats.sx / jnp.where(has, stats.nk, 1)[:, None], has


def match_to_labels(params: GMMParams, X, w, shift, labels, covariance_type: str, bs: int, means=None) -> GMMParams:
    """The initial components reordered so that component ``c`` is the one holding most of class ``c``'s labelled
    rows (:func:`greedy_matching` of :func:`label_scores`), then moved to their labelled rows' mean (``means``:
    :func:`labelled_means`, computed once for all restarts).  Without labelled rows, unchanged."""
    perm = greedy_matching(label_scores(X, w, shift, params, labels, covariance_type, bs))
    pc = params.prec_chol if covariance_type == "tied" else params.prec_chol[perm]
    mu, has = labelled_means(X, w, shift, labels, params.means.shape[0], bs) if means is None else means
    return GMMParams(params.log_weights[perm], jnp.where(has[:, None], mu, params.means[perm]), pc)


def init_context(X, w, reg_covar, *, n_components, covariance_type, init, bs, mask=None, axis_name=None):
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


def kmeans_init_centers(keys, X, w, shift, tol_kmeans, *, n_components, bs, bs_lloyd, mask=None, axis_name=None,
                        weighted=True, config=None):
    """K-means initialisation of R restarts: k-means++ seeds vmapped, then Lloyd by
    :func:`gmm_jax.clustering.lloyd_restarts` (one restart after another on a CPU, in blocks sized for one restart;
    vmapped on an accelerator; one restart unbatched).  Returns shifted centres (R, K, D)."""

    def seed(key):
        c = kmeans_plusplus(key, X, n_components, w if weighted else None, block_size=bs, mask=mask,
                            axis_name=axis_name, config=config)[0]
        return c - shift

    seeds = map_restarts(seed, keys)
    # vmapped (accelerator) the Lloyd temporaries are R times larger: keep the restart-aware block size there
    bs_lloyd = bs if resolve_config(config).accelerator else bs_lloyd
    return lloyd_restarts(lambda c: lloyd(X, w, shift, c, tol_kmeans, 300, bs_lloyd, mask, axis_name, centers_only=True,
                                          config=config), seeds, config)


@partial(jax.jit, static_argnames=("n_components", "covariance_type", "init", "block_size", "weighted", "config"))
def _init_program(key, X, w, reg_covar, mask=None, *, n_components, covariance_type, init, block_size, weighted=True,
                  config=None):
    bs = block_size
    shift, wsum, data_cov, tol_kmeans = init_context(X, w, reg_covar, n_components=n_components,
                                                      covariance_type=covariance_type, init=init, bs=bs, mask=mask)
    p = initial_params(key, X, w, shift, wsum, None, data_cov, tol_kmeans, reg_covar, n_components=n_components,
                       covariance_type=covariance_type, init=init, bs=bs, mask=mask, weighted=weighted, config=config)
    return p._replace(means=p.means + shift)


def initialize(key, X, n_components: int, *, covariance_type: str = "full", init: str = "kmeans",
               reg_covar: float = 1e-6, sample_weight=None, block_size=None, config: Config | None = None) -> GMMParams:
    """The initial parameters :func:`fit` would start one restart from (same key convention as a single key
    passed to ``fit`` with ``n_restarts=1`` is ``restart_keys(key, 1)[0]``)."""
    from gmm_jax.validation import validate_fit

    cfg = resolve_config(config)
    X, w, _ = validate_fit(X, n_components, covariance_type, init, None, 1, 0.0, reg_covar, sample_weight, 1)
    X, w, mask, weighted = bucket_rows(X, w, any_traced(key, X, w), cfg.bucket_max_rows)  # as fit
    bs = resolve_block_size(block_size, X.shape[0], n_components, X.shape[1], config=cfg)
    return _init_program(key, X, w, jnp.asarray(reg_covar, X.dtype), mask, n_components=n_components,
                         covariance_type=covariance_type, init=init, block_size=bs, weighted=weighted, config=cfg)


__all__ = ["init_context", "initial_params", "initialize", "hard_resp", "kmeans_init_centers", "label_scores",
           "labelled_means", "greedy_matching", "match_to_labels",
           "map_restarts"]
