"""K-means in the functional pattern: k-means++ seeding, Lloyd steps in ``lax.while_loop``, restarts in one program
(seeding vmapped; Lloyd vmapped on accelerators, one restart after another on a CPU).

Lloyd's algorithm follows scikit-learn's ``KMeans(algorithm="lloyd")`` step for step (assignment with the current
centres, new centres from the assignment, empty clusters relocated to the points farthest from their centres,
stop when no label changed or when the squared centre shift falls below ``tol * mean(var(X))``; after a
non-strict stop the labels are recomputed from the final centres), so that from the same initial centres both give
the same centres, labels and iteration counts.  Every pass over the data runs over row blocks: memory does not grow
with n x K.
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gmm_jax._blocks import (
    any_traced,
    balanced_block_size,
    block_reduce,
    block_slices,
    bucket_rows,
    bucketed_rows,
    data_shift,
    n_blocks,
    on_accelerator,
    psum,
    resolve_block_size,
    row_map,
    unblock,
)

# float32 products at full precision on every backend (GPUs would otherwise use TF32 for float32)
HIGHEST = lax.Precision.HIGHEST


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


def sq_distances(x: jax.Array, centers: jax.Array) -> jax.Array:
    """Exact squared Euclidean distances ``||x - c_k||^2`` of one point (D,) to centres (K, D): (K,)."""
    return jnp.sum(jnp.square(x[None, :] - centers), axis=-1)


def _assign_block(xs: jax.Array, centers: jax.Array, c_sq: jax.Array):
    """Nearest centre for a block of shifted points via ||x||^2 - 2 x.c + ||c||^2 (a matrix product).

    The (K, B) orientation makes the reductions over K run across contiguous rows of length B, which XLA's CPU
    backend vectorises (the (B, K) orientation reduces along 64-wide rows and was ~1.5x slower).
    Returns (labels (B,) int32 with ties to the lowest index, squared distances to the nearest centre (B,)).
    """
    d2t = c_sq[:, None] - 2.0 * jnp.einsum("kd,bd->kb", centers, xs, precision=HIGHEST)  # (K, B), without the per-point ||x||^2
    m = jnp.min(d2t, axis=0)
    k = centers.shape[0]
    idx = jnp.min(jnp.where(d2t == m[None, :], jnp.arange(k, dtype=jnp.int32)[:, None], k), axis=0)
    return idx, jnp.maximum(m + jnp.sum(jnp.square(xs), axis=1), 0.0)


def _assign_block_bounds(xs: jax.Array, centers: jax.Array, c_sq: jax.Array, x2=None):
    """:func:`_assign_block` (same labels and nearest distances) plus the squared distance to the second-nearest
    centre (``inf`` when K = 1) and ``||x||^2`` (computed unless given): what the bounds of :func:`_lloyd` need.

    Three sweeps over the (K, B) distances after the product: minimum, its first index, minimum of the others.
    Measured at n=1e6, d=16, K=64 (one bounded iteration as a full pass): 64-65 ms; counting the minima instead
    (a fourth sweep) 75-85 ms; a pairwise min/second-min/index tree over K not faster either."""
    d2t = c_sq[:, None] - 2.0 * jnp.einsum("kd,bd->kb", centers, xs, precision=HIGHEST)
    m = jnp.min(d2t, axis=0)
    k = centers.shape[0]
    ks = jnp.arange(k, dtype=jnp.int32)[:, None]
    idx = jnp.min(jnp.where(d2t == m[None, :], ks, k), axis=0)
    m2 = jnp.min(jnp.where(ks == idx[None, :], jnp.inf, d2t), axis=0)
    if x2 is None:
        x2 = jnp.sum(jnp.square(xs), axis=1)
    return idx, jnp.maximum(m + x2, 0.0), jnp.maximum(m2 + x2, 0.0), x2


def kmeans_block_size(block_size, n: int, n_clusters: int) -> int:
    """Rows per block for K-means passes: the (K, B) distance block near 2 MiB (CPU) or 512 MiB (accelerator)."""
    if block_size is not None:
        return int(max(1, min(int(block_size), n)))
    if on_accelerator():
        return balanced_block_size(n, max(1024, min(1 << 22, (1 << 27) // max(1, n_clusters))))
    return balanced_block_size(n, max(1024, min(16384, (1 << 19) // max(1, n_clusters))))


# k-means++ candidate potentials: candidate-major up to this many features.  Whole seeding, 2-core CPU, data passed
# as an argument: n=2000, d=2, K=5 0.26 -> 0.076 ms (one restart), 5.1 -> 1.7 ms (32 vmapped); n=1e5, d=2/8 3.1x /
# 2.1x faster; d=16 equal (88 / 87 ms); d=32 and d=64 2.3x / 1.6x slower.
_SEED_SMALL_D = 8


def kmeans_plusplus(key, X, n_clusters: int, sample_weight=None, n_local_trials=None, block_size=None, *, mask=None,
                    axis_name=None):
    """Greedy k-means++ seeding (D^2 sampling with ``n_local_trials`` candidates per centre, best kept).

    Args:
      key: PRNG key.
      X: (n, D) data.
      n_clusters: K (static).
      sample_weight: optional (n,) weights; the sampling probabilities are proportional to ``w_i D(x_i)^2``.
      n_local_trials: candidates per centre; default ``2 + floor(log K)`` (as scikit-learn).
      block_size: rows per block for the distance passes.
      mask, axis_name: inside ``shard_map`` with rows sharded over ``axis_name``: (n_local,) 1 for real rows, 0 for
        padding.  The draws are then global (the same as on one device holding the rows in device order) and
        ``indices`` are -1.  ``mask`` without ``axis_name``: padding rows at the end of X (a row bucket), never
        drawn; the draws are those without them.

    Returns:
      (centers (K, D), indices (K,) int32 of the chosen rows).
    """
    n, d = X.shape
    trials = n_local_trials if n_local_trials is not None else 2 + int(math.log(n_clusters))
    bs = resolve_block_size(block_size, n, trials, d)
    w = None if sample_weight is None else sample_weight.astype(X.dtype)
    # every draw of the seeding from one call of the generator: each call site of the counter-based generator is
    # its own block of unrolled rounds in the compiled program (one site instead of four cut the first-call compile
    # of the seeding by a third)
    bits = jax.random.bits(key, (1 + max(n_clusters - 1, 1) * trials,), jnp.uint32)  # K = 1: the loop is still traced
    if axis_name is None:
        # uniform first centre without a constant (n,) cumsum, which XLA's GPU compiler constant-folds for minutes;
        # 32 random bits modulo n: the probabilities of the rows differ by at most n / 2**32 relative
        # (padded rows, mask 0, at the end: the same draw as without them)
        n_real = jnp.uint32(n) if mask is None else jnp.sum(mask > 0).astype(jnp.uint32)
        first = (bits[0] % n_real).astype(jnp.int32) if w is None else _sample_index(_uniform(bits[0], X.dtype), w)
        c0 = X[first]
    else:
        first = jnp.int32(-1)
        if w is None:  # uniform over the real rows of all devices, as on one device holding the concatenated rows
            rows = lax.all_gather(jnp.sum(mask > 0).astype(jnp.int32), axis_name)
            g = (bits[0] % jnp.sum(rows).astype(jnp.uint32)).astype(jnp.int32)
            owner = jnp.searchsorted(jnp.cumsum(rows), g, side="right")
            c0 = _global_take(X, owner, g - (jnp.cumsum(rows) - rows)[owner], axis_name)
        else:
            c0 = _global_take(X, *_global_sample_index(_uniform(bits[0], X.dtype), w, axis_name), axis_name)
    d2 = row_map(lambda x: jnp.sum(jnp.square(x - c0)), X, bs)
    if mask is not None:
        # padding rows get D(x)^2 = 0 once, and keep it (d2 only decreases): never drawn, nothing in a candidate's
        # potential.  Weighting the potentials and the probabilities by the mask instead made the seeding of 32
        # vmapped restarts at n=2000 (padded to 2048) 4-5x slower (9.2 against 1.7 ms).
        d2 = d2 * mask
    centers = jnp.zeros((n_clusters, d), X.dtype).at[0].set(c0)
    idx = jnp.zeros((n_clusters,), jnp.int32).at[0].set(first)

    def body(c, state):
        centers, idx, d2 = state
        # D^2 sampling: `trials` candidates with probability proportional to w_i D(x_i)^2
        p = d2 if w is None else w * d2
        u = _uniform(lax.dynamic_slice_in_dim(bits, 1 + (c - 1) * trials, trials), X.dtype)
        if axis_name is None:
            cand = _sample_index(u, p)
            cx = X[cand]  # (T, D)
        else:
            owner, local = _global_sample_index(u, p, axis_name)
            cand = jnp.full((trials,), -1, jnp.int32)
            cx = _global_take(X, owner, local, axis_name)

        def pot(xb, wb, i):  # potential of each candidate, one block at a time: no (n, T) array
            start = jnp.minimum(i * bs, n - bs)
            db = lax.dynamic_slice_in_dim(d2, start, bs)
            if d <= _SEED_SMALL_D:
                # candidate-major (T, D, B): the reductions run along contiguous rows of length B
                dd = jnp.sum(jnp.square(xb.T[None, :, :] - cx[:, :, None]), axis=1)  # (T, B)
                return jnp.sum(wb[None, :] * jnp.minimum(db[None, :], dd), axis=1)
            return wb @ jnp.minimum(db[:, None], jax.vmap(lambda x: sq_distances(x, cx))(xb))

        pots = block_reduce(pot, X, bs, sample_weight, axis_name)
        b = jnp.argmin(pots)
        cb = cx[b]
        d2 = jnp.minimum(d2, row_map(lambda x: jnp.sum(jnp.square(x - cb)), X, bs))
        return centers.at[c].set(cb), idx.at[c].set(cand[b]), d2

    centers, idx, _ = lax.fori_loop(1, n_clusters, body, (centers, idx, d2))
    return centers, idx


def _uniform(bits, dtype):
    """Uniform numbers in [0, 1) of ``dtype`` from uint32 random bits (24 bits each, exact in float32)."""
    return (bits >> 8).astype(dtype) * (1.0 / (1 << 24))


def _sample_index(u, p):
    """Indices drawn with probability proportional to non-negative ``p`` (n,), by inverse CDF (O(n) memory), for
    uniforms ``u`` in [0, 1) (a scalar or (T,)); returns int32 indices of ``u``'s shape."""
    c = jnp.cumsum(p)
    idx = jnp.searchsorted(c, u * c[-1], side="right")
    return jnp.clip(idx, 0, p.shape[0] - 1).astype(jnp.int32)


