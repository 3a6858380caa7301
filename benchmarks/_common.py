"""Shared helpers of the benchmark scripts (never imported by the library or the tests)."""

from __future__ import annotations

import json
import os
import platform
import sys
import time

_THROTTLE_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def unthrottle_blas() -> None:
    """Re-run this script without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (for this command only), so NumPy's
    BLAS runs its best kernel and the scikit-learn baseline is fair.  Must be called before NumPy is imported."""
    if any(v in os.environ for v in _THROTTLE_VARS):
        env = {k: v for k, v in os.environ.items() if k not in _THROTTLE_VARS}
        print(f"[bench] re-running without {', '.join(v for v in _THROTTLE_VARS if v in os.environ)}", flush=True)
        os.execve(sys.executable, [sys.executable] + sys.argv, env)


def blas_description() -> str:
    try:
        from threadpoolctl import threadpool_info

        infos = [i for i in threadpool_info() if i.get("user_api") == "blas"]
        return "; ".join(
            f"{i.get('internal_api')} {i.get('version')} kernel={i.get('architecture')} threads={i.get('num_threads')}"
            for i in infos
        ) or "unknown"
    except ImportError:
        return "threadpoolctl not installed"


def machine_description() -> dict:
    import jax
    import numpy as np

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import sklearn

        skv = sklearn.__version__
    except ImportError:
        skv = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "jax_devices": [str(d) for d in jax.devices()],
        "device_kind": jax.devices()[0].device_kind,
        "blas": blas_description(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "numpy": np.__version__,
        "sklearn": skv,
    }


def matmul_gflops(dtype="float32", size=2048, repeats=5) -> float:
    """Measured ``jnp.dot`` speed (GFLOP/s) on a square product: the ceiling the EM kernels are compared to."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (size, size), dtype)
    b = jax.random.normal(jax.random.key(1), (size, size), dtype)
    f = jax.jit(jnp.dot)
    f(a, b).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        f(a, b).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * size**3 / best / 1e9


def best_time(fn, repeats=3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def paired_best(f1, f2, repeats):
    """Best times of f1 and f2 over ``repeats`` alternating calls (slow drifts of this machine's speed hit both)."""
    b1 = b2 = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        f1()
        b1 = min(b1, time.perf_counter() - t)
        t = time.perf_counter()
        f2()
        b2 = min(b2, time.perf_counter() - t)
    return b1, b2


def write_json(path: str, rows) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(rows, f, indent=2)
    os.replace(tmp, path)


def print_table(rows, columns) -> None:
    widths = [max(len(c), *(len(_fmt(r[c])) for r in rows)) for c in columns]
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths)))
    for r in rows:
        print("  ".join(_fmt(r[c]).rjust(w) for c, w in zip(columns, widths)))


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)
