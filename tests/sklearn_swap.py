"""pytest plugin: run scikit-learn's own test modules with its estimators replaced by gmm_jax's.

Loaded with ``-p tests.sklearn_swap`` in a separate pytest process (tests/test_sklearn_suite.py).  Before
scikit-learn's test modules are imported, ``sklearn.mixture.GaussianMixture``, ``BayesianGaussianMixture`` and
``sklearn.cluster.KMeans`` are replaced by ``gmm_jax.sklearn``'s classes, so ``from sklearn.mixture import
GaussianMixture`` in those modules gets ours.  Each test's outcome is written as JSON to the path in
``GMM_JAX_SWAP_REPORT``, with whether the test constructed one of our estimators (``used``).
"""

from __future__ import annotations

import functools
import json
import os

import sklearn.cluster
import sklearn.mixture

from gmm_jax import sklearn as ours

_current = {"nodeid": None}
_used: set[str] = set()
_outcomes: dict[str, str] = {}


def _recording(cls):
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        if _current["nodeid"] is not None:
            _used.add(_current["nodeid"])
        init(self, *args, **kwargs)

    cls.__init__ = __init__
    return cls


def pytest_configure(config):
    sklearn.mixture.GaussianMixture = _recording(ours.GaussianMixture)
    sklearn.mixture.BayesianGaussianMixture = _recording(ours.BayesianGaussianMixture)
    sklearn.cluster.KMeans = _recording(ours.KMeans)


def pytest_runtest_setup(item):
    _current["nodeid"] = item.nodeid


def pytest_runtest_teardown(item):
    _current["nodeid"] = None
    _release_compiled_programs()


def _release_compiled_programs(limit: int = 20000):
    """Drop JAX's caches once this process holds ``limit`` memory mappings: each compiled program keeps a few, and
    past the kernel's limit (vm.max_map_count, 65530) XLA's compiler dies with a segmentation fault."""
    try:
        with open("/proc/self/maps") as f:
            n = sum(1 for _ in f)
    except OSError:
        return
    if n > limit:
        import jax

        jax.clear_caches()


def pytest_runtest_logreport(report):
    if report.when == "call" or report.outcome != "passed":
        if report.outcome == "failed" or report.nodeid not in _outcomes or report.when == "call":
            _outcomes[report.nodeid] = report.outcome


def pytest_sessionfinish(session):
    path = os.environ.get("GMM_JAX_SWAP_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump({k: {"outcome": v, "used": k in _used} for k, v in _outcomes.items()}, f, indent=1)


def run_suite(modules, report_path, keyword=None, env=None):
    """Run scikit-learn's test ``modules`` (dotted names) in a separate pytest process with this plugin; returns
    ``{test id: {"outcome": ..., "used": ...}}`` and the tail of the run's output (for failure messages)."""
    import subprocess
    import sys
    from pathlib import Path

    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.sklearn_swap", "--pyargs",
           *modules]
    if keyword:
        cmd += ["-k", keyword]
    run_env = {**os.environ, **(env or {}), "GMM_JAX_SWAP_REPORT": str(report_path)}
    run_env.pop("PYTEST_XDIST_WORKER", None)
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(cmd, cwd=root, env=run_env, capture_output=True, text=True, timeout=1500)
    if not Path(report_path).exists():
        raise RuntimeError(f"scikit-learn's tests did not run (exit {proc.returncode}):\n{proc.stdout[-3000:]}"
                           f"\n{proc.stderr[-3000:]}")
    with open(report_path) as f:
        return json.load(f), proc.stdout[-3000:]


def pass_rate(outcomes, excluded):
    """(passed / counted, counted, failed test ids) over the tests that constructed one of our estimators, were not
    skipped and are not in ``excluded`` (test function names, parameters stripped)."""
    def name(nodeid):
        return nodeid.split("::")[-1].split("[")[0]

    counted = {k: v["outcome"] for k, v in outcomes.items()
               if v["used"] and v["outcome"] != "skipped" and name(k) not in excluded}
    failed = sorted(k for k, v in counted.items() if v != "passed")
    return (len(counted) - len(failed)) / max(len(counted), 1), len(counted), failed