def _global_sample_index(u, p, axis_name):
    """:func:`_sample_index` over rows sharded on ``axis_name``: (owning device, local index) of each draw, the same
    draws as one device holding all rows in device order (up to the rounding of the partial sums)."""
    c = jnp.cumsum(p)
    totals = lax.all_gather(c[-1], axis_name)  # (S,) per-device sums
    ctot = jnp.cumsum(totals)
    u = u * ctot[-1]
    owner = jnp.clip(jnp.searchsorted(ctot, u, side="right"), 0, totals.shape[0] - 1)
    local = jnp.searchsorted(c, u - (ctot[owner] - totals[owner]), side="right")
    return owner, jnp.clip(local, 0, p.shape[0] - 1).astype(jnp.int32)


def _global_take(X, owner, local, axis_name):
    """Rows ``local`` of device ``owner`` (each a scalar or (T,)), delivered to every device of ``axis_name``."""
    rows = X[local]
    mine = (owner == lax.axis_index(axis_name))[..., None]
    return lax.psum(jnp.where(mine, rows, jnp.zeros_like(rows)), axis_name)


def _lloyd_pass(X, w, shift, centers, labels_old, bs, mask=None, axis_name=None, second=False):
    """One assignment pass: labels by current centres, weighted sums for the new centres, changed-label count.

    Per-block labels are scan outputs (written once), not updates of an (n,) carry, which XLA may copy per block.

    Returns (labels (n,), mind (n,), sums (K, D) of shifted points, counts (K,), n_changed); with ``second`` the
    per-point outputs are (labels, mind, squared distance to the second-nearest centre, ||x - shift||^2).
    """
    n = X.shape[0]
    k = centers.shape[0]
    c_sq = jnp.sum(jnp.square(centers), axis=1)

    def body(carry, i):
        sums, counts, changed = carry
        start, xb, wb = block_slices(X, bs, w, i)
        xs = xb - shift
        per_point = (_assign_block_bounds if second else _assign_block)(xs, centers, c_sq)
        lb = per_point[0]
        old = lax.dynamic_slice_in_dim(labels_old, start, bs)
        valid = (start + jnp.arange(bs)) >= i * bs
        if mask is not None:  # padding rows of a sharded fit never count as changed
            valid = valid & (lax.dynamic_slice_in_dim(mask, start, bs) > 0)
        changed = changed + jnp.sum((lb != old) & valid).astype(jnp.int32)
        # segment sums: on the CPU backend twice as fast as a one-hot matrix product
        sums = sums + jax.ops.segment_sum(xs * wb[:, None], lb, k)
        counts = counts + jax.ops.segment_sum(wb, lb, k)
        return (sums, counts, changed), per_point

    init = (jnp.zeros((k, X.shape[1]), X.dtype), jnp.zeros((k,), X.dtype), jnp.zeros((), jnp.int32))
    (sums, counts, changed), per_point = lax.scan(body, init, jnp.arange(n_blocks(n, bs)))
    sums, counts, changed = psum((sums, counts, changed), axis_name)
    per_point = unblock(per_point, n, bs)
    if second:
        return per_point, sums, counts, changed
    return per_point[0], per_point[1], sums, counts, changed


