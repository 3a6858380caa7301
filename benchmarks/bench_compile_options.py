"""Compiler options of small fits: the whole jitted fit compiled with XLA's default LLVM optimisation level and
with ``Config.small_fit_options`` (level 1), first call (compilation) and warm run, on a few cells.

    python benchmarks/bench_compile_options.py

Prints one row per (cell, options): compile seconds (first call minus a warm run) and the best of 5 warm runs.
"""

from __future__ import annotations

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from gmm_jax.config import SMALL_FIT_OPTIONS
from gmm_jax.loop import FIT_STATICS, fit_body, key_input
from gmm_jax.rows import resolve_block_size

CELLS = [(150, 4, 3, 1, "full"), (2000, 2, 5, 32, "full"), (10000, 16, 8, 1, "full"), (10000, 16, 8, 1, "diag"),
         (16000, 8, 16, 4, "full")]


def main() -> int:
    rng = np.random.default_rng(0)
    for n, d, k, r, ct in CELLS:
        X = jnp.asarray((rng.normal(size=(n, d)) + rng.normal(size=(k, d))[rng.integers(0, k, n)] * 4).astype(np.float32))
        keys, _, n_split = key_input(jax.random.key(0), r)
        kw = dict(n_components=k, covariance_type=ct, init="kmeans", max_iter=30, n_split=n_split,
                  block_size=resolve_block_size(None, n, k, d, r), init_block_size=resolve_block_size(None, n, k, d))
        for name, opts in (("default", None), ("small_fit_options", dict(SMALL_FIT_OPTIONS))):
            f = jax.jit(fit_body, static_argnames=FIT_STATICS, compiler_options=opts)

            def run(f=f, kw=kw, keys=keys, X=X):
                t = time.perf_counter()
                jax.block_until_ready(f(keys, X, None, None, jnp.float32(0.0), jnp.float32(1e-6), **kw))
                return time.perf_counter() - t

            first = run()
            warm = min(run() for _ in range(5))
            print(f"n={n} d={d} K={k} R={r} {ct:5s} {name:18s} compile {first - warm:5.2f} s   run {warm * 1e3:7.1f} ms",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
