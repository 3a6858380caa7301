"""Known labels for some points: how accuracy on digits grows with the fraction labelled (semi-supervised EM).

    python benchmarks/compare_semi_supervised.py [--seeds 5]

Digits (pixels / 16) projected to 10 principal components (fit on the training split), standardised; a random 70 %
/ 30 % train/test split per seed; of the training points a fraction is labelled, stratified (at least one point
per class).  Methods, all K = 10 full-covariance mixtures with reg_covar = 1e-2:

  * semi-supervised EM: ``gmm_jax.fit(..., labels=y)`` with -1 for the unlabelled training points (10 restarts);
  * labelled points only: ``gmm_jax.fit_supervised`` on the labelled points (a class with one labelled point gets
    the covariance reg_covar I);
  * unsupervised EM, components matched to classes (Hungarian) on the test split (``fraction`` 0);
  * fully supervised (``fraction`` 1).

Accuracy on the test split (``gmm_jax.predict``; components are the classes, no matching except for the
unsupervised row) and on the unlabelled training points (transductive).  Writes benchmarks/results/semi_supervised.json
and docs/semi_supervised_results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import numpy as np

import gmm_jax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRACTIONS = (0.01, 0.05, 0.2)
K = 10
REG = 1e-2


def split(seed: int):
    """(X_train, y_train, X_test, y_test): digits / 16, PCA-10 of the training split, standardised by it."""
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(d.target))
    cut = int(0.7 * len(idx))
    tr, te = idx[:cut], idx[cut:]
    X = d.data / 16.0
    mu = X[tr].mean(0)
    _, _, vt = np.linalg.svd(X[tr] - mu, full_matrices=False)
    proj = lambda a: (a - mu) @ vt[:10].T  # noqa: E731
    ztr, zte = proj(X[tr]), proj(X[te])
    s = ztr.std(0)
    return ztr / s, d.target[tr], zte / s, d.target[te]


def labelled_subset(y, fraction: float, seed: int):
    """Labels with -1 for the unlabelled points: per class round(fraction n_c) points, at least one."""
    rng = np.random.default_rng(1000 + seed)
    out = np.full_like(y, -1)
    for c in range(K):
        members = np.flatnonzero(y == c)
        take = rng.choice(members, max(1, int(round(fraction * len(members)))), replace=False)
        out[take] = c
    return out


def accuracy(params, X, y, match: bool = False) -> float:
    pred = np.asarray(gmm_jax.predict(X, params))
    return float(gmm_jax.matched_accuracy(y, pred)) if match else float(np.mean(pred == y))


def run_seed(seed: int) -> list[dict]:
    Xtr, ytr, Xte, yte = split(seed)
    key = jax.random.key(seed)
    rows = []

    def add(method, fraction, params, seconds, labels=None, match=False):
        unl = np.ones(len(ytr), bool) if labels is None else labels < 0
        rows.append(dict(seed=seed, method=method, fraction=fraction, seconds=seconds,
                         test_accuracy=accuracy(params, Xte, yte, match),
                         unlabelled_accuracy=accuracy(params, Xtr[unl], ytr[unl], match) if unl.any() else None))

    t = time.perf_counter()
    res = gmm_jax.fit(key, Xtr, K, n_restarts=10, reg_covar=REG)
    add("unsupervised EM (matched)", 0.0, res.params, time.perf_counter() - t, match=True)
    for fraction in FRACTIONS:
        lab = labelled_subset(ytr, fraction, seed)
        t = time.perf_counter()
        res = gmm_jax.fit(key, Xtr, K, n_restarts=10, reg_covar=REG, labels=lab)
        add("semi-supervised EM", fraction, res.params, time.perf_counter() - t, lab)
        known = lab >= 0
        t = time.perf_counter()
        sup = gmm_jax.fit_supervised(Xtr[known], lab[known], K, "full", reg_covar=REG)
        add("labelled points only", fraction, sup, time.perf_counter() - t, lab)
    t = time.perf_counter()
    add("fully supervised", 1.0, gmm_jax.fit_supervised(Xtr, ytr, K, "full", reg_covar=REG), time.perf_counter() - t)
    return rows


def table(rows: list[dict]) -> str:
    methods = ["unsupervised EM (matched)", "labelled points only", "semi-supervised EM", "fully supervised"]
    lines = ["| labelled | method | test accuracy | unlabelled train accuracy |", "|---|---|---|---|"]
    for fraction in (0.0,) + FRACTIONS + (1.0,):
        for m in methods:
            sel = [r for r in rows if r["method"] == m and r["fraction"] == fraction]
            if not sel:
                continue
            te = np.array([r["test_accuracy"] for r in sel])
            un = [r["unlabelled_accuracy"] for r in sel if r["unlabelled_accuracy"] is not None]
            unl = f"{np.mean(un):.3f} ± {np.std(un):.3f}" if un else "–"
            lines.append(f"| {fraction:.0%} | {m} | {te.mean():.3f} ± {te.std():.3f} | {unl} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5)
    args = ap.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    rows = [r for s in range(args.seeds) for r in run_seed(s)]
    text = table(rows)
    print(text)
    with open(os.path.join(ROOT, "benchmarks", "results", "semi_supervised.json"), "w") as f:
        json.dump(dict(command="python benchmarks/compare_semi_supervised.py --seeds %d" % args.seeds, rows=rows), f,
                  indent=1)
    with open(os.path.join(ROOT, "docs", "semi_supervised_results.md"), "w") as f:
        f.write("# Semi-supervised EM on digits: the table\n\n"
                f"`python benchmarks/compare_semi_supervised.py --seeds {args.seeds}` (mean ± std over the seeds; "
                "see [semi_supervised.md](semi_supervised.md) for the method).\n\n" + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
