"""K-means: equality with scikit-learn's Lloyd K-means, k-means++ D^2 seeding, restarts, matching helper."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans

import gmm_jax
from tests.conftest import make_blobs


def _sk(X, init, **kw):
    return KMeans(n_clusters=init.shape[0], init=init, n_init=1, algorithm="lloyd", **kw).fit(X)


@pytest.mark.parametrize("algorithm", ["lloyd", "hamerly"])
@pytest.mark.parametrize("case", ["blobs", "empty_cluster", "weighted"])
def test_lloyd_equals_sklearn(case, algorithm):
    X, _ = make_blobs(seed=40, n_per=70, d=3, k=4, sep=3.0)
    rng = np.random.default_rng(41)
    init = X[rng.choice(X.shape[0], 4, replace=False)].copy()
    w = None
    if case == "empty_cluster":
        init[3] = 1e3  # no point is nearest to this centre: sklearn relocates it to the farthest point
    if case == "weighted":
        w = rng.uniform(0.1, 3.0, X.shape[0])
    sk = _sk(X, init, tol=1e-4, max_iter=300).fit(X, sample_weight=w)
    res = gmm_jax.kmeans(jax.random.key(0), X, 4, init=init, tol=1e-4, max_iter=300, sample_weight=w, block_size=64,
                         algorithm=algorithm)
    np.testing.assert_allclose(res.centers, sk.cluster_centers_, rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(res.labels, sk.labels_)
    assert int(res.n_iter) == sk.n_iter_
    np.testing.assert_allclose(res.inertia, sk.inertia_, rtol=1e-10)
    if case == "empty_cluster":
        assert np.all(np.bincount(np.asarray(res.labels), minlength=4) > 0)


def test_kmeans_plusplus_seeds_spread_over_clusters():
    """D^2 sampling: on three far-apart clusters the three seeds fall in three clusters for >= 99% of 1000 keys."""
    rng = np.random.default_rng(42)
    centers = np.array([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0]])
    y = np.repeat(np.arange(3), [200, 50, 10])  # unequal sizes: uniform sampling would often miss the small one
    X = jnp.asarray(centers[y] + rng.normal(size=(y.size, 2)))
    keys = jax.random.split(jax.random.key(0), 1000)
    _, idx = jax.jit(jax.vmap(lambda k: gmm_jax.kmeans_plusplus(k, X, 3)))(keys)
    distinct = np.array([len(set(y[np.asarray(i)])) == 3 for i in idx])
    assert distinct.mean() >= 0.99, distinct.mean()
    # and with uniform seeding (the control) the small cluster is usually missed
    uni = jax.vmap(lambda k: jax.random.choice(k, y.size, (3,), replace=False))(keys)
    assert np.mean([len(set(y[np.asarray(i)])) == 3 for i in uni]) < 0.5


def test_restarts_keep_lowest_inertia():
    X, _ = make_blobs(seed=43, n_per=40, k=5, sep=2.5)
    res = gmm_jax.kmeans(jax.random.key(1), X, 5, n_restarts=6)
    assert res.all_inertia.shape == (6,)
    assert int(res.best) == int(np.argmin(res.all_inertia))
    np.testing.assert_allclose(res.inertia, np.min(res.all_inertia))
    np.testing.assert_array_equal(gmm_jax.kmeans_predict(jnp.asarray(X), res.centers), res.labels)
    # every restart (Lloyd run one after another on a CPU, vmapped on an accelerator) equals a separate run with
    # its key
    from gmm_jax.clustering import kmeans_block_size, kmeans_program

    keys = jax.random.split(jax.random.key(1), 6)
    Xj = jnp.asarray(X)
    for r in (0, 3, 5):
        one = kmeans_program(keys[r:r + 1], Xj, None, None, jnp.asarray(1e-4, Xj.dtype), n_clusters=5, n_restarts=1,
                             max_iter=300, block_size=kmeans_block_size(None, Xj.shape[0], 5), init_random=False)
        assert int(res.all_n_iter[r]) == int(one.n_iter)
        np.testing.assert_allclose(res.all_centers[r], one.centers, rtol=1e-12, atol=1e-12)


def _lloyd_run(X, init, w, bounds, max_iter=(3, 300), tol=0.0, bs=64, config=None):
    from gmm_jax.clustering import lloyd
    from gmm_jax.rows import data_shift

    def f(X, init, w, max_iter):
        shift = data_shift(X, bs)
        c, lab, inertia, n_iter, conv = lloyd(X, w, shift, init - shift, tol, max_iter, bs, bounds=bounds,
                                              config=config)
        return c + shift, lab, inertia, n_iter

    f = jax.jit(f)  # max_iter traced (it only bounds the loop): one compilation for both iteration limits
    return [f(jnp.asarray(X), jnp.asarray(init), w, jnp.asarray(m, jnp.int32)) for m in max_iter]


@pytest.mark.parametrize("dense_fraction,cache", [(0.0, True), (0.5, True), (2.0, True), (2.0, False)])
def test_hamerly_bounds_keep_lloyd_iterates(dense_fraction, cache):
    """Lloyd with Hamerly's bounds gives the plain iterates: same labels and iteration counts, centres to 1e-12,
    with every iteration a full pass (0.0), the default switch (0.5) and every iteration on the points whose
    bounds do not settle them (2.0), those read from the cache of open rows (``cache``, here at every d) or
    gathered from X; chunks of 64 rows.  Data with exact ties (integer grid points, two equal centres: the
    second's cluster empties and is relocated, ties go to the lowest index) and weighted blobs."""
    cfg = gmm_jax.Config(bounds_dense_fraction=dense_fraction, cache_min_features=0 if cache else 10**9)
    g = np.stack(np.meshgrid(np.arange(12.0), np.arange(9.0)), -1).reshape(-1, 2)
    grid = np.concatenate([g, g[::3], g[::7] + 0.5])
    grid_init = np.array([[0.0, 0.0], [0.0, 0.0], [11.0, 8.0], [5.0, 4.0], [5.5, 4.0], [2.0, 7.0]])
    X, _ = make_blobs(seed=45, n_per=90, d=5, k=6, sep=2.0)
    w = np.random.default_rng(46).uniform(0.2, 2.0, X.shape[0])
    blob_init = X[np.random.default_rng(47).choice(X.shape[0], 6, replace=False)]
    for data, init, weights in ((grid, grid_init, None), (X, blob_init, w)):
        for plain, bounded in zip(_lloyd_run(data, init, weights, False),
                                  _lloyd_run(data, init, weights, True, config=cfg)):
            np.testing.assert_array_equal(bounded[1], plain[1])
            assert int(bounded[3]) == int(plain[3])
            np.testing.assert_allclose(bounded[0], plain[0], rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(bounded[2], plain[2], rtol=1e-12)
    assert int(plain[3]) > 3  # the blobs take more than three iterations: the bounds were used


@pytest.mark.parametrize("cache", [True, False])
def test_hamerly_bounds_hold_in_float32(cache):
    """In float32 the bounded iteration gives, at every iteration, the labels of the full pass from the same centres
    (computed squared distances, ties to the lowest index), on data where rounding decides labels: two groups 2000
    apart, each a grid of spacing 0.25, so ||x||^2 ~ 1e6 and the computed squared distances within a group are off
    by up to ~1.  Without the rounding slack in the bounds (or with 1/100 of it) this test fails."""
    from gmm_jax.hamerly import bounded_step, bounds_state
    from gmm_jax.lloyd import lloyd_pass, lloyd_state
    from gmm_jax.rows import data_shift

    # every iteration on the open points only
    cfg = gmm_jax.Config(bounds_dense_fraction=2.0, cache_min_features=0 if cache else 10**9)
    bs = 64

    def start(X, init):
        shift = data_shift(X, bs)
        c0 = init - shift
        return shift, (lloyd_state(X.shape[0], c0), bounds_state(X, shift, c0, bs, cfg))

    step = jax.jit(lambda X, shift, s: bounded_step(X, None, shift, 0.0, bs, None, None, cfg, s))
    full = jax.jit(lambda X, shift, c, lab: lloyd_pass(X, None, shift, c, lab, bs)[0])
    rng = np.random.default_rng(50)
    changed = 0
    for _ in range(4):
        X = (rng.integers(-4, 5, size=(1000, 2)) * 0.25).astype(np.float32)
        X[:, 0] += np.where(rng.random(1000) < 0.5, -1000.0, 1000.0).astype(np.float32)
        init = X[rng.choice(1000, 12, replace=False)]
        Xj = jnp.asarray(X)
        shift, s = jax.jit(start)(Xj, jnp.asarray(init))
        for _ in range(25):
            prev_centers, prev_labels = s[0].centers, s[0].labels
            s = step(Xj, shift, s)
            labels = s[0].labels
            np.testing.assert_array_equal(np.asarray(labels), np.asarray(full(Xj, shift, prev_centers, labels)))
            changed += int(np.sum(np.asarray(labels) != np.asarray(prev_labels)))
    assert changed > 5000  # the iterations moved points (4000 are the first assignment)


def test_kmeans_validation():
    X = np.random.default_rng(0).normal(size=(20, 2))
    with pytest.raises(ValueError, match="init centres must have shape"):
        gmm_jax.kmeans(jax.random.key(0), X, 3, init=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="unknown init"):
        gmm_jax.kmeans(jax.random.key(0), X, 3, init="kmeans||")
    with pytest.raises(ValueError, match="unknown K-means algorithm 'elkan'"):
        gmm_jax.kmeans(jax.random.key(0), X, 3, algorithm="elkan")
    with pytest.raises(ValueError, match="too few points"):
        gmm_jax.kmeans(jax.random.key(0), X[:2], 3)
    for bad in (0, np.zeros(3, np.uint32), jax.random.split(jax.random.key(0), 2)):
        with pytest.raises(ValueError, match="key must be one PRNG key"):
            gmm_jax.kmeans(bad, X, 3)


def test_match_components_is_optimal():
    rng = np.random.default_rng(44)
    for _ in range(20):
        c = rng.integers(0, 50, size=(6, 6)).astype(float)
        r, col = gmm_jax.match_components(c, maximize=True)
        rr, cc = linear_sum_assignment(c, maximize=True)
        assert c[r, col].sum() == c[rr, cc].sum()
    labels = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([2, 2, 0, 0, 1, 1])
    assert gmm_jax.matched_accuracy(labels, pred) == 1.0
