"""Lloyd's algorithm, step by step as scikit-learn's ``KMeans(algorithm="lloyd")``: assignment with the current
centres, new centres from the assignment, empty clusters relocated to the points farthest from their centres, stop
when no label changed or when the squared centre shift falls below ``tol * mean(var(X))``.  Every pass runs over
row blocks: memory does not grow with n x K.  The bounded iteration (Hamerly) is in :mod:`gmm_jax.hamerly`, the
driver that chooses between them in :mod:`gmm_jax.clustering`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from gmm_jax.config import HIGHEST
from gmm_jax.rows import block_reduce, block_slices, data_shift, n_blocks, psum, unblock


class LloydState(NamedTuple):
    """Lloyd's loop state: iterations run, centres (shifted), labels of the last pass (-1 before the first), whether
    the loop is done, and whether it stopped strictly (no label changed)."""

    i: jax.Array
    centers: jax.Array
    labels: jax.Array
    done: jax.Array
    strict: jax.Array


def lloyd_state(n: int, centers) -> LloydState:
    """The state before the first iteration."""
    return LloydState(jnp.zeros((), jnp.int32), centers, jnp.full((n,), -1, jnp.int32), jnp.array(False),
                      jnp.array(False))


def assign_block(xs: jax.Array, centers: jax.Array, c_sq: jax.Array, second: bool = False, x2=None):
    """Nearest centre for a block of shifted points via ||x||^2 - 2 x.c + ||c||^2 (a matrix product).

    The (K, B) orientation makes the reductions over K run across contiguous rows of length B, which XLA's CPU
    backend vectorises.  Returns (labels (B,) int32 with ties to the lowest index, squared distances to the nearest
    centre (B,)); with ``second`` also the squared distance to the second-nearest centre (``inf`` when K = 1) and
    ``||x||^2`` (computed unless given as ``x2``): what Hamerly's bounds need.
    """
    d2t = c_sq[:, None] - 2.0 * jnp.einsum("kd,bd->kb", centers, xs, precision=HIGHEST)  # (K, B), without ||x||^2
    m = jnp.min(d2t, axis=0)
    k = centers.shape[0]
    ks = jnp.arange(k, dtype=jnp.int32)[:, None]
    idx = jnp.min(jnp.where(d2t == m[None, :], ks, k), axis=0)
    if x2 is None:
        x2 = jnp.sum(jnp.square(xs), axis=1)
    if not second:
        return idx, jnp.maximum(m + x2, 0.0)
    m2 = jnp.min(jnp.where(ks == idx[None, :], jnp.inf, d2t), axis=0)
    return idx, jnp.maximum(m + x2, 0.0), jnp.maximum(m2 + x2, 0.0), x2


def lloyd_pass(X, w, shift, centers, labels_old, bs, mask=None, axis_name=None, second=False):
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
        per_point = assign_block(xs, centers, c_sq, second)
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


def relocate_empty(X, w, shift, labels, mind, sums, counts, mask=None, axis_name=None):
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


def new_centers(centers, sums, counts, relocate):
    """Centres from per-cluster sums and counts, after ``relocate()`` (-> sums, counts) has given each empty cluster
    a point (run only when a cluster is empty); a cluster still without weight keeps its centre."""
    sums, counts = lax.cond(jnp.any(counts == 0), relocate, lambda: (sums, counts))
    return jnp.where(counts[:, None] > 0, sums / jnp.where(counts > 0, counts, 1)[:, None], centers)


def plain_step(X, w, shift, tol, bs, mask, axis_name, s: LloydState) -> LloydState:
    """One Lloyd iteration as a full pass (:func:`lloyd_pass`)."""
    labels, mind, sums, counts, changed = lloyd_pass(X, w, shift, s.centers, s.labels, bs, mask, axis_name)
    new = new_centers(s.centers, sums, counts,
                      lambda: relocate_empty(X, w, shift, labels, mind, sums, counts, mask, axis_name))
    strict = changed == 0
    shift_tot = jnp.sum(jnp.square(new - s.centers))
    return LloydState(s.i + 1, new, labels, strict | (shift_tot <= tol), strict)


def inertia(X, w, shift, centers, labels, bs, axis_name=None):
    """sum_i w_i ||x_i - c_{l_i}||^2 over row blocks (and devices)."""
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


__all__ = ["LloydState", "assign_block", "inertia", "kmeans_tolerance", "lloyd_pass", "lloyd_state", "new_centers",
           "plain_step", "relocate_empty"]
