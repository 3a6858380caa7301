"""K-means on sparse rows against scikit-learn's sparse ``KMeans(algorithm="lloyd")``: TF-IDF-like data (documents
with a Zipf-distributed vocabulary, rows L2-normalised as TfidfVectorizer leaves them), float32 CSR, the same
initial centres, whole fits to scikit-learn's default tolerance with each library's own iteration count.

    python benchmarks/bench_sparse_kmeans.py [--quick]

Reported per configuration: each library's whole-fit time (best of alternating runs; gmm_jax's compilation
excluded and reported), its iterations, the time per iteration over iterations 4 to convergence ((t(fit) -
t(3 iterations)) / (iterations - 3)), the ratio, the labels that differ, and the size of gmm_jax's arrays (the
stored entries with their row and column indices, the (n, K) distances and the (chunk, K) products) against the
dense matrix it never builds.  In float32 some labels differ: a document that shares no word with any centre is
at exactly ``1 + ||c||^2`` from every centre, and these ties are broken by the rounding of the centres' norms,
which differs between the two implementations; in float64 the labels agree (0 differ on the --quick data).
Writes benchmarks/results/sparse_kmeans.json.
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
import scipy.sparse as sp  # noqa: E402
from _common import blas_description, machine_description, paired_best, print_table, write_json  # noqa: E402

import gmm_jax  # noqa: E402
from gmm_jax.sparse_kmeans import sparse_rows  # noqa: E402

GRID = [(20_000, 20_000, 60, 20), (50_000, 50_000, 100, 50)]  # documents, vocabulary, words per document, K


def tfidf_like(n, vocab, words, k, seed=0):
    """n documents from k topics, each a Zipf distribution over its own permutation of the vocabulary."""
    rng = np.random.default_rng(seed)
    ranks = 1.0 / np.arange(1, vocab + 1) ** 1.1
    ranks /= ranks.sum()
    topics = [rng.permutation(vocab) for _ in range(k)]
    doc_topic = rng.integers(0, k, n)
    rows, cols = [], []
    for i in range(n):
        w = topics[doc_topic[i]][rng.choice(vocab, words, p=ranks)]
        rows.append(np.full(w.shape, i))
        cols.append(w)
    X = sp.csr_matrix((np.ones(n * words, np.float32), (np.concatenate(rows), np.concatenate(cols))), (n, vocab))
    X.sum_duplicates()
    X.data = np.log1p(X.data).astype(np.float32)
    norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
    return sp.csr_matrix(sp.diags(1.0 / norms) @ X, dtype=np.float32)


def one(X, k, repeats, m1=3):
    from sklearn.cluster import KMeans

    init = X[np.random.default_rng(1).choice(X.shape[0], k, replace=False)].toarray()

    def ours(m=300):
        r = gmm_jax.kmeans(jax.random.key(0), X, k, init=init, max_iter=m, tol=1e-4)
        r.centers.block_until_ready()
        return r

    def sk(m=300):
        return KMeans(k, init=init, n_init=1, max_iter=m, tol=1e-4, algorithm="lloyd").fit(X)

    t = time.perf_counter()
    ours(m1)
    compile_s = time.perf_counter() - t
    ours()
    t_ours, t_sk = paired_best(ours, sk, repeats)
    t1_ours, t1_sk = paired_best(lambda: ours(m1), lambda: sk(m1), repeats)
    compile_s -= t1_ours
    r, m = ours(), sk()
    it, it_sk = int(r.n_iter), int(m.n_iter_)
    per = (t_ours - t1_ours) / max(it - m1, 1) * 1e3
    per_sk = (t_sk - t1_sk) / max(it_sk - m1, 1) * 1e3
    return {"n": X.shape[0], "vocab": X.shape[1], "nnz": X.nnz, "k": k, "fit_ms": t_ours * 1e3,
            "sklearn_fit_ms": t_sk * 1e3, "fit_speedup_vs_sklearn": t_sk / t_ours, "iters": f"{it}/{it_sk}",
            "ms_per_iter": per, "sklearn_ms_per_iter": per_sk, "per_iter_speedup_vs_sklearn": per_sk / per,
            "compile_s": compile_s, "labels_differing": int(np.sum(np.asarray(r.labels) != m.labels_)),
            "inertia": float(r.inertia), "sklearn_inertia": float(m.inertia_),
            "arrays_mib": (X.nnz * 12 + X.shape[0] * k * 4 + sparse_rows(X, k)[1].chunk * k * 4) / 2**20,
            "dense_mib": X.shape[0] * X.shape[1] * 4 / 2**20}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="the first configuration at a tenth of its documents")
    ap.add_argument("--repeats", type=int, default=3, help="best of this many alternating whole fits")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "sparse_kmeans.json"))
    args = ap.parse_args(argv)
    info = machine_description()
    print(f"machine: {info['cpu']} ({info['cores']} cores), JAX {info['jax']} on {info['jax_devices']}")
    print(f"NumPy BLAS (threadpoolctl): {blas_description()}")
    grid = [(GRID[0][0] // 10, *GRID[0][1:])] if args.quick else GRID
    rows = []
    for n, vocab, words, k in grid:
        rows.append(one(tfidf_like(n, vocab, words, k), k, args.repeats))
        print_table(rows[-1:], list(rows[-1]))
    write_json(args.out, rows)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
