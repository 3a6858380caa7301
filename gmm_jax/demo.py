"""The main job (``gmm-jax demo``): fits, comparisons and derivation checks on data that ship with scikit-learn.

Writes DIR/report.md and PNG figures: restart traces, BIC/AIC against K, the Student-t mixture on heavy tails,
GMM ellipses vs K-means cells, class-conditional samples.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import gmm_jax


class Progress:
    def __init__(self, total):
        self.total, self.i, self.t0 = total, 0, time.perf_counter()

    def step(self, what):
        self.i += 1
        bar = "#" * self.i + "." * (self.total - self.i)
        print(f"[{bar}] {self.i}/{self.total} {what} ({time.perf_counter() - self.t0:.0f}s)", file=sys.stderr,
              flush=True)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def section_restarts(X, restarts, out, plt, quick=False):
    lines = ["## 1. Iris: every covariance type, restarts vmapped", "",
             "| covariance | mean log-likelihood (best) | BIC | iterations | converged | matched accuracy |",
             "|---|---|---|---|---|---|"]
    Xd, y = X
    types = ("full",) if quick else gmm_jax.COVARIANCE_TYPES
    fig, axes = plt.subplots(1, len(types), figsize=(4 * len(types), 3.5), squeeze=False)
    axes = axes[0]
    for ax, ct in zip(axes, types):
        res = gmm_jax.fit(jax.random.key(0), Xd, 3, covariance_type=ct, n_restarts=restarts, init="k-means++")
        b = int(res.best)
        pred = np.asarray(gmm_jax.predict(Xd, res.params, ct))
        lines.append(f"| {ct} | {float(res.log_likelihood[b]):.4f} | {float(gmm_jax.bic(Xd, res.params, ct)):.1f} | "
                     f"{int(res.n_iter[b])} | {bool(res.converged[b])} | {gmm_jax.matched_accuracy(y, pred):.3f} |")
        tr = np.asarray(res.trace)
        for r in range(tr.shape[0]):
            ax.plot(np.arange(1, tr.shape[1] + 1), tr[r], lw=1, alpha=0.7, color="C3" if r == b else "C0")
        ax.set_title(f"{ct}: {restarts} restarts")
        ax.set_xlabel("EM iteration")
        ax.set_xscale("log")
    axes[0].set_ylabel("mean log-likelihood")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "traces.png"), dpi=80)
    plt.close(fig)
    lines += ["", "Log-likelihood of every restart at every iteration (best restart in red); each curve is "
              "non-decreasing, as Theorem 3 says:", "", "![traces](traces.png)", ""]
    return lines


def section_select_k(X, restarts, out, plt, quick=False):
    """BIC and AIC against K on iris, every covariance type (``quick``: full only), each curve one compiled program
    (``fit_path``)."""
    Xd, _ = X
    ks = range(1, 9)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    lines = ["## 2. Choosing K: BIC and AIC on iris", "", "| covariance | K by BIC | K by AIC | seconds (compile included) |",
             "|---|---|---|---|"]
    for ct in ("full",) if quick else gmm_jax.COVARIANCE_TYPES:
        t = time.perf_counter()
        path = gmm_jax.fit_path(jax.random.key(0), Xd, ks, covariance_type=ct, n_restarts=restarts, reg_covar=1e-3)
        seconds = time.perf_counter() - t
        axes[0].plot(path.n_components, path.bic, "o-", label=ct)
        axes[1].plot(path.n_components, path.aic, "o-", label=ct)
        lines.append(f"| {ct} | {path.best} | {int(path.n_components[np.argmin(path.aic)])} | {seconds:.1f} |")
    for ax, name in zip(axes, ("BIC", "AIC")):
        ax.set_xlabel("K")
        ax.set_ylabel(f"{name} (lower is better)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "bic.png"), dpi=80)
    plt.close(fig)
    lines += ["", f"`gmm_jax.fit_path` fits K = 1..8 ({restarts} restarts each) in one compiled program per covariance "
              "type (`gmm-jax fit data.csv --select-k 1:8` does the same from the command line), with "
              "`reg_covar=1e-3` (cm²): at the default 1e-6 some restart puts a component on iris' repeated "
              "measurements (the data are rounded to 0.1 cm), and that likelihood spike wins BIC at K = 8. Diagonal "
              "and spherical components need more of them to follow the correlated features:", "",
              "![BIC](bic.png)", ""]
    return lines


def section_classification(datasets, restarts, out, plt):
    from sklearn.metrics import adjusted_rand_score

    lines = ["## 4. Unsupervised classification: K-means vs GMM (ARI)", "",
             "| data | K-means | GMM full | GMM tied | GMM diag | GMM spherical |", "|---|---|---|---|---|---|"]
    for name, (X, y) in datasets.items():
        k = int(y.max()) + 1
        Xj = jnp.asarray(X, jnp.float32)
        km = gmm_jax.kmeans(jax.random.key(0), Xj, k, n_restarts=restarts)
        row = [adjusted_rand_score(y, np.asarray(km.labels))]
        for ct in gmm_jax.COVARIANCE_TYPES:
            g = gmm_jax.fit(jax.random.key(0), Xj, k, covariance_type=ct, n_restarts=restarts)
            row.append(adjusted_rand_score(y, np.asarray(gmm_jax.predict(Xj, g.params, ct))))
        lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
        if name == "anisotropic blobs":
            full = gmm_jax.fit(jax.random.key(0), Xj, k, covariance_type="full", n_restarts=restarts)
            _ellipses(X, y, km, full, out, plt)
    lines += ["", "Anisotropic blobs: K-means cells against the full GMM's 2-sigma ellipses:", "",
              "![ellipses](ellipses.png)", "", "The full comparison over 10 data sets and 5 seeds is "
              "`benchmarks/compare_clustering.py` (docs/classification.md).", ""]
    return lines


def heavy_tailed(seed=1, n_per=200):
    """Three round clusters with Student-t (2 degrees of freedom) tails (docs/classification.md's data)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), n_per)
    return np.array([[0.0, 0.0], [4.0, 0.0], [2.0, 3.5]])[y] + rng.standard_t(2.0, size=(y.size, 2)) * 0.6, y


def section_heavy_tails(restarts, out, plt):
    """K-means, the Gaussian mixture and the Student-t mixture on heavy-tailed clusters, with a figure."""
    from sklearn.metrics import adjusted_rand_score

    X, y = heavy_tailed()
    Xj = jnp.asarray(X, jnp.float32)
    key = jax.random.key(0)
    km = gmm_jax.kmeans(key, Xj, 3, n_restarts=restarts)
    fits = {"K-means": np.asarray(km.labels)}
    dof = None
    for name, family in (("Gaussian mixture (full)", "gaussian"), ("Student-t mixture (full)", "student-t")):
        res = gmm_jax.fit(key, Xj, 3, n_restarts=restarts, family=family, max_iter=300)
        fits[name] = np.asarray(gmm_jax.predict(Xj, res.params))
        dof = getattr(res.params, "dof", dof)
    lo, hi = np.quantile(X, 0.02, axis=0) - 1, np.quantile(X, 0.98, axis=0) + 1
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.5))
    lines = ["## 3. Heavy tails: the Student-t mixture", "", "| method | ARI |", "|---|---|"]
    for ax, (name, pred) in zip(axes, fits.items()):
        ari = adjusted_rand_score(y, pred)
        lines.append(f"| {name} | {ari:.3f} |")
        ax.scatter(X[:, 0], X[:, 1], c=pred, s=5, cmap="tab10")
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        ax.set_aspect("equal")
        ax.set_title(f"{name}: ARI {ari:.2f}")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "heavy_tails.png"), dpi=80)
    plt.close(fig)
    lines += ["", "Three round clusters with Student-t tails (2 degrees of freedom; the view cuts the farthest 2%). "
              "The Gaussian mixture gives the far points of every cluster to one wide component; the Student-t "
              "mixture (`gmm_jax.fit(..., family=\"student-t\")`) down-weights them by its latent scales and "
              f"learns the tails: degrees of freedom {', '.join(f'{v:.1f}' for v in np.asarray(dof))}.", "",
              "![heavy tails](heavy_tails.png)", ""]
    return lines