def _relocate_empty(X, w, shift, labels, mind, sums, counts, mask=None, axis_name=None):
    """scikit-learn's rule: each empty cluster takes one of the points farthest from their assigned centre."""
    k = counts.shape[0]
    empty = counts == 0
    rank = jnp.clip(jnp.cumsum(empty) - 1, 0, None)
    kk = min(k, X.shape[0])
    if mask is not None:
        mind = jnp.where(mask > 0, mind, -jnp.inf)
    vals, far = lax.top_k(mind, kk)
    xf = X[far] - shift
    wf = jnp.ones_like(vals) if w is None else w[far]
    of = labels[far]
    if axis_name is not None:  # the farthest points of all devices, in device order, then the global top
        vals, xf, wf, of = (lax.all_gather(a, axis_name, tiled=True) for a in (vals, xf, wf, of))
        kk = min(k, vals.shape[0])
        _, top = lax.top_k(vals, kk)
        xf, wf, of = xf[top], wf[top], of[top]
    sel = jnp.clip(rank, 0, kk - 1)  # (K,) far point for each (empty) cluster
    xp, wp, old = xf[sel], wf[sel].astype(counts.dtype), of[sel]
    m = empty.astype(X.dtype)
    sums = sums.at[old].add(-(m * wp)[:, None] * xp)
    counts = counts.at[old].add(-(m * wp))
    sums = jnp.where(empty[:, None], wp[:, None] * xp, sums)
    counts = jnp.where(empty, wp, counts)
    return sums, counts


