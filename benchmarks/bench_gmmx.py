"""gmm_jax against gmmx (PyPI ``gmmx``, 0.7) on gmmx's own benchmark cell, same initial parameters.

    pip install -e ".[bench]"        # installs gmmx
    python benchmarks/bench_gmmx.py [--n 65536] [--d 32] [--k 64] [--iters 20] [--gmm-jax-precision default|bfloat16]

Both run exactly ``iters`` EM iterations (tol=0, full covariances, float32) from the same initial parameters
(gmm_jax's k-means++ initialisation); compile excluded (each is run once first), best of 3; each library runs
in a process of its own with a deadline (``--timeout``), and a library that does not finish is reported so.  Prints the time of
each, the ratio, and the largest difference of the fitted means / weights (float32 rounding only).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _common import unthrottle_blas  # noqa: E402

unthrottle_blas()

import argparse  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _common import best_time, machine_description, print_table, write_json  # noqa: E402

import gmm_jax  # noqa: E402


def _child(lib, path, iters, repeats, precision="highest"):
    """Time one library in this (child) process; prints one JSON line."""
    import json

    z = np.load(path)
    Xj = jax.device_put(z["X"])
    k = z["means"].shape[0]
    if lib == "gmm_jax":
        p0 = gmm_jax.GMMParams(jnp.asarray(z["log_weights"]), jnp.asarray(z["means"]), jnp.asarray(z["prec_chol"]))

        def fn():
            r = gmm_jax.fit(jax.random.key(0), Xj, k, init_params=p0, max_iter=iters, tol=0.0,
                            config=gmm_jax.Config(accelerator=jax.default_backend() != "cpu", precision=precision))
            r.params.means.block_until_ready()
            return np.asarray(r.params.means), np.exp(np.asarray(r.params.log_weights)), int(r.n_iter[0])
    else:
        import gmmx

        g0 = gmmx.GaussianMixtureModelJax.from_squeezed(means=jnp.asarray(z["means"]), covariances=jnp.asarray(z["cov"]),
                                                        weights=jnp.exp(jnp.asarray(z["log_weights"])),
                                                        covariance_type="full")
        fitter = gmmx.EMFitter(max_iter=iters, tol=0.0, reg_covar=1e-6)

        def fn():
            r = fitter.fit(x=Xj, gmm=g0)
            jax.block_until_ready(r.gmm.means)
            return np.asarray(r.gmm.means_numpy), np.asarray(r.gmm.weights_numpy).ravel(), int(r.n_iter)

    t = time.perf_counter()
    means, weights, n_iter = fn()
    first = time.perf_counter() - t
    best = best_time(fn, repeats)
    np.savez(path + f".{lib}.npz", means=means, weights=weights)
    print(json.dumps({"s": best, "first_call_s": first, "n_iter": n_iter}), flush=True)


def _time_in_child(lib, path, iters, repeats, timeout, precision="highest"):
    import json
    import subprocess

    try:
        out = subprocess.run([sys.executable, __file__, "--child", lib, path, "--iters", str(iters),
                              "--repeats", str(repeats), "--gmm-jax-precision", precision],
                             capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish in {timeout} s"}
    if out.returncode != 0:
        return {"error": f"exit {out.returncode}: " + (out.stderr.strip().splitlines() or ["?"])[-1][:200]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(n=65_536, d=32, k=64, iters=20, seed=0, repeats=3, timeout=600, precision="highest"):
    import tempfile

    try:
        import gmmx  # noqa: F401
    except ImportError:
        return {"n": n, "d": d, "k": k, "iters": iters, "skipped": "gmmx not installed (pip install gmmx)"}
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d)) * 3
    X = (centers[rng.integers(0, k, n)] + rng.normal(size=(n, d))).astype(np.float32)
    p0 = gmm_jax.initialize(jax.random.key(seed), X, k, init="k-means++")
    cov0 = gmm_jax.covariances_from_prec_chol(p0.prec_chol, "full")
    row = {"n": n, "d": d, "k": k, "iters": iters, "gmm_jax_precision": precision}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "problem.npz")
        np.savez(path, X=X, log_weights=np.asarray(p0.log_weights), means=np.asarray(p0.means),
                 prec_chol=np.asarray(p0.prec_chol), cov=np.asarray(cov0))
        # each library in a process of its own, with a deadline: gmmx's full-covariance M-step forms an
        # (n, K, D, D) array (17 GB at this cell), which may exhaust the memory of a small machine
        ours = _time_in_child("gmm_jax", path, iters, repeats, timeout, precision)
        theirs = _time_in_child("gmmx", path, iters, repeats, timeout)
        row.update({"gmm_jax_s": ours.get("s"), "gmm_jax_first_call_s": ours.get("first_call_s"),
                    "gmmx_s": theirs.get("s"), "gmmx_first_call_s": theirs.get("first_call_s")})
        if "error" in ours:
            row["gmm_jax_error"] = ours["error"]
        if "error" in theirs:
            row["gmmx_error"] = theirs["error"]
        if "s" in ours and "s" in theirs:
            a, b = np.load(path + ".gmm_jax.npz"), np.load(path + ".gmmx.npz")
            row["speedup_vs_gmmx"] = theirs["s"] / ours["s"]
            row["n_iter_gmm_jax"], row["n_iter_gmmx"] = ours["n_iter"], theirs["n_iter"]
            row["max_abs_mean_diff"] = float(np.max(np.abs(a["means"] - b["means"])))
            row["max_abs_weight_diff"] = float(np.max(np.abs(a["weights"] - b["weights"])))
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=65_536)
    ap.add_argument("--d", type=int, default=32)
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=600, help="seconds allowed to each library's process")
    ap.add_argument("--gmm-jax-precision", choices=("highest", "default", "bfloat16"), default="highest",
                    help="gmm_jax's Config.precision: 'default' multiplies in TF32 on NVIDIA GPUs, as gmmx does "
                         "(reduced-precision iterations while their error bound allows, gmm_jax.precision); "
                         "nothing changes on a CPU")
    ap.add_argument("--child", nargs=2, metavar=("LIB", "PATH"), help=argparse.SUPPRESS)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "gmmx.json"))
    args = ap.parse_args(argv)
    if args.child:
        return _child(args.child[0], args.child[1], args.iters, args.repeats, args.gmm_jax_precision)
    info = machine_description()
    print(f"machine: {info['cpu']} ({info['cores']} cores), JAX {info['jax']} on {info['jax_devices']}")
    row = run(args.n, args.d, args.k, args.iters, repeats=args.repeats, timeout=args.timeout,
              precision=args.gmm_jax_precision)
    print_table([row], list(row))
    write_json(args.out, [row])
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
