"""What the reduced precision modes (``Config.precision``) cost in accuracy, emulated on this machine, and their
speed where an accelerator runs them.

    python benchmarks/bench_precision.py [--out benchmarks/results/precision.json]

Per data set, covariance type and mode ('default' = TF32 operands, 'bfloat16'), with the operands rounded as the
accelerator rounds them (``Config.emulate_precision``), against full precision in the same run:

* one pass at the full-precision fit's parameters: the error bound g, the error of the mean log-likelihood per
  point, and of the M-step's means in the components' standard deviations;
* the whole fit (tol 1e-5): its mean log-likelihood minus the full-precision fit's, and iterations.

On an accelerator (``--speed``) it also times 20 EM iterations of a larger full-covariance cell in each mode.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _common import machine_description, print_table, write_json  # noqa: E402

import gmm_jax  # noqa: E402
from gmm_jax.engine import em_pass  # noqa: E402
from gmm_jax.forms import data_extent, product_error_bound  # noqa: E402
from gmm_jax.precision import pass_precision  # noqa: E402
from gmm_jax.stats import m_step  # noqa: E402


def datasets():
    from sklearn.datasets import load_digits, load_wine
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(0)
    blobs = np.concatenate([rng.normal(size=(1000, 6)) @ (np.eye(6) + 0.3 * rng.normal(size=(6, 6))) * s
                            + rng.normal(size=6) * 4 for s in (0.5, 1.0, 2.0)])
    digits = PCA(16, random_state=0).fit_transform(load_digits().data)
    wine = load_wine().data
    return {"blobs 3000x6 K=3": (blobs, 3), "digits PCA 1797x16 K=10": (digits, 10), "wine 178x13 K=3": (wine, 3)}


def accuracy_row(name, X, k, cov, mode):
    X = np.asarray(X, np.float32)
    ref = gmm_jax.fit(jax.random.key(0), X, k, covariance_type=cov, tol=1e-5)
    cfg = gmm_jax.Config(precision=mode, emulate_precision=True)
    got = gmm_jax.fit(jax.random.key(0), X, k, covariance_type=cov, tol=1e-5, config=cfg)
    Xd = jnp.asarray(X)
    shift = jnp.mean(Xd, axis=0)
    p = ref.params._replace(means=ref.params.means - shift)
    red = pass_precision(cfg, np.float32)
    s_e, ll_e = em_pass(Xd, None, shift, p, cov, X.shape[0], cfg)
    s_r, ll_r = em_pass(Xd, None, shift, p, cov, X.shape[0], cfg, precision=red)
    g = float(product_error_bound(data_extent(Xd, None, shift, X.shape[0]), p, cov, red.unit))
    new_e, new_r = m_step(s_e, p.means, cov, 1e-6), m_step(s_r, p.means, cov, 1e-6)
    var = gmm_jax.covariances_from_prec_chol(new_e.prec_chol, cov)
    sd = jnp.sqrt(jnp.diagonal(var, axis1=-2, axis2=-1) if cov in ("full", "tied") else var)
    sd = sd[:, None] if cov == "spherical" else sd
    return {"data": name, "cov": cov, "mode": mode, "g": g, "reduced_used": g <= cfg.precision_tol,
            "pass_ll_err": abs(float(ll_e - ll_r)) / X.shape[0],
            "means_err_sd": float(jnp.max(jnp.abs(new_e.means - new_r.means) / sd)),
            "fit_ll_diff": float(got.log_likelihood[0] - ref.log_likelihood[0]),
            "iters_highest": int(ref.n_iter[0]), "iters_mode": int(got.n_iter[0])}


def speed_rows(n=65_536, d=32, k=64, iters=20):
    rng = np.random.default_rng(0)
    X = jax.device_put(rng.normal(size=(n, d)).astype(np.float32))
    p0 = gmm_jax.initialize(jax.random.key(0), X, k, init="random_from_data")
    rows = []
    for mode in ("highest", "default", "bfloat16"):
        cfg = gmm_jax.Config(accelerator=jax.default_backend() != "cpu", precision=mode)

        def run(cfg=cfg):
            r = gmm_jax.fit(jax.random.key(0), X, k, init_params=p0, max_iter=iters, tol=0.0, config=cfg)
            return r.params.means.block_until_ready()

        run()
        t = time.perf_counter()
        run()
        rows.append({"cell": f"{n}x{d} K={k} full", "mode": mode, "s_per_iter": (time.perf_counter() - t) / iters})
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results/precision.json")
    ap.add_argument("--speed", action="store_true", help="also time the modes (meaningful on an accelerator)")
    args = ap.parse_args()
    rows = [accuracy_row(name, X, k, cov, mode) for name, (X, k) in datasets().items()
            for cov in ("full", "tied") for mode in ("default", "bfloat16")]
    print_table(rows, ["data", "cov", "mode", "g", "reduced_used", "pass_ll_err", "means_err_sd", "fit_ll_diff",
                       "iters_highest", "iters_mode"])
    speed = speed_rows() if args.speed else []
    if speed:
        print_table(speed, ["cell", "mode", "s_per_iter"])
    write_json(args.out, {"machine": machine_description(), "accuracy": rows, "speed": speed})


if __name__ == "__main__":
    main()
