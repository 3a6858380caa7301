"""Test configuration: float64 is enabled for the numerical oracles; float32 tests pass float32 arrays
explicitly (gmm_jax keeps the input's dtype)."""

import gc

import jax
import numpy as np
import pytest

jax.config.update("jax_enable_x64", True)

COV_TYPES = ("full", "tied", "diag", "spherical")


def make_blobs(seed=0, n_per=100, d=3, k=3, sep=5.0, dtype=np.float64):
    """Anisotropic Gaussian blobs with a fixed seed: (X, labels)."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for j in range(k):
        a = rng.normal(size=(d, d)) * 0.6 + np.eye(d)
        xs.append(rng.normal(size=(n_per, d)) @ a.T + sep * rng.normal(size=d))
        ys.append(np.full(n_per, j))
    return np.concatenate(xs).astype(dtype), np.concatenate(ys)


def random_params(rng, k, d, covariance_type, dtype=np.float64):
    """Random valid GMMParams (float64 NumPy-backed) for a covariance type."""
    import gmm_jax

    w = rng.dirichlet(np.full(k, 3.0))
    means = rng.normal(size=(k, d)) * 3
    if covariance_type == "full":
        a = rng.normal(size=(k, d, d))
        cov = a @ np.swapaxes(a, 1, 2) + 0.5 * np.eye(d)
    elif covariance_type == "tied":
        a = rng.normal(size=(d, d))
        cov = a @ a.T + 0.5 * np.eye(d)
    elif covariance_type == "diag":
        cov = rng.uniform(0.5, 2.0, size=(k, d))
    else:
        cov = rng.uniform(0.5, 2.0, size=(k,))
    p = gmm_jax.from_covariances(w.astype(dtype), means.astype(dtype), cov.astype(dtype), covariance_type)
    return p, cov


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Every compiled program keeps a few memory mappings for its code, and JAX's caches keep every program alive.
    A test worker compiles thousands over a run; past the kernel's limit (vm.max_map_count, 65530 mappings) XLA's
    compiler dies with a segmentation fault (two runs did, one in CI).  Dropping the caches after each test file
    releases them; no file shares many programs with another."""
    yield
    jax.clear_caches()
    gc.collect()


@pytest.fixture(params=COV_TYPES)
def covariance_type(request):
    return request.param


# The longest test files first: with two pytest-xdist workers taking whole files (--dist loadfile), files are
# handed out in collection order, so the long ones at the end of the alphabet would otherwise finish last on one
# worker while the other idles.
_LONG_FILES = ("test_sklearn_suite_mixture.py", "test_sklearn_suite_kmeans.py", "test_sklearn_suite_bayesian.py",
               "test_sklearn.py",
               "test_cli.py", "test_sharded.py", "test_verify.py", "test_engine.py", "test_fit.py", "test_variants.py",
               "test_vae.py", "test_missing.py", "test_student.py", "test_path.py", "test_prior.py")


def pytest_collection_modifyitems(session, config, items):
    def rank(item):
        name = item.path.name
        return _LONG_FILES.index(name) if name in _LONG_FILES else len(_LONG_FILES)

    items.sort(key=rank)  # stable: the order within a file is kept

