"""Lloyd's iterations with Hamerly's bounds: the same iterates as :func:`gmm_jax.lloyd.plain_step`, skipping the
distance computations of points whose label provably cannot change.

One Lloyd iteration with Hamerly's bounds (Hamerly, "Making k-means even faster", SDM 2010).

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
rounded outward (PROFILE.md, ninth session, compares this with a uniform margin).  Every other point gets the
full pass's computation (:func:`gmm_jax.lloyd.assign_block`, chunk by chunk).  The sums of the points by label
(local to a device when sharded) are carried and updated by the points whose label changed; a full pass recomputes them.  Empty
clusters: the exact distances the relocation needs come from one full pass, as in the plain iteration.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from gmm_jax.config import Config
from gmm_jax.lloyd import LloydState, assign_block, lloyd_pass, new_centers, relocate_empty
from gmm_jax.rows import n_blocks, psum, row_map


class RowCache(NamedTuple):
    """The open points' rows, kept contiguous between iterations (capacity 0 below ``cache_min_features``)."""

    idx: jax.Array  # (cap + B,) int32 row of each slot (n: empty)
    count: jax.Array  # () slots in use
    rows: jax.Array  # (cap + B, D) shifted rows
    member: jax.Array  # (n,) bool: the point's row is in the cache


class Bounds(NamedTuple):
    """The bounded iteration's state beside Lloyd's: bounds, ||x - shift||^2, the carried per-cluster sums and counts
    (local to a device when sharded), the last iteration's centre geometry, and the cache."""

    u: jax.Array  # (n,) >= distance to the assigned centre
    l: jax.Array  # (n,) <= distance to every other centre
    x2: jax.Array  # (n,)
    sums: jax.Array  # (K, D)
    counts: jax.Array  # (K,)
    moved: jax.Array  # (K,) each centre's last shift
    half: jax.Array  # (K,) half the distance to the nearest other centre
    c_max: jax.Array  # () max ||c||^2
    cache: RowCache


class _Assigned(NamedTuple):
    """What the chunks of open points update: labels, bounds, local sums and counts, changed-label count."""

    labels: jax.Array
    u: jax.Array
    l: jax.Array
    sums: jax.Array
    counts: jax.Array
    changed: jax.Array


class _Plan(NamedTuple):
    """Which open points are read from the cache, appended to it, or gathered from X this iteration."""

    use_cache: jax.Array
    rebuild: jax.Array
    gather_all: jax.Array
    base_in: jax.Array
    to_add: jax.Array
    n_add: jax.Array
    base: jax.Array


