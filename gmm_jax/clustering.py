"""K-means in the functional pattern: k-means++ seeding (:mod:`gmm_jax.seeding`), Lloyd steps in ``lax.while_loop``
(:mod:`gmm_jax.lloyd`, with Hamerly's bounds in :mod:`gmm_jax.hamerly`), restarts in one program (seeding vmapped;
Lloyd vmapped on accelerators, one restart after another on a CPU).

Lloyd's algorithm follows scikit-learn's ``KMeans(algorithm="lloyd")`` step for step (assignment with the current
centres, new centres from the assignment, empty clusters relocated to the points farthest from their centres,
stop when no label changed or when the squared centre shift falls below ``tol * mean(var(X))``; after a
non-strict stop the labels are recomputed from the final centres), so that from the same initial centres both give
the same centres, labels and iteration counts.  Every pass over the data runs over row blocks: memory does not grow
with n x K.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gmm_jax.config import Config, any_traced, resolve_config, to_device
from gmm_jax.hamerly import bounded_step, bounds_state
from gmm_jax.lloyd import inertia, kmeans_tolerance, lloyd_pass, lloyd_state, plain_info_step, run_lloyd
from gmm_jax.rows import balanced_block_size, bucket_rows, bucketed_rows, data_shift, resolve_block_size, row_map
from gmm_jax.seeding import kmeans_plusplus, random_rows, sq_distances

KMEANS_ALGORITHMS = ("auto", "lloyd", "hamerly")


class KMeansResult(NamedTuple):
    """Result of :func:`kmeans`.

    Attributes:
      centers: (K, D) centres of the best restart (lowest inertia).
      labels: (n,) int32 labels of the best restart.
      inertia: () weighted sum of squared distances of the best restart.
      n_iter: () Lloyd iterations of the best restart.
      best: () index of the best restart.
      all_centers: (R, K, D) per restart.
      all_inertia: (R,) per restart.
      all_n_iter: (R,) per restart.
      converged: (R,) whether each restart stopped before ``max_iter``.
      trace: with ``record=True``, (R, max_iter, 3): each iteration's inertia (of the labels it assigned, with the
        centres it started from), squared centre shift and number of changed labels (all n in the first iteration),
        NaN after the restart's last iteration; else None.
    """

    centers: jax.Array
    labels: jax.Array
    inertia: jax.Array
    n_iter: jax.Array
    best: jax.Array
    all_centers: jax.Array
    all_inertia: jax.Array
    all_n_iter: jax.Array
    converged: jax.Array
    trace: jax.Array | None = None


def kmeans_block_size(block_size, n: int, n_clusters: int, config: Config | None = None) -> int:
    """Rows per block for K-means passes: the (K, B) distance block near 2 MiB (CPU) or 512 MiB (accelerator)."""
    if block_size is not None:
        return int(max(1, min(int(block_size), n)))
    if resolve_config(config).accelerator:
        return balanced_block_size(n, max(1024, min(1 << 22, (1 << 27) // max(1, n_clusters))))
    return balanced_block_size(n, max(1024, min(16384, (1 << 19) // max(1, n_clusters))))


def use_bounds(algorithm: str, n: int, config: Config | None = None) -> bool:
    """Whether Lloyd's iterations use Hamerly's bounds: 'hamerly' always, 'lloyd' never, 'auto' on a CPU from
    ``config.bounds_min_rows`` rows.  Not on accelerators by default: there restarts are vmapped, and a vmapped
    ``lax.cond`` runs both branches of the bounded iteration; nor for small data, where a full pass is cheap and
    the bounded iteration's extra branch only lengthens compilation."""
    if algorithm not in KMEANS_ALGORITHMS:
        raise ValueError(f"unknown K-means algorithm {algorithm!r}; expected one of {KMEANS_ALGORITHMS}")
    cfg = resolve_config(config)
    if algorithm == "auto":
        return (not cfg.accelerator) and n >= cfg.bounds_min_rows
    return algorithm == "hamerly"


