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


def relocate_empty(X, w, shift, labels, mind, sums, counts, mask=None, axis_name=None, take=None):
    """scikit-learn's rule: each empty cluster takes one of the points farthest from their assigned centre (none
    when every point lies on its centre).

    ``take(indices)`` -> the (shifted) rows at ``indices`` as a dense (T, D) array; default ``X[indices] - shift``
    (the sparse K-means passes its own, and X None)."""
    k = counts.shape[0]
    empty = counts == 0
    rank = jnp.clip(jnp.cumsum(empty) - 1, 0, None)
    kk = min(k, mind.shape[0])
    if mask is not None:
        mind = jnp.where(mask > 0, mind, -jnp.inf)
    vals, far = lax.top_k(mind, kk)
    xf = X[far] - shift if take is None else take(far)
    wf = jnp.ones_like(vals) if w is None else w[far]
    of = labels[far]
    if axis_name is not None:  # the farthest points of all devices, in device order, then the global top
        vals, xf, wf, of = (lax.all_gather(a, axis_name, tiled=True) for a in (vals, xf, wf, of))
        kk = min(k, vals.shape[0])
        _, top = lax.top_k(vals, kk)
        xf, wf, of = xf[top], wf[top], of[top]
    sel = jnp.clip(rank, 0, kk - 1)  # (K,) far point for each (empty) cluster
    xp, wp, old = xf[sel], wf[sel].astype(counts.dtype), of[sel]
    # every point on its centre (more clusters than distinct points): nothing to relocate (scikit-learn's rule)
    moved = empty & (jnp.max(vals) > 0)
    m = moved.astype(sums.dtype)
    sums = sums.at[old].add(-(m * wp)[:, None] * xp)
    counts = counts.at[old].add(-(m * wp))
    sums = jnp.where(moved[:, None], wp[:, None] * xp, sums)
    counts = jnp.where(moved, wp, counts)
    return sums, counts


def new_centers(centers, sums, counts, relocate):
    """Centres from per-cluster sums and counts, after ``relocate()`` (-> sums, counts) has given each empty cluster
    a point (run only when a cluster is empty); a cluster still without weight keeps its centre."""
    sums, counts = lax.cond(jnp.any(counts == 0), relocate, lambda: (sums, counts))
    return jnp.where(counts[:, None] > 0, sums / jnp.where(counts > 0, counts, 1)[:, None], centers)


def finish_step(s: LloydState, tol, labels, mind, w, sums, counts, changed, relocate):
    """The end of one Lloyd iteration from its assignment pass (labels, distances ``mind`` to the old centres,
    weighted sums and counts per cluster, changed-label count): the new centres (``relocate`` as in
    :func:`new_centers`) and the stopping rule.  Returns (the next :class:`LloydState`, (3,) the pass's inertia
    ``sum_i w_i mind_i``, the squared centre shift and the number of changed labels: what a verbose fit
    reports)."""
    new = new_centers(s.centers, sums, counts, relocate)
    strict = changed == 0
    shift_tot = jnp.sum(jnp.square(new - s.centers))
    pass_inertia = jnp.sum(mind if w is None else w * mind)
    info = jnp.stack([pass_inertia.astype(shift_tot.dtype), shift_tot, changed.astype(shift_tot.dtype)])
    return LloydState(s.i + 1, new, labels, strict | (shift_tot <= tol), strict), info


def plain_info_step(X, w, shift, tol, bs, mask, axis_name, s: LloydState):
    """One Lloyd iteration as a full pass (:func:`lloyd_pass`): (next state, what :func:`finish_step` reports)."""
    labels, mind, sums, counts, changed = lloyd_pass(X, w, shift, s.centers, s.labels, bs, mask, axis_name)
    return finish_step(s, tol, labels, mind, w, sums, counts, changed,
                       lambda: relocate_empty(X, w, shift, labels, mind, sums, counts, mask, axis_name))


def plain_step(X, w, shift, tol, bs, mask, axis_name, s: LloydState) -> LloydState:
    """One Lloyd iteration as a full pass (:func:`lloyd_pass`)."""
    return plain_info_step(X, w, shift, tol, bs, mask, axis_name, s)[0]


def run_lloyd(info_step, s0: LloydState, max_iter: int, record: bool = False):
    """Lloyd iterations ``info_step(state) -> (state, info)`` from ``s0`` until done or ``max_iter``.  Returns (final
    state, trace): with ``record`` the trace is (max_iter, 3) of each iteration's ``info`` (NaN after the last
    iteration), else None."""
    def going(s):
        return (s.i < max_iter) & ~s.done

    if not record:
        return lax.while_loop(going, lambda s: info_step(s)[0], s0), None
    trace0 = jnp.full((max_iter, 3), jnp.nan, s0.centers.dtype)

    def body(st):
        s, trace = st
        new, info = info_step(s)
        return new, trace.at[s.i].set(info)

    return lax.while_loop(lambda st: going(st[0]), body, (s0, trace0))


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


__all__ = ["LloydState", "assign_block", "finish_step", "inertia", "kmeans_tolerance", "lloyd_pass", "lloyd_state",
           "new_centers", "plain_info_step", "plain_step", "relocate_empty", "run_lloyd"]
