"""Choosing K: every K in one compiled program (``gmm_jax.fit_path``) against one fit per K and scikit-learn.

    python benchmarks/bench_select_k.py [--kmax 8] [--restarts 1]

Iris (150 x 4, float32), K = 1..kmax, full covariances, tol 1e-3.  Timed, in this order in one fresh process:

* ``fit_path`` first call (trace + compile + run: what a user waits for once per process), then warm;
* one ``gmm_jax.fit`` per K, first calls (one compilation per K), then warm;
* scikit-learn ``GaussianMixture(K)`` for every K (warm: best of several runs);
* the command line ``gmm-jax fit iris.csv --select-k 1:kmax`` as a user runs it (a new process: Python and JAX
  import included), and ``python -c "import gmm_jax"`` alone, the floor under it.

Prints the ratios and writes JSON (``--out``).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _common import unthrottle_blas  # noqa: E402

unthrottle_blas()

import argparse  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
from _common import best_time, machine_description, write_json  # noqa: E402

import gmm_jax  # noqa: E402


def wall(fn):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - t


def command_seconds(cmd, repeats=3):
    """Best wall time of a fresh process running ``cmd``."""
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        best = min(best, time.perf_counter() - t)
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kmax", type=int, default=8)
    ap.add_argument("--restarts", type=int, default=1)
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    from sklearn.datasets import load_iris
    from sklearn.mixture import GaussianMixture

    X = load_iris().data.astype(np.float32)
    ks = range(1, args.kmax + 1)
    key = jax.random.key(0)
    kw = dict(n_restarts=args.restarts)

    def path():
        return gmm_jax.fit_path(key, X, ks, **kw).log_likelihood

    def separate():
        return jax.block_until_ready([gmm_jax.fit(key, X, k, **kw).params.means for k in ks])

    def sklearn():
        return [GaussianMixture(k, n_init=args.restarts, random_state=0).fit(X).lower_bound_ for k in ks]

    r = dict(n=X.shape[0], d=X.shape[1], kmax=args.kmax, restarts=args.restarts)
    r["path_first_s"] = wall(path)
    r["path_warm_ms"] = best_time(path, repeats=5) * 1e3
    r["separate_first_s"] = wall(separate)
    r["separate_warm_ms"] = best_time(separate, repeats=5) * 1e3
    r["sklearn_ms"] = best_time(sklearn, repeats=3) * 1e3
    with tempfile.TemporaryDirectory() as tmp:
        csv = os.path.join(tmp, "iris.csv")
        np.savetxt(csv, X, delimiter=",")
        cli = [sys.executable, "-m", "gmm_jax.cli", "fit", csv, "--select-k", f"1:{args.kmax}", "--restarts",
               str(args.restarts), "--out", os.path.join(tmp, "m.npz")]
        r["cli_s"] = command_seconds(cli)
        r["import_s"] = command_seconds([sys.executable, "-c", "import gmm_jax"])
    r["first_call_speedup_vs_separate"] = r["separate_first_s"] / r["path_first_s"]
    r["warm_speedup_vs_sklearn"] = r["sklearn_ms"] / r["path_warm_ms"]
    r["best_k"] = int(gmm_jax.fit_path(key, X, ks, **kw).best)
    for name, v in r.items():
        print(f"{name:>32}: {v:.4g}" if isinstance(v, float) else f"{name:>32}: {v}")
    if args.out:
        write_json(args.out, dict(machine=machine_description(), rows=[r]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