def cache_capacity(n: int, chunk: int, d: int, config: Config) -> int:
    """Rows of the cache of open points: 3/8 of n in whole chunks, 0 below ``config.cache_min_features``."""
    if d < config.cache_min_features:
        return 0
    return int(min(n_blocks(n, chunk), -(-(3 * n) // (8 * chunk))) * chunk)


def bounds_state(X, shift, centers, bs: int, config: Config) -> Bounds:
    """The state before the first iteration: every point open, no cache."""
    n, d = X.shape
    k, dt = centers.shape[0], X.dtype
    x2 = row_map(lambda x: jnp.sum(jnp.square(x - shift)), X, bs)  # read by the sparse steps
    cap = cache_capacity(n, bs, d, config)
    cache = RowCache(jnp.full((cap + bs,), n, jnp.int32), jnp.zeros((), jnp.int32), jnp.zeros((cap + bs, d), dt),
                     jnp.zeros((n,), bool))
    return Bounds(jnp.full((n,), jnp.inf, dt), jnp.zeros((n,), dt), x2, jnp.zeros((k, d), dt), jnp.zeros((k,), dt),
                  jnp.zeros((k,), dt), jnp.zeros((k,), dt), jnp.max(jnp.sum(jnp.square(centers), axis=1)), cache)


def _rounding_error(xx, c_max, d: int, eps):
    """Twice the first-order bound E on the rounding error of a computed squared distance."""
    return 2.0 * (d + 2) * eps * (xx + c_max)


def _slack(r, e):
    """min(sqrt(e), e / r), without 0 / 0."""
    return e / jnp.maximum(jnp.maximum(r, jnp.sqrt(e)), jnp.finfo(r.dtype).tiny)


def _upper(c, e):
    """>= the exact distance when the computed squared distance ``c`` is off by at most ``e``."""
    r = jnp.sqrt(c)
    return r + _slack(r, e)


def _lower(c, e):
    """<= the exact distance (see :func:`_upper`)."""
    r = jnp.sqrt(c)
    return r - _slack(r, e)


def _loosen(b: Bounds, labels_old, d: int, eps):
    """The bounds moved by the last iteration's centre shifts, everything rounded outward: (u, l, half)."""
    moved = b.moved * (1 + (d + 2) * eps)
    half = b.half * (1 - (d + 2) * eps)
    u = (b.u + moved[jnp.maximum(labels_old, 0)]) * (1 + 2 * eps)
    l = b.l
    if moved.shape[0] > 1:
        top, arg = lax.top_k(moved, 2)
        l = l - jnp.where(labels_old == arg[0], top[1], top[0])
        l = l - 2 * eps * jnp.abs(l)
    return u, l, half


def _plan(open_, n_open, cache: RowCache, dense_taken, n: int, chunk: int, cap: int) -> _Plan:
    """Cache use this iteration: appended to when the new open points fit and the cache is not larger than they
    need, rebuilt from the open points when they fit, else every open row is gathered from X."""
    sp = ~dense_taken
    n_new = jnp.sum(open_ & ~cache.member, dtype=jnp.int32)
    fits = (cache.count + n_new <= cap) & (n_blocks(cache.count + n_new, chunk) <= n_blocks(n_open, chunk))
    use_cache = sp & (cache.count > 0) & fits
    rebuild = sp & ~use_cache & (n_open <= cap)
    gather_all = sp & ~use_cache & ~rebuild  # too many open points for the cache: gathered from X, not kept
    base_in = cache.member & use_cache
    to_add = open_ & ~base_in & (use_cache | rebuild)
    n_add = jnp.sum(to_add, dtype=jnp.int32)
    base = jnp.where(use_cache, cache.count, 0).astype(jnp.int32)
    return _Plan(use_cache, rebuild, gather_all, base_in, to_add, n_add, base)


def _compact(sel, n_sel, n: int, n_pad: int):
    """(n_pad,) the indices of the selected rows first (in row order), zeros after."""

    def compact():
        pos = lax.associative_scan(jnp.add, sel.astype(jnp.int32)) - 1
        return jnp.zeros((n_pad,), jnp.int32).at[jnp.where(sel, pos, n_pad)].set(
            jnp.arange(n, dtype=jnp.int32), mode="drop")

    return lax.cond(n_sel > 0, compact, lambda: jnp.zeros((n_pad,), jnp.int32))


def _append(cache: RowCache, idx, n_append, base, X, shift, chunk: int, config: Config):
    """The rows ``idx[:n_append]`` written into the cache from slot ``base``, in pieces of 1/append_div chunk (a few
    hundred new points per iteration are common)."""
    n = X.shape[0]
    ac = max(1, chunk // config.append_div)

    def append(j, c):
        ci, xcc = c
        r = lax.dynamic_slice_in_dim(idx, j * ac, ac)
        ok = (j * ac + jnp.arange(ac)) < n_append
        ci = lax.dynamic_update_slice_in_dim(ci, jnp.where(ok, r, n), base + j * ac, axis=0)
        xcc = lax.dynamic_update_slice_in_dim(xcc, X[r] - shift, base + j * ac, axis=0)
        return ci, xcc

    return lax.fori_loop(0, n_blocks(n_append, ac), append, (cache.idx, cache.rows))


def _chunk_step(rows_of, size, first, count, ctx, c):
    """One chunk of open points: the full pass's computation, bounds from its distances, sums moved."""
    X, w, centers, c_sq, x2, labels_old, c_max = ctx
    j, a = c
    n, d = X.shape
    k, dt = centers.shape[0], X.dtype
    start = first + j * size
    r, xs = rows_of(start, size)
    ok = (start + jnp.arange(size)) < count
    wr = jnp.ones((size,), dt) if w is None else w[r].astype(dt)
    xx = x2[r]
    new, mind, m2, _ = assign_block(xs, centers, c_sq, True, xx)
    ee = _rounding_error(xx, c_max, d, jnp.finfo(dt).eps)
    old = labels_old[r]  # each point is in one chunk: reading the loop's own labels would copy them
    rr = jnp.where(ok, r, n)
    moved = ok & (new != old)
    wm = jnp.where(moved, wr, 0)
    wx = xs * wm[:, None]
    return j + 1, _Assigned(
        a.labels.at[rr].set(new, mode="drop"),
        a.u.at[rr].set(_upper(mind, ee), mode="drop"),
        a.l.at[rr].set(_lower(m2, ee), mode="drop"),
        a.sums + jax.ops.segment_sum(wx, new, k) - jax.ops.segment_sum(wx, old, k),
        a.counts + jax.ops.segment_sum(wm, new, k) - jax.ops.segment_sum(wm, old, k),
        a.changed + jnp.sum(moved, dtype=jnp.int32))


def _run_chunks(rows_of, count, a: _Assigned, ctx, chunk: int, config: Config) -> _Assigned:
    """Rows [0, count) of ``rows_of``: whole chunks, then the rest in chunks of chunk / small_div rows."""
    n_big = count // chunk
    small = max(1, chunk // config.small_div)

    def chunks(size, first, stop, a0):
        def step(c):
            return _chunk_step(rows_of, size, first, count, ctx, c)

        return lax.while_loop(lambda c: first + c[0] * size < stop, step, (jnp.zeros((), jnp.int32), a0))[1]

    return chunks(small, n_big * chunk, count, chunks(chunk, 0, n_big * chunk, a))


def _geometry(new, centers):
    """(each centre's squared shift, half the distance to its nearest other centre (inf if K = 1), max ||c||^2), kept in
    the state: computed where they are read, XLA would fuse them into the per-point loops and recompute them per
    point."""
    k = new.shape[0]
    moved_sq = jnp.sum(jnp.square(new - centers), axis=1)
    cc = jnp.sum(jnp.square(new[:, None, :] - new[None, :, :]), axis=-1)
    half = 0.5 * jnp.sqrt(jnp.min(jnp.where(jnp.eye(k, dtype=bool), jnp.inf, cc), axis=1))
    return moved_sq, half, jnp.max(jnp.sum(jnp.square(new), axis=1))


def _open_points(s: LloydState, b: Bounds, mask):
    """(bounds moved, the open points: real and not settled by their bounds, their number, real points)."""
    n, d = s.labels.shape[0], s.centers.shape[1]
    eps = jnp.finfo(b.u.dtype).eps
    u, l, half = _loosen(b, s.labels, d, eps)
    e_pt = _rounding_error(b.x2, b.c_max, d, eps)
    sa = half[jnp.maximum(s.labels, 0)]
    settled = ((l > u) & ((l - u) * l > 2.0 * e_pt)) | ((sa > u) & (4.0 * sa * (sa - u) > 2.0 * e_pt))
    valid = jnp.ones((n,), bool) if mask is None else mask > 0
    open_ = valid & ~settled
    n_valid = n if mask is None else jnp.sum(valid, dtype=jnp.int32)
    return u, l, open_, jnp.sum(open_, dtype=jnp.int32), n_valid


def _assign_open(X, w, shift, bs, mask, s: LloydState, b: Bounds, config: Config):
    """Every open point gets the full pass's computation: in one full pass when more than ``bounds_dense_fraction``
    are open, else chunk by chunk (from the cache, or gathered from X).  No lax.cond carries the cache (a conditional
    copies what passes through it): loops simply run zero chunks when not needed.  Returns (_Assigned, cache)."""
    n, d = X.shape
    u, l, open_, n_open, n_valid = _open_points(s, b, mask)
    c_sq = jnp.sum(jnp.square(s.centers), axis=1)
    eps = jnp.finfo(X.dtype).eps

    def dense():
        (lab, mind, m2, _), sums, counts, changed = lloyd_pass(X, w, shift, s.centers, s.labels, bs, mask, None,
                                                                second=True)
        ee = _rounding_error(b.x2, b.c_max, d, eps)
        return _Assigned(lab, _upper(mind, ee), _lower(m2, ee), sums, counts, changed)

    dense_taken = n_open > config.bounds_dense_fraction * n_valid
    kept = _Assigned(s.labels, u, l, b.sums, b.counts, jnp.zeros((), jnp.int32))
    a = lax.cond(dense_taken, dense, lambda: kept)
    cap = cache_capacity(n, bs, d, config)
    p = _plan(open_, n_open, b.cache, dense_taken, n, bs, cap)
    idx = _compact(jnp.where(p.gather_all, open_, p.to_add), jnp.where(p.gather_all, n_open, p.n_add), n,
                   n_blocks(n, bs) * bs + bs)  # room for a last slice starting below n
    cidx, xc = _append(b.cache, idx, jnp.where(p.gather_all, 0, p.n_add), p.base, X, shift, bs, config)
    ccount = jnp.where(p.use_cache | p.rebuild, p.base + p.n_add, 0).astype(jnp.int32)
    ctx = (X, w, s.centers, c_sq, b.x2, s.labels, b.c_max)

    def cached_rows(start, size):  # the cache has room for a slice of up to one chunk from any start below cap
        return lax.dynamic_slice_in_dim(cidx, start, size), lax.dynamic_slice_in_dim(xc, start, size, axis=0)

    def gathered_rows(start, size):
        r = lax.dynamic_slice_in_dim(idx, start, size)
        return r, X[r] - shift

    a = _run_chunks(cached_rows, ccount, a, ctx, bs, config)  # zero chunks after a full pass or with gather_all
    a = _run_chunks(gathered_rows, jnp.where(p.gather_all, n_open, 0), a, ctx, bs, config)
    cache = RowCache(cidx, ccount, xc, (p.base_in | p.to_add) & (p.use_cache | p.rebuild))
    return a, cache


def bounded_step(X, w, shift, tol, bs: int, mask, axis_name, config: Config, state):
    """One Lloyd iteration with Hamerly's bounds: (LloydState, Bounds) -> the next (see the module docstring)."""
    s, b = state
    a, cache = _assign_open(X, w, shift, bs, mask, s, b, config)
    sums, counts, changed = psum((a.sums, a.counts, a.changed), axis_name)

    def relocate():
        lab, mind, _, _, _ = lloyd_pass(X, w, shift, s.centers, a.labels, bs, mask, axis_name)
        return relocate_empty(X, w, shift, lab, mind, sums, counts, mask, axis_name)

    new = new_centers(s.centers, sums, counts, relocate)  # the carried sums stay those of the labels
    strict = changed == 0
    moved_sq, half, c_max = _geometry(new, s.centers)
    done = strict | (jnp.sum(moved_sq) <= tol)
    return (LloydState(s.i + 1, new, a.labels, done, strict),
            Bounds(a.u, a.l, b.x2, a.sums, a.counts, jnp.sqrt(moved_sq), half, c_max, cache))


__all__ = ["Bounds", "RowCache", "bounded_step", "bounds_state", "cache_capacity"]
