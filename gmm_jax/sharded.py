"""Data-parallel EM and K-means: rows sharded over the devices of a mesh, on one host or across processes.

Each device runs the same blocked passes as :func:`gmm_jax.fit` over its own rows inside ``jax.shard_map``; the
sufficient statistics (K D^2 + K D + K numbers per restart), the log-likelihood sum and the K-means sums are added
over the devices with ``psum``, so every device holds the same parameters after every M-step.  Per iteration a
device communicates only those statistics, never rows.  k-means++ draws are global (each device finds which device
owns a draw from the per-device totals), so the sharded fit makes the same choices as one device holding all rows in
device order: the results agree with :func:`gmm_jax.fit` / :func:`gmm_jax.kmeans` up to the order of the sums
(float64: 1e-10; float32: 1e-5 relative).

Rows that do not divide evenly are padded with zero-weight rows, which are also left out of the K-means tolerance,
the changed-label count and the choice of points for empty clusters.

Multi-process: call ``jax.distributed.initialize`` first, give each process its own rows to
:func:`shard_process_rows` (uneven counts allowed), and pass the result to :func:`fit_sharded`.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from gmm_jax.clustering import KMeansResult, kmeans_block_size, kmeans_body
from gmm_jax.config import HIGHEST, Config, resolve_config
from gmm_jax.loop import FitResult, fit_body, key_batch
from gmm_jax.rows import resolve_block_size
from gmm_jax.validation import as_data, as_sample_weight, check_n_samples, validate_fit, validate_kmeans
from gmm_jax.variational import VBPrior, check_vb_inputs, vb_prior_from_moments

SHARDED_INITS = ("kmeans", "k-means++")


class ShardedRows(NamedTuple):
    """Rows laid out over a mesh axis: what :func:`fit_sharded` and :func:`kmeans_sharded` consume.

    Attributes:
      X: (S m, D) global array sharded along rows (S devices on the axis, m rows each, padding included).
      weight: (S m,) sample weights, 0 on padding rows.
      mask: (S m,) 1 on real rows, 0 on padding rows.
      n: number of real rows (all processes together).
      weighted: whether sample weights were given (else ``weight`` equals ``mask``).
      mesh, axis_name: where the rows live.
    """

    X: jax.Array
    weight: jax.Array
    mask: jax.Array
    n: int
    weighted: bool
    mesh: Mesh
    axis_name: str

    @property
    def rows_per_device(self) -> int:
        return self.X.shape[0] // self.mesh.shape[self.axis_name]


def row_mesh(devices=None, axis_name: str = "data") -> Mesh:
    """A one-axis mesh over ``devices`` (default: every device of every process, in process order)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (axis_name,))


def _pad(a: np.ndarray, rows: int) -> np.ndarray:
    if a.shape[0] == rows:
        return a
    pad = np.zeros((rows - a.shape[0],) + a.shape[1:], a.dtype)
    return np.concatenate([a, pad], axis=0)