def lloyd(X, w, shift, centers, tol, max_iter: int, bs: int, mask=None, axis_name=None, centers_only=False,
          bounds=None, config: Config | None = None, record: bool = False):
    """Lloyd iterations from shifted initial centres; returns (centers, labels, inertia, n_iter, converged), or only
    the centres with ``centers_only`` (the final label pass and the inertia are then not traced at all, which
    shortens the first call of a fit that starts from K-means).

    ``bounds`` (default: :func:`use_bounds` for n rows) runs :func:`gmm_jax.hamerly.bounded_step`, which skips the
    distance computations of points whose nearest centre provably cannot have changed; the iterates stay those of
    :func:`gmm_jax.lloyd.plain_step`.  That form is kept where a vmapped ``lax.cond`` would run both of the bounded
    iteration's branches (restarts vmapped on an accelerator).  ``record``: the plain iteration, each iteration's
    inertia and centre shift returned as a sixth output (see :func:`gmm_jax.lloyd.run_lloyd`)."""
    cfg = resolve_config(config)
    n = X.shape[0]
    if bounds is None:
        bounds = use_bounds("auto", n, cfg)
    s0 = lloyd_state(n, centers)
    trace = None
    if bounds and not record:
        state = (s0, bounds_state(X, shift, centers, bs, cfg))
        s = lax.while_loop(lambda st: (st[0].i < max_iter) & ~st[0].done,
                           partial(bounded_step, X, w, shift, tol, bs, mask, axis_name, cfg), state)[0]
    else:
        s, trace = run_lloyd(partial(plain_info_step, X, w, shift, tol, bs, mask, axis_name), s0, max_iter, record)
    if centers_only:
        return s.centers
    final_labels, _, _, _, _ = lloyd_pass(X, w, shift, s.centers, s.labels, bs, mask, axis_name)
    labels = jnp.where(s.strict, s.labels, final_labels)
    out = s.centers, labels, inertia(X, w, shift, s.centers, labels, bs, axis_name), s.i, s.done
    return out + (trace,) if record else out


def lloyd_restarts(run, seeds, config: Config | None = None):
    """``run`` applied to each restart's initial centres ``seeds`` (R, K, D): one restart after another on a CPU
    (``lax.map``; a vmapped ``while_loop`` runs every restart until the slowest has converged, and on a CPU a vmapped
    pass costs nearly R single passes), vmapped on an accelerator."""
    if seeds.shape[0] == 1:  # unbatched: XLA's CPU kernels are faster without the extra axis
        return jax.tree.map(lambda a: a[None], run(seeds[0]))
    if not resolve_config(config).accelerator:
        return lax.map(run, seeds)
    return jax.vmap(run)(seeds)


def kmeans_body(keys, X, sample_weight, init_centers, tol, *, n_clusters, n_restarts, max_iter, block_size, init_random,
                mask=None, axis_name=None, weighted=True, split_key=False, bounds=None, config: Config | None = None,
                record=False):
    """All restarts of K-means as one traced function; also the per-device program of the sharded K-means (then
    ``sample_weight`` is 0 on padding rows, ``mask`` marks real rows, ``weighted`` whether there are weights).
    ``split_key``: ``keys`` is one key, split here into the ``n_restarts`` restart keys (an eager split would be a
    compilation of its own on the first call)."""
    if split_key:
        keys = jax.random.split(keys, n_restarts)
    shift = data_shift(X, block_size, mask, axis_name)
    abs_tol = kmeans_tolerance(X, tol, block_size, mask, axis_name, shift)

    def seed(key, init):
        if init is not None:
            return init - shift
        if init_random:
            # probabilities: the weights, or uniform over the real rows, so that padding rows change no draw
            p = sample_weight if weighted and sample_weight is not None else mask
            return X[random_rows(key, n_clusters, jnp.ones((X.shape[0],), X.dtype) if p is None else p)] - shift
        return kmeans_plusplus(key, X, n_clusters, sample_weight if weighted else None, block_size=block_size,
                               mask=mask, axis_name=axis_name, config=config)[0] - shift

    def run(c0):
        return lloyd(X, sample_weight, shift, c0, abs_tol, max_iter, block_size, mask, axis_name, bounds=bounds,
                     config=config, record=record)

    seeds = jax.vmap(seed, in_axes=(0, None))(keys, init_centers)
    out = lloyd_restarts(run, seeds, config)
    return best_restart(*out[:5], shift, out[5] if record else None)


