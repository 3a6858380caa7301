"""Restarts nearly free: R vmapped GMM restarts against one restart and against scikit-learn ``n_init=R``.

    python benchmarks/bench_restarts.py [--restarts 32] [--n 2000]

Whole fits (k-means and random_from_data initialisations, EM restarts vmapped in lockstep and run in sequence
(``Config.restarts_in_sequence``), EM to tol=1e-3, max_iter=100, full covariances), compile excluded (every
configuration is run once before timing), best of several runs, float32, n=2000, d=2, K=5 by default.  Prints
cost(R) / cost(1) and the speed-up over scikit-learn ``GaussianMixture(n_init=R)``, plus both best
log-likelihoods (the two libraries draw different initialisations, so these agree only statistically).
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
import numpy as np  # noqa: E402
from _common import best_time, machine_description, print_table, write_json  # noqa: E402

import gmm_jax  # noqa: E402


def make_data(n, d, k, seed=1):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d)) * 3
    A = rng.normal(size=(k, d, d)) * 0.6 + np.eye(d)
    lab = rng.integers(0, k, n)
    return (centers[lab] + np.einsum("nd,nde->ne", rng.normal(size=(n, d)), A[lab])).astype(np.float32)


def run(n=2000, d=2, k=5, R=32, repeats=7, init="kmeans", in_sequence=False):
    from sklearn.mixture import GaussianMixture

    X = make_data(n, d, k)
    Xj = jax.device_put(X)
    cfg = gmm_jax.Config(accelerator=gmm_jax.default_config().accelerator, restarts_in_sequence=in_sequence)

    def ours(r):
        res = gmm_jax.fit(jax.random.key(0), Xj, k, n_restarts=r, init=init, config=cfg)
        res.params.means.block_until_ready()
        return res

    t = time.perf_counter()
    ours(1)
    compile_one = time.perf_counter() - t
    t = time.perf_counter()
    ours(R)
    compile_r = time.perf_counter() - t
    t_one = best_time(lambda: ours(1), repeats)
    t_r = best_time(lambda: ours(R), repeats)
    t_sk = best_time(lambda: GaussianMixture(k, n_init=R, init_params=init, random_state=0).fit(X), 3)
    res = ours(R)
    sk = GaussianMixture(k, n_init=R, init_params=init, random_state=0).fit(X)
    return {
        "n": n, "d": d, "k": k, "restarts": R, "init": init, "in_sequence": in_sequence,
        "ms_one_restart": t_one * 1e3, "ms_R_restarts": t_r * 1e3, "sklearn_ms_n_init_R": t_sk * 1e3,
        "cost_R_over_1": t_r / t_one, "speedup_vs_sklearn": t_sk / t_r,
        "first_call_s_one": compile_one, "first_call_s_R": compile_r,
        "mean_iters": float(np.mean(np.asarray(res.n_iter))), "max_iters": int(np.max(np.asarray(res.n_iter))),
        "best_log_likelihood": float(res.log_likelihood[res.best]), "sklearn_log_likelihood": float(sk.score(X)),
    }


def scaling(n=2000, d=2, k=5, init="random_from_data", rs=(1, 2, 4, 8, 16, 32), repeats=7):
    """Where the time of R restarts goes: whole fits against R (vmapped and in sequence) and against a fit of one
    restart with the same total iterations (max_iter = the R restarts' iterations summed, tol 0)."""
    X = jax.device_put(make_data(n, d, k))
    rows = []
    for r in rs:
        row = {"restarts": r}
        for in_sequence in (False, True):
            cfg = gmm_jax.Config(accelerator=gmm_jax.default_config().accelerator, restarts_in_sequence=in_sequence)

            def fit(r=r, cfg=cfg):
                res = gmm_jax.fit(jax.random.key(0), X, k, n_restarts=r, init=init, config=cfg)
                res.params.means.block_until_ready()
                return res

            res = fit()
            row["sequence_ms" if in_sequence else "vmapped_ms"] = best_time(fit, repeats) * 1e3
        iters = int(np.sum(np.asarray(res.n_iter)))
        row["iterations_summed"] = iters

        def one_long(iters=iters):
            res = gmm_jax.fit(jax.random.key(0), X, k, init=init, max_iter=iters, tol=0.0)
            res.params.means.block_until_ready()

        one_long()
        row["one_restart_same_iterations_ms"] = best_time(one_long, repeats) * 1e3
        rows.append(row)
        print(row, flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--restarts", type=int, default=32)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "restarts.json"))
    ap.add_argument("--scaling", action="store_true",
                    help="only the profile: time against R, and one restart running the R restarts' iterations")
    args = ap.parse_args(argv)
    if args.scaling:
        path = os.path.join(os.path.dirname(args.out), "restarts_scaling.json")
        write_json(path, dict(machine=machine_description(), rows=scaling(n=args.n)))
        print(f"wrote {path}")
        return
    info = machine_description()
    print(f"machine: {info['cpu']} ({info['cores']} cores), JAX {info['jax']} on {info['jax_devices']}")
    rows = []
    for init in ("kmeans", "random_from_data"):
        for in_sequence in (False, True):
            rows.append(run(n=args.n, R=args.restarts, init=init, in_sequence=in_sequence))
            print_table(rows[-1:], list(rows[-1]))
    write_json(args.out, rows)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
