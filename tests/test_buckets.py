"""Row buckets: fit, initialize, kmeans and the model functions pad X with zero-weight rows to a bucket below
``Config.bucket_max_rows`` rows, so nearby row counts share one compiled program; the padding changes no result."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gmm_jax
from gmm_jax.rows import row_bucket

BUCKET_MAX_ROWS = gmm_jax.Config().bucket_max_rows
NO_BUCKETS = gmm_jax.Config(bucket_max_rows=0)


def test_row_buckets_are_few_and_tight():
    ns = np.arange(1, 20000)
    b = np.array([row_bucket(int(n)) for n in ns])
    assert np.all(b >= ns) and np.all(np.diff(b) >= 0)
    small = (ns > 64) & (ns < BUCKET_MAX_ROWS)
    assert np.all(b[small] <= 1.25 * ns[small])  # at most a quarter more rows
    assert np.all(b[ns <= 64] == 64) and np.all(b[ns >= BUCKET_MAX_ROWS] == ns[ns >= BUCKET_MAX_ROWS])
    assert np.all(b[ns < BUCKET_MAX_ROWS] < BUCKET_MAX_ROWS)  # never into the product-form / compiler-option sizes
    assert len(set(b[ns < BUCKET_MAX_ROWS].tolist())) == 33  # 16383 row counts, 33 programs
    assert [row_bucket(n) for n in (65, 128, 129, 150, 2000, 2049)] == [80, 128, 160, 160, 2048, 2560]
    assert [row_bucket(n, 50) for n in (5, 49, 50, 3000)] == [49, 49, 50, 3000]
    assert [row_bucket(n, 0) for n in (1, 65, 3000)] == [1, 65, 3000]
    for bad in (-1, 16385, 2.0, True):
        with pytest.raises(ValueError, match=r"bucket_max_rows must be an integer in \[0, 16384\]"):
            gmm_jax.Config(bucket_max_rows=bad)


def _blobs(n, seed=0):
    rng = np.random.default_rng(seed)
    c = np.array([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]])
    return c[rng.integers(0, 3, n)] + rng.normal(size=(n, 2))


@pytest.mark.parametrize("init, weighted", [("kmeans", False), ("random_from_data", False), ("k-means++", True)])
def test_padded_fit_equals_the_unpadded_fit(init, weighted):
    """Float64, 147 rows (padded to 160): every restart's log-likelihood, iteration count and parameters agree with
    the fit on the 147 rows alone (the seeds are the same draws: padding rows have probability 0 and sit at the
    end)."""
    with jax.enable_x64(True):
        X = _blobs(147)
        w = np.random.default_rng(1).uniform(0.5, 2.0, 147) if weighted else None
        key = jax.random.key(3)
        a = gmm_jax.fit(key, X, 3, init=init, n_restarts=2, sample_weight=w, max_iter=40)
        ia = gmm_jax.initialize(key, X, 3, init=init, sample_weight=w)
        # no bucket: the fit on the 147 rows as they are
        b = gmm_jax.fit(key, X, 3, init=init, n_restarts=2, sample_weight=w, max_iter=40, config=NO_BUCKETS)
        ib = gmm_jax.initialize(key, X, 3, init=init, sample_weight=w, config=NO_BUCKETS)
    np.testing.assert_array_equal(a.n_iter, b.n_iter)
    np.testing.assert_allclose(a.log_likelihood, b.log_likelihood, rtol=1e-12)
    chex.assert_trees_all_close(a.all_params, b.all_params, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(a.counts, b.counts, rtol=1e-9)
    chex.assert_trees_all_close(ia, ib, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("init", ["k-means++", "random", "empty"])
def test_padded_kmeans_equals_the_unpadded_kmeans(init):
    """Labels (cut back to n), centres, inertia and iteration counts of every restart; 'empty': explicit centres, one
    far from every point, so its cluster is empty and relocated to the farthest point (never a padding row)."""
    with jax.enable_x64(True):
        X = _blobs(203, seed=4)
        if init == "empty":
            init = np.concatenate([X[:3], [[100.0, 100.0]]])
        a = gmm_jax.kmeans(jax.random.key(5), X, 4, n_restarts=3, init=init)
        pa = gmm_jax.kmeans_predict(X, a.centers)
        b = gmm_jax.kmeans(jax.random.key(5), X, 4, n_restarts=3, init=init, config=NO_BUCKETS)
    assert a.labels.shape == (203,) and pa.shape == (203,)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(pa, a.labels)
    np.testing.assert_array_equal(a.all_n_iter, b.all_n_iter)
    np.testing.assert_allclose(a.all_centers, b.all_centers, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(a.all_inertia, b.all_inertia, rtol=1e-12)


@pytest.mark.parametrize("init", ["k-means++", "empty"])
def test_padded_hamerly_equals_unpadded_lloyd(init):
    """Hamerly's bounds on padded rows give plain Lloyd's iterates on the unpadded rows, an emptied cluster's
    relocation included; every iteration on the open points only (the padding rows, zero-weight copies of row 0,
    never count as a changed label of their own nor as the farthest point)."""
    sparse = gmm_jax.Config(bounds_dense_fraction=2.0)
    with jax.enable_x64(True):
        X = _blobs(203, seed=6)
        if init == "empty":
            init = np.concatenate([X[:3], [[100.0, 100.0]]])
        a = gmm_jax.kmeans(jax.random.key(7), X, 4, n_restarts=2, init=init, algorithm="hamerly", block_size=32,
                           config=sparse)
        b = gmm_jax.kmeans(jax.random.key(7), X, 4, n_restarts=2, init=init, algorithm="lloyd", block_size=32,
                           config=NO_BUCKETS)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.all_n_iter, b.all_n_iter)
    assert int(a.all_n_iter.max()) > 2
    np.testing.assert_allclose(a.all_centers, b.all_centers, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(a.all_inertia, b.all_inertia, rtol=1e-12)


def test_nearby_row_counts_share_one_compiled_program():
    """130 and 150 rows (bucket 160): the second fit, initialize, kmeans and predict compile nothing new."""
    from gmm_jax.clustering import kmeans_program as _kmeans_jit
    from gmm_jax.loop import fit_program
    from gmm_jax.model import _predict
    from gmm_jax.model import weighted_log_likelihood as _weighted_log_likelihood

    X = _blobs(150, seed=6).astype(np.float32)
    prog = fit_program("diag", 160, gmm_jax.default_config())
    res = gmm_jax.fit(jax.random.key(0), X[:130], 3, covariance_type="diag", max_iter=9)
    gmm_jax.kmeans(jax.random.key(0), X[:130], 3)
    gmm_jax.predict(X[:130], res.params, "diag")
    gmm_jax.score(X[:130], res.params, "diag")
    sizes = [f._cache_size() for f in (prog, _kmeans_jit, _predict, _weighted_log_likelihood)]
    res2 = gmm_jax.fit(jax.random.key(0), X, 3, covariance_type="diag", max_iter=9)
    km = gmm_jax.kmeans(jax.random.key(0), X, 3)
    labels = gmm_jax.predict(X, res2.params, "diag")
    s = gmm_jax.score(X, res2.params, "diag")
    assert [f._cache_size() for f in (prog, _kmeans_jit, _predict, _weighted_log_likelihood)] == sizes
    assert labels.shape == (150,) and km.labels.shape == (150,)
    # the results are those of the 150 rows: the score is their mean log-likelihood
    lj = gmm_jax.score_samples(jnp.asarray(X), res2.params, "diag")
    np.testing.assert_allclose(s, np.mean(np.asarray(lj)), rtol=1e-5)
    np.testing.assert_array_equal(labels, np.argmax(np.asarray(gmm_jax.log_joint(jnp.asarray(X), res2.params, "diag")), 1))