def best_restart(centers, labels, inert, n_iter, conv, shift=0.0, trace=None) -> KMeansResult:
    """The :class:`KMeansResult` of restarts (R, ...) of (shifted centres, labels, inertia, iterations, converged):
    the best is the lowest inertia."""
    best = jnp.argmin(inert)
    return KMeansResult(centers[best] + shift, labels[best], inert[best], n_iter[best], best, centers + shift, inert,
                        n_iter, conv, trace)


kmeans_program = jax.jit(kmeans_body, static_argnames=("n_clusters", "n_restarts", "max_iter", "block_size", "init_random",
                                                       "axis_name", "weighted", "split_key", "bounds", "config",
                                                       "record"))


def kmeans(
    key,
    X,
    n_clusters: int,
    *,
    n_restarts: int = 1,
    init="k-means++",
    max_iter: int = 300,
    tol: float = 1e-4,
    sample_weight=None,
    block_size=None,
    algorithm: str = "auto",
    config: Config | None = None,
    record: bool = False,
) -> KMeansResult:
    """K-means (Lloyd) with ``n_restarts`` restarts in one jitted call; the restart with the lowest inertia is returned.

    Args:
      key: PRNG key; restart ``r`` uses ``jax.random.split(key, n_restarts)[r]``.
      X: (n, D) data; a ``scipy.sparse`` matrix or array runs :func:`gmm_jax.sparse_kmeans.kmeans_sparse` (never
        densified; ``block_size`` and ``algorithm`` do not apply).
      n_clusters: K.
      n_restarts: R restarts: seeding vmapped; Lloyd vmapped on an accelerator, one restart after another on a CPU
        (there a vmapped loop waits for the slowest restart and gains little per pass).
      init: 'k-means++' (greedy D^2 seeding), 'random' (K distinct rows) or an explicit (K, D) array of centres.
      max_iter: maximum Lloyd iterations.
      tol: relative tolerance on the squared centre shift (multiplied by the mean feature variance).
      sample_weight: optional (n,) non-negative weights.
      block_size: rows per block (default: the (K, block) distances near 2 MiB on a CPU, 512 MiB on an accelerator).
      algorithm: 'lloyd' (every iteration computes every point's distances to every centre), 'hamerly' (the same
        iterates, skipping the points whose bounds prove that the full pass would keep their label, rounding of
        the computed distances included (a test checks every iteration's labels in float32); the sums per
        cluster are then updated by the points that changed cluster, so float32 centres can differ from 'lloyd'
        in the last bits; from 32 features the open points' rows are cached, at most 3/8 of X's
        size in extra memory) or 'auto' (default: 'hamerly' on a CPU from ``config.bounds_min_rows`` rows, else
        'lloyd').
      config: :class:`gmm_jax.Config` (default: the backend's).
      record: also return each restart's per-iteration inertia and centre shift (``KMeansResult.trace``; the
        iterations then run without Hamerly's bounds, with the same iterates).

    Example:
      >>> res = gmm_jax.kmeans(jax.random.key(0), X, 3, n_restarts=8)
      >>> res.centers.shape, res.labels.shape
    """
    from gmm_jax.sparse_kmeans import is_sparse, kmeans_sparse
    from gmm_jax.validation import key_form, validate_kmeans

    cfg = resolve_config(config)
    if is_sparse(X):
        if algorithm not in KMEANS_ALGORITHMS:
            raise ValueError(f"unknown K-means algorithm {algorithm!r}; expected one of {KMEANS_ALGORITHMS}")
        return kmeans_sparse(key, X, n_clusters, n_restarts=n_restarts, init=init, max_iter=max_iter, tol=tol,
                             sample_weight=sample_weight, record=record, config=cfg)

    X, sample_weight, init_centers = validate_kmeans(X, n_clusters, init, max_iter, tol, sample_weight, n_restarts)
    k, form = key_form(key)
    if form != "one":
        raise ValueError(f"key must be one PRNG key (jax.random.key(seed)), got shape {k.shape} and dtype {k.dtype}")
    n = X.shape[0]
    bounds = use_bounds(algorithm, n, cfg)
    # a row bucket (as fit): nearby row counts share one compiled program; the padding rows weigh 0, are never
    # drawn as seeds, never count as changed and never fill an empty cluster
    X, sample_weight, mask, weighted = bucket_rows(X, sample_weight, any_traced(k, X, sample_weight, init_centers),
                                                   cfg.bucket_max_rows)
    bs = kmeans_block_size(block_size, X.shape[0], n_clusters, cfg)
    res = kmeans_program(
        k,
        X,
        sample_weight,
        init_centers,
        jnp.asarray(tol, X.dtype),
        n_clusters=n_clusters,
        n_restarts=n_restarts,
        max_iter=max_iter,
        block_size=bs,
        init_random=(isinstance(init, str) and init == "random"),
        split_key=True,
        bounds=bounds,
        mask=mask,
        weighted=weighted,
        config=cfg,
        record=bool(record),
    )
    # labels cut back to n rows on the host (an eager slice would compile once per row count)
    return res if mask is None else res._replace(labels=to_device(np.asarray(res.labels)[:n]))


