"""scikit-learn estimators: check_estimator, equality with scikit-learn from identical initial parameters."""

import warnings

import numpy as np
import pytest
import sklearn.cluster
import sklearn.mixture
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.utils.estimator_checks import check_estimator

from gmm_jax.sklearn import GaussianMixture, KMeans
from tests.conftest import make_blobs, random_params

# Random initialisation depends on the order of the rows and this check shuffles the weighted copy, so the seeds
# differ (scikit-learn's own KMeans fails it, dense and sparse, for the same reason and lists both); with explicit
# initial parameters, weights equal repetition exactly (tests/test_em.py::
# test_statistics_add_across_batches_and_weights_equal_repeats, test_weights_equal_repetition_with_fixed_init below,
# tests/test_sparse_kmeans.py).  The sparse form runs for KMeans only (GaussianMixture takes dense data).
EXPECTED_FAILED = {
    "check_sample_weight_equivalence_on_dense_data": "random initialisation depends on row order; the check shuffles",
    "check_sample_weight_equivalence_on_sparse_data": "as on dense data (KMeans on sparse rows)",
}


@pytest.mark.parametrize("est", [GaussianMixture(n_components=2, max_iter=20), KMeans(n_clusters=3)],
                         ids=["GaussianMixture", "KMeans"])
def test_check_estimator(est):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = check_estimator(est, on_fail=None, expected_failed_checks=EXPECTED_FAILED)
    failed = [(r["check_name"], str(r["exception"])[:200]) for r in res if r["status"] == "failed"]
    assert not failed, failed
    assert len(res) > 40


def test_gaussian_mixture_equals_sklearn(covariance_type):
    X, _ = make_blobs(seed=50, n_per=60, d=3, k=3, sep=3.0)
    params, _ = random_params(np.random.default_rng(51), 3, 3, covariance_type)
    from gmm_jax.params import precisions_from_prec_chol

    init = dict(weights_init=np.exp(np.asarray(params.log_weights)), means_init=np.asarray(params.means),
                precisions_init=np.asarray(precisions_from_prec_chol(params.prec_chol, covariance_type)))
    kw = dict(n_components=3, covariance_type=covariance_type, tol=1e-6, max_iter=200, **init)
    ours = GaussianMixture(**kw).fit(X)
    ref = sklearn.mixture.GaussianMixture(**kw).fit(X)
    for attr in ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_"):
        np.testing.assert_allclose(getattr(ours, attr), getattr(ref, attr), rtol=1e-7, atol=1e-9, err_msg=attr)
    assert ours.n_iter_ == ref.n_iter_ and ours.converged_ == ref.converged_
    np.testing.assert_allclose(ours.lower_bound_, ref.lower_bound_, rtol=1e-9)
    np.testing.assert_allclose(ours.lower_bounds_, ref.lower_bounds_, rtol=1e-9)
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(ours.score_samples(X), ref.score_samples(X), rtol=1e-9)
    np.testing.assert_allclose([ours.bic(X), ours.aic(X)], [ref.bic(X), ref.aic(X)], rtol=1e-9)
    xs, ys = ours.sample(50)
    assert xs.shape == (50, 3) and ys.shape == (50,) and np.all(np.diff(ys) >= 0)


def test_weights_equal_repetition_with_fixed_init():
    X, _ = make_blobs(seed=52, n_per=20)
    w = np.random.default_rng(53).integers(0, 4, X.shape[0])
    params, _ = random_params(np.random.default_rng(54), 3, 3, "full")
    from gmm_jax.params import precisions_from_prec_chol

    kw = dict(n_components=3, weights_init=np.exp(np.asarray(params.log_weights)), means_init=np.asarray(params.means),
              precisions_init=np.asarray(precisions_from_prec_chol(params.prec_chol, "full")), max_iter=30)
    a = GaussianMixture(**kw).fit(X, sample_weight=w)
    b = GaussianMixture(**kw).fit(np.repeat(X, w, axis=0))
    np.testing.assert_allclose(a.means_, b.means_, rtol=1e-10)
    np.testing.assert_allclose(a.covariances_, b.covariances_, rtol=1e-10)


