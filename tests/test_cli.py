"""The gmm-jax command line, run as a user would (subprocess): success paths and bad inputs."""

import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import make_blobs


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "gmm_jax.cli", *args], capture_output=True, text=True, timeout=600,
                          cwd=cwd)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    X, _ = make_blobs(seed=60, n_per=40, d=2, k=3)
    np.save(d / "data.npy", X)
    np.savetxt(d / "data.csv", X, delimiter=",", header="a,b", comments="")
    return d


def test_fit_predict_sample_roundtrip(workdir):
    model = workdir / "model.npz"
    r = run("fit", str(workdir / "data.csv"), "--select-k", "2:4", "--restarts", "2", "--out", str(model))
    assert r.returncode == 0, r.stderr
    assert model.exists() and "K=3" in r.stderr
    r = run("predict", str(model), str(workdir / "data.npy"))
    assert r.returncode == 0, r.stderr
    labels = np.array(r.stdout.split(), dtype=int)
    assert labels.shape == (120,) and len(set(labels)) == 3
    r = run("sample", str(model), "-n", "5", "--component", "1", "--out", str(workdir / "s.csv"))
    assert r.returncode == 0, r.stderr
    s = np.loadtxt(workdir / "s.csv", delimiter=",", skiprows=1)
    assert s.shape == (5, 3) and np.all(s[:, 2] == 1)
    # save/load round-trips exactly
    from gmm_jax.io import load_params, save_params

    p, ct = load_params(str(model))
    save_params(str(workdir / "copy.npz"), p, ct)
    q, ct2 = load_params(str(workdir / "copy.npz"))
    assert ct == ct2 == "full"
    for a, b in zip(p, q):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype


@pytest.mark.parametrize(
    "content, message",
    [
        ("1,2\n3,4,5\n", "row 2"),
        ("1,2\n3,abc\n", "not a number"),
        ("1,2\nnan,4\n", "NaN"),
    ],
)
def test_bad_csv_exit_2_no_file(workdir, content, message):
    bad = workdir / "bad.csv"
    bad.write_text(content)
    out = workdir / "never.npz"
    r = run("fit", str(bad), "-k", "1", "--out", str(out))
    assert r.returncode == 2
    assert message in r.stderr and "bad.csv" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_wrong_feature_count_and_existing_output_kept(workdir):
    model = workdir / "m2.npz"
    assert run("fit", str(workdir / "data.npy"), "-k", "2", "--out", str(model)).returncode == 0
    before = model.read_bytes()
    np.save(workdir / "three.npy", np.zeros((4, 3)))
    r = run("predict", str(model), str(workdir / "three.npy"))
    assert r.returncode == 2 and "3 features" in r.stderr and "Traceback" not in r.stderr
    # a failing fit does not overwrite a good model
    (workdir / "empty.csv").write_text("")
    r = run("fit", str(workdir / "empty.csv"), "-k", "2", "--out", str(model))
    assert r.returncode == 2 and model.read_bytes() == before
    assert not [f for f in os.listdir(workdir) if f.startswith(".tmp-")]


def test_student_t_family_from_the_command_line(workdir):
    """--family student-t fits every K of --select-k in one program, saves the degrees of freedom, and predict and
    sample use the Student-t model; --dof holds them fixed."""
    from gmm_jax.io import load_params

    model = workdir / "t.npz"
    r = run("fit", str(workdir / "data.csv"), "--select-k", "2:4", "--family", "student-t", "--out", str(model))
    assert r.returncode == 0, r.stderr
    assert "K=3" in r.stdout and "family=student-t" in r.stdout
    p, _ = load_params(str(model))
    assert type(p).__name__ == "StudentTParams" and p.dof.shape == (3,)
    r = run("predict", str(model), str(workdir / "data.npy"))
    assert r.returncode == 0 and len(set(r.stdout.split())) == 3, r.stderr
    r = run("fit", str(workdir / "data.csv"), "-k", "3", "--family", "student-t", "--dof", "4", "--out", str(model))
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(load_params(str(model))[0].dof, [4.0, 4.0, 4.0])
    r = run("fit", str(workdir / "data.csv"), "-k", "3", "--dof", "4", "--out", str(workdir / "no.npz"))
    assert r.returncode == 2 and "--dof needs --family student-t" in r.stderr


def test_demo_quick_writes_report(tmp_path):
    r = run("demo", "--quick", "--out", str(tmp_path / "demo"))
    assert r.returncode == 0, r.stderr[-2000:]
    report = (tmp_path / "demo" / "report.md").read_text()
    assert "K-means vs GMM" in report and "| full |" in report
    assert "Choosing K" in report and "Student-t mixture" in report
    assert "interpolate" in report and "q(c | x)" in report
    for png in ("traces.png", "bic.png", "heavy_tails.png", "ellipses.png", "samples.png", "vae_latent.png"):
        assert (tmp_path / "demo" / png).stat().st_size > 1000


def test_bayesian_fit_keeps_few_components(workdir):
    """--bayesian: variational Bayes with K=8 on three blobs leaves (near-)empty components; the saved model is the
    mixture predict evaluates; --bayesian with --select-k is refused."""
    model = workdir / "vb.npz"
    r = run("fit", str(workdir / "data.csv"), "-k", "8", "--bayesian", "dirichlet_process", "--out", str(model))
    assert r.returncode == 0, r.stderr
    kept = int(r.stderr.split("components with weight > 1%: ")[1].split(",")[0])
    assert 3 <= kept < 8, r.stderr
    r = run("predict", str(model), str(workdir / "data.npy"))
    assert r.returncode == 0 and 3 <= len(set(r.stdout.split())) <= kept, r.stderr
    r = run("fit", str(workdir / "data.csv"), "--select-k", "2:4", "--bayesian", "dirichlet_process", "--out",
            str(workdir / "no.npz"))
    assert r.returncode == 2 and "--bayesian" in r.stderr


def test_every_option_has_help_with_its_default():
    """Each option of fit, predict, sample, demo and verify says what it does, and its default where it has one."""
    import argparse

    from gmm_jax.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name in ("fit", "predict", "sample", "demo", "verify"):
        parser = sub.choices[name]
        text = parser.format_help()
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help and len(action.help) > 10, (name, action.dest)
            if action.default is not None and action.default is not False:
                assert f"(default: {action.default})" in " ".join(text.split()), (name, action.dest)