def _ellipses(X, y, km, g, out, plt):
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    Xj = jnp.asarray(X, jnp.float32)
    lo, hi = X.min(0) - 1, X.max(0) + 1
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 250), np.linspace(lo[1], hi[1], 250))
    cells = np.asarray(gmm_jax.kmeans_predict(jnp.asarray(np.stack([gx.ravel(), gy.ravel()], 1), jnp.float32),
                                              km.centers)).reshape(gx.shape)
    axes[0].contourf(gx, gy, cells, alpha=0.4, cmap="Pastel1")
    axes[0].scatter(X[:, 0], X[:, 1], c=np.asarray(km.labels), s=5, cmap="tab10")
    axes[0].set_title("K-means cells")
    axes[1].scatter(X[:, 0], X[:, 1], c=np.asarray(gmm_jax.predict(Xj, g.params)), s=5, cmap="tab10")
    covs = np.asarray(gmm_jax.covariances_from_prec_chol(g.params.prec_chol, "full"))
    t = np.linspace(0, 2 * np.pi, 100)
    for m, c in zip(np.asarray(g.params.means), covs):
        vals, vecs = np.linalg.eigh(c)
        e = m + 2 * (vecs @ (np.sqrt(vals)[:, None] * np.stack([np.cos(t), np.sin(t)]))).T
        axes[1].plot(e[:, 0], e[:, 1], "k-")
    axes[1].set_title("GMM (full) ellipses")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "ellipses.png"), dpi=80)
    plt.close(fig)