def test_warnings_errors_and_warm_start():
    X, _ = make_blobs(seed=55, n_per=30)
    with pytest.raises(NotFittedError):
        GaussianMixture(2).predict(X)
    with pytest.warns(ConvergenceWarning):
        GaussianMixture(3, max_iter=1, tol=0.0).fit(X)
    with pytest.raises(ValueError, match="n_components"):
        GaussianMixture(n_components=0).fit(X)
    with pytest.raises(ValueError, match="covariance_type"):
        GaussianMixture(2, covariance_type="round").fit(X)
    gm = GaussianMixture(3, warm_start=True, max_iter=2, tol=0.0, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm.fit(X)
        first = gm.lower_bounds_[-1]
        gm.fit(X)  # continues from the previous parameters
    assert gm.lower_bounds_[0] >= first - 1e-12
    gm2 = GaussianMixture(3, n_init=4, random_state=0).fit(X)
    assert gm2.converged_ and gm2.n_features_in_ == 3


def test_kmeans_equals_sklearn():
    X, _ = make_blobs(seed=56, n_per=50, k=4, sep=3.0)
    init = X[np.random.default_rng(57).choice(X.shape[0], 4, replace=False)]
    ours = KMeans(4, init=init, n_init=1).fit(X)
    ref = sklearn.cluster.KMeans(4, init=init, n_init=1, algorithm="lloyd").fit(X)
    np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_, rtol=1e-10)
    np.testing.assert_array_equal(ours.labels_, ref.labels_)
    assert ours.n_iter_ == ref.n_iter_
    np.testing.assert_allclose(ours.inertia_, ref.inertia_, rtol=1e-10)
    np.testing.assert_allclose(ours.transform(X), ref.transform(X), rtol=1e-8)
    np.testing.assert_allclose(ours.score(X), ref.score(X), rtol=1e-8)
    np.testing.assert_array_equal(ours.predict(X), ref.predict(X))


def test_precision_follows_the_input_without_touching_the_global_setting():
    """With 64-bit mode off globally: float64 data give float64 attributes and predictions equal to scikit-learn's
    fit from the same start to float64 accuracy; float32 data stay float32; integers become float64; the global
    jax_enable_x64 is unchanged after every call."""
    import jax

    X, _ = make_blobs(seed=71, n_per=60, d=2, k=3)
    p0, _ = random_params(np.random.default_rng(72), 3, 2, "full")
    init = dict(weights_init=np.exp(np.asarray(p0.log_weights)), means_init=np.asarray(p0.means) + X.mean(0),
                precisions_init=np.asarray(p0.prec_chol) @ np.swapaxes(np.asarray(p0.prec_chol), 1, 2))
    ref = sklearn.mixture.GaussianMixture(3, max_iter=30, tol=0.0, **init).fit(X)
    with jax.enable_x64(False):
        assert not jax.config.jax_enable_x64
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            gm = GaussianMixture(3, max_iter=30, tol=0.0, **init).fit(X.astype(np.float64))
        assert not jax.config.jax_enable_x64
        assert gm.means_.dtype == np.float64 and gm.covariances_.dtype == np.float64
        np.testing.assert_allclose(gm.means_, ref.means_, rtol=1e-10)
        np.testing.assert_allclose(gm.covariances_, ref.covariances_, rtol=1e-9)
        np.testing.assert_allclose(gm.score_samples(X), ref.score_samples(X), rtol=1e-10)
        assert gm.predict_proba(X).dtype == np.float64 and not jax.config.jax_enable_x64
        g32 = GaussianMixture(3, max_iter=5, random_state=0).fit(X.astype(np.float32))
        assert g32.means_.dtype == np.float32 and g32.predict_proba(X).dtype == np.float32
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # the float64 program above, integer data
            gi = GaussianMixture(3, max_iter=30, tol=0.0, **init).fit(np.round(X * 10).astype(np.int64))
        assert gi.means_.dtype == np.float64
        km = KMeans(3, random_state=0).fit(X)
        assert km.cluster_centers_.dtype == np.float64 and km.transform(X).dtype == np.float64
        assert KMeans(3, random_state=0).fit(X.astype(np.float32)).cluster_centers_.dtype == np.float32
        assert not jax.config.jax_enable_x64
