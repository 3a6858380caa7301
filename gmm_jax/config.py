"""Engine configuration: every tuning choice of the passes, blocks and K-means, as one frozen, hashable value.

A :class:`Config` is passed to the jitted programs as a static argument, so a different configuration compiles a
different program (and a test passes a value instead of patching a module).  The backend is inspected in one place,
:func:`default_config`; everything else reads ``config.accelerator``.

    >>> cfg = gmm_jax.Config(bucket_max_rows=0)          # no row buckets
    >>> gmm_jax.fit(key, X, 3, config=cfg)

The measurements behind the defaults are in ``benchmarks/results/PROFILE.md``.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax

# float32 products at full precision on every backend (GPUs would otherwise use TF32 for float32)
HIGHEST = lax.Precision.HIGHEST

# The CPU compiler option a large full-covariance fit is compiled with (XLA's YNNPACK dot fusion off).
CPU_DOT_OPTIONS = (("xla_cpu_experimental_ynn_fusion_type", ""),)
# Opt-in for fits of fewer than ``Config.product_min_rows`` rows on a CPU: LLVM's optimisation level 1, float32
# compilations 20-35% shorter for the same run time (PROFILE.md).  Not the default: a CI run that used it for every
# small fit died once with a segmentation fault inside XLA's compiler, and float64 compilations gain nothing.
SMALL_FIT_OPTIONS = (("xla_backend_optimization_level", "1"),)
# Precision modes of the EM loop's products (gmm_jax.precision)
PRECISIONS = ("highest", "default", "bfloat16")


@dataclasses.dataclass(frozen=True)
class Config:
    """Tuning of the engine (defaults are the measured choices for the backend; see PROFILE.md).

    Attributes:
      accelerator: block sizes for device memory and vmapped restarts/Lloyd (True on GPU/TPU), else CPU choices.
      restarts_in_sequence: EM runs the restarts one after another (``lax.map``), each stopping at its own
        convergence, instead of vmapped in lockstep (every restart then iterates until the slowest has converged).
        Not on accelerators, where the vmapped passes are what is fast.
      scratch_elements: elements of the largest (block, K, D) temporary of one restart on a CPU.
      scratch_elements_restarts: the same for all R > 1 vmapped restarts together on a CPU.
      scratch_elements_accelerator: the same on an accelerator.
      bucket_max_rows: below this many rows X is padded to a row bucket (0: never), see :func:`gmm_jax.rows.row_bucket`.
      small_full_max_d: full covariances with at most this many features take the elementwise small-D form.
      quad_max_d: full covariances take the raw-moment product form up to this many features.
      product_min_rows: fewer rows than this: no product form (and no CPU compiler options).
      product_tol, product_tol_full: the product form is taken when its error bound is at most this (full: _full).
      cpu_dot_options: compiler options of large full-covariance fits on a CPU (() for none).
      small_fit_options: compiler options of fits of fewer than ``product_min_rows`` rows on a CPU (default none;
        ``SMALL_FIT_OPTIONS`` compiles float32 fits faster, see its comment).
      seed_small_d: k-means++ candidate potentials candidate-major up to this many features.
      bounds_min_rows: K-means algorithm 'auto' uses Hamerly's bounds on a CPU from this many rows.
      bounds_dense_fraction: a bounded iteration with more open points than this fraction takes one full pass.
      cache_min_features: the bounded iteration caches its open rows from this many features.
      precision: the EM loop's products, 'highest' (full precision), 'default' (the accelerator's fast float32
        products: TF32 on NVIDIA GPUs) or 'bfloat16' (bfloat16 operands, float32 sums); float32 data on an
        accelerator only, see :mod:`gmm_jax.precision`.
      precision_tol: reduced-precision iterations run while their error bound is at most this, then full precision.
      emulate_precision: round the reduced modes' operands on any backend (a CPU then shows their accuracy).
      small_div, append_div: the bounded iteration's last chunk and cache appends in pieces of 1/small_div and
        1/append_div chunk.
    """

    accelerator: bool = False
    restarts_in_sequence: bool = False
    scratch_elements: int = 1 << 21
    scratch_elements_restarts: int = 1 << 20
    scratch_elements_accelerator: int = 1 << 27
    bucket_max_rows: int = 16384
    small_full_max_d: int = 3
    quad_max_d: int = 12
    product_min_rows: int = 16384
    product_tol: float = 1e-3
    product_tol_full: float = 3e-4
    cpu_dot_options: tuple = CPU_DOT_OPTIONS
    small_fit_options: tuple = ()
    seed_small_d: int = 8
    bounds_min_rows: int = 50_000
    bounds_dense_fraction: float = 0.5
    cache_min_features: int = 32
    small_div: int = 4
    append_div: int = 16
    precision: str = "highest"
    precision_tol: float = 1.0
    emulate_precision: bool = False

    def __post_init__(self):
        if isinstance(self.bucket_max_rows, bool) or not isinstance(self.bucket_max_rows, int) or not (
                0 <= self.bucket_max_rows <= 16384):
            raise ValueError(f"bucket_max_rows must be an integer in [0, 16384], got {self.bucket_max_rows!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        for name in ("cpu_dot_options", "small_fit_options"):
            if not isinstance(getattr(self, name), tuple):
                raise ValueError(f"{name} must be a tuple of (name, value) pairs, got {getattr(self, name)!r}")


@functools.cache
def _backend_config(accelerator: bool) -> Config:
    return Config(accelerator=accelerator)


def default_config() -> Config:
    """The defaults for JAX's current default backend (the one place the backend is inspected)."""
    return _backend_config(jax.default_backend() != "cpu")


def resolve_config(config: Config | None) -> Config:
    """``config``, or :func:`default_config` when None."""
    if config is None:
        return default_config()
    if not isinstance(config, Config):
        raise ValueError(f"config must be a gmm_jax.Config or None, got {type(config).__name__}")
    return config


@functools.cache
def compiler_options_supported(options: tuple) -> bool:
    """Whether this XLA knows the (experimental) compiler ``options``; probed once per set."""
    import numpy as np

    try:
        jax.jit(lambda x: x + 1, compiler_options=dict(options))(np.zeros((), np.float32))
    except Exception:  # an XLA without the option: "No such compile option"
        return False
    return True


def all_finite(tree) -> jax.Array:
    """() bool: every leaf of ``tree`` is finite everywhere (traceable)."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def is_traced(x) -> bool:
    """Whether ``x`` is a tracer (the call is inside a caller's jit)."""
    return isinstance(x, jax.core.Tracer)


def to_device(x, dtype=None) -> jax.Array:
    """``x`` (array-like) as a JAX array of ``dtype`` (default: its own, canonicalised as ``jnp.asarray`` does).

    Host data is transferred with ``jax.device_put``: ``jnp.asarray`` of a NumPy array runs a small compiled
    program for every new shape, a transfer does not.  JAX arrays are returned as they are (cast when ``dtype``
    differs) and traced values go through ``jnp.asarray``.
    """
    import numpy as np

    if is_traced(x):
        return jnp.asarray(x, dtype)
    if isinstance(x, jax.Array):
        return x if dtype is None or x.dtype == jnp.dtype(dtype) else x.astype(dtype)
    return jax.device_put(np.asarray(x, dtype))


def any_traced(*trees) -> bool:
    """Whether any leaf of ``trees`` is a tracer (nothing is padded or checked on the host there)."""
    return any(is_traced(a) for a in jax.tree.leaves(trees))


__all__ = ["Config", "HIGHEST", "PRECISIONS", "all_finite", "any_traced", "compiler_options_supported", "default_config",
           "is_traced", "resolve_config", "to_device"]