def digit_grid(ax, s, row_labels, title, pad: int = 2):
    """(rows, columns, 64) 8x8 digits as a grid of square cells with white gaps, one labelled row each."""
    r, c = s.shape[:2]
    img = np.zeros((r * (8 + pad) - pad, c * (8 + pad) - pad))
    for i in range(r):
        for j in range(c):
            img[i * (8 + pad):i * (8 + pad) + 8, j * (8 + pad):j * (8 + pad) + 8] = s[i, j].reshape(8, 8)
    ax.imshow(img, cmap="gray_r", interpolation="nearest", vmin=0, vmax=1, aspect="equal")
    ax.set_yticks([i * (8 + pad) + 3.5 for i in range(r)], row_labels)
    ax.set_xticks([])
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_ylabel("class" if title.startswith("GMM in") else "matched class")
    ax.set_title(title)


def section_generation(digits, out, plt, quick=False):
    from sklearn.decomposition import PCA

    X, y = digits
    pca = PCA(20, random_state=0).fit(X)
    Z = pca.transform(X)
    lines = ["## 5. Conditional generation on digits: supervised GMMs and the GMM-VAE", ""]
    grids = {}
    for space, data in (("pixels", X), ("PCA-20", Z)):
        p = gmm_jax.fit_supervised(jnp.asarray(data, jnp.float32), jnp.asarray(y), 10, "full", reg_covar=1e-2)
        s = np.asarray(gmm_jax.sample_component(jax.random.key(0), p, jnp.arange(10), 8, "full"))
        if space == "PCA-20":
            s = pca.inverse_transform(s.reshape(-1, 20)).reshape(10, 8, -1)
        grids[f"GMM in {space}"] = np.clip(s, 0, 1)
    # GMM-VAE with the labels: component c is class c (q(c | x) one-hot at the label during training)
    from flax import nnx

    from gmm_jax.vae import GMMVAE, train

    vae = GMMVAE(64, 20, 10, hidden=(64,) if quick else (256, 128), rngs=nnx.Rngs(0))  # quick: a smoke run
    logs = train(vae, jax.random.key(1), X, y, pretrain_epochs=3 if quick else 20, epochs=3 if quick else 100,
                 batch_size=64, log_every=3 if quick else 25)
    grids["GMM-VAE (labelled)"] = np.asarray(vae.generate(jax.random.key(2), jnp.arange(10), 8))
    fig, axes = plt.subplots(1, 3, figsize=(15, 7.5))
    for ax, (space, s) in zip(axes, grids.items()):
        digit_grid(ax, s, [str(c) for c in range(10)], space)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "samples.png"), dpi=80)
    plt.close(fig)
    vae_figure(vae, X, y, out, plt)
    lines += ["Eight samples per class (one row per class), from a full-covariance Gaussian per class fit by "
              "`gmm_jax.fit_supervised` in pixel space and in a 20-dimensional PCA space, drawn with "
              "`gmm_jax.sample_component`, and from the GMM-VAE (`gmm_jax.GMMVAE`, latent 20, trained with the "
              f"labels: {logs[-1].step} ELBO epochs, prior initialised by `fit_supervised` on the codes; decoder "
              "means):", "", "![samples](samples.png)", "",
              "What only the latent model does: decoded means along the line between two class components "
              "(`gmm_jax.vae.interpolate`), and the digits whose posterior q(c | x) is most divided between "
              "classes, with their two most probable classes:", "", "![latent](vae_latent.png)", "",
              "The measured comparison (CAS, conditional accuracy, Frechet distance over 3 seeds) is "
              "docs/generation.md.", ""]
    return lines


