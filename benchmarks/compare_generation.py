"""Conditional generation on scikit-learn's digits: pure GMMs (pixel space, PCA space) against the GMM-VAE.

    python benchmarks/compare_generation.py [--seeds 3] [--quick]

Protocol (per seed): pixels / 16, stratified 50/50 split.  Every model has K = 10 components.  Pure mixtures:
supervised (one full Gaussian per class) and unsupervised (EM) in pixel and PCA-20 space.  GMM-VAEs (latent 20):
labelled (every training label; Bernoulli, continuous Bernoulli, Bernoulli with KL warm-up), 10% labels, and
unsupervised; trained on 85% of the training half, the epoch chosen by the held-out ELBO of the other 15%.
Components are matched one-to-one to classes (Hungarian) from the training half's assignments (labelled models:
the identity); 200 samples per component are drawn (clipped to [0, 1]) and labelled with the matched class.
  CAS          a logistic regression trained on the generated samples, accuracy on the real test half;
  cond. acc.   a logistic regression trained on the real training half, fraction of samples it labels as their
               component's class;
  FD           Frechet distance between generated samples and real test images in a fixed feature space (PCA-20
               of the real training half);
  clust. acc.  matched accuracy of the model's cluster assignment on the test half;
  seconds      training (and sampling) time of the model on this machine;
  held-out     test log-likelihood per image (GMMs: a continuous density in their own space) or ELBO (VAE:
               Bernoulli, a bound on a discrete likelihood): not comparable across rows, reported for each model.
Writes docs/generation_results.md, docs/figures/generation_grids.png, benchmarks/results/generation.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import gmm_jax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K = 10
PER = 200


def frechet(a, b):
    from scipy import linalg

    ma, mb = a.mean(0), b.mean(0)
    ca, cb = np.cov(a.T), np.cov(b.T)
    s = linalg.sqrtm(ca @ cb)
    return float(np.sum((ma - mb) ** 2) + np.trace(ca + cb - 2 * np.real(s)))


def evaluate(name, train_assign, test_assign, samples, Xtr, ytr, Xte, yte, feat, clf_real, heldout):
    """samples: (K, PER, 64) by component."""
    from sklearn.linear_model import LogisticRegression

    mapping = gmm_jax.component_to_class(ytr, train_assign, n_components=K)
    xs = np.clip(samples.reshape(-1, samples.shape[-1]), 0, 1)
    ys = np.repeat(mapping, samples.shape[1])
    keep = ys >= 0
    cas_clf = LogisticRegression(max_iter=3000).fit(xs[keep], ys[keep])
    pred = clf_real.predict(xs).reshape(samples.shape[0], -1)
    counts = np.stack([np.bincount(p, minlength=10) for p in pred])  # (K, 10): real-data classifier's calls
    return {
        # per component: matched class, the class the real-data classifier gives most of its samples, that share
        "components": [[int(mapping[j]), int(np.argmax(counts[j])), float(counts[j].max() / pred.shape[1])]
                       for j in range(samples.shape[0])],
        "model": name,
        "cas": float(cas_clf.score(Xte, yte)),
        "cond_acc": float(np.mean(clf_real.predict(xs[keep]) == ys[keep])),
        "fd": frechet(feat.transform(xs), feat.transform(Xte)),
        "cluster_acc": gmm_jax.matched_accuracy(yte, test_assign, n_components=K),
        "heldout": heldout,
    }, mapping


# GMM-VAE rows: (name, fraction of training labels given (None: unsupervised), likelihood, KL warm-up epochs)
VAE_ROWS = [
    ("GMM-VAE labelled (Bernoulli)", 1.0, "bernoulli", 0),
    ("GMM-VAE labelled (cont. Bernoulli)", 1.0, "continuous_bernoulli", 0),
    ("GMM-VAE labelled (Bernoulli, KL warm-up)", 1.0, "bernoulli", 20),
    ("GMM-VAE 10% labels (Bernoulli)", 0.1, "bernoulli", 0),
    ("GMM-VAE unsupervised (Bernoulli)", None, "bernoulli", 0),
]


def gmm_rows(key, Xtr, ytr, Xte, yte, feat, clf_real):
    """The pure mixtures: supervised (one full Gaussian per class, fit_supervised) and unsupervised (EM, 4
    restarts), in pixel space and in a PCA-20 space decoded by the inverse PCA."""
    from sklearn.decomposition import PCA

    pca = PCA(20, random_state=0).fit(Xtr)
    Ztr, Zte = pca.transform(Xtr).astype(np.float32), pca.transform(Xte).astype(np.float32)
    spaces = {"pixels": (Xtr, Xte, None, 1e-2), "PCA-20": (Ztr, Zte, pca, 1e-6)}
    out = []
    for space, (Atr, Ate, decoder, reg) in spaces.items():
        for supervised in (True, False):
            t0 = time.perf_counter()
            if supervised:
                p = gmm_jax.fit_supervised(Atr, ytr, K, "full", reg_covar=reg)
            else:
                p = gmm_jax.fit(key, Atr, K, covariance_type="full", n_restarts=4, reg_covar=reg).params
            s = np.asarray(gmm_jax.sample_component(key, p, jnp.arange(K), PER, "full"))
            seconds = time.perf_counter() - t0
            if decoder is not None:
                s = decoder.inverse_transform(s.reshape(-1, 20)).reshape(K, PER, -1)
            name = f"GMM {space} ({'supervised' if supervised else 'EM'}, full, reg {reg:g})"
            r, mp = evaluate(name, np.asarray(gmm_jax.predict(Atr, p)), np.asarray(gmm_jax.predict(Ate, p)), s,
                             Xtr, ytr, Xte, yte, feat, clf_real,
                             f"{float(gmm_jax.score(Ate, p)):.1f} (log-density, {space})")
            out.append((dict(r, seconds=seconds), s, mp))
            if supervised and decoder is None:  # diagnostic: every sample at its class mean (no spread at all)
                means = np.repeat(np.asarray(p.means)[:, None], PER, axis=1)
                r, mp = evaluate("GMM pixels (supervised, class means only)", np.asarray(gmm_jax.predict(Atr, p)),
                                 np.asarray(gmm_jax.predict(Ate, p)), means, Xtr, ytr, Xte, yte, feat, clf_real,
                                 "(the supervised model's)")
                out.append((dict(r, seconds=seconds), means, mp))
    return out


def vae_rows(key, seed, Xtr, ytr, Xte, yte, feat, clf_real, vae_epochs, quick):
    """The GMM-VAE rows of VAE_ROWS: trained on 85% of the training half, the epoch chosen by the held-out ELBO of
    the other 15% (early stopping, patience 4 evaluations)."""
    from flax import nnx

    from gmm_jax.vae import GMMVAE, train

    rng = np.random.default_rng(seed)
    val = rng.permutation(Xtr.shape[0])[: int(0.15 * Xtr.shape[0])]
    fit_rows = np.setdiff1d(np.arange(Xtr.shape[0]), val)
    out = []
    for name, fraction, likelihood, warmup in VAE_ROWS:
        labels = None
        if fraction is not None:
            labels = np.where(rng.uniform(size=fit_rows.size) < fraction, ytr[fit_rows], -1)
        t0 = time.perf_counter()
        m = GMMVAE(64, 20, K, hidden=(256, 128), likelihood=likelihood, rngs=nnx.Rngs(seed))
        logs = train(m, jax.random.fold_in(key, 1), Xtr[fit_rows], labels, pretrain_epochs=5 if quick else 20,
                     epochs=vae_epochs, batch_size=64, lr=1e-3, log_every=5, X_val=Xtr[val], patience=4,
                     kl_warmup=warmup)
        s = np.asarray(m.generate(jax.random.fold_in(key, 2), jnp.arange(K), PER))
        seconds = time.perf_counter() - t0
        qtr = np.asarray(jnp.argmax(m.cluster_proba(jnp.asarray(Xtr)), 1))
        qte = np.asarray(jnp.argmax(m.cluster_proba(jnp.asarray(Xte)), 1))
        elbo = float(jnp.mean(jax.vmap(lambda k, m=m: m.elbo(k, jnp.asarray(Xte)))(jax.random.split(key, 8))))
        r, mp = evaluate(name, qtr, qte, s, Xtr, ytr, Xte, yte, feat, clf_real, f"{elbo:.1f} (ELBO, {likelihood})")
        r["train_log"] = [lg._asdict() for lg in logs]
        r["epochs_kept"] = max((lg.step for lg in logs if lg.phase == "elbo" and lg.heldout_elbo ==
                                max(g.heldout_elbo for g in logs if g.phase == "elbo")), default=0)
        out.append((dict(r, seconds=seconds), s, mp))
    return out


def run_seed(seed, vae_epochs, quick):
    from sklearn.datasets import load_digits
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    d = load_digits()
    X = (d.data / 16.0).astype(np.float32)
    Xtr, Xte, ytr, yte = train_test_split(X, d.target, test_size=0.5, stratify=d.target, random_state=seed)
    feat = PCA(20, random_state=0).fit(Xtr)
    clf_real = LogisticRegression(max_iter=3000).fit(Xtr, ytr)
    key = jax.random.key(seed)
    out = gmm_rows(key, Xtr, ytr, Xte, yte, feat, clf_real)
    out += vae_rows(key, seed, Xtr, ytr, Xte, yte, feat, clf_real, vae_epochs, quick)
    return [r for r, _, _ in out], {r["model"]: (s, mp) for r, s, mp in out}


def grid_figure(grids, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(5, len(grids))
    rows = -(-len(grids) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 4.6 * rows), squeeze=False)
    for ax in axes.flat[len(grids):]:
        ax.axis("off")
    for ax, (name, (s, mp)) in zip(axes.flat, grids.items()):
        order = np.argsort(np.where(mp >= 0, mp, 99))
        img = np.clip(s[order, :10], 0, 1).reshape(K, 10, 8, 8).transpose(0, 2, 1, 3).reshape(K * 8, 80)
        ax.imshow(img, cmap="gray_r", interpolation="nearest")
        ax.set_title(name + "\nrows: classes " + ",".join(str(c) for c in mp[order]), fontsize=7)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--vae-epochs", type=int, default=150)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    all_rows = []
    first_grids = None
    for seed in range(args.seeds):
        rows, grids = run_seed(seed, 20 if args.quick else args.vae_epochs, args.quick)
        all_rows += [dict(r, seed=seed) for r in rows]
        first_grids = first_grids or grids
        for r in rows:
            print(f"seed {seed} {r['model']:42s} CAS {r['cas']:.3f} cond {r['cond_acc']:.3f} FD {r['fd']:.2f} "
                  f"clust {r['cluster_acc']:.3f} {r['seconds']:.1f}s held-out {r['heldout']}", flush=True)
    grid_figure(first_grids, os.path.join(ROOT, "docs", "figures", "generation_grids.png"))
    lines = ["# Conditional generation on digits: results", "",
             f"`python benchmarks/compare_generation.py` — mean ± std over {args.seeds} seeds (stratified 50/50 "
             f"splits), K = 10, {PER} samples per component; {time.perf_counter() - t0:.0f} s on this machine.", "",
             "| model | CAS ↑ | conditional accuracy ↑ | Fréchet distance (PCA-20) ↓ | clustering accuracy (test) ↑ "
             "| training s |",
             "|---|---|---|---|---|---|"]
    for name in dict.fromkeys(r["model"] for r in all_rows):
        rs = [r for r in all_rows if r["model"] == name]

        def ms(key, rs=rs):
            v = np.array([r[key] for r in rs])
            return f"{v.mean():.3f} ± {v.std():.3f}"

        secs = np.mean([r["seconds"] for r in rs])
        lines.append(f"| {name} | {ms('cas')} | {ms('cond_acc')} | {ms('fd')} | {ms('cluster_acc')} | {secs:.1f} |")
    lines += ["", "Held-out fit per model and seed (units differ, not comparable across models):", ""]
    for r in all_rows:
        lines.append(f"- seed {r['seed']}, {r['model']}: {r['heldout']}")
    lines += ["", "What the real-data classifier calls each component's samples, seed 0 (matched class -> majority "
              "class, its share; a component matched to no class shows -1):", ""]
    for r in all_rows:
        if r["seed"] == 0:
            lines.append(f"- {r['model']}: " + ", ".join(f"{c} -> {m} ({share:.2f})" for c, m, share in
                                                         sorted(r["components"])))
    lines += ["", "![samples](figures/generation_grids.png)", ""]
    with open(os.path.join(ROOT, "docs", "generation_results.md"), "w") as f:
        f.write("\n".join(lines))
    os.makedirs(os.path.join(ROOT, "benchmarks", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "benchmarks", "results", "generation.json"), "w") as f:
        json.dump(all_rows, f, indent=1)
    print(f"wrote docs/generation_results.md ({time.perf_counter() - t0:.0f}s)")


if __name__ == "__main__":
    sys.exit(main())
