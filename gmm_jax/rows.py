"""Rows and blocks: row-blocked reductions and maps (scratch memory is one block's worth, never n x K x D), block
sizes, and the row buckets that let nearby row counts share one compiled program."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gmm_jax.config import Config, any_traced, resolve_config, to_device


def default_block_size(n: int, n_components: int, n_features: int, n_restarts: int = 1, config: Config = None) -> int:
    """Rows per block so that a (block, K, D) temporary stays near ``config.scratch_elements`` (one restart) or the R
    vmapped restarts' (R, block, K, D) temporaries near ``scratch_elements_restarts`` on a CPU, near
    ``scratch_elements_accelerator`` on an accelerator; at least 64 rows, at most 16384 (CPU) or 2**22
    (accelerator) and n."""
    cfg = resolve_config(config)
    if cfg.accelerator:
        b = min(cfg.scratch_elements_accelerator // max(1, n_restarts * n_components * n_features), 1 << 22)
    elif n_restarts <= 1:
        b = min(cfg.scratch_elements // max(1, n_components * n_features), 16384)
    else:
        b = min(cfg.scratch_elements_restarts // max(1, n_restarts * n_components * n_features), 16384)
    return balanced_block_size(n, max(64, b))


def balanced_block_size(n: int, b: int) -> int:
    """The fewest blocks of at most ``b`` rows, made equal (rounded up to a multiple of 64 rows when that keeps
    the count): the last block of ``b`` rows is shifted back to stay in bounds, so with ``n`` just above ``b`` the
    two blocks overlap almost entirely and the pass does nearly twice the work."""
    b = int(max(1, min(b, n)))
    nb = -(-n // b)
    even = -(-n // nb)
    rounded = -(-even // 64) * 64
    return int(min(n, rounded if -(-n // rounded) == nb and rounded <= b else even))


def resolve_block_size(block_size, n: int, n_components: int, n_features: int, n_restarts: int = 1,
                       config: Config = None) -> int:
    """``block_size`` clipped to [1, n], or :func:`default_block_size` when None."""
    if block_size is None:
        return default_block_size(n, n_components, n_features, n_restarts, config)
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


def block_rows(a, block_size: int, i):
    """Rows of a row-aligned array ``a`` (n, ...) in block ``i`` (the rows of :func:`block_slices`' ``xb``)."""
    start = jnp.minimum(i * block_size, a.shape[0] - block_size)
    return lax.dynamic_slice_in_dim(a, start, block_size, axis=0)


def n_blocks(n: int, block_size: int) -> int:
    """Blocks of ``block_size`` rows that cover ``n`` rows."""
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
# marked by a mask) up to a bucket below ``Config.bucket_max_rows`` rows, so that data sets of nearby sizes share one
# compiled program: a new row count otherwise costs a whole compilation.  Four buckets per octave: at most 25% more
# rows.  What they cost is measured in docs/performance.md.  ``Config(bucket_max_rows=0)`` turns them off.


def row_bucket(n: int, max_rows: int = 16384) -> int:
    """The padded row count for ``n`` rows: 64 up to 64 rows, then n rounded up to a multiple of a quarter of the
    power of two below it (128, 160, 192, 224, 256, 320, ...), at most ``max_rows - 1``; ``n`` itself from ``max_rows``
    rows."""
    if n >= max_rows:
        return n
    bucket = 64 if n <= 64 else -(-n // (1 << (n.bit_length() - 3))) * (1 << (n.bit_length() - 3))
    return min(bucket, max_rows - 1)


def pad_rows(X, sample_weight=None, max_rows: int = 16384):
    """X padded to :func:`row_bucket` rows with copies of its first row: (X, weights, mask, padded) where the weights
    are ``sample_weight`` (or ones) with 0 on the added rows and the mask 1 on the real rows; ``padded`` False (and
    the inputs returned as they are, mask None) when n is already a bucket.  Done in NumPy (fewer than
    ``max_rows`` rows): a jitted padding would itself compile once per row count."""
    n = X.shape[0]
    rows = row_bucket(n, max_rows)
    if rows == n:
        return X, sample_weight, None, False
    x = np.asarray(X)
    extra = rows - n
    mask = _row_mask(n, rows, x.dtype)
    w = mask if sample_weight is None else to_device(
        np.concatenate([np.asarray(sample_weight, x.dtype), np.zeros((extra,), x.dtype)]))
    return to_device(np.concatenate([x, np.broadcast_to(x[:1], (extra, x.shape[1]))])), w, mask, True


@functools.lru_cache(maxsize=64)
def _row_mask(n: int, rows: int, dtype) -> jax.Array:
    """(rows,) 1 on the first n rows, 0 after (kept: a host-to-device copy less per call)."""
    return to_device(np.concatenate([np.ones((n,), dtype), np.zeros((rows - n,), dtype)]))


def bucket_rows(X, sample_weight, traced: bool, max_rows: int = 16384):
    """What fit, initialize and kmeans pass to their programs: (X, weights, mask, weighted).  Outside a caller's jit
    (``traced`` False) X is padded to its row bucket by :func:`pad_rows`; ``weighted`` says whether the weights are
    sample weights (else they are only the mask, or None: no padding and no weights)."""
    if traced:
        return X, sample_weight, None, True
    Xp, w, mask, padded = pad_rows(X, sample_weight, max_rows)
    return Xp, w, mask, sample_weight is not None or not padded


def bucketed_rows(core, X, *args, max_rows: int = 16384):
    """``core(X, *args)`` (a jitted function whose output has one row per row of X) on X padded to its row bucket and
    cut back to X's rows on the host (an eager slice would compile once per row count); as it is inside a caller's
    jit."""
    if any_traced(X, args):
        return core(X, *args)
    Xp, _, _, padded = pad_rows(X, None, max_rows)
    out = core(Xp, *args)
    return jax.tree.map(lambda a: to_device(np.asarray(a)[:X.shape[0]]), out) if padded else out


def map_blocks(fn, X, block_size: int):
    """``fn(xb)`` on every block of ``block_size`` rows of X (a (B, D) block in, a pytree of (B, ...) arrays out), the
    outputs stitched back to one row per row of X.  The last block is shifted back to stay in bounds (no copy of
    X)."""
    n = X.shape[0]
    if block_size >= n:
        return fn(X)

    def body(_, i):
        start = jnp.minimum(i * block_size, n - block_size)
        return None, fn(lax.dynamic_slice_in_dim(X, start, block_size, axis=0))

    _, out = lax.scan(body, None, jnp.arange(n_blocks(n, block_size)))
    return unblock(out, n, block_size)
