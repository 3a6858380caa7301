"""K set too large (3x the classes): how many components EM, MAP EM and variational Bayes keep on real data, and
what that does to ARI and BIC.

    python benchmarks/compare_bayesian.py [--seeds 3] [--out benchmarks/results/bayesian.json]

Data: iris, wine and the digits in a 10-D PCA space, features standardised (as the "tuned" setting of
``compare_clustering.py``), float64, full covariances, 5 restarts per seed (the best kept), reg_covar 1e-2 for the
maximum-likelihood fit (in standardised units; the Bayesian fits' priors regularise and keep the default 1e-6).
Methods: maximum likelihood (``fit``), MAP EM with the default prior (``Prior()``), variational Bayes with a
Dirichlet-distribution and a Dirichlet-process weight prior (``VBPrior``, scikit-learn's defaults; scikit-learn's
``BayesianGaussianMixture`` in the same run as the reference).  "Kept": components with weight above 1%.  BIC:
``-2 log L + p log n`` of the fitted mixture (VB: the posterior-mean weights, means and covariances), ``p`` counting the
kept components only.  ARI: against the true classes, each point to its most probable component.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
from _common import machine_description, write_json  # noqa: E402
from sklearn.metrics import adjusted_rand_score  # noqa: E402

import gmm_jax  # noqa: E402
from gmm_jax.variational import effective_params, mixture_weights, point_params  # noqa: E402


def datasets():
    import sklearn.datasets as skd
    from sklearn.decomposition import PCA

    def std(x):
        s = x.std(0)
        return (x - x.mean(0)) / np.where(s > 0, s, 1.0)

    dig = skd.load_digits()
    return {"iris": (std(skd.load_iris().data), skd.load_iris().target),
            "wine": (std(skd.load_wine().data), skd.load_wine().target),
            "digits PCA-10": (std(PCA(10, random_state=0).fit_transform(dig.data / 16.0)), dig.target)}


def _row(X, y, params, predict_params, kept):
    n, d = X.shape
    ll = float(gmm_jax.score(X, params)) * n
    p = kept * (1 + d + d * (d + 1) // 2) - 1
    labels = np.asarray(gmm_jax.predict(X, predict_params))
    return {"kept": kept, "ari": adjusted_rand_score(y, labels), "bic": -2 * ll + p * np.log(n)}


def run_one(X, y, k, seed):
    key = jax.random.key(seed)
    rows = {}
    r = gmm_jax.fit(key, X, k, n_restarts=5, reg_covar=1e-2)
    rows["EM (max. likelihood)"] = _row(X, y, r.params, r.params, int(np.sum(np.exp(r.params.log_weights) > 0.01)))
    r = gmm_jax.fit(key, X, k, n_restarts=5, prior=gmm_jax.Prior())
    rows["MAP EM, Prior()"] = _row(X, y, r.params, r.params, int(np.sum(np.exp(r.params.log_weights) > 0.01)))
    for name, wp in (("VB, Dirichlet distribution", "dirichlet_distribution"), ("VB, Dirichlet process",
                                                                                "dirichlet_process")):
        r = gmm_jax.fit(key, X, k, n_restarts=5, variational=gmm_jax.VBPrior(wp))
        eff = effective_params(r.params)
        eff = eff._replace(log_weights=eff.log_weights - jax.scipy.special.logsumexp(eff.log_weights))
        kept = int(np.sum(np.asarray(mixture_weights(r.params)) > 0.01))
        rows[name] = _row(X, y, point_params(r.params), eff, kept)
    from sklearn.mixture import BayesianGaussianMixture

    sk = BayesianGaussianMixture(n_components=k, n_init=5, random_state=seed, max_iter=100).fit(X)
    pp = gmm_jax.GMMParams(np.log(sk.weights_), sk.means_, sk.precisions_cholesky_)
    row = _row(X, y, pp, pp, int(np.sum(sk.weights_ > 0.01)))
    row["ari"] = adjusted_rand_score(y, sk.predict(X))
    rows["scikit-learn BayesianGaussianMixture (DP)"] = row
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results/bayesian.json")
    args = ap.parse_args()
    out = []
    for name, (X, y) in datasets().items():
        k = 3 * len(np.unique(y))
        per = [run_one(X, y, k, s) for s in range(args.seeds)]
        for method in per[0]:
            vals = {f: [p[method][f] for p in per] for f in ("kept", "ari", "bic")}
            row = {"data": name, "K": k, "classes": len(np.unique(y)), "method": method,
                   **{f"{f}_mean": float(np.mean(v)) for f, v in vals.items()},
                   **{f"{f}_all": v for f, v in vals.items()}}
            out.append(row)
            print(f"{name:14s} K={k:2d} {method:42s} kept {row['kept_mean']:5.1f}  ARI {row['ari_mean']:.3f}  "
                  f"BIC {row['bic_mean']:9.1f}", flush=True)
    write_json(args.out, {"machine": machine_description(), "rows": out})


if __name__ == "__main__":
    main()