INTERPOLATION_PAIRS = ((1, 7), (3, 8), (4, 9), (5, 6), (0, 6))


def vae_figure(vae, X, y, out, plt, n_ambiguous: int = 8):
    """vae_latent.png: interpolations between class components, and the most ambiguous digits with q(c | x)."""
    from gmm_jax.vae import interpolate

    q = np.asarray(vae.cluster_proba(jnp.asarray(X, jnp.float32)))
    top2 = np.sort(q, axis=1)[:, -2:]
    ambiguous = np.argsort(top2[:, 0] - top2[:, 1])[-n_ambiguous:][::-1]  # smallest gap between the two largest
    fig = plt.figure(figsize=(12, 5.5))
    ax = fig.add_axes([0.05, 0.3, 0.9, 0.65])
    paths = np.stack([np.asarray(interpolate(vae, a, b, 10)) for a, b in INTERPOLATION_PAIRS])
    digit_grid(ax, paths, [f"{a} to {b}" for a, b in INTERPOLATION_PAIRS], "decoded path between class components")
    ax.set_ylabel("")
    for i, j in enumerate(ambiguous):
        sub = fig.add_axes([0.05 + i * 0.9 / n_ambiguous, 0.02, 0.9 / n_ambiguous - 0.01, 0.2])
        sub.imshow(X[j].reshape(8, 8), cmap="gray_r", vmin=0, vmax=1)
        c1, c2 = np.argsort(q[j])[::-1][:2]
        sub.set_title(f"true {y[j]}: q {c1} {q[j, c1]:.2f}, {c2} {q[j, c2]:.2f}", fontsize=7)
        sub.axis("off")
    fig.savefig(os.path.join(out, "vae_latent.png"), dpi=80)
    plt.close(fig)


def section_verify():
    from gmm_jax import verify

    code, _, text = verify.run([])
    return ["## 6. Derivation checks (`gmm-jax verify`)", "", "```", text, "```", ""], code


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="gmm-jax demo")
    ap.add_argument("--out", default="gmm_jax_demo")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    from sklearn import datasets as skd

    from gmm_jax.io import atomic_write

    os.makedirs(args.out, exist_ok=True)
    plt = _plt()
    restarts = 4 if args.quick else 16
    prog = Progress(7)
    t0 = time.perf_counter()
    iris = skd.load_iris()
    Xi = (iris.data.astype(np.float32), iris.target)
    lines = ["# gmm_jax demo report", "", f"JAX {jax.__version__} on {jax.devices()}; "
             f"restarts per fit: {restarts}.", ""]
    prog.step("data loaded")
    lines += section_restarts(Xi, restarts, args.out, plt, quick=args.quick)
    prog.step("iris fits")
    lines += section_select_k(Xi, restarts, args.out, plt, quick=args.quick)
    prog.step("choosing K")
    lines += section_heavy_tails(restarts, args.out, plt)
    prog.step("heavy tails")
    dig = skd.load_digits()
    xb, yb = skd.make_blobs(n_samples=1500, random_state=170)
    data = {"iris": Xi, "wine (standardised)": _std(skd.load_wine()),
            "anisotropic blobs": (xb @ np.array([[0.6, -0.6], [-0.4, 0.8]]), yb)}
    if args.quick:  # a smoke run: the data set with the figure only
        data = {"anisotropic blobs": data["anisotropic blobs"]}
    lines += section_classification(data, restarts, args.out, plt)
    prog.step("classification")
    lines += section_generation((dig.data / 16.0, dig.target), args.out, plt, quick=args.quick)
    prog.step("generation")
    if args.quick:  # the checks run in the test suite on their own; `gmm-jax verify` runs them alone
        vlines, code = ["## 6. Derivation checks", "", "Skipped in --quick mode; run `gmm-jax verify`.", ""], 0
    else:
        vlines, code = section_verify()
    lines += vlines
    prog.step("derivation checks")
    lines.append(f"Total time {time.perf_counter() - t0:.0f} s.")
    report = os.path.join(args.out, "report.md")
    atomic_write(report, lambda f: f.write("\n".join(lines).encode()))
    print(f"wrote {report}")
    return code


def _std(d):
    X = d.data
    return ((X - X.mean(0)) / X.std(0)).astype(np.float32), d.target


if __name__ == "__main__":
    sys.exit(main())
