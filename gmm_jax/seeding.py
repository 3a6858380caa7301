"""k-means++ seeding (greedy D^2 sampling), on one device or over rows sharded on a mesh axis."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from gmm_jax.config import Config, resolve_config
from gmm_jax.rows import block_reduce, resolve_block_size, row_map


def sq_distances(x: jax.Array, centers: jax.Array) -> jax.Array:
    """Exact squared Euclidean distances ``||x - c_k||^2`` of one point (D,) to centres (K, D): (K,)."""
    return jnp.sum(jnp.square(x[None, :] - centers), axis=-1)


def first_index(bits, n: int, w=None, mask=None, dtype=jnp.float32):
    """The first k-means++ centre's row (int32): uniform over the real rows (``mask`` > 0, or all ``n``), or with
    probability proportional to the weights ``w``, from 32 random ``bits``.  Equal weights (on the real rows) draw
    the row that no weights draw, so that ``sample_weight=ones`` and no weights seed alike."""
    # uniform without a constant (n,) cumsum, which XLA's GPU compiler constant-folds for minutes; 32 random bits
    # modulo n: the probabilities of the rows differ by at most n / 2**32 relative (padded rows, mask 0, at the
    # end: the same draw as without them)
    n_real = jnp.uint32(n) if mask is None else jnp.sum(mask > 0).astype(jnp.uint32)
    uniform = (bits % n_real).astype(jnp.int32)
    if w is None:
        return uniform
    equal = jnp.all((w == w[0]) | ((mask <= 0) if mask is not None else False))
    return jnp.where(equal, uniform, sample_index(uniform_bits(bits, dtype), w))


def random_rows(key, k: int, p):
    """``k`` distinct row indices drawn with probabilities proportional to ``p`` (n,) (scikit-learn's 'random'
    init with sample weights; ones: uniform)."""
    return jax.random.choice(key, p.shape[0], (k,), replace=False, p=p / jnp.sum(p))


def _first_center(bits, X, w, mask, axis_name):
    """The first centre (uniform, or proportional to the weights ``w``) from 32 random ``bits``: (row index, or -1
    when sharded; the row)."""
    n = X.shape[0]
    if axis_name is None:
        first = first_index(bits, n, w, mask, X.dtype)
        return first, X[first]
    if w is None:  # uniform over the real rows of all devices, as on one device holding the concatenated rows
        rows = lax.all_gather(jnp.sum(mask > 0).astype(jnp.int32), axis_name)
        g = (bits % jnp.sum(rows).astype(jnp.uint32)).astype(jnp.int32)
        owner = jnp.searchsorted(jnp.cumsum(rows), g, side="right")
        return jnp.int32(-1), global_take(X, owner, g - (jnp.cumsum(rows) - rows)[owner], axis_name)
    return jnp.int32(-1), global_take(X, *global_sample_index(uniform_bits(bits, X.dtype), w, axis_name), axis_name)


def kmeans_plusplus(key, X, n_clusters: int, sample_weight=None, n_local_trials=None, block_size=None, *, mask=None,
                    axis_name=None, config: Config | None = None):
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
      config: :class:`gmm_jax.Config` (default: the backend's).

    Returns:
      (centers (K, D), indices (K,) int32 of the chosen rows).
    """
    n, d = X.shape
    small_d = resolve_config(config).seed_small_d
    trials = n_local_trials if n_local_trials is not None else 2 + int(math.log(n_clusters))
    bs = resolve_block_size(block_size, n, trials, d, config=config)
    w = None if sample_weight is None else sample_weight.astype(X.dtype)
    # every draw of the seeding from one call of the generator: each call site of the counter-based generator is
    # its own block of unrolled rounds in the compiled program (one site instead of four cut the first-call compile
    # of the seeding by a third)
    bits = jax.random.bits(key, (1 + max(n_clusters - 1, 1) * trials,), jnp.uint32)  # K = 1: the loop is still traced
    first, c0 = _first_center(bits[0], X, w, mask, axis_name)
    d2 = row_map(lambda x: jnp.sum(jnp.square(x - c0)), X, bs)
    if mask is not None:
        # padding rows get D(x)^2 = 0 once, and keep it (d2 only decreases): never drawn, nothing in a candidate's
        # potential (cheaper than weighting every potential and probability by the mask; see PROFILE.md).
        d2 = d2 * mask
    centers = jnp.zeros((n_clusters, d), X.dtype).at[0].set(c0)
    idx = jnp.zeros((n_clusters,), jnp.int32).at[0].set(first)

    def body(c, state):
        centers, idx, d2 = state
        # D^2 sampling: `trials` candidates with probability proportional to w_i D(x_i)^2
        p = d2 if w is None else w * d2
        u = uniform_bits(lax.dynamic_slice_in_dim(bits, 1 + (c - 1) * trials, trials), X.dtype)
        if axis_name is None:
            cand = sample_index(u, p)
            cx = X[cand]  # (T, D)
        else:
            owner, local = global_sample_index(u, p, axis_name)
            cand = jnp.full((trials,), -1, jnp.int32)
            cx = global_take(X, owner, local, axis_name)

        def pot(xb, wb, i):  # potential of each candidate, one block at a time: no (n, T) array
            start = jnp.minimum(i * bs, n - bs)
            db = lax.dynamic_slice_in_dim(d2, start, bs)
            if d <= small_d:
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


def uniform_bits(bits, dtype):
    """Uniform numbers in [0, 1) of ``dtype`` from uint32 random bits (24 bits each, exact in float32)."""
    return (bits >> 8).astype(dtype) * (1.0 / (1 << 24))


def sample_index(u, p):
    """Indices drawn with probability proportional to non-negative ``p`` (n,), by inverse CDF (O(n) memory), for
    uniforms ``u`` in [0, 1) (a scalar or (T,)); returns int32 indices of ``u``'s shape."""
    c = jnp.cumsum(p)
    idx = jnp.searchsorted(c, u * c[-1], side="right")
    return jnp.clip(idx, 0, p.shape[0] - 1).astype(jnp.int32)


def global_sample_index(u, p, axis_name):
    """:func:`sample_index` over rows sharded on ``axis_name``: (owning device, local index) of each draw, the same
    draws as one device holding all rows in device order (up to the rounding of the partial sums)."""
    c = jnp.cumsum(p)
    totals = lax.all_gather(c[-1], axis_name)  # (S,) per-device sums
    ctot = jnp.cumsum(totals)
    u = u * ctot[-1]
    owner = jnp.clip(jnp.searchsorted(ctot, u, side="right"), 0, totals.shape[0] - 1)
    local = jnp.searchsorted(c, u - (ctot[owner] - totals[owner]), side="right")
    return owner, jnp.clip(local, 0, p.shape[0] - 1).astype(jnp.int32)


def global_take(X, owner, local, axis_name):
    """Rows ``local`` of device ``owner`` (each a scalar or (T,)), delivered to every device of ``axis_name``."""
    rows = X[local]
    mine = (owner == lax.axis_index(axis_name))[..., None]
    return lax.psum(jnp.where(mine, rows, jnp.zeros_like(rows)), axis_name)


__all__ = ["first_index", "global_sample_index", "global_take", "kmeans_plusplus", "random_rows", "sample_index",
           "sq_distances", "uniform_bits"]
