"""Worker of the 2-process test (tests/test_sharded.py): one process of a jax.distributed job on 127.0.0.1.

    python tests/_dist_worker.py PORT PROCESS_ID NUM_PROCESSES DATA.npz OUT.npz

Holds only its own rows (process p takes its slice of the rows in DATA.npz), fits with fit_sharded and K-means
with kmeans_sharded, and writes the (replicated) results to OUT.npz.
"""

import sys

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_platforms", "cpu")


def main():
    port, pid, nproc, data, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=nproc, process_id=pid,
                               coordinator_bind_address=f"127.0.0.1:{port}", initialization_timeout=60,
                               heartbeat_timeout_seconds=30)
    import numpy as np

    from gmm_jax.sharded import fit_sharded, kmeans_sharded, shard_process_rows

    z = np.load(data)
    X, bounds = z["X"], z["bounds"]
    local = X[bounds[pid]:bounds[pid + 1]]
    rows = shard_process_rows(local)
    res = {}
    for cov in ("full",):
        r = fit_sharded(jax.random.key(1), rows, 3, covariance_type=cov, n_restarts=2)
        for name, a in zip(("log_weights", "means", "prec_chol"), r.all_params):
            res[f"{cov}_{name}"] = np.asarray(a)
        res[f"{cov}_n_iter"] = np.asarray(r.n_iter)
    km = kmeans_sharded(jax.random.key(2), rows, 3, n_restarts=2)
    res["kmeans_centers"] = np.asarray(km.all_centers)
    res["kmeans_n_iter"] = np.asarray(km.all_n_iter)
    np.savez(out, n=rows.n, **res)
    print(f"process {pid}: done, n={rows.n}", flush=True)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main()
