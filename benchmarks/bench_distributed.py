"""A measured multi-process run: P processes x D simulated CPU devices each, on 127.0.0.1, against one process.

    python benchmarks/bench_distributed.py [--processes 2] [--devices 8] [--n 200000] [--d 8] [--k 16]

Each process holds only its own rows (uneven counts), lays them out with ``shard_process_rows`` over its D devices,
and fits with ``fit_sharded`` (k-means init, 30 EM iterations, tol=0); the parent then fits the concatenated rows in
one process and compares.  Reports the wall time of each fit (compile included and excluded) and the largest
difference of the parameters.  On a 2-core machine the simulated devices share the two cores: this measures
correctness and overhead, not a speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def worker(port, pid, nproc, data, out):
    import jax

    jax.config.update("jax_platforms", "cpu")
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=nproc, process_id=pid,
                               coordinator_bind_address=f"127.0.0.1:{port}", initialization_timeout=120)
    import numpy as np

    import gmm_jax

    z = np.load(data)
    X, bounds, k, iters = z["X"], z["bounds"], int(z["k"]), int(z["iters"])
    rows = gmm_jax.shard_process_rows(X[bounds[pid]:bounds[pid + 1]])
    times = []
    for _ in range(2):  # the first call compiles
        t = time.perf_counter()
        r = gmm_jax.fit_sharded(jax.random.key(0), rows, k, max_iter=iters, tol=0.0)
        r.params.means.block_until_ready()
        times.append(time.perf_counter() - t)
    np.savez(out, means=np.asarray(r.params.means), log_weights=np.asarray(r.params.log_weights),
             prec_chol=np.asarray(r.params.prec_chol), times=np.asarray(times),
             devices=len(jax.devices()), local_devices=len(jax.local_devices()))
    jax.distributed.shutdown()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--devices", type=int, default=8, help="simulated CPU devices per process")
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--d", type=int, default=8)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "distributed.json"))
    args = ap.parse_args(argv)
    if args.worker:
        port, pid, nproc, data, out = args.worker
        return worker(port, int(pid), int(nproc), data, out)

    import numpy as np

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(args.k, args.d)) * 4
    X = (centers[rng.integers(0, args.k, args.n)] + rng.normal(size=(args.n, args.d))).astype(np.float32)
    cuts = np.linspace(0, args.n, args.processes + 1).astype(int)
    cuts[1:-1] += 1234  # uneven row counts
    env = dict(os.environ, NPROC=str(args.devices + 1), PYTHONUNBUFFERED="1")
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={args.devices}"
                        " --xla_cpu_collective_call_terminate_timeout_seconds=300")
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data.npz")
        np.savez(data, X=X, bounds=cuts, k=args.k, iters=args.iters)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        procs, logs = [], []
        t = time.perf_counter()
        for i in range(args.processes):
            log = open(os.path.join(tmp, f"p{i}.log"), "w")
            logs.append(log.name)
            procs.append(subprocess.Popen([sys.executable, __file__, "--worker", str(port), str(i),
                                           str(args.processes), data, os.path.join(tmp, f"out{i}.npz")],
                                          stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True))
        try:
            for p in procs:
                p.wait(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            pass
        finally:
            for p in procs:
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
        wall = time.perf_counter() - t
        if any(p.returncode != 0 for p in procs):
            for name in logs:
                print(open(name).read()[-3000:])
            return 1
        outs = [np.load(os.path.join(tmp, f"out{i}.npz")) for i in range(args.processes)]
        import jax

        import gmm_jax

        times = []
        for _ in range(2):
            t = time.perf_counter()
            ref = gmm_jax.fit(jax.random.key(0), X, args.k, max_iter=args.iters, tol=0.0)
            ref.params.means.block_until_ready()
            times.append(time.perf_counter() - t)
        diff = max(float(np.max(np.abs(o[name] - np.asarray(a)) / (1 + np.abs(np.asarray(a)))))
                   for o in outs for name, a in zip(("log_weights", "means", "prec_chol"), ref.params))
        row = {"processes": args.processes, "devices_per_process": args.devices,
               "devices_total": int(outs[0]["devices"]), "n": args.n, "d": args.d, "k": args.k,
               "iters": args.iters, "rows_per_process": np.diff(cuts).tolist(),
               "sharded_first_call_s": float(outs[0]["times"][0]), "sharded_s": float(outs[0]["times"][1]),
               "one_process_first_call_s": times[0], "one_process_s": times[1],
               "max_rel_param_diff": diff, "wall_s_including_startup": wall}
    print(json.dumps(row, indent=1))
    sys.path.insert(0, HERE)
    from _common import write_json

    write_json(args.out, [row])
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
