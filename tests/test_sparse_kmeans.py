"""K-means on scipy.sparse rows: the same restarts as on the dense array, never densified; seeding with weights;
relocation when every point lies on its centre; scikit-learn's Lloyd from the same initial centres."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp
import sklearn.cluster

import gmm_jax
from gmm_jax.seeding import kmeans_plusplus, random_rows
from gmm_jax.sparse_kmeans import sparse_plusplus, sparse_rows, sparse_tolerance


class _NoDense(sp.csr_matrix):
    """A CSR matrix that refuses to become dense (what 'never densified' means)."""

    def toarray(self, *args, **kwargs):
        raise AssertionError("the sparse data were densified")

    todense = toarray

    def tocsr(self, copy=False):
        return self


def _data(seed=0, n=300, d=12):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) + rng.integers(0, 3, size=(n, 1)) * 2.0
    X[X < 1.0] = 0.0  # about half the entries stored
    return X, rng.uniform(0.2, 2.0, size=n)


@pytest.mark.parametrize("init", ["k-means++", "random", "explicit"])
def test_sparse_restarts_equal_the_dense_restarts(init):
    """Every restart's centres, iteration count and inertia, and the best labels, equal those of the dense array
    (the same draws from the same key; weights on; float64)."""
    with jax.enable_x64(True):
        X, w = _data(1)
        start = X[[0, 50, 100, 150]] if init == "explicit" else init
        dense = gmm_jax.kmeans(jax.random.key(3), X, 4, n_restarts=3, init=start, sample_weight=w, algorithm="lloyd")
        for form in (_NoDense(X), sp.csc_matrix(X)):
            sparse = gmm_jax.kmeans(jax.random.key(3), form, 4, n_restarts=3, init=start, sample_weight=w)
            np.testing.assert_array_equal(sparse.labels, dense.labels)
            np.testing.assert_array_equal(sparse.all_n_iter, dense.all_n_iter)
            np.testing.assert_allclose(sparse.all_centers, dense.all_centers, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(sparse.all_inertia, dense.all_inertia, rtol=1e-10)
        np.testing.assert_array_equal(gmm_jax.kmeans_predict(_NoDense(X), sparse.centers), sparse.labels)


def test_sparse_equals_sklearn_lloyd_float32():
    """From the same initial centres: scikit-learn's sparse Lloyd (float32 data, float32 computation on both
    sides)."""
    X, w = _data(2)
    Xs = sp.csr_matrix(X.astype(np.float32))
    init = X[[3, 90, 200]].astype(np.float32)
    ref = sklearn.cluster.KMeans(3, init=init, n_init=1, algorithm="lloyd").fit(Xs, sample_weight=w)
    res = gmm_jax.kmeans(jax.random.key(0), Xs, 3, init=init, sample_weight=w)
    assert res.centers.dtype == np.float32
    np.testing.assert_array_equal(res.labels, ref.labels_)
    assert int(res.n_iter) == ref.n_iter_
    np.testing.assert_allclose(res.centers, ref.cluster_centers_, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(float(res.inertia), ref.inertia_, rtol=2e-5)


def test_sparse_weights_equal_repetition_and_tolerance_equals_dense():
    """Integer weights equal repeated rows (explicit centres); the tolerance is scikit-learn's tol * mean variance."""
    with jax.enable_x64(True):
        X, _ = _data(4, n=120)
        reps = np.random.default_rng(5).integers(1, 4, size=X.shape[0])
        init = X[[0, 40, 80]]
        a = gmm_jax.kmeans(jax.random.key(0), sp.csr_matrix(X), 3, init=init, sample_weight=reps.astype(float))
        b = gmm_jax.kmeans(jax.random.key(0), sp.csr_matrix(np.repeat(X, reps, axis=0)), 3, init=init)
        np.testing.assert_allclose(a.centers, b.centers, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(float(a.inertia), float(b.inertia), rtol=1e-12)
    assert sparse_tolerance(sp.csr_matrix(X), 1e-4) == pytest.approx(1e-4 * np.mean(np.var(X, axis=0)), rel=1e-12)


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_seeding_draws_by_weight(sparse):
    """k-means++ and 'random' seeds are never rows of weight 0 (scikit-learn's rule); weights of ones seed and fit as
    no weights."""
    X, w = _data(6, n=200)
    X[:, -1] = 1.0 + np.arange(X.shape[0]) / X.shape[0]  # every row distinct
    w[::2] = 0.0
    zero, kept = X[w == 0], X[w > 0]
    S, shape = sparse_rows(sp.csr_matrix(X))
    for s in range(5):
        key = jax.random.key(s)
        if sparse:
            pp = np.asarray(sparse_plusplus(key, S, 6, jnp.asarray(w, S.data.dtype), shape))
        else:
            pp = np.asarray(kmeans_plusplus(key, jnp.asarray(X, jnp.float32), 6, jnp.asarray(w, jnp.float32))[0])
        rows = np.asarray(random_rows(key, 6, jnp.asarray(w, jnp.float32)))
        assert np.all(w[rows] > 0)
        for c in pp:  # each seed is a row of positive weight and no row of weight 0
            assert np.min(np.abs(kept - c).max(axis=1)) < 1e-6
            assert np.min(np.abs(zero - c).max(axis=1)) > 1e-3
    data = sp.csr_matrix(X) if sparse else X
    for init in ("k-means++", "random"):
        ones = gmm_jax.kmeans(jax.random.key(9), data, 5, init=init, sample_weight=np.ones(X.shape[0]))
        none = gmm_jax.kmeans(jax.random.key(9), data, 5, init=init)
        np.testing.assert_array_equal(ones.labels, none.labels)
        np.testing.assert_allclose(ones.centers, none.centers, rtol=1e-6)


def test_more_centres_than_distinct_points_stop_at_once():
    """Duplicate rows as initial centres: no point is away from its centre, nothing is relocated and the fit stops
    after one iteration (dense and sparse)."""
    X = np.array([[0, 0], [1, 1], [1, 1], [1, 0], [0, 1]], float)
    for data in (X, sp.csr_matrix(X)):
        res = gmm_jax.kmeans(jax.random.key(0), data, 5, init=X)
        assert int(res.n_iter) == 1
        np.testing.assert_allclose(res.centers, X)
        assert float(res.inertia) == 0.0


def test_sparse_input_errors_name_the_problem():
    X = sp.csr_matrix(np.array([[0.0, 1.0], [np.nan, 0.0], [1.0, 1.0]]))
    with pytest.raises(ValueError, match="NaN or infinity"):
        gmm_jax.kmeans(jax.random.key(0), X, 2)
    with pytest.raises(ValueError, match="n_clusters"):
        gmm_jax.kmeans(jax.random.key(0), sp.csr_matrix(np.eye(2)), 3)
    with pytest.raises(ValueError, match="init centres must have shape"):
        gmm_jax.kmeans(jax.random.key(0), sp.csr_matrix(np.eye(3)), 2, init=np.zeros((2, 4)))
