"""Streaming EM over a file larger than the memory budget: exact passes over a ``np.memmap`` and one online pass.

    python benchmarks/bench_stream.py [--n 50000000] [--d 8] [--k 16] [--passes 2] [--path FILE]

Writes n x d float32 rows (1.6 GB at the defaults) to a file chunk by chunk (never holding it in memory), then, in a
fresh process, fits with :func:`gmm_jax.fit_stream` over :func:`gmm_jax.array_batches` of a read-only memmap
(``--passes`` exact EM iterations after one compile pass) and one pass of :func:`gmm_jax.fit_online`.  Reports the
time per pass and the process's peak RSS (criterion: under 1 GB).  The accuracy of online EM against exact EM is
measured on the first 2e6 rows held in memory (exact fit to convergence, same start): the gap in mean
log-likelihood per point.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

CHILD = r"""
import json, resource, sys, time
import numpy as np, jax, gmm_jax
path, n, d, k, passes, batch = sys.argv[1], *map(int, sys.argv[2:7])
X = np.memmap(path, dtype=np.float32, mode="r", shape=(n, d))
p0 = gmm_jax.initialize(jax.random.key(0), np.array(X[:100_000]), k, init="k-means++")
src = gmm_jax.array_batches(X, batch)
t = time.perf_counter()
gmm_jax.fit_stream(src, p0, max_iter=1, tol=0.0)  # one pass, compiles
first = time.perf_counter() - t
t = time.perf_counter()
params, trace = gmm_jax.fit_stream(src, p0, max_iter=passes, tol=0.0)[:2]
per_pass = (time.perf_counter() - t) / passes
t = time.perf_counter()
online, otrace, finite = gmm_jax.fit_online(src(), p0, step_exponent=0.7)
online_s = time.perf_counter() - t
def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) / 1024
print(json.dumps({"first_pass_s": first, "s_per_pass": per_pass, "online_pass_s": online_s,
                  "peak_rss_mb": status("VmHWM"), "trace": [float(v) for v in trace],
                  "online_finite": finite}))
"""


def write_file(path, n, d, k, seed=0, chunk=1_000_000):
    import numpy as np

    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d)) * 4
    with open(path, "wb") as f:
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            block = centers[rng.integers(0, k, m)] + rng.normal(size=(m, d))
            f.write(block.astype(np.float32).tobytes())


def online_accuracy(path, n, d, k, rows=2_000_000, batch=1 << 16):
    """Online (one pass) against exact EM (to convergence) from the same start, on ``rows`` rows in memory."""
    import jax
    import numpy as np

    import gmm_jax

    X = np.array(np.memmap(path, dtype=np.float32, mode="r", shape=(n, d))[:rows])
    p0 = gmm_jax.initialize(jax.random.key(0), X[:100_000], k, init="k-means++")
    exact = gmm_jax.fit(jax.random.key(0), X, k, init_params=p0, tol=1e-6, max_iter=500)
    online, _, _ = gmm_jax.fit_online(gmm_jax.array_batches(X, batch), p0, step_exponent=0.7)
    ll = [float(gmm_jax.score(X, p)) for p in (p0, exact.params, online)]
    return {"rows": rows, "batch": batch, "ll_start": ll[0], "ll_exact": ll[1], "ll_online": ll[2],
            "gap_online_vs_exact": ll[1] - ll[2], "exact_iters": int(exact.n_iter[0])}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=50_000_000)
    ap.add_argument("--d", type=int, default=8)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1 << 18, help="rows per batch")
    ap.add_argument("--path", default=None, help="data file (default: a temporary file, deleted afterwards)")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "stream.json"))
    args = ap.parse_args(argv)
    from _common import write_json

    tmp = None
    path = args.path
    if path is None:
        tmp = tempfile.TemporaryDirectory()
        path = os.path.join(tmp.name, "stream.f32")
    try:
        if not os.path.exists(path) or os.path.getsize(path) != args.n * args.d * 4:
            t = time.perf_counter()
            write_file(path, args.n, args.d, args.k)
            print(f"wrote {path}: {os.path.getsize(path) / 2**20:.0f} MB in {time.perf_counter() - t:.0f} s")
        out = subprocess.run([sys.executable, "-c", CHILD, path, str(args.n), str(args.d), str(args.k),
                              str(args.passes), str(args.batch)], capture_output=True, text=True)
        if out.returncode != 0:
            print(out.stderr[-3000:])
            return 1
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row.update({"n": args.n, "d": args.d, "k": args.k, "passes": args.passes, "batch_rows": args.batch,
                    "file_mb": args.n * args.d * 4 / 2**20})
        row["online_accuracy"] = online_accuracy(path, args.n, args.d, args.k, rows=min(args.n, 2_000_000))
    finally:
        if tmp is not None:
            tmp.cleanup()
    print(f"n={row['n']:.0e} d={row['d']} K={row['k']}: file {row['file_mb']:.0f} MB, peak RSS {row['peak_rss_mb']:.0f} MB"
          f" (criterion < 1024), {row['s_per_pass']:.1f} s per exact pass (first pass with compile "
          f"{row['first_pass_s']:.1f} s), online pass {row['online_pass_s']:.1f} s")
    acc = row["online_accuracy"]
    print(f"online vs exact on {acc['rows']} rows: mean log-lik {acc['ll_online']:.5f} vs {acc['ll_exact']:.5f} "
          f"(gap {acc['gap_online_vs_exact']:.2e}; start {acc['ll_start']:.5f})")
    write_json(args.out, [row])
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
