"""Overhead of per-iteration progress reporting (a host callback inside the jitted EM loop).

    python benchmarks/bench_progress.py

Times 20 EM iterations (tol=0, same initial parameters) at n=1e5, d=16, K=16, float32, with progress off, with a
no-op callback and with printing (to /dev/null), best of 5 each, and prints the overheads.
"""

from __future__ import annotations

import os
import sys

import jax
import numpy as np

import gmm_jax

sys.path.insert(0, os.path.dirname(__file__))
from _common import best_time, write_json  # noqa: E402


def main(argv=None):
    import argparse

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "progress.json"))
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    n, d, k = 100_000, 16, 16
    X = (rng.normal(size=(k, d))[rng.integers(0, k, n)] * 4 + rng.normal(size=(n, d))).astype(np.float32)
    p0 = gmm_jax.initialize(jax.random.key(0), X, k, init="k-means++")

    def noop(it, ll):
        return None

    def run(progress):
        r = gmm_jax.fit(jax.random.key(0), X, k, init_params=p0, max_iter=20, tol=0.0, progress=progress)
        r.params.means.block_until_ready()

    devnull = open(os.devnull, "w")
    rows = {}
    for name, prog in (("off", None), ("callback", noop), ("print", True)):
        old = sys.stderr
        sys.stderr = devnull
        try:
            run(prog)
            rows[name] = best_time(lambda prog=prog: run(prog), 5)
        finally:
            sys.stderr = old
    for name, t in rows.items():
        print(f"{name:9s} {t * 1e3:8.1f} ms for 20 iterations  overhead {100 * (t / rows['off'] - 1):+.1f}%")
    write_json(args.out,
               {k: {"seconds": v, "overhead_pct": 100 * (v / rows["off"] - 1)} for k, v in rows.items()})


if __name__ == "__main__":
    main()