@partial(jax.jit, static_argnames=("block_size", "config"))
def nearest_centers(X, centers, block_size=None, config: Config | None = None):
    """Nearest-centre labels (n,) int32 over row blocks (inputs unchecked)."""
    bs = resolve_block_size(block_size, X.shape[0], centers.shape[0], X.shape[1], config=config)
    return row_map(lambda x: jnp.argmin(sq_distances(x, centers)).astype(jnp.int32), X, bs)


@partial(jax.jit, static_argnames=("config",))
def center_distances(X, centers, config: Config | None = None):
    """Euclidean distances (n, K) of every row of X to every centre (scikit-learn's ``KMeans.transform``), over row
    blocks."""
    bs = resolve_block_size(None, X.shape[0], centers.shape[0], X.shape[1], config=config)
    return row_map(lambda x: jnp.sqrt(jnp.maximum(sq_distances(x, centers), 0.0)), X, bs)


def kmeans_predict(X, centers, block_size=None, config: Config | None = None):
    """Nearest-centre labels (n,) int32 for data X (n, D) (or ``scipy.sparse`` rows) and centres (K, D) (both
    checked: 2-D, finite, the same number of features)."""
    from gmm_jax.sparse_kmeans import is_sparse, sparse_predict
    from gmm_jax.validation import as_data, check_positive_int

    cfg = resolve_config(config)
    if is_sparse(X):
        return sparse_predict(X, as_data(centers, "centers"))

    X = as_data(X)
    centers = as_data(centers, "centers")
    if centers.shape[1] != X.shape[1]:
        raise ValueError(f"X has {X.shape[1]} features, but the centres have {centers.shape[1]} (centers shape "
                         f"{centers.shape})")
    if block_size is not None:
        block_size = check_positive_int(block_size, "block_size")
    # the row bucket, as fit and kmeans
    return bucketed_rows(nearest_centers, X, centers.astype(X.dtype), block_size, cfg, max_rows=cfg.bucket_max_rows)


__all__ = ["KMEANS_ALGORITHMS", "KMeansResult", "center_distances", "kmeans", "kmeans_block_size", "kmeans_body",
           "kmeans_plusplus", "kmeans_predict", "kmeans_program", "lloyd", "lloyd_restarts", "nearest_centers",
           "use_bounds"]
