"""Sharded EM and K-means: 4 simulated devices and 2 processes (jax.distributed on 127.0.0.1) against one device.

Both run in child processes (the device count is fixed when JAX starts), each with a hard deadline; a child that
overruns is killed by its PID and the test fails with the child's log.
"""

import json
import os
import signal
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

import gmm_jax
from gmm_jax.sharded import fit_sharded, kmeans_sharded, row_mesh, shard_rows

HERE = os.path.dirname(os.path.abspath(__file__))
DEADLINE_S = 240


def _env(devices):
    env = dict(os.environ)
    # collectives among simulated CPU devices can stall when fewer threads than devices are available
    env["NPROC"] = str(devices + 1)
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "") + " --xla_cpu_collective_call_terminate_timeout_seconds=120"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _run_children(cmds, logs, env):
    procs = []
    try:
        for cmd, log in zip(cmds, logs):
            with open(log, "w") as f:
                procs.append(subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env,
                                              start_new_session=True))
        for p in procs:
            p.wait(timeout=DEADLINE_S)
    except subprocess.TimeoutExpired:
        pass
    finally:
        for p in procs:  # kill only our own children (and their process groups), by PID
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    text = "\n".join(f"--- {log}:\n" + open(log).read()[-3000:] for log in logs)
    return [p.returncode for p in procs], text


@pytest.fixture(scope="module")
def mesh_results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mesh")
    out = tmp / "out.json"
    rcs, logs = _run_children([[sys.executable, os.path.join(HERE, "_mesh_worker.py"), str(out)]],
                              [str(tmp / "worker.log")], _env(4))
    assert rcs == [0], f"4-device worker failed or overran {DEADLINE_S} s:\n{logs}"
    return json.loads(out.read_text())


def test_four_devices_pad_rows(mesh_results):
    assert mesh_results["devices"] == 4
    assert mesh_results["padded_rows"] == 1004  # 1003 rows -> 4 x 251, one zero-weight padding row
    assert mesh_results["padding_mask_sum"] == 1003


@pytest.mark.parametrize("cov", gmm_jax.COVARIANCE_TYPES)
def test_four_devices_fit_equals_one_device(mesh_results, cov):
    r = mesh_results[f"fit_{cov}"]
    assert len(r["n_iter"][0]) == (2 if cov == "full" else 1)
    assert r["rel"] <= 1e-10 and r["ll"] <= 1e-10 and r["trace"] <= 1e-10, r
    assert r["n_iter"][0] == r["n_iter"][1] and r["best"][0] == r["best"][1]
    if cov != "full":  # the sharded fit also equals scikit-learn from the same start (an independent oracle)
        assert r["sklearn"] <= 1e-8, r


def test_four_devices_product_form_equals_one_device(mesh_results):
    """The raw-moment (product) form of a single fit, sharded (extent: maximum over devices; sums after the
    conditional) equals the one-device fit."""
    r = mesh_results["fit_tied_product"]
    assert r["rel"] <= 1e-10 and r["ll"] <= 1e-10, r
    assert r["n_iter"][0] == r["n_iter"][1]


def test_four_devices_weights_and_float32(mesh_results):
    assert mesh_results["fit_weighted"]["rel"] <= 1e-10
    assert mesh_results["fit_weighted"]["n_iter"][0] == mesh_results["fit_weighted"]["n_iter"][1]
    r = mesh_results["fit_float32"]
    assert r["dtype"] == "float32" and r["rel"] <= 1e-5, r


def test_four_devices_variational_fit_equals_one_device(mesh_results):
    """Variational Bayes sharded (the prior's defaults from the sharded rows, K-means start, the bound's entropy
    from the device-summed statistics) runs the one-device fit's iterations."""
    r = mesh_results["fit_variational"]
    assert r["converged"] and r["n_iter"][0] == r["n_iter"][1], r
    assert r["rel"] <= 1e-10 and r["lb"] <= 1e-10, r


