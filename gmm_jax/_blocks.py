"""Row-blocked reductions and maps: scratch memory is one block's worth, never n x K x D."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# Elements of the largest (block, K, D) temporary: 2**21 float32 = 8 MiB.
_SCRATCH_ELEMENTS = 1 << 21


# With R > 1 vmapped restarts every temporary is R times larger.  Measured on a 2-core CPU (d = 2-4, K = 5-16,
# R = 32): blocks with R x block x K x D near 2**19-2**20 elements ran up to 3x faster than at 2**21 (cache), while
# splitting n = 2000 rows into two blocks instead of one cost 1.4-3x (per-block overhead), hence 2**20.
_SCRATCH_ELEMENTS_RESTARTS = 1 << 20


# On an accelerator the block loop is sequential kernel launches, not cache reuse: blocks are made as large as a
# 512 MiB float32 temporary allows (an H100 ran gmmx's cell, 65,536 x 32 x 64, in 64 CPU-sized blocks per pass).
_SCRATCH_ELEMENTS_ACCELERATOR = 1 << 27


def on_accelerator() -> bool:
    """Whether JAX's default backend is not the CPU (block sizes are then chosen for device memory, not caches)."""
    return jax.default_backend() != "cpu"


def default_block_size(n: int, n_components: int, n_features: int, n_restarts: int = 1) -> int:
    """Rows per block so that a (block, K, D) temporary stays near 8 MiB (one restart) or the R vmapped restarts'
    (R, block, K, D) temporaries near 4 MiB on a CPU, near 512 MiB on an accelerator; at least 64 rows, at most
    16384 (CPU) or 2**22 (accelerator) and n."""
    if on_accelerator():
        b = min(_SCRATCH_ELEMENTS_ACCELERATOR // max(1, n_restarts * n_components * n_features), 1 << 22)
    elif n_restarts <= 1:
        b = min(_SCRATCH_ELEMENTS // max(1, n_components * n_features), 16384)
    else:
        b = min(_SCRATCH_ELEMENTS_RESTARTS // max(1, n_restarts * n_components * n_features), 16384)
    return balanced_block_size(n, max(64, b))


def balanced_block_size(n: int, b: int) -> int:
    """The fewest blocks of at most ``b`` rows, made equal (rounded up to a multiple of 64 rows when that keeps
    the count): the last block of ``b`` rows is shifted back to stay in bounds, so with ``n`` just above ``b`` the
    two blocks overlap almost entirely and the pass does nearly twice the work.  Measured (32 vmapped restarts,
    n=2000, d=3-6, K=5, one EM pass): blocks of 1638 rows 1.5-2.3x slower than 1000-row or single blocks."""
    b = int(max(1, min(b, n)))
    nb = -(-n // b)
    even = -(-n // nb)
    rounded = -(-even // 64) * 64
    return int(min(n, rounded if -(-n // rounded) == nb and rounded <= b else even))


def resolve_block_size(block_size, n: int, n_components: int, n_features: int, n_restarts: int = 1) -> int:
    if block_size is None:
        return default_block_size(n, n_components, n_features, n_restarts)
    return int(max(1, min(int(block_size), n)))


def block_slices(X: jax.Array, block_size: int, sample_weight, i):
    """Block ``i`` of X: rows ``[start, start + B)`` with ``start = min(i B, n - B)``, and their weights.

    The last block is shifted back so it stays in bounds; rows already covered by the previous block get weight 0,
    so no padding copy of X is ever made.

    Returns:
      (start, xb (B, D), wb (B,)).
    """
    n = X.shape[0]
    b = block_size
    start = jnp.minimum(i * b, n - b)
    xb = lax.dynamic_slice_in_dim(X, start, b, axis=0)
    valid = (start + jnp.arange(b)) >= i * b
    if sample_weight is None:
        wb = valid.astype(X.dtype)
    else:
        wb = jnp.where(valid, lax.dynamic_slice_in_dim(sample_weight, start, b, axis=0), 0).astype(X.dtype)
    return start, xb, wb


def n_blocks(n: int, block_size: int) -> int:
    return -(-n // block_size)


def psum(tree, axis_name):
    """Sum over the devices of a mesh axis inside ``shard_map`` (identity when ``axis_name`` is None)."""
    return tree if axis_name is None else lax.psum(tree, axis_name)


def block_reduce(fn, X: jax.Array, block_size: int, sample_weight=None, axis_name=None):
    """``sum_i fn(xb_i, wb_i, i)`` over row blocks (pytree outputs added leaf-wise).

    ``fn(xb, wb, i)`` gets a (B, D) block, its (B,) weights (0 for rows outside the block) and the block index.
    With ``axis_name`` (inside ``shard_map``, rows sharded over that mesh axis) the per-device sums are added over
    the devices, so every device gets the sum over all rows.
    """
    nb = n_blocks(X.shape[0], block_size)

    def one(i):
        _, xb, wb = block_slices(X, block_size, sample_weight, i)
        return fn(xb, wb, i)

    acc = one(0)
    if nb > 1:
        acc = lax.fori_loop(1, nb, lambda i, a: jax.tree.map(jnp.add, a, one(i)), acc)
    return psum(acc, axis_name)


def unblock(stacked, n: int, bs: int):
    """(nb, B, ...) per-block outputs (pytree) -> (n, ...) rows; the last block was shifted back to start at n - B."""

    def one(a):
        nb = a.shape[0]
        if nb * bs == n:
            return a.reshape((n,) + a.shape[2:])
        tail = a[-1, (nb - 1) * bs - (n - bs):]
        return jnp.concatenate([a[:-1].reshape((-1,) + a.shape[2:]), tail], axis=0)

    return jax.tree.map(one, stacked)


def row_map(fn, X, block_size: int):
    """``fn`` applied to every row of X (a pytree of row-aligned arrays), vmapped within blocks of ``block_size``
    rows.  Blocks are dynamic slices of X (the last shifted back to stay in bounds), so X is never copied or
    reshaped -- ``lax.map(..., batch_size=)`` would copy all but the remainder rows of X."""
    n = jax.tree.leaves(X)[0].shape[0]
    if block_size >= n:
        return jax.vmap(fn)(X)

    def body(_, i):
        start = jnp.minimum(i * block_size, n - block_size)
        xb = jax.tree.map(lambda a: lax.dynamic_slice_in_dim(a, start, block_size, axis=0), X)
        return None, jax.vmap(fn)(xb)

    _, out = lax.scan(body, None, jnp.arange(n_blocks(n, block_size)))
    return unblock(out, n, block_size)


def data_shift(X: jax.Array, block_size: int, sample_weight=None, axis_name=None) -> jax.Array:
    """A reference point near the data's (weighted) mean, computed without cancellation.

    Two passes: first relative to ``X[0]``, so that for data with a large offset the differences are exact
    (Sterbenz) and their mean is accurate in float32.  Sharded (``axis_name``): ``X[0]`` of the first device.
    Returns (D,).
    """
    x0 = X[0]
    if axis_name is not None:
        x0 = lax.psum(jnp.where(lax.axis_index(axis_name) == 0, x0, jnp.zeros_like(x0)), axis_name)

    def fn(xb, wb, i):
        return jnp.sum(wb[:, None] * (xb - x0), axis=0), jnp.sum(wb)

    s, w = block_reduce(fn, X, block_size, sample_weight, axis_name)
    return x0 + s / jnp.maximum(w, jnp.finfo(X.dtype).tiny)


# Row buckets.  fit, initialize, kmeans and the model functions pad X with zero-weight rows (copies of its first row,
# marked by a mask) up to a bucket below this many rows, so that data sets of nearby sizes share one compiled
# program: a new row count otherwise costs a whole compilation (1.7-1.9 s for a default fit on a 2-core CPU).  Four
# buckets per octave: at most 25% more rows.  The price, measured on this machine at n=2000, d=2, K=5
# (interleaved, best of 25): a default fit 1.50 -> 1.74 ms, 32 restarts 21.3 -> 23.1 ms; kmeans 0.68 -> 0.96 ms, 32
# restarts 9.7 -> 10.8 ms (the weighted passes and the padding itself, 0.03 ms); a first compilation ~0.2 s more
# (median of five fresh processes 1.84 against 1.60 s).  From this size on no padding: the pass dominates and the
# compilation is amortised.  set_row_buckets(0) turns it off.
BUCKET_MAX_ROWS = 16384


def set_row_buckets(max_rows: int) -> int:
    """Pad X to a row bucket below ``max_rows`` rows (default 16384; at most 16384, where the product-form passes
    and compiler options begin), or never with 0; returns the previous value.  Padding saves a compilation
    (1.5-1.9 s) for every new row count that falls in a bucket already compiled, and costs a little per call (at
    n=2000, d=2, K=5: 0.25 ms of a 1.5 ms fit, 1.8 ms of 21 ms for 32 restarts) and ~0.2 s of a first compilation:
    turn it off for many calls on one row count where that matters."""
    global BUCKET_MAX_ROWS
    if isinstance(max_rows, bool) or not isinstance(max_rows, int) or not 0 <= max_rows <= 16384:
        raise ValueError(f"max_rows must be an integer in [0, 16384], got {max_rows!r}")
    previous, BUCKET_MAX_ROWS = BUCKET_MAX_ROWS, max_rows
    return previous


def row_bucket(n: int) -> int:
    """The padded row count for ``n`` rows: 64 up to 64 rows, then n rounded up to a multiple of a quarter of the
    power of two below it (128, 160, 192, 224, 256, 320, ...), at most ``BUCKET_MAX_ROWS - 1``; ``n`` itself from
    ``BUCKET_MAX_ROWS`` rows."""
    if n >= BUCKET_MAX_ROWS:
        return n
    bucket = 64 if n <= 64 else -(-n // (1 << (n.bit_length() - 3))) * (1 << (n.bit_length() - 3))
    return min(bucket, BUCKET_MAX_ROWS - 1)


def pad_rows(X, sample_weight=None):
    """X padded to :func:`row_bucket` rows with copies of its first row: (X, weights, mask, padded) where the weights
    are ``sample_weight`` (or ones) with 0 on the added rows and the mask 1 on the real rows; ``padded`` False (and
    the inputs returned as they are, mask None) when n is already a bucket.  Done in NumPy (fewer than
    ``BUCKET_MAX_ROWS`` rows): a jitted padding would itself compile once per row count."""
    n = X.shape[0]
    rows = row_bucket(n)
    if rows == n:
        return X, sample_weight, None, False
    x = np.asarray(X)
    extra = rows - n
    mask = _row_mask(n, rows, x.dtype)
    w = mask if sample_weight is None else jnp.asarray(
        np.concatenate([np.asarray(sample_weight, x.dtype), np.zeros((extra,), x.dtype)]))
    return jnp.asarray(np.concatenate([x, np.broadcast_to(x[:1], (extra, x.shape[1]))])), w, mask, True


@functools.lru_cache(maxsize=64)
def _row_mask(n: int, rows: int, dtype) -> jax.Array:
    """(rows,) 1 on the first n rows, 0 after (kept: a host-to-device copy less per call)."""
    return jnp.asarray(np.concatenate([np.ones((n,), dtype), np.zeros((rows - n,), dtype)]))


def bucket_rows(X, sample_weight, traced: bool):
    """What fit, initialize and kmeans pass to their programs: (X, weights, mask, weighted).  Outside a caller's jit
    (``traced`` False) X is padded to its row bucket by :func:`pad_rows`; ``weighted`` says whether the weights are
    sample weights (else they are only the mask, or None: no padding and no weights)."""
    if traced:
        return X, sample_weight, None, True
    Xp, w, mask, padded = pad_rows(X, sample_weight)
    return Xp, w, mask, sample_weight is not None or not padded


def any_traced(*trees) -> bool:
    """Whether any leaf of ``trees`` is a tracer (the call is inside a caller's jit: nothing is padded there)."""
    return any(isinstance(a, jax.core.Tracer) for a in jax.tree.leaves(trees))


def bucketed_rows(core, X, *args):
    """``core(X, *args)`` (a jitted function whose output has one row per row of X) on X padded to its row bucket and
    cut back to X's rows on the host (an eager slice would compile once per row count); as it is inside a caller's
    jit."""
    if any_traced(X, args):
        return core(X, *args)
    Xp, _, _, padded = pad_rows(X)
    out = core(Xp, *args)
    return jax.tree.map(lambda a: jnp.asarray(np.asarray(a)[:X.shape[0]]), out) if padded else out
