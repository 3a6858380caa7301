"""K-means on sparse rows (``scipy.sparse`` CSR or CSC, e.g. TF-IDF document vectors), never densified.

The iteration is Lloyd's of :mod:`gmm_jax.lloyd` (the same stopping rule, empty-cluster relocation and final label
pass, through :func:`gmm_jax.lloyd.finish_step` and :func:`gmm_jax.lloyd.run_lloyd`); the seeding draws are those of
:func:`gmm_jax.seeding.kmeans_plusplus` and the 'random' init.  Only the data's passes differ: every distance is
``||x||^2 - 2 x.c + ||c||^2`` with ``x.c`` summed over the stored entries of each row (work and memory
O(nnz x K)), centre sums are scatter-adds of the stored entries, and the few rows needed dense (seed candidates,
points that refill an empty cluster) are expanded one row at a time from the CSR row pointers.  The centres are
dense (K, D).  The data are not shifted to their mean (that would densify them), so in float32 the distances lose
precision for data far from the origin relative to their spread, as scikit-learn's sparse K-means does.
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gmm_jax.clustering import KMeansResult, best_restart, lloyd_restarts
from gmm_jax.config import Config, resolve_config, to_device
from gmm_jax.lloyd import finish_step, lloyd_state, relocate_empty, run_lloyd
from gmm_jax.rows import row_bucket
from gmm_jax.seeding import first_index, random_rows, sample_index, uniform_bits


class SparseRows(NamedTuple):
    """CSR rows on the device.

    Attributes:
      data: (nnz,) stored values.
      cols: (nnz,) int32 column of each value.
      rows: (nnz,) int32 row of each value.
      indptr: (n + 1,) int32 CSR row pointers (row i's entries are ``[indptr[i], indptr[i + 1])``).
      sq_norms: (n,) squared Euclidean norm of each row.
    """

    data: jax.Array
    cols: jax.Array
    rows: jax.Array
    indptr: jax.Array
    sq_norms: jax.Array


class SparseShape(NamedTuple):
    """The static sizes of :class:`SparseRows`: features D, the most entries in one row, and the entries per chunk
    of the inner-product pass (the stored entries are padded to a multiple of it)."""

    n_features: int
    max_row_nnz: int
    chunk: int


def is_sparse(X) -> bool:
    """Whether X is a ``scipy.sparse`` matrix or array."""
    import scipy.sparse

    return scipy.sparse.issparse(X)


def sparse_rows(X, n_clusters: int = 8, name: str = "X", scratch_elements: int = 1 << 22):
    """A ``scipy.sparse`` matrix or array -> (:class:`SparseRows`, :class:`SparseShape`), checked (2-D, not empty,
    numeric, finite stored values, fewer than 2**31 entries).  CSC and other formats are converted to CSR (a
    sparse conversion); float64 stays float64 only with 64-bit mode on, as :func:`gmm_jax.validation.as_data`.
    The inner products with ``n_clusters`` centres run over chunks of entries whose (chunk, K) products stay near
    ``scratch_elements``."""
    from gmm_jax.validation import float_dtype

    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {X.shape}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {X.shape}")
    if not (np.issubdtype(X.dtype, np.number) or X.dtype == bool):
        raise ValueError(f"{name} must be numeric, got dtype {X.dtype}")
    csr = X.tocsr()
    csr.sum_duplicates()
    if csr.nnz >= 2**31 - 1:
        raise ValueError(f"{name} has {csr.nnz} stored entries; at most 2**31 - 2 are supported")
    dtype = float_dtype(X)
    data = np.asarray(csr.data, dtype)
    if not np.all(np.isfinite(data)):
        raise ValueError(f"{name} contains NaN or infinity")
    indptr = np.asarray(csr.indptr, np.int64)
    lengths = np.diff(indptr)
    rows = np.repeat(np.arange(X.shape[0], dtype=np.int32), lengths)
    sq = np.bincount(rows, weights=np.square(data.astype(np.float64)), minlength=X.shape[0]).astype(dtype)
    longest = int(lengths.max()) if lengths.size else 0
    bucket = row_bucket(max(csr.nnz, 1), 1 << 62)
    chunk = min(bucket, 1 << max(10, (scratch_elements // max(1, n_clusters)).bit_length() - 1))
    shape = SparseShape(int(X.shape[1]), 1 << max(0, longest - 1).bit_length(), chunk)  # powers of two: fewer compiles
    # the entries padded to a bucket, a multiple of the chunk (value 0 in row 0, column 0: adds nothing to any
    # product or sum; never read as part of a row), so that data with nearby entry counts share one program
    extra = -(-bucket // chunk) * chunk - csr.nnz
    cols = np.concatenate([csr.indices.astype(np.int32), np.zeros(extra, np.int32)])
    return SparseRows(to_device(np.concatenate([data, np.zeros(extra, dtype)])), to_device(cols),
                      to_device(np.concatenate([rows, np.zeros(extra, np.int32)])),
                      to_device(indptr.astype(np.int32)), to_device(sq)), shape


def sparse_dots(S: SparseRows, centers, shape: SparseShape) -> jax.Array:
    """(n, K) inner products ``x_i . c_k`` over the stored entries of each row, ``shape.chunk`` entries at a time
    (scratch (chunk, K))."""
    ct = centers.T
    n = S.sq_norms.shape[0]

    def body(acc, i):
        sl = [lax.dynamic_slice_in_dim(a, i * shape.chunk, shape.chunk) for a in (S.data, S.cols, S.rows)]
        return acc.at[sl[2]].add(sl[0][:, None] * ct[sl[1]]), None

    n_chunks = S.data.shape[0] // shape.chunk
    return lax.scan(body, jnp.zeros((n, centers.shape[0]), centers.dtype), jnp.arange(n_chunks))[0]


def sparse_sq_distances(S: SparseRows, centers, shape: SparseShape) -> jax.Array:
    """(n, K) squared Euclidean distances ``||x_i||^2 - 2 x_i . c_k + ||c_k||^2`` (clipped at 0)."""
    c_sq = jnp.sum(jnp.square(centers), axis=1)
    return jnp.maximum(S.sq_norms[:, None] - 2.0 * sparse_dots(S, centers, shape) + c_sq[None, :], 0.0)


def sparse_assign(S: SparseRows, centers, shape: SparseShape):
    """Nearest centre (ties to the lowest index) and the squared distance to it: ((n,) int32, (n,))."""
    d2 = sparse_sq_distances(S, centers, shape)
    labels = jnp.argmin(d2, axis=1).astype(jnp.int32)
    return labels, jnp.take_along_axis(d2, labels[:, None], axis=1)[:, 0]


def sparse_take(S: SparseRows, idx, shape: SparseShape) -> jax.Array:
    """Rows ``idx`` (T,) as a dense (T, D) array, each from its own CSR slice (O(T x max_row_nnz) work)."""
    span = jnp.arange(shape.max_row_nnz)

    def row(i):
        j = S.indptr[i] + span
        ok = j < S.indptr[i + 1]
        vals = jnp.where(ok, S.data.at[j].get(mode="fill", fill_value=0), 0)
        cols = jnp.where(ok, S.cols.at[j].get(mode="fill", fill_value=0), 0)
        return jnp.zeros((shape.n_features,), S.data.dtype).at[cols].add(vals)

    return jax.vmap(row)(idx)


def sparse_sums(S: SparseRows, w, labels, k: int, shape: SparseShape):
    """Per-cluster weighted sums (K, D) of the rows and weights (K,) for ``labels``."""
    vals = S.data if w is None else S.data * w[S.rows]
    sums = jnp.zeros((k, shape.n_features), S.data.dtype).at[labels[S.rows], S.cols].add(vals)
    weights = jnp.ones_like(S.sq_norms) if w is None else w
    return sums, jax.ops.segment_sum(weights, labels, k)


def sparse_plusplus(key, S: SparseRows, n_clusters: int, w, shape: SparseShape):
    """Greedy k-means++ seeding on sparse rows: the draws of :func:`gmm_jax.seeding.kmeans_plusplus` (the same
    random bits, first row, candidates per centre and choice by lowest potential).  Returns (K, D) centres."""
    n = S.sq_norms.shape[0]
    dtype = S.data.dtype
    trials = 2 + int(math.log(n_clusters))
    bits = jax.random.bits(key, (1 + max(n_clusters - 1, 1) * trials,), jnp.uint32)
    c0 = sparse_take(S, first_index(bits[0], n, w, None, dtype)[None], shape)
    d2 = sparse_sq_distances(S, c0, shape)[:, 0]
    centers = jnp.zeros((n_clusters, shape.n_features), dtype).at[0].set(c0[0])
    weights = jnp.ones((n,), dtype) if w is None else w

    def body(c, state):
        centers, d2 = state
        u = uniform_bits(lax.dynamic_slice_in_dim(bits, 1 + (c - 1) * trials, trials), dtype)
        cx = sparse_take(S, sample_index(u, d2 if w is None else w * d2), shape)
        dd = sparse_sq_distances(S, cx, shape)  # (n, T)
        b = jnp.argmin(weights @ jnp.minimum(d2[:, None], dd))
        return centers.at[c].set(cx[b]), jnp.minimum(d2, dd[:, b])

    return lax.fori_loop(1, n_clusters, body, (centers, d2))[0]


def sparse_info_step(S: SparseRows, w, tol, shape: SparseShape, s):
    """One Lloyd iteration on sparse rows: (next :class:`gmm_jax.lloyd.LloydState`, iteration info)."""
    labels, mind = sparse_assign(S, s.centers, shape)
    sums, counts = sparse_sums(S, w, labels, s.centers.shape[0], shape)
    changed = jnp.sum(labels != s.labels).astype(jnp.int32)
    return finish_step(s, tol, labels, mind, w, sums, counts, changed,
                       lambda: relocate_empty(None, w, None, labels, mind, sums, counts,
                                              take=lambda far: sparse_take(S, far, shape)))


def sparse_lloyd(S: SparseRows, w, centers, tol, max_iter: int, shape: SparseShape, record: bool = False):
    """Lloyd iterations from ``centers``: (centres, labels, inertia, n_iter, converged) (+ trace with ``record``),
    labels and inertia as :func:`gmm_jax.clustering.lloyd`."""
    s, trace = run_lloyd(partial(sparse_info_step, S, w, tol, shape), lloyd_state(S.sq_norms.shape[0], centers),
                         max_iter, record)
    d2 = sparse_sq_distances(S, s.centers, shape)
    labels = jnp.where(s.strict, s.labels, jnp.argmin(d2, axis=1).astype(jnp.int32))
    dist = jnp.take_along_axis(d2, labels[:, None], axis=1)[:, 0]
    out = s.centers, labels, jnp.sum(dist if w is None else w * dist), s.i, s.done
    return out + (trace,) if record else out


@partial(jax.jit, static_argnames=("n_clusters", "n_restarts", "max_iter", "shape", "init_random", "record", "config"))
def sparse_kmeans_program(key, S: SparseRows, w, init_centers, tol, *, n_clusters, n_restarts, max_iter, shape,
                          init_random, record=False, config: Config | None = None):
    """All restarts of sparse K-means in one program (restarts as :func:`gmm_jax.clustering.lloyd_restarts`)."""
    keys = jax.random.split(key, n_restarts)

    def seed(k, init):
        if init is not None:
            return init
        if init_random:
            return sparse_take(S, random_rows(k, n_clusters, jnp.ones_like(S.sq_norms) if w is None else w), shape)
        return sparse_plusplus(k, S, n_clusters, w, shape)

    seeds = jax.vmap(seed, in_axes=(0, None))(keys, init_centers)
    out = lloyd_restarts(lambda c0: sparse_lloyd(S, w, c0, tol, max_iter, shape, record), seeds, config)
    return best_restart(*out[:5], 0.0, out[5] if record else None)


def sparse_tolerance(X, tol: float) -> float:
    """scikit-learn's tolerance for sparse data: ``tol * mean_d var(X[:, d])`` (unweighted), in float64 on the
    host from the stored entries."""
    csr = X.tocsr()
    n, d = csr.shape
    data = np.asarray(csr.data, np.float64)
    mean = np.bincount(csr.indices, weights=data, minlength=d) / n
    var = np.bincount(csr.indices, weights=np.square(data), minlength=d) / n - np.square(mean)
    return float(tol * np.mean(np.maximum(var, 0.0)))


def kmeans_sparse(key, X, n_clusters: int, *, n_restarts: int = 1, init="k-means++", max_iter: int = 300,
                  tol: float = 1e-4, sample_weight=None, record: bool = False,
                  config: Config | None = None) -> KMeansResult:
    """:func:`gmm_jax.kmeans` for ``scipy.sparse`` data X (n, D) (which calls it): the same arguments and result."""
    from gmm_jax.validation import as_sample_weight, check_init_centers, check_kmeans_options, check_n_samples, key_form

    n_clusters = check_kmeans_options(n_clusters, max_iter, tol, n_restarts)
    cfg = resolve_config(config)
    scratch = cfg.scratch_elements_accelerator if cfg.accelerator else cfg.scratch_elements
    S, shape = sparse_rows(X, n_clusters, scratch_elements=scratch)
    n = S.sq_norms.shape[0]
    check_n_samples(n, n_clusters, "n_clusters")
    k, form = key_form(key)
    if form != "one":
        raise ValueError(f"key must be one PRNG key (jax.random.key(seed)), got shape {k.shape} and dtype {k.dtype}")
    dtype = S.data.dtype
    return sparse_kmeans_program(k, S, as_sample_weight(sample_weight, n, dtype),
                                 check_init_centers(init, n_clusters, shape.n_features, dtype),
                                 jnp.asarray(sparse_tolerance(X, tol), dtype), n_clusters=n_clusters,
                                 n_restarts=n_restarts, max_iter=max_iter, shape=shape,
                                 init_random=(isinstance(init, str) and init == "random"), record=bool(record),
                                 config=cfg)


@partial(jax.jit, static_argnames=("shape",))
def _sparse_labels(S: SparseRows, centers, shape: SparseShape):
    return sparse_assign(S, centers, shape)[0]


@partial(jax.jit, static_argnames=("shape",))
def _sparse_distances(S: SparseRows, centers, shape: SparseShape):
    return jnp.sqrt(sparse_sq_distances(S, centers, shape))


def sparse_predict(X, centers) -> jax.Array:
    """Nearest-centre labels (n,) int32 of sparse rows X for dense centres (K, D)."""
    S, shape = sparse_rows(X, len(centers))
    return _sparse_labels(S, _check_centers(centers, shape, S.data.dtype), shape)


def sparse_center_distances(X, centers) -> jax.Array:
    """Euclidean distances (n, K) of sparse rows X to dense centres (scikit-learn's ``KMeans.transform``)."""
    S, shape = sparse_rows(X, len(centers))
    return _sparse_distances(S, _check_centers(centers, shape, S.data.dtype), shape)


def _check_centers(centers, shape: SparseShape, dtype):
    c = to_device(centers, dtype)
    if c.ndim != 2 or c.shape[1] != shape.n_features:
        raise ValueError(f"X has {shape.n_features} features, but the centres have shape {c.shape}")
    return c


__all__ = ["SparseRows", "SparseShape", "is_sparse", "kmeans_sparse", "sparse_assign", "sparse_center_distances",
           "sparse_dots", "sparse_kmeans_program", "sparse_lloyd", "sparse_plusplus", "sparse_predict", "sparse_rows",
           "sparse_sq_distances", "sparse_sums", "sparse_take", "sparse_tolerance"]