def _new_centers(centers, sums, counts, relocate):
    """Centres from per-cluster sums and counts, after ``relocate()`` (-> sums, counts) has given each empty cluster
    a point (run only when a cluster is empty); a cluster still without weight keeps its centre."""
    sums, counts = lax.cond(jnp.any(counts == 0), relocate, lambda: (sums, counts))
    return jnp.where(counts[:, None] > 0, sums / jnp.where(counts > 0, counts, 1)[:, None], centers)


def _lloyd(X, w, shift, centers, tol, max_iter: int, bs: int, mask=None, axis_name=None, centers_only=False,
           bounds=None):
    """Lloyd iterations from shifted initial centres; returns (centers, labels, inertia, n_iter, converged), or only
    the centres with ``centers_only`` (the final label pass and the inertia are then not traced at all, which
    shortens the first call of a fit that starts from K-means).

    ``bounds`` (default: :func:`use_bounds` for n rows) skips, by Hamerly's bounds, the distance computations of
    points whose nearest centre provably cannot have changed; the iterates stay those of Lloyd's algorithm (see
    :func:`_lloyd_bounds_body`).  Off, every iteration is one full pass (:func:`_lloyd_pass`); that form is kept
    where a vmapped ``lax.cond`` would run both of the bounded iteration's branches (restarts vmapped on an
    accelerator)."""
    n = X.shape[0]
    if bounds is None:
        bounds = use_bounds("auto", n)

    def cond(s):
        return (s[0] < max_iter) & ~s[3]

    def plain_body(s):
        i, centers, labels_old, _, _ = s
        labels, mind, sums, counts, changed = _lloyd_pass(X, w, shift, centers, labels_old, bs, mask, axis_name)
        new = _new_centers(centers, sums, counts,
                           lambda: _relocate_empty(X, w, shift, labels, mind, sums, counts, mask, axis_name))
        strict = changed == 0
        shift_tot = jnp.sum(jnp.square(new - centers))
        return i + 1, new, labels, strict | (shift_tot <= tol), strict

    s0 = _lloyd_state(n, centers)
    if bounds:
        body = partial(_lloyd_bounds_body, X, w, shift, tol, bs, mask, axis_name)
        out = lax.while_loop(cond, body, s0 + _bounds_state(X, shift, centers, bs))
        n_iter, centers, labels, done, strict = out[:5]
    else:
        n_iter, centers, labels, done, strict = lax.while_loop(cond, plain_body, s0)
    if centers_only:
        return centers
    final_labels, _, _, _, _ = _lloyd_pass(X, w, shift, centers, labels, bs, mask, axis_name)
    labels = jnp.where(strict, labels, final_labels)
    inertia = _inertia(X, w, shift, centers, labels, bs, axis_name)
    return centers, labels, inertia, n_iter, done


# Bounded Lloyd iterations: an iteration recomputes distances only for the points whose bounds do not settle their
# label; when more than this fraction of the points needs it, one full pass is cheaper than gathering them.
_BOUNDS_DENSE_FRACTION = 0.5
# algorithm="auto" uses the bounds on a CPU from this many rows (per device when sharded).
_BOUNDS_MIN_ROWS = 50_000
KMEANS_ALGORITHMS = ("auto", "lloyd", "hamerly")


# The bounded iteration caches the open points' rows only from this many features: at d=64 (rows of 256 bytes) the
# cache made an iteration at n=1e5, K=16 faster (2.9 against 3.4-4.2 ms), at d=16 slower (47.5 against 35 ms at
# n=1e6, K=64, where the open set also changes more between iterations).
_CACHE_MIN_FEATURES = 32
# The open points' last, partial chunk is processed in chunks of 1/_SMALL_DIV the size (late iterations often have
# a few thousand open points against chunks of 8-16k rows).
_SMALL_DIV = 4
_APPEND_DIV = 16


