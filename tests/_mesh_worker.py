"""Worker of the 4-device test (tests/test_sharded.py): runs in a fresh process with 4 simulated CPU devices.

    python tests/_mesh_worker.py OUT.json

Compares fit_sharded / kmeans_sharded on a 4-device mesh with fit / kmeans on one device and writes the largest
relative differences and the iteration counts to OUT.json.
"""

import json
import os
import sys

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_platforms", "cpu")

import numpy as np  # noqa: E402

import gmm_jax  # noqa: E402
from gmm_jax.sharded import fit_sharded, kmeans_sharded, row_mesh, shard_rows  # noqa: E402


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / (1.0 + np.abs(a))))


def params_rel(a, b):
    return max(rel(x, y) for x, y in zip(a, b))


def sklearn_rel(X, p0, cov, n_iter, params):
    """Largest relative difference of (weights, means, covariances) between ``params`` and scikit-learn's
    GaussianMixture run for ``n_iter`` EM iterations from ``p0``."""
    import warnings

    from sklearn.mixture import GaussianMixture

    gm = GaussianMixture(p0.means.shape[0], covariance_type=cov, max_iter=n_iter, tol=0.0, reg_covar=1e-6,
                         weights_init=np.exp(np.asarray(p0.log_weights)), means_init=np.asarray(p0.means),
                         precisions_init=np.asarray(gmm_jax.precisions_from_prec_chol(p0.prec_chol, cov)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm.fit(X)
    ours = (np.exp(params.log_weights), params.means, gmm_jax.covariances_from_prec_chol(params.prec_chol, cov))
    return max(rel(b, a) for a, b in zip(ours, (gm.weights_, gm.means_, gm.covariances_)))


def main():
    out = {"devices": len(jax.devices())}
    rng = np.random.default_rng(0)
    n, d, k = 1003, 3, 4  # 1003 rows on 4 devices: one padding row
    X = np.concatenate([rng.normal(size=(500, d)) + 5, rng.normal(size=(503, d)) * 2]) + 100.0
    rng.shuffle(X)
    mesh = row_mesh()
    rows = shard_rows(X, mesh=mesh)
    out["padded_rows"] = int(rows.X.shape[0])
    out["padding_mask_sum"] = float(np.asarray(rows.mask).sum())
    for cov in gmm_jax.COVARIANCE_TYPES:
        # 'full' from the k-means initialisation (global k-means++ draws + sharded Lloyd), two restarts; the other
        # types from explicit initial parameters (less to compile: the suite's time budget)
        opts = {"n_restarts": 2} if cov == "full" else {
            "init_params": gmm_jax.initialize(jax.random.key(5), X, k, covariance_type=cov, init="k-means++")}
        a = gmm_jax.fit(jax.random.key(1), X, k, covariance_type=cov, block_size=64, **opts)
        b = fit_sharded(jax.random.key(1), rows, k, covariance_type=cov, block_size=64, **opts)
        out[f"fit_{cov}"] = {"rel": params_rel(a.all_params, b.all_params), "n_iter": [a.n_iter.tolist(),
                             b.n_iter.tolist()], "ll": rel(a.log_likelihood, b.log_likelihood),
                             "trace": rel(np.nan_to_num(a.trace), np.nan_to_num(b.trace)), "best": [int(a.best),
                                                                                                    int(b.best)]}
        if cov != "full":  # an independent oracle for the sharded side: scikit-learn from the same start
            out[f"fit_{cov}"]["sklearn"] = sklearn_rel(X, opts["init_params"], cov, int(b.n_iter[0]), b.params)
    # k-means++ init and sample weights
    w = rng.uniform(0.2, 2.0, n)
    a = gmm_jax.fit(jax.random.key(3), X, k, init="k-means++", sample_weight=w, block_size=64)
    b = fit_sharded(jax.random.key(3), X, k, init="k-means++", sample_weight=w, block_size=64, mesh=mesh)
    out["fit_weighted"] = {"rel": params_rel(a.all_params, b.all_params), "n_iter": [a.n_iter.tolist(),
                                                                                     b.n_iter.tolist()]}
    # float32: the same fit to 1e-5 relative
    X32 = X.astype(np.float32)
    p32 = gmm_jax.GMMParams(*(np.asarray(v, np.float32) for v in
                              gmm_jax.initialize(jax.random.key(6), X, k, init="k-means++")))
    a = gmm_jax.fit(jax.random.key(1), X32, k, block_size=64, init_params=p32)
    b = fit_sharded(jax.random.key(1), X32, k, block_size=64, mesh=mesh, init_params=p32)
    out["fit_float32"] = {"rel": params_rel(a.all_params, b.all_params), "dtype": str(b.params.means.dtype),
                          "n_iter": [a.n_iter.tolist(), b.n_iter.tolist()]}
    # the product form of a single fit (raw moments; its extent the maximum over the devices, the device sum after
    # the conditional): forced at this size by lowering the row threshold, tied covariances, padding row included
    cfg = gmm_jax.Config(product_min_rows=0)
    p0 = gmm_jax.initialize(jax.random.key(7), X, k, covariance_type="tied", init="k-means++")
    a = gmm_jax.fit(jax.random.key(1), X, k, covariance_type="tied", block_size=64, init_params=p0, max_iter=41,
                    config=cfg)
    b = fit_sharded(jax.random.key(1), rows, k, covariance_type="tied", block_size=64, init_params=p0, max_iter=41,
                    config=cfg)
    out["fit_tied_product"] = {"rel": params_rel(a.all_params, b.all_params), "ll": rel(a.log_likelihood,
                               b.log_likelihood), "n_iter": [a.n_iter.tolist(), b.n_iter.tolist()]}
    # variational Bayes (Dirichlet process): the prior's defaults from the sharded rows, the k-means initialisation
    vb = gmm_jax.VBPrior()
    a = gmm_jax.fit(jax.random.key(4), X, k, variational=vb, block_size=64, max_iter=250)
    b = fit_sharded(jax.random.key(4), rows, k, variational=vb, block_size=64, max_iter=250)
    out["fit_variational"] = {"rel": params_rel(jax.tree.leaves(a.params), jax.tree.leaves(b.params)),
                              "lb": rel(a.lower_bound, b.lower_bound), "n_iter": [a.n_iter.tolist(), b.n_iter.tolist()],
                              "converged": bool(b.converged[0])}
    # K-means: k-means++ restarts, and explicit centres that empty a cluster (relocation across devices)
    a = gmm_jax.kmeans(jax.random.key(2), X, 5, n_restarts=3, block_size=64)
    b = kmeans_sharded(jax.random.key(2), rows, 5, n_restarts=3, block_size=64)
    out["kmeans"] = {"rel": rel(a.all_centers, b.all_centers), "n_iter": [a.all_n_iter.tolist(),
                     b.all_n_iter.tolist()], "labels_equal": bool(np.array_equal(a.labels, np.asarray(b.labels)[:n])),
                     "inertia": rel(a.inertia, b.inertia)}
    init = np.stack([X[0], X[1], X[2], X[:, :].mean(0) + 1e3])  # the far centre gets no point: relocated
    a = gmm_jax.kmeans(jax.random.key(0), X, 4, init=init, block_size=64)
    b = kmeans_sharded(jax.random.key(0), rows, 4, init=init, block_size=64)
    out["kmeans_empty"] = {"rel": rel(a.centers, b.centers), "n_iter": [int(a.n_iter), int(b.n_iter)],
                           "labels_equal": bool(np.array_equal(a.labels, np.asarray(b.labels)[:n])),
                           "relocated": bool(np.max(np.abs(np.asarray(b.centers) - X.mean(0))) < 100)}
    with open(sys.argv[1], "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
