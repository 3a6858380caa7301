"""Peak memory of fit against n: scratch must not grow with n K D.

    python benchmarks/bench_memory.py [--sizes 1000000 10000000] [--d 16] [--k 32] [--iters 3]

Each size runs in a fresh process that makes the data on the device (float32), fits (init 'k-means++' or --init,
``max_iter`` iterations, tol=0) and reports its peak RSS.  The criterion: the difference of peak RSS between the
sizes is under 3x the difference of the data's size (scratch of n x K x D floats would make it 32x at K=32).
Issue 7's criterion: for the largest size, the fit's own peak-RSS growth (high-water mark reset through
/proc/self/clear_refs once the data exist, read after the fit, minus the RSS before the fit) over the data's size
is at most 1.5.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import jax, jax.numpy as jnp
import gmm_jax
n, d, k, iters = (int(a) for a in sys.argv[1:5])
init = sys.argv[5]
@jax.jit
def make():  # filled chunk by chunk in place: the only n-sized buffer is X itself
    centers = 5 * jax.random.normal(jax.random.key(1), (k, d), jnp.float32)
    chunk = 1 << 15
    def body(i, X):
        kk = jax.random.fold_in(jax.random.key(0), i)
        lab = jax.random.randint(jax.random.fold_in(kk, 1), (chunk,), 0, k)
        block = centers[lab] + jax.random.normal(kk, (chunk, d), jnp.float32)
        return jax.lax.dynamic_update_slice_in_dim(X, block, jnp.minimum(i * chunk, n - chunk), 0)
    return jax.lax.fori_loop(0, -(-n // chunk), body, jnp.zeros((n, d), jnp.float32))
def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
X = make()
X.block_until_ready()
rss_data = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
# the fit's own peak: reset the high-water mark (Linux >= 4.0) once the data exist, read it after the fit
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    hwm_reset = True
except OSError:
    hwm_reset = False
rss_before_fit = status("VmRSS")
t = time.perf_counter()
res = gmm_jax.fit(jax.random.key(3), X, k, init=init, max_iter=iters, tol=0.0)
res.params.means.block_until_ready()
dt = time.perf_counter() - t
peak_fit = status("VmHWM") if hwm_reset else None
print(json.dumps({"n": n, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "data_mb": n * d * 4 / 2**20, "peak_rss_after_data_mb": rss_data,
                  "rss_before_fit_mb": rss_before_fit, "peak_rss_during_fit_mb": peak_fit,
                  "fit_growth_mb": None if peak_fit is None else peak_fit - rss_before_fit,
                  "fit_s": dt, "finite": bool(res.finite[0])}))
"""


def measure(n, d, k, iters, init="k-means++"):
    out = subprocess.run([sys.executable, "-c", CHILD, str(n), str(d), str(k), str(iters), init], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--d", type=int, default=16)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--init", default="k-means++", help="fit's init ('kmeans' adds the K-means iterations, with "
                    "Hamerly's bounds from 50,000 rows)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "memory.json"))
    args = ap.parse_args(argv)
    rows = [measure(n, args.d, args.k, args.iters, args.init) for n in args.sizes]
    for r in rows:
        print(f"n={r['n']:>10d}  data {r['data_mb']:8.1f} MB  peak RSS {r['peak_rss_mb']:8.1f} MB  fit {r['fit_s']:.1f} s")
    a, b = rows[0], rows[-1]
    ratio = None
    if b["data_mb"] > a["data_mb"]:
        ratio = (b["peak_rss_mb"] - a["peak_rss_mb"]) / (b["data_mb"] - a["data_mb"])
        print(f"peak-RSS growth / data growth = {ratio:.2f} (criterion < 3; n*K*D scratch would give ~{args.k:.0f})")
    fit_ratio = None if b["fit_growth_mb"] is None else b["fit_growth_mb"] / b["data_mb"]
    if fit_ratio is not None:
        print(f"n={b['n']}: the fit's own peak-RSS growth / data size = {fit_ratio:.2f} (criterion <= 1.5)")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".tmp", "w") as f:
        json.dump({"rows": rows, "growth_ratio": ratio, "fit_growth_over_data": fit_ratio, "d": args.d, "k": args.k},
                  f, indent=2)
    os.replace(args.out + ".tmp", args.out)
    return ratio


if __name__ == "__main__":
    main()
