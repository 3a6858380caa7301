"""Per-iteration EM time of gmm_jax against scikit-learn, same data, same initial parameters, float32.

    python benchmarks/bench_em.py [--quick] [--covariance-type full] [--scale 1]

Per-iteration time is (t(M2 iterations) - t(M1 iterations)) / (M2 - M1), for both libraries, so fixed costs
(validation, the final E-step, compilation) drop out; gmm_jax's compile time is reported apart.  With
``--sklearn-step`` (used by ``run_all.py --gpu``, where a scikit-learn fit at n x 10 costs minutes) scikit-learn's
iteration is timed directly instead: one E-step + M-step from the same parameters, in the data's dtype, best of up
to 3.  GFLOP/s counts 4 n K D^2 flops per full-covariance iteration and is compared with the ``jnp.dot`` speed
measured in this run.
OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are removed for this command only (the script re-executes itself).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _common import unthrottle_blas  # noqa: E402

unthrottle_blas()

import argparse  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _common import best_time, blas_description, machine_description, matmul_gflops, print_table, write_json  # noqa: E402

import gmm_jax  # noqa: E402

GRID = [(100_000, 16, 16), (100_000, 64, 8), (1_000_000, 8, 16)]


def flops_per_iter(n, d, k, covariance_type):
    """Flops of the products of one iteration: full 4 n K D^2 (whitening and second moments); the product form a
    single fit of the other types takes (gmm_jax.forms.product_block): tied 4 n D (D + K) (whitening, log-densities,
    scatter, first moments), diag 8 n K D (four (K, D)-by-(D, n) sized products), spherical 4 n K D (two)."""
    if covariance_type == "full":
        return 4.0 * n * k * d * d
    if covariance_type == "tied":
        return 4.0 * n * d * (d + k)
    return (8.0 if covariance_type == "diag" else 4.0) * n * k * d


def make_problem(n, d, k, covariance_type, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d)) * 4
    X = (centers[rng.integers(0, k, n)] + rng.normal(size=(n, d))).astype(np.float32)
    # shared initial parameters: gmm_jax's k-means++ initialisation (one restart), used by both libraries
    init = gmm_jax.fit(jax.random.key(seed), X, k, covariance_type=covariance_type, init="k-means++", max_iter=1)
    res = jax.device_get(init.all_params)
    # parameters *before* the first M-step are not returned; use the ones after one iteration as the start
    p0 = gmm_jax.GMMParams(*(np.asarray(a[0]) for a in res))
    return X, p0


def time_gmm_jax(X, p0, k, covariance_type, m1, m2):
    def run(m):
        r = gmm_jax.fit(jax.random.key(0), X, k, covariance_type=covariance_type, init_params=p0, max_iter=m, tol=0.0)
        r.params.means.block_until_ready()
        return r

    t0 = time.perf_counter()
    run(m1)
    compile_s = time.perf_counter() - t0
    run(m2)  # compile the second length too
    t1 = best_time(lambda: run(m1))
    t2 = best_time(lambda: run(m2))
    # compile time of the first call minus its run time
    return (t2 - t1) / (m2 - m1), compile_s - t1, run(m2)


def time_sklearn(X, p0, k, covariance_type, m1, m2, repeats=2):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    prec = np.asarray(gmm_jax.precisions_from_prec_chol(jnp.asarray(p0.prec_chol), covariance_type))
    w0 = np.exp(p0.log_weights.astype(np.float64))
    w0 /= w0.sum()

    def run(m):
        gm = GaussianMixture(k, covariance_type=covariance_type, weights_init=w0,
                             means_init=p0.means, precisions_init=prec, max_iter=m, tol=0.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            gm.fit(X)
        return gm

    t1 = best_time(lambda: run(m1), repeats=repeats)
    last = []
    t2 = best_time(lambda: last.append(run(m2)), repeats=repeats)
    return (t2 - t1) / (m2 - m1), last[-1]


def time_sklearn_step(X, p0, k, covariance_type):
    """One scikit-learn EM iteration timed directly: the E-step and M-step its ``fit`` loop runs, from ``p0``, after
    a warm-up on 2000 rows; best of up to 3 (used where a fit costs minutes, e.g. n x 10 on a GPU host: fits of M1
    and M2 iterations pay the initialisation and the final E-step on top)."""
    from sklearn.mixture import GaussianMixture

    gm = GaussianMixture(k, covariance_type=covariance_type)
    # in X's dtype, as scikit-learn's own parameters are after its first M-step (float64 parameters would make
    # every product float64 and its iterations slower than in a fit)
    w0 = np.exp(p0.log_weights.astype(np.float64))
    gm.weights_ = (w0 / w0.sum()).astype(X.dtype)
    gm.means_ = np.asarray(p0.means, X.dtype)
    gm.precisions_cholesky_ = np.asarray(p0.prec_chol, X.dtype)
    state = (gm.weights_, gm.means_, gm.precisions_cholesky_)
    gm._m_step(X[:2000], gm._e_step(X[:2000])[1])  # warm-up (first-call costs)
    best = np.inf
    for _ in range(3):  # best of up to 3 iterations from the same start, while each takes under 10 s
        gm.weights_, gm.means_, gm.precisions_cholesky_ = state
        t = time.perf_counter()
        _, log_resp = gm._e_step(X)
        gm._m_step(X, log_resp)
        best = min(best, time.perf_counter() - t)
        if best > 10.0:
            break
    return best, gm


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--covariance-type", default="full", choices=gmm_jax.COVARIANCE_TYPES)
    ap.add_argument("--quick", action="store_true", help="n / 10 (a smoke run)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every n (e.g. 10 on a GPU)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "em.json"))
    ap.add_argument("--no-sklearn", action="store_true", help="skip the scikit-learn baseline")
    ap.add_argument("--sklearn-repeats", type=int, default=2, help="best of this many scikit-learn runs")
    ap.add_argument("--sklearn-iters", type=int, nargs=2, default=[2, 7], metavar=("M1", "M2"),
                    help="scikit-learn's per-iteration time from fits of M1 and M2 iterations")
    ap.add_argument("--sklearn-step", action="store_true",
                    help="time one scikit-learn iteration directly (its E-step + M-step) instead of M1/M2 fits")
    args = ap.parse_args(argv)
    scale = args.scale / (10 if args.quick else 1)
    m1, m2 = 2, 7
    info = machine_description()
    print(f"machine: {info['cpu']} ({info['cores']} cores), JAX {info['jax']} on {info['jax_devices']}")
    print(f"NumPy BLAS (threadpoolctl): {blas_description()}")
    peak = matmul_gflops()
    print(f"jnp.dot float32 2048x2048: {peak:.1f} GFLOP/s")
    rows = []
    for n, d, k in GRID:
        n = int(n * scale)
        X, p0 = make_problem(n, d, k, args.covariance_type)
        ms, compile_s, res = time_gmm_jax(X, p0, k, args.covariance_type, m1, m2)
        row = {"n": n, "d": d, "k": k, "covariance_type": args.covariance_type, "ms_per_iter": ms * 1e3,
               "compile_s": compile_s}
        if not args.no_sklearn:
            if args.sklearn_step:
                sk_s, gm = time_sklearn_step(X, p0, k, args.covariance_type)
            else:
                sk_s, gm = time_sklearn(X, p0, k, args.covariance_type, *args.sklearn_iters, args.sklearn_repeats)
            row["sklearn_ms_per_iter"] = sk_s * 1e3
            row["speedup_vs_sklearn"] = sk_s / ms
            # same start, same iterations: the two results agree (float32 rounding only)
            if not args.sklearn_step and tuple(args.sklearn_iters) == (m1, m2):  # same number of iterations: compare the results
                row["max_abs_mean_diff"] = float(np.max(np.abs(np.asarray(res.params.means) - gm.means_)))
        fl = flops_per_iter(n, d, k, args.covariance_type)
        row["gflops"] = fl / ms / 1e9
        row["peak_gflops"] = peak
        row["fraction_of_peak"] = row["gflops"] / peak
        rows.append(row)
        print_table([row], list(row))
        write_json(args.out, rows)  # after every cell, so an interrupted run keeps what it measured
    print()
    cols = ["n", "d", "k", "ms_per_iter", "sklearn_ms_per_iter", "speedup_vs_sklearn", "gflops", "peak_gflops",
            "compile_s"]
    print_table(rows, [c for c in cols if c in rows[0]])
    write_json(args.out, rows)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