def shard_rows(X, sample_weight=None, *, mesh: Mesh | None = None, axis_name: str = "data") -> ShardedRows:
    """Lay out the rows of X (held by this process) over the devices of ``mesh``'s axis, padding with zero-weight
    rows to a multiple of the device count.  Validates X (shape, NaN/inf) and the weights first."""
    mesh = row_mesh(axis_name=axis_name) if mesh is None else mesh
    _check_axis(mesh, axis_name)
    X = np.asarray(as_data(X))
    n = X.shape[0]
    w = as_sample_weight(sample_weight, n, X.dtype)
    s = mesh.shape[axis_name]
    rows = -(-n // s) * s
    mask = _pad(np.ones((n,), X.dtype), rows)
    weight = mask if w is None else _pad(np.asarray(w), rows)
    sh = NamedSharding(mesh, P(axis_name))
    return ShardedRows(jax.device_put(_pad(X, rows), sh), jax.device_put(weight, sh), jax.device_put(mask, sh), n,
                       w is not None, mesh, axis_name)


def shard_process_rows(local_X, local_weight=None, *, mesh: Mesh | None = None, axis_name: str = "data") -> ShardedRows:
    """Multi-process layout: every process passes its own rows (counts may differ); each process's rows are padded
    to a common per-process count and spread over its local devices of the mesh.  The global row order is process 0's
    rows, then process 1's, ... (padding is never used).  Call on every process, after
    ``jax.distributed.initialize``."""
    from jax.experimental import multihost_utils

    mesh = row_mesh(axis_name=axis_name) if mesh is None else mesh
    _check_axis(mesh, axis_name)
    X = np.asarray(as_data(local_X, "local_X"))
    w = as_sample_weight(local_weight, X.shape[0], X.dtype)
    local_devices = [d for d in mesh.devices.flat if d.process_index == jax.process_index()]
    if not local_devices:
        raise ValueError("the mesh has no device of this process")
    counts = np.asarray(multihost_utils.process_allgather(np.array([X.shape[0], X.shape[1]], np.int64)))
    counts = counts.reshape(-1, 2)
    if np.any(counts[:, 1] != X.shape[1]):
        raise ValueError(f"processes hold different numbers of features: {sorted(set(counts[:, 1].tolist()))}")
    per_device = int(-(-counts[:, 0].max() // len(local_devices)))
    rows = per_device * len(local_devices)
    mask = _pad(np.ones((X.shape[0],), X.dtype), rows)
    weight = mask if w is None else _pad(np.asarray(w), rows)
    total = rows * (mesh.devices.size // len(local_devices))
    sh = NamedSharding(mesh, P(axis_name))

    def put(a):
        return jax.make_array_from_process_local_data(sh, a, (total,) + a.shape[1:])

    return ShardedRows(put(_pad(X, rows)), put(weight), put(mask), int(counts[:, 0].sum()), w is not None, mesh,
                       axis_name)


def _as_rows(X, sample_weight, mesh, axis_name) -> ShardedRows:
    """X as :class:`ShardedRows`: laid out here (with its weights) unless it already is."""
    if not isinstance(X, ShardedRows):
        return shard_rows(X, sample_weight, mesh=mesh, axis_name=axis_name)
    if sample_weight is not None:
        raise ValueError("sample_weight must be given to shard_rows / shard_process_rows, not with ShardedRows")
    return X


def _check_axis(mesh: Mesh, axis_name: str) -> None:
    if axis_name not in mesh.axis_names:
        raise ValueError(f"axis {axis_name!r} is not an axis of the mesh (axes {mesh.axis_names})")


@functools.lru_cache(maxsize=64)
def _fit_program(mesh, axis_name, n_components, covariance_type, init, max_iter, block_size, weighted, config):
    def body(keys, X, w, mask, init_params, tol, reg_covar, prior):
        return fit_body(keys, X, w, init_params, tol, reg_covar, n_components=n_components,
                        covariance_type=covariance_type, init=init, max_iter=max_iter, block_size=block_size,
                        mask=mask, axis_name=axis_name, weighted=weighted, config=config, prior=prior)

    row = P(axis_name)
    return jax.jit(jax.shard_map(body, mesh=mesh, in_specs=(P(), row, row, row, P(), P(), P(), P()), out_specs=P(),
                                 check_vma=False))


@jax.jit
def _row_moments(X, mask):
    """(mean, unbiased covariance) of the real rows of sharded data (the padding rows masked out)."""
    n = jnp.sum(mask)
    mean = jnp.sum(mask[:, None] * X, axis=0) / n
    xc = (X - mean) * mask[:, None]
    return mean, jnp.matmul(xc.T, xc, precision=HIGHEST) / jnp.maximum(n - 1, 1)


def _variational_prior(rows, variational, init_params, init, n_components, covariance_type, tol):
    """(init_params, the prior's arrays, tol per unit of weight) of a sharded variational fit."""
    dtype = rows.X.dtype
    init_params = check_vb_inputs(variational, init_params, n_components, rows.X.shape[1], dtype)
    mean, cov = (np.asarray(a, np.float64) for a in _row_moments(rows.X, rows.mask))
    prior = vb_prior_from_moments(variational, mean, cov, n_components, covariance_type, dtype)
    return init_params, prior, tol / float(jnp.sum(rows.weight))


def fit_sharded(
    key,
    X,
    n_components: int,
    *,
    mesh: Mesh | None = None,
    axis_name: str = "data",
    covariance_type: str = "full",
    n_restarts: int = 1,
    init: str = "kmeans",
    init_params=None,
    max_iter: int = 100,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    sample_weight=None,
    block_size: int | None = None,
    config: Config | None = None,
    variational: VBPrior | None = None,
) -> FitResult:
    """:func:`gmm_jax.fit` with the rows sharded over a mesh axis (one device per shard; restarts run on every
    device over its rows).

    Args:
      key: a PRNG key (split into ``n_restarts``) or a 1-D batch of keys, as :func:`gmm_jax.fit`.
      X: an (n, D) array held by this process (sharded here with :func:`shard_rows` over ``mesh``), or
        :class:`ShardedRows` (from :func:`shard_rows` / :func:`shard_process_rows`; ``mesh``, ``axis_name`` and
        ``sample_weight`` are then taken from it).
      mesh, axis_name: the mesh and its row axis (default: all devices, axis "data").
      init: 'kmeans' or 'k-means++' (global draws, the same as :func:`gmm_jax.fit`), or ``init_params``.
      variational: a :class:`gmm_jax.VBPrior`: variational Bayes as :func:`gmm_jax.fit` runs it (``init_params``
        then ``VBParams``); the prior's data-dependent defaults from the sharded rows (unweighted, as ``fit``).
      Other arguments: as :func:`gmm_jax.fit`.

    Returns:
      :class:`gmm_jax.FitResult`, replicated on every device.
    """
    if init_params is None and init not in SHARDED_INITS:
        raise ValueError(f"init {init!r} is not supported by fit_sharded; use one of {SHARDED_INITS} or init_params")
    rows = _as_rows(X, sample_weight, mesh, axis_name)
    d = rows.X.shape[1]
    keys, n_restarts = key_batch(key, n_restarts)
    # validate the options (and init_params) on a small stand-in of the data's width and dtype: the rows themselves
    # were checked by shard_rows / shard_process_rows
    stand_in = np.zeros((n_components, d), rows.X.dtype)
    _, _, checked = validate_fit(stand_in, n_components, covariance_type, init,
                                 None if variational is not None else init_params, max_iter, tol, reg_covar, None,
                                 n_restarts)
    check_n_samples(rows.n, n_components, "n_components")
    prior = None
    if variational is None:
        init_params = checked
    else:
        init_params, prior, tol = _variational_prior(rows, variational, init_params, init, n_components,
                                                     covariance_type, tol)
    cfg = resolve_config(config)
    bs = resolve_block_size(block_size, rows.rows_per_device, n_components, d, config=cfg)
    prog = _fit_program(rows.mesh, rows.axis_name, n_components, covariance_type,
                        init if init_params is None else "explicit", max_iter, bs, rows.weighted, cfg)
    dtype = rows.X.dtype
    return prog(keys, rows.X, rows.weight, rows.mask, init_params, jnp.asarray(tol, dtype),
                jnp.asarray(reg_covar, dtype), prior)


@functools.lru_cache(maxsize=64)
def _kmeans_program(mesh, axis_name, n_clusters, n_restarts, max_iter, block_size, weighted, config):
    def body(keys, X, w, mask, init_centers, tol):
        return kmeans_body(keys, X, w, init_centers, tol, n_clusters=n_clusters, n_restarts=n_restarts,
                           max_iter=max_iter, block_size=block_size, init_random=False, mask=mask,
                           axis_name=axis_name, weighted=weighted, config=config)

    row = P(axis_name)
    out = KMeansResult(P(), row, P(), P(), P(), P(), P(), P(), P())
    return jax.jit(jax.shard_map(body, mesh=mesh, in_specs=(P(), row, row, row, P(), P()), out_specs=out,
                                 check_vma=False))


def kmeans_sharded(
    key,
    X,
    n_clusters: int,
    *,
    mesh: Mesh | None = None,
    axis_name: str = "data",
    n_restarts: int = 1,
    init="k-means++",
    max_iter: int = 300,
    tol: float = 1e-4,
    sample_weight=None,
    block_size: int | None = None,
    config: Config | None = None,
) -> KMeansResult:
    """:func:`gmm_jax.kmeans` with the rows sharded over a mesh axis.  ``init`` is 'k-means++' or a (K, D) array.

    ``labels`` of the result is a row-sharded (S m,) array that includes the padding rows; for an (n, D) input
    held by this process, ``labels[:n]`` are the labels of X's rows.
    """
    if isinstance(init, str) and init != "k-means++":
        raise ValueError(f"init {init!r} is not supported by kmeans_sharded; use 'k-means++' or a (K, D) array")
    rows = _as_rows(X, sample_weight, mesh, axis_name)
    d = rows.X.shape[1]
    stand_in = np.zeros((n_clusters, d), rows.X.dtype)  # options and init centres checked on a stand-in
    _, _, init_centers = validate_kmeans(stand_in, n_clusters, init, max_iter, tol, None, n_restarts)
    check_n_samples(rows.n, n_clusters, "n_clusters")
    cfg = resolve_config(config)
    bs = kmeans_block_size(block_size, rows.rows_per_device, n_clusters, cfg)
    keys = jax.random.split(key, n_restarts)
    prog = _kmeans_program(rows.mesh, rows.axis_name, n_clusters, n_restarts, max_iter, bs, rows.weighted, cfg)
    return prog(keys, rows.X, rows.weight, rows.mask, init_centers, jnp.asarray(tol, rows.X.dtype))
