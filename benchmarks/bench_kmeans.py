"""K-means speed against scikit-learn ``KMeans(algorithm="lloyd")``, float32, same data and initial centres.

gmm_jax's default (``algorithm="auto"``: Hamerly's bounds on a CPU from 50,000 rows, same iterates as Lloyd) is the
headline figure; its plain Lloyd (``algorithm="lloyd"``) and scikit-learn's ``algorithm="elkan"`` (also bounds, also
Lloyd's iterates) are reported beside it.

    python benchmarks/bench_kmeans.py [--quick]

Two measures of the time per iteration, both from the same initial centres:

- early iterations: (t(M2 iterations) - t(M1 iterations)) / (M2 - M1), iterations 4-8 with tol=0 (fixed costs drop
  out; compilation is excluded and reported); each t is the best of alternating M1 / M2 runs (10 for gmm_jax, 5
  for scikit-learn by default: with best-of-3 this machine's noise once made t(M1) > t(M2)).  Bounds help least
  here, where the centres still move most.
- iterations 4 to convergence: (t(whole fit) - t(3 iterations)) / (iterations - 3), each library's whole fit to
  scikit-learn's default tolerance (1e-4) with its own iteration count (in float32 the two trajectories round
  differently and may stop a few iterations apart); best of alternating runs (5 each by default).  The whole fits'
  times (setup, final label pass and inertia included) and their ratio are reported too.

Also: R=32 vmapped restarts against ``n_init=32`` on n=2000, d=2, K=5 (whole fit, compile excluded).  Labels are
compared as the number of points whose labels differ (float32: near-ties and the sums' rounding order).  Writes
benchmarks/results/kmeans.json.
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
from _common import best_time, blas_description, machine_description, paired_best, print_table, write_json  # noqa: E402

import gmm_jax  # noqa: E402

GRID = [(1_000_000, 16, 64), (100_000, 64, 16)]


def data(n, d, k, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(k, d))[rng.integers(0, k, n)] * 3 + rng.normal(size=(n, d))).astype(np.float32)


def per_iter(X, init, m1, m2, sk_repeats=5, algorithm="auto", repeats=10):
    from sklearn.cluster import KMeans

    k = init.shape[0]
    Xj = jnp.asarray(X)

    def ours(m, alg):
        r = gmm_jax.kmeans(jax.random.key(0), Xj, k, init=init, max_iter=m, tol=0.0, algorithm=alg)
        r.centers.block_until_ready()
        return r

    def one(alg):
        t = time.perf_counter()
        ours(m1, alg)
        compile_s = time.perf_counter() - t
        ours(m2, alg)
        t1, t2 = paired_best(lambda: ours(m1, alg), lambda: ours(m2, alg), repeats)
        r1, r2 = ours(m1, alg), ours(m2, alg)
        return (t2 - t1) / (int(r2.n_iter) - int(r1.n_iter)) * 1e3, compile_s - t1, r2

    ms, compile_s, r2 = one(algorithm)
    ms_lloyd = one("lloyd")[0]

    def sk(m, alg):
        return KMeans(k, init=init, n_init=1, max_iter=m, tol=0.0, algorithm=alg).fit(X)

    def sk_ms(alg):
        s1, s2 = paired_best(lambda: sk(m1, alg), lambda: sk(m2, alg), sk_repeats)
        k1, k2 = sk(m1, alg), sk(m2, alg)
        return (s2 - s1) / (k2.n_iter_ - k1.n_iter_) * 1e3, k2

    sk_lloyd, k2 = sk_ms("lloyd")
    sk_elkan = sk_ms("elkan")[0]
    differ = int(np.sum(np.asarray(r2.labels) != k2.labels_))
    return ms, sk_lloyd, compile_s, differ, int(r2.n_iter), int(k2.n_iter_), ms_lloyd, sk_elkan


def whole_fit(X, init, repeats=5, algorithm="auto", m1=3):
    """Whole fits from the same centres to scikit-learn's default tolerance, gmm_jax and scikit-learn's Lloyd: the
    fit's time and iteration count, the time per iteration over iterations m1+1 to convergence ((t(fit) - t(m1
    iterations)) / (iterations - m1), fixed costs dropping out, as in the early-iteration measure) and the labels
    that differ; every t is the best of alternating runs."""
    from sklearn.cluster import KMeans

    k = init.shape[0]
    Xj = jnp.asarray(X)

    def ours(m=300):
        r = gmm_jax.kmeans(jax.random.key(0), Xj, k, init=init, tol=1e-4, max_iter=m, algorithm=algorithm)
        r.centers.block_until_ready()
        return r

    def sk(m=300):
        return KMeans(k, init=init, n_init=1, tol=1e-4, max_iter=m, algorithm="lloyd").fit(X)

    ours(), ours(m1)
    t_ours, t_sk = paired_best(ours, sk, repeats)
    t1_ours, t1_sk = paired_best(lambda: ours(m1), lambda: sk(m1), repeats)
    r, m = ours(), sk()
    it, it_sk = int(r.n_iter), int(m.n_iter_)
    def per(t, t1, i):  # undefined if the fit stopped within m1 iterations
        return (t - t1) / (i - m1) * 1e3 if i > m1 else float("nan")

    return {"fit_ms": t_ours * 1e3, "sklearn_fit_ms": t_sk * 1e3, "fit_iters": f"{it}/{it_sk}",
            "fit_ms_per_iter": per(t_ours, t1_ours, it), "sklearn_fit_ms_per_iter": per(t_sk, t1_sk, it_sk),
            "fit_labels_differing": int(np.sum(np.asarray(r.labels) != m.labels_))}


def restarts(R=32):
    from sklearn.cluster import KMeans

    X = data(2000, 2, 5, seed=1)
    Xj = jnp.asarray(X)

    def ours(r):
        res = gmm_jax.kmeans(jax.random.key(0), Xj, 5, n_restarts=r)
        res.centers.block_until_ready()
        return res

    ours(1)
    ours(R)
    t_one, t_r = best_time(lambda: ours(1), 5), best_time(lambda: ours(R), 5)
    t_sk = best_time(lambda: KMeans(5, n_init=R, algorithm="lloyd", random_state=0).fit(X), 3)
    return t_one, t_r, t_sk, float(ours(R).inertia), float(KMeans(5, n_init=R, random_state=0).fit(X).inertia_)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--sklearn-repeats", type=int, default=5, help="best of this many scikit-learn runs")
    ap.add_argument("--repeats", type=int, default=10, help="best of this many gmm_jax runs")
    ap.add_argument("--fit-repeats", type=int, default=5, help="best of this many whole fits of each library")
    ap.add_argument("--algorithm", default="auto", choices=["auto", "lloyd", "hamerly"],
                    help="gmm_jax's K-means algorithm for the headline figure (plain Lloyd is always reported too)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "kmeans.json"))
    args = ap.parse_args(argv)
    scale = args.scale / (10 if args.quick else 1)
    info = machine_description()
    print(f"machine: {info['cpu']} ({info['cores']} cores), JAX {info['jax']} on {info['jax_devices']}")
    print(f"NumPy BLAS (threadpoolctl): {blas_description()}")
    rows = []
    for n, d, k in GRID:
        n = int(n * scale)
        X = data(n, d, k)
        init = X[np.random.default_rng(1).choice(n, k, replace=False)]
        ms, sk_ms, comp, differ, it_ours, it_sk, ms_lloyd, sk_elkan = per_iter(X, init, 3, 8, args.sklearn_repeats,
                                                                              args.algorithm, args.repeats)
        fit = whole_fit(X, init, args.fit_repeats, args.algorithm)
        rows.append({"n": n, "d": d, "k": k, "algorithm": args.algorithm, "ms_per_iter": ms,
                     "sklearn_ms_per_iter": sk_ms, "speedup_vs_sklearn": sk_ms / ms,
                     "ms_per_iter_lloyd": ms_lloyd, "lloyd_speedup_vs_sklearn": sk_ms / ms_lloyd,
                     "sklearn_elkan_ms_per_iter": sk_elkan, "speedup_vs_sklearn_elkan": sk_elkan / ms,
                     "compile_s": comp, "labels_differing": differ, "iters": f"{it_ours}/{it_sk}",
                     **fit, "fit_per_iter_speedup_vs_sklearn": fit["sklearn_fit_ms_per_iter"] / fit["fit_ms_per_iter"],
                     "fit_speedup_vs_sklearn": fit["sklearn_fit_ms"] / fit["fit_ms"]})
        print_table(rows[-1:], list(rows[-1]))
    t_one, t_r, t_sk, inertia, sk_inertia = restarts()
    rows.append({"n": 2000, "d": 2, "k": 5, "restarts": 32, "ms_one_restart": t_one * 1e3, "ms_32_restarts": t_r * 1e3,
                 "sklearn_ms_n_init_32": t_sk * 1e3, "speedup_vs_sklearn": t_sk / t_r,
                 "cost_32_over_1": t_r / t_one, "inertia": inertia, "sklearn_inertia": sk_inertia})
    print_table(rows[-1:], list(rows[-1]))
    write_json(args.out, rows)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