def _cache_capacity(n: int, chunk: int, d: int) -> int:
    """Rows of the bounded iteration's cache of open points: 3/8 of n in whole chunks, 0 below
    ``_CACHE_MIN_FEATURES`` features."""
    if d < _CACHE_MIN_FEATURES:
        return 0
    return int(min(n_blocks(n, chunk), -(-(3 * n) // (8 * chunk))) * chunk)


def use_bounds(algorithm: str, n: int) -> bool:
    """Whether Lloyd's iterations use Hamerly's bounds: 'hamerly' always, 'lloyd' never, 'auto' on a CPU from
    ``_BOUNDS_MIN_ROWS`` rows.  Not on accelerators by default: there restarts are vmapped, and a vmapped
    ``lax.cond`` runs both branches of the bounded iteration; nor for small data, where a full pass is cheap and
    the bounded iteration's extra branch only lengthens compilation."""
    if algorithm not in KMEANS_ALGORITHMS:
        raise ValueError(f"unknown K-means algorithm {algorithm!r}; expected one of {KMEANS_ALGORITHMS}")
    if algorithm == "auto":
        return (not on_accelerator()) and n >= _BOUNDS_MIN_ROWS
    return algorithm == "hamerly"


def _lloyd_state(n, centers):
    """Lloyd's loop state before the first iteration: (i, centres, labels (none yet), done, strict)."""
    return jnp.zeros((), jnp.int32), centers, jnp.full((n,), -1, jnp.int32), jnp.array(False), jnp.array(False)


def _bounds_state(X, shift, centers, bs):
    """The bounded iteration's loop state after Lloyd's (i, centres, labels, done, strict): bounds (every point
    open), ||x - shift||^2, carried sums and counts, the centres' geometry and the cache of open rows."""
    n, d = X.shape
    k, dt = centers.shape[0], X.dtype
    zk = (jnp.zeros((k, d), dt), jnp.zeros((k,), dt))
    geometry = (jnp.zeros((k,), dt), jnp.zeros((k,), dt), jnp.max(jnp.sum(jnp.square(centers), axis=1)))
    x2 = row_map(lambda x: jnp.sum(jnp.square(x - shift)), X, bs)  # read by the sparse steps
    cap = _cache_capacity(n, bs, d)
    cache = (jnp.full((cap + bs,), n, jnp.int32), jnp.zeros((), jnp.int32), jnp.zeros((cap + bs, d), dt),
             jnp.zeros((n,), bool))
    return (jnp.full((n,), jnp.inf, dt), jnp.zeros((n,), dt), x2) + zk + (geometry, cache)


def _lloyd_bounds_body(X, w, shift, tol, bs, mask, axis_name, s):
    """One Lloyd iteration with Hamerly's bounds (Hamerly, "Making k-means even faster", SDM 2010).

    Per point: ``u`` >= distance to its assigned centre ``a``, ``l`` <= distance to every other centre.  A point keeps
    its label without any distance computation when its bounds prove that Lloyd's full pass would give it the same
    label in floating point, not only in exact arithmetic.  That pass orders the centres by ``||c||^2 - 2 x.c``,
    whose computed values are off from the exact ones by at most ``E = (D + 2) eps (||x||^2 + max ||c||^2)`` (first
    order; ``e = 2 E`` is used, to spare).  If the exact squared distances satisfy ``d_j^2 - d_a^2 > 2 e`` for every
    ``j != a``, the computed ones keep that order and the label stays ``a`` (ties, which the full pass breaks to the
    lowest index, never pass).  With ``d_j >= l`` and ``d_a <= u``: ``d_j^2 - d_a^2 = (d_j - d_a)(d_j + d_a) >=
    (l - u) l``, so ``l > u`` and ``(l - u) l > 2 e`` settle the point; with ``s_a`` half the distance from ``c_a`` to
    the nearest other centre, ``d_j >= 2 s_a - d_a`` gives ``(d_j - d_a)(d_j + d_a) >= 4 s_a (s_a - u)``, so ``s_a >
    u`` and ``4 s_a (s_a - u) > 2 e`` settle it too.  The bounds are bounds on the exact distances: a computed
    squared distance ``c`` off by at most ``e`` gives the distance to within ``min(sqrt(e), e / sqrt(c))``
    (``|sqrt(c) - sqrt(c')| = |c - c'| / (sqrt(c) + sqrt(c'))``), added to ``u`` and subtracted from ``l``; then
    each iteration moves ``u`` up by its centre's shift and ``l`` down by the largest shift of another centre, all
    rounded outward.  (The uniform margin used before, ``2 sqrt(2 E)`` in distance, kept a quarter of the points
    at n=1e5, d=64, K=16 open in every iteration.)  Every other point gets the full pass's computation
    (:func:`_assign_block_bounds`, chunk by chunk).  The sums of the points by label (local to a device when
    sharded) are carried and updated by the points whose label changed; a full pass recomputes them.  Empty
    clusters: the exact distances the relocation needs come from one full pass, as in the plain iteration.
    """
    i, centers, labels_old, _, _, u, l, x2, sums_l, counts_l, (moved, half, c_max), cache = s
    n, d = X.shape
    k, dt = centers.shape[0], X.dtype
    eps = jnp.finfo(dt).eps
    c_sq = jnp.sum(jnp.square(centers), axis=1)
    # The centres' shifts of the previous iteration (moved), half the distance from each centre to the nearest other
    # (half) and max ||c||^2 come in the loop state, computed at the end of the previous iteration: computed here,
    # XLA fuses these small reductions into the per-point loops that read them and recomputes them once per point
    # (the K x K minimum alone was 0.9 ms of a 4 ms iteration at n=1e5, K=16).
    # Outward rounding: the shifts up and the half-distances down (each a sum of D squares and a square root,
    # relative error below (D + 2) eps), the moved bounds by the rounding of their own update.
    moved = moved * (1 + (d + 2) * eps)
    half = half * (1 - (d + 2) * eps)
    u = (u + moved[jnp.maximum(labels_old, 0)]) * (1 + 2 * eps)
    if k > 1:
        top, arg = lax.top_k(moved, 2)
        l = l - jnp.where(labels_old == arg[0], top[1], top[0])
        l = l - 2 * eps * jnp.abs(l)

    def err(xx):  # twice the first-order bound E on the rounding error of a computed squared distance
        return 2.0 * (d + 2) * eps * (xx + c_max)

    def slack(r, e):  # min(sqrt(e), e / r), without 0 / 0
        return e / jnp.maximum(jnp.maximum(r, jnp.sqrt(e)), jnp.finfo(dt).tiny)

    def upper(c, e):  # >= the exact distance when the computed squared distance c is off by at most e
        r = jnp.sqrt(c)
        return r + slack(r, e)

    def lower(c, e):  # <= it
        r = jnp.sqrt(c)
        return r - slack(r, e)

    e_pt = err(x2)
    sa = half[jnp.maximum(labels_old, 0)]
    settled = ((l > u) & ((l - u) * l > 2.0 * e_pt)) | ((sa > u) & (4.0 * sa * (sa - u) > 2.0 * e_pt))
    valid = jnp.ones((n,), bool) if mask is None else mask > 0
    open_ = valid & ~settled
    n_open = jnp.sum(open_, dtype=jnp.int32)
    n_valid = n if mask is None else jnp.sum(valid, dtype=jnp.int32)

    def dense():
        (lab, mind, m2, _), sums, counts, changed = _lloyd_pass(X, w, shift, centers, labels_old, bs, mask, None,
                                                                 second=True)
        ee = err(x2)
        return lab, upper(mind, ee), lower(m2, ee), sums, counts, changed

    dense_taken = n_open > _BOUNDS_DENSE_FRACTION * n_valid
    labels, u, l, sums_l, counts_l, changed = lax.cond(
        dense_taken, dense, lambda: (labels_old, u, l, sums_l, counts_l, jnp.zeros((), jnp.int32)))

    # Otherwise the open points get the full pass's computation chunk by chunk.  From _CACHE_MIN_FEATURES features
    # their rows are kept in a cache (up to 3/8 of n rows, read contiguously: gathering scattered rows from X costs
    # more than their distances there, and the open set changes little between iterations; below it the capacity is
    # 0 and the rows are gathered every time); points that open later are appended, and the cache is
    # rebuilt from the open points when it holds more chunks than they need.  No lax.cond carries the
    # cache (a conditional copies what passes through it): loops simply run zero chunks when not needed.
    chunk = bs
    cap = _cache_capacity(n, chunk, d)
    cidx, ccount, xc, in_cache = cache
    sp = ~dense_taken
    n_new = jnp.sum(open_ & ~in_cache, dtype=jnp.int32)
    use_cache = sp & (ccount > 0) & (ccount + n_new <= cap) & (n_blocks(ccount + n_new, chunk) <= n_blocks(n_open, chunk))
    rebuild = sp & ~use_cache & (n_open <= cap)
    gather_all = sp & ~use_cache & ~rebuild  # too many open points for the cache: gathered from X, not kept
    base_in = in_cache & use_cache
    to_add = open_ & ~base_in & (use_cache | rebuild)
    n_add = jnp.sum(to_add, dtype=jnp.int32)
    base = jnp.where(use_cache, ccount, 0).astype(jnp.int32)
    sel = jnp.where(gather_all, open_, to_add)
    n_sel = jnp.where(gather_all, n_open, n_add).astype(jnp.int32)
    n_pad = n_blocks(n, chunk) * chunk + chunk  # room for a last slice starting below n

    def compact():
        pos = lax.associative_scan(jnp.add, sel.astype(jnp.int32)) - 1
        return jnp.zeros((n_pad,), jnp.int32).at[jnp.where(sel, pos, n_pad)].set(
            jnp.arange(n, dtype=jnp.int32), mode="drop")

    idx = lax.cond(n_sel > 0, compact, lambda: jnp.zeros((n_pad,), jnp.int32))
    n_append = jnp.where(gather_all, 0, n_add)

    ac = max(1, chunk // _APPEND_DIV)  # a few hundred new points per iteration are common: small pieces

    def append(j, c):
        ci, xcc = c
        r = lax.dynamic_slice_in_dim(idx, j * ac, ac)
        ok = (j * ac + jnp.arange(ac)) < n_append
        ci = lax.dynamic_update_slice_in_dim(ci, jnp.where(ok, r, n), base + j * ac, axis=0)
        xcc = lax.dynamic_update_slice_in_dim(xcc, X[r] - shift, base + j * ac, axis=0)
        return ci, xcc

    cidx, xc = lax.fori_loop(0, n_blocks(n_append, ac), append, (cidx, xc))
    ccount = jnp.where(use_cache | rebuild, base + n_add, 0).astype(jnp.int32)

    def run(rows_of, count, carry):
        """Rows [0, count) of ``rows_of``: whole chunks, then the rest in chunks of chunk / _SMALL_DIV rows."""
        n_big = count // chunk
        small = max(1, chunk // _SMALL_DIV)

        def chunks(size, first, stop, c0):
            def step(c):
                j, lab, uu, ll, sums, counts, chg = c
                start = first + j * size
                r, xs = rows_of(start, size)
                ok = (start + jnp.arange(size)) < count
                wr = jnp.ones((size,), dt) if w is None else w[r].astype(dt)
                xx = x2[r]
                new, mind, m2, _ = _assign_block_bounds(xs, centers, c_sq, xx)
                ee = err(xx)
                old = labels_old[r]  # each point is in one chunk: reading the loop's own labels would copy them
                rr = jnp.where(ok, r, n)
                lab = lab.at[rr].set(new, mode="drop")
                uu = uu.at[rr].set(upper(mind, ee), mode="drop")
                ll = ll.at[rr].set(lower(m2, ee), mode="drop")
                moved = ok & (new != old)
                wm = jnp.where(moved, wr, 0)
                wx = xs * wm[:, None]
                sums = sums + jax.ops.segment_sum(wx, new, k) - jax.ops.segment_sum(wx, old, k)
                counts = counts + jax.ops.segment_sum(wm, new, k) - jax.ops.segment_sum(wm, old, k)
                return j + 1, lab, uu, ll, sums, counts, chg + jnp.sum(moved, dtype=jnp.int32)

            return lax.while_loop(lambda c: first + c[0] * size < stop, step, (jnp.zeros((), jnp.int32),) + c0)[1:]

        return chunks(small, n_big * chunk, count, chunks(chunk, 0, n_big * chunk, carry))

    def cached_rows(start, size):  # the cache has room for a slice of up to one chunk from any start below cap
        return (lax.dynamic_slice_in_dim(cidx, start, size),
                lax.dynamic_slice_in_dim(xc, start, size, axis=0))

    def gathered_rows(start, size):
        r = lax.dynamic_slice_in_dim(idx, start, size)
        return r, X[r] - shift

    carry = (labels, u, l, sums_l, counts_l, changed)
    carry = run(cached_rows, ccount, carry)  # zero chunks after a full pass or with gather_all
    carry = run(gathered_rows, jnp.where(gather_all, n_open, 0), carry)
    labels, u, l, sums_l, counts_l, changed = carry
    cache = (cidx, ccount, xc, (base_in | to_add) & (use_cache | rebuild))
    sums, counts, changed = psum((sums_l, counts_l, changed), axis_name)

    def relocate():
        lab, mind, _, _, _ = _lloyd_pass(X, w, shift, centers, labels, bs, mask, axis_name)
        return _relocate_empty(X, w, shift, lab, mind, sums, counts, mask, axis_name)

    new = _new_centers(centers, sums, counts, relocate)  # the carried sums stay those of the labels
    strict = changed == 0
    moved_sq = jnp.sum(jnp.square(new - centers), axis=1)
    shift_tot = jnp.sum(moved_sq)
    moved = jnp.sqrt(moved_sq)  # (K,)
    cc = jnp.sum(jnp.square(new[:, None, :] - new[None, :, :]), axis=-1)
    half = 0.5 * jnp.sqrt(jnp.min(jnp.where(jnp.eye(k, dtype=bool), jnp.inf, cc), axis=1))  # s_a; inf if K = 1
    geometry = (moved, half, jnp.max(jnp.sum(jnp.square(new), axis=1)))
    return (i + 1, new, labels, strict | (shift_tot <= tol), strict, u, l, x2, sums_l, counts_l, geometry, cache)


def _inertia(X, w, shift, centers, labels, bs, axis_name=None):
    def fn(xb, wb, i):
        start = jnp.minimum(i * bs, X.shape[0] - bs)
        lb = lax.dynamic_slice_in_dim(labels, start, bs)
        return jnp.sum(wb * jnp.sum(jnp.square(xb - shift - centers[lb]), axis=1))

    return block_reduce(fn, X, bs, w, axis_name)


def kmeans_tolerance(X, tol, block_size: int, mask=None, axis_name=None, shift=None):
    """scikit-learn's data-dependent tolerance: ``tol * mean_d var(X[:, d])`` (unweighted; padding rows of a
    sharded fit, ``mask`` 0, left out).  ``shift``: a reference point near the data already computed (any point
    near the data serves: the variance is computed about it without cancellation)."""
    if shift is None:
        shift = data_shift(X, block_size, mask, axis_name)

    def fn(xb, wb, i):
        xs = (xb - shift) * wb[:, None]
        return jnp.sum(xs, axis=0), jnp.sum(xs * (xb - shift), axis=0)

    s1, s2 = block_reduce(fn, X, block_size, mask, axis_name)
    n = X.shape[0] if mask is None else psum(jnp.sum(mask), axis_name)
    var = s2 / n - jnp.square(s1 / n)
    return tol * jnp.mean(var)


def lloyd_restarts(lloyd, seeds):
    """``lloyd`` applied to each restart's initial centres ``seeds`` (R, K, D): one restart after another on a CPU
    (``lax.map``), vmapped on an accelerator.  A vmapped ``while_loop`` runs every restart until the slowest has
    converged, and on a CPU a vmapped pass costs nearly R single passes: at n=2000, d=2, K=5, R=32 the Lloyd part
    took 6.1 ms against 19.0 ms vmapped (the whole GMM initialisation 13.9 against 25.4 ms); also faster at n=2e4,
    d=4, K=8, R=16 and n=1e5, d=16, K=16, R=8 (89 / 187 ms and 688 / 884 ms, measured with the data as a
    compile-time constant)."""
    if seeds.shape[0] == 1:  # unbatched: XLA's CPU kernels are faster without the extra axis
        return jax.tree.map(lambda a: a[None], lloyd(seeds[0]))
    if not on_accelerator():
        return lax.map(lloyd, seeds)
    return jax.vmap(lloyd)(seeds)


def _kmeans_body(keys, X, sample_weight, init_centers, tol, *, n_clusters, n_restarts, max_iter, block_size, init_random,
                 mask=None, axis_name=None, weighted=True, split_key=False, bounds=None):
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
            # with probabilities (uniform over the real rows), so that padding rows change no draw
            p = jnp.ones((X.shape[0],), X.dtype) if mask is None else mask
            idx = jax.random.choice(key, X.shape[0], (n_clusters,), replace=False, p=p / jnp.sum(p))
            return X[idx] - shift
        return kmeans_plusplus(key, X, n_clusters, sample_weight if weighted else None, block_size=block_size,
                               mask=mask, axis_name=axis_name)[0] - shift

    def lloyd(c0):
        return _lloyd(X, sample_weight, shift, c0, abs_tol, max_iter, block_size, mask, axis_name, bounds=bounds)

    seeds = jax.vmap(seed, in_axes=(0, None))(keys, init_centers)
    centers, labels, inertia, n_iter, conv = lloyd_restarts(lloyd, seeds)
    best = jnp.argmin(inertia)
    return KMeansResult(
        centers[best] + shift, labels[best], inertia[best], n_iter[best], best, centers + shift, inertia, n_iter, conv
    )


_kmeans_jit = jax.jit(_kmeans_body, static_argnames=("n_clusters", "n_restarts", "max_iter", "block_size", "init_random",
                                                     "axis_name", "weighted", "split_key", "bounds"))


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
) -> KMeansResult:
    """K-means (Lloyd) with ``n_restarts`` restarts in one jitted call; the restart with the lowest inertia is returned.

    Args:
      key: PRNG key; restart ``r`` uses ``jax.random.split(key, n_restarts)[r]``.
      X: (n, D) data.
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
        size in extra memory) or 'auto' (default: 'hamerly' on a CPU from 50,000 rows, else 'lloyd').

    Example:
      >>> res = gmm_jax.kmeans(jax.random.key(0), X, 3, n_restarts=8)
      >>> res.centers.shape, res.labels.shape
    """
    from gmm_jax._validation import key_form, validate_kmeans

    X, sample_weight, init_centers = validate_kmeans(X, n_clusters, init, max_iter, tol, sample_weight, n_restarts)
    k, form = key_form(key)
    if form != "one":
        raise ValueError(f"key must be one PRNG key (jax.random.key(seed)), got shape {k.shape} and dtype {k.dtype}")
    n = X.shape[0]
    bounds = use_bounds(algorithm, n)
    # a row bucket (as fit): nearby row counts share one compiled program; the padding rows weigh 0, are never
    # drawn as seeds, never count as changed and never fill an empty cluster
    X, sample_weight, mask, weighted = bucket_rows(X, sample_weight, any_traced(k, X, sample_weight, init_centers))
    bs = kmeans_block_size(block_size, X.shape[0], n_clusters)
    res = _kmeans_jit(
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
    )
    # labels cut back to n rows on the host (an eager slice would compile once per row count)
    return res if mask is None else res._replace(labels=jnp.asarray(np.asarray(res.labels)[:n]))


@partial(jax.jit, static_argnames=("block_size",))
def _kmeans_predict(X, centers, block_size=None):
    bs = resolve_block_size(block_size, X.shape[0], centers.shape[0], X.shape[1])
    return row_map(lambda x: jnp.argmin(sq_distances(x, centers)).astype(jnp.int32), X, bs)


@jax.jit
def center_distances(X, centers):
    """Euclidean distances (n, K) of every row of X to every centre (scikit-learn's ``KMeans.transform``), over row
    blocks."""
    bs = resolve_block_size(None, X.shape[0], centers.shape[0], X.shape[1])
    return row_map(lambda x: jnp.sqrt(jnp.maximum(sq_distances(x, centers), 0.0)), X, bs)


def kmeans_predict(X, centers, block_size=None):
    """Nearest-centre labels (n,) int32 for data X (n, D) and centres (K, D) (both checked: 2-D, finite, the same
    number of features)."""
    from gmm_jax._validation import as_data, check_positive_int

    X = as_data(X)
    centers = as_data(centers, "centers")
    if centers.shape[1] != X.shape[1]:
        raise ValueError(f"X has {X.shape[1]} features, but the centres have {centers.shape[1]} (centers shape "
                         f"{centers.shape})")
    if block_size is not None:
        block_size = check_positive_int(block_size, "block_size")
    return bucketed_rows(_kmeans_predict, X, centers.astype(X.dtype), block_size)  # the row bucket, as fit and kmeans