def test_four_devices_kmeans_equals_one_device(mesh_results):
    r = mesh_results["kmeans"]
    assert r["rel"] <= 1e-10 and r["inertia"] <= 1e-10 and r["labels_equal"], r
    assert r["n_iter"][0] == r["n_iter"][1]
    r = mesh_results["kmeans_empty"]  # a cluster emptied and relocated: the farthest point is chosen globally
    assert r["relocated"] and r["labels_equal"] and r["rel"] <= 1e-10 and r["n_iter"][0] == r["n_iter"][1], r


def test_two_processes_equal_one_process(tmp_path):
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(size=(500, 2)) + 4, rng.normal(size=(503, 2)), rng.normal(size=(300, 2)) - 4])
    rng.shuffle(X)
    np.savez(tmp_path / "data.npz", X=X, bounds=np.array([0, 700, len(X)]))  # uneven: 700 and 603 rows
    with socket.socket() as s:  # a free port from the OS, on loopback only
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmds = [[sys.executable, os.path.join(HERE, "_dist_worker.py"), str(port), str(i), "2",
             str(tmp_path / "data.npz"), str(tmp_path / f"out{i}.npz")] for i in range(2)]
    rcs, logs = _run_children(cmds, [str(tmp_path / f"process{i}.log") for i in range(2)], _env(1))
    assert rcs == [0, 0], f"2-process run failed or overran {DEADLINE_S} s:\n{logs}"
    outs = [np.load(tmp_path / f"out{i}.npz") for i in range(2)]
    for cov in ("full",):
        ref = gmm_jax.fit(jax.random.key(1), X, 3, covariance_type=cov, n_restarts=2)
        for o in outs:
            assert int(o["n"]) == len(X)
            np.testing.assert_array_equal(o[f"{cov}_n_iter"], np.asarray(ref.n_iter))
            for name, a in zip(("log_weights", "means", "prec_chol"), ref.all_params):
                np.testing.assert_allclose(o[f"{cov}_{name}"], np.asarray(a), rtol=1e-10, atol=1e-12)
    km = gmm_jax.kmeans(jax.random.key(2), X, 3, n_restarts=2)
    for o in outs:
        np.testing.assert_allclose(o["kmeans_centers"], np.asarray(km.all_centers), rtol=1e-10, atol=1e-12)
        np.testing.assert_array_equal(o["kmeans_n_iter"], np.asarray(km.all_n_iter))


def test_sharded_single_device_and_errors():
    """In this process (one device): the sharded path equals fit, and bad options give clear errors."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(101, 2))
    mesh = row_mesh()
    a = gmm_jax.fit(jax.random.key(0), X, 2, covariance_type="diag")
    b = fit_sharded(jax.random.key(0), X, 2, covariance_type="diag", mesh=mesh)
    for x, y in zip(a.all_params, b.all_params):
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-12, atol=1e-12)
    # a batch of keys (typed, or raw uint32) is one key per restart, as in fit
    keys = gmm_jax.restart_keys(jax.random.key(3), 2)
    c = fit_sharded(keys, X, 2, covariance_type="diag", mesh=mesh)
    d = fit_sharded(jax.random.key_data(keys), X, 2, covariance_type="diag", mesh=mesh)
    ref = gmm_jax.fit(keys, X, 2, covariance_type="diag")
    assert c.n_iter.shape == (2,)
    for x, y, z in zip(ref.all_params, c.all_params, d.all_params):
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(np.asarray(y), np.asarray(z))
    with pytest.raises(ValueError, match="not supported by fit_sharded"):
        fit_sharded(jax.random.key(0), X, 2, init="random", mesh=mesh)
    with pytest.raises(ValueError, match="not an axis of the mesh"):
        shard_rows(X, mesh=mesh, axis_name="rows")
    with pytest.raises(ValueError, match="NaN"):
        fit_sharded(jax.random.key(0), np.where(X > 2, np.nan, X), 2, mesh=mesh)
    with pytest.raises(ValueError, match="n_components"):
        fit_sharded(jax.random.key(0), X[:1], 2, mesh=mesh)
    with pytest.raises(ValueError, match="not supported by kmeans_sharded"):
        kmeans_sharded(jax.random.key(0), X, 2, init="random", mesh=mesh)
