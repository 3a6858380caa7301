"""The Student-t mixture family: densities against SciPy, samples' moments, the fit (monotone, dof learned or fixed,
near-Gaussian limit), and its interface checks.  The M-step's optimality and the fixed point's stationarity are
verification rows (tests/test_verify.py)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import gmm_jax
from gmm_jax.missing import dense_covariances
from gmm_jax.params import with_dof
from gmm_jax.verify_variants import t_problem
from tests.conftest import COV_TYPES, random_params

DOF = jnp.array([3.0, 5.0, 8.0])


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_densities_posteriors_and_samples(covariance_type):
    """score_samples / predict_proba equal SciPy's multivariate_t mixture; samples of a component have the
    t covariance dof / (dof - 2) S."""
    rng = np.random.default_rng(1)
    p, _ = random_params(rng, 3, 2, covariance_type)
    tp = with_dof(p, DOF)
    X = rng.normal(size=(40, 2)) * 3
    w = np.exp(np.asarray(p.log_weights))
    scales = np.asarray(dense_covariances(p, covariance_type))
    dens = np.stack([w[k] * stats.multivariate_t(np.asarray(p.means[k]), scales[k], df=float(DOF[k])).pdf(X)
                     for k in range(3)], axis=1)
    np.testing.assert_allclose(gmm_jax.score_samples(X, tp, covariance_type), np.log(dens.sum(1)), rtol=1e-12)
    np.testing.assert_allclose(gmm_jax.predict_proba(X, tp, covariance_type), dens / dens.sum(1, keepdims=True),
                               rtol=1e-10, atol=1e-14)
    xc = np.asarray(gmm_jax.sample_component(jax.random.key(0), tp, 2, 40000, covariance_type))
    np.testing.assert_allclose(np.cov(xc.T), scales[2] * 8 / 6, rtol=0.06, atol=0.03 * np.max(scales[2]))
    xs, zs = gmm_jax.sample(jax.random.key(1), tp, 40000, covariance_type)
    sel = np.asarray(xs)[np.asarray(zs) == 2]
    np.testing.assert_allclose(sel.mean(0), np.asarray(p.means[2]), atol=0.05 * np.sqrt(np.max(scales[2])) + 0.02)
    np.testing.assert_allclose(np.cov(sel.T), scales[2] * 8 / 6, rtol=0.1, atol=0.05 * np.max(scales[2]))


def test_fit_on_heavy_tails_beats_the_gaussian_mixture_and_learns_the_dof():
    X = np.asarray(t_problem(seed=4, n=300, dof=3.0))
    res = gmm_jax.fit(jax.random.key(0), X, 3, family="student-t", tol=1e-6, max_iter=400)
    assert isinstance(res.params, gmm_jax.StudentTParams)
    trace = np.asarray(res.trace[0])
    trace = trace[np.isfinite(trace)]
    assert np.all(np.diff(trace) >= -1e-12 * np.abs(trace[1:]))
    assert np.all((res.params.dof > 1.5) & (res.params.dof < 8.0)), res.params.dof  # the data's 3, per component
    gauss = gmm_jax.fit(jax.random.key(0), X, 3, tol=1e-6, max_iter=400)
    assert float(res.log_likelihood[0]) > float(gauss.log_likelihood[0]) + 0.1
    np.testing.assert_allclose(gmm_jax.score(X, res.params), res.log_likelihood[0], rtol=1e-10)
    n_free = gmm_jax.n_parameters("full", 3, 2) + 3  # BIC counts the K degrees of freedom
    np.testing.assert_allclose(gmm_jax.bic(X, res.params), -2 * 300 * float(res.log_likelihood[0])
                               + n_free * np.log(300), rtol=1e-10)


def test_fixed_dof_stays_and_a_huge_dof_is_the_gaussian_fit():
    X = np.asarray(t_problem(seed=5, n=200, dof=4.0))
    init = gmm_jax.initialize(jax.random.key(1), X, 3)
    t = gmm_jax.fit(jax.random.key(1), X, 3, family="student-t", init_params=init, dof=1e7, fixed="dof", tol=1e-9)
    np.testing.assert_array_equal(t.params.dof, np.full(3, 1e7))
    g = gmm_jax.fit(jax.random.key(1), X, 3, init_params=init, tol=1e-9)
    chex.assert_trees_all_close(gmm_jax.GMMParams(*t.params[:3]), g.params, rtol=1e-4, atol=1e-4)
    warm = gmm_jax.fit(jax.random.key(1), X, 3, init_params=t.params, fixed=("dof", "means"), max_iter=3)
    assert isinstance(warm.params, gmm_jax.StudentTParams)  # Student-t init_params imply the family
    np.testing.assert_array_equal(warm.params.means, t.params.means)


def test_student_t_options_are_checked():
    X = np.asarray(t_problem(seed=6, n=60))
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="unknown family"):
        gmm_jax.fit(key, X, 3, family="laplace")
    with pytest.raises(ValueError, match="dof must be positive"):
        gmm_jax.fit(key, X, 3, family="student-t", dof=-1.0)
    with pytest.raises(ValueError, match=r"dof must be a number or have shape \(3,\)"):
        gmm_jax.fit(key, X, 3, family="student-t", dof=[2.0, 3.0])
    with pytest.raises(ValueError, match="fixed must name parameter blocks among weights, means, covariances;"):
        gmm_jax.fit(key, X, 3, fixed="dof")  # a Gaussian mixture has no dof
    p = with_dof(gmm_jax.initialize(key, X, 3), 3.0)
    with pytest.raises(ValueError, match="dof must be positive and finite"):
        gmm_jax.predict(X, p._replace(dof=jnp.array([3.0, 0.0, 2.0])))


def test_student_t_estimator():
    """``StudentTMixture``: GaussianMixture's API plus dof (learned, or fixed by the constructor); float32 and
    float64 inputs keep their precision; BIC counts learned degrees of freedom only; clone and get_params know dof.
    (It passed scikit-learn's check_estimator when written; the suite runs that check on GaussianMixture, whose
    code it shares, to keep the suite's time.)"""
    from sklearn.base import clone

    from gmm_jax.sklearn import StudentTMixture

    assert clone(StudentTMixture(3, dof=4.0)).get_params()["dof"] == 4.0

    X = np.asarray(t_problem(seed=7, n=240, dof=3.0))
    est = StudentTMixture(3, random_state=0, max_iter=300).fit(X)
    assert est.dof_.shape == (3,) and np.all(est.dof_ < 10) and est.converged_
    assert est.means_.dtype == np.float64 and est.predict(X).shape == (240,)
    np.testing.assert_allclose(est.score(X), est.lower_bound_, atol=1e-3)
    fixed = StudentTMixture(3, dof=4.0, random_state=0, max_iter=300).fit(X.astype(np.float32))
    np.testing.assert_array_equal(fixed.dof_, np.full(3, 4.0, np.float32))
    assert fixed.means_.dtype == np.float32
    n_free = gmm_jax.n_parameters("full", 3, 2)
    np.testing.assert_allclose(fixed.bic(X), -2 * fixed.score(X) * 240 + n_free * np.log(240), rtol=1e-6)
    np.testing.assert_allclose(est.bic(X), -2 * est.score(X) * 240 + (n_free + 3) * np.log(240), rtol=1e-10)
    xs, ys = est.sample(50)
    assert xs.shape == (50, 2) and np.all(np.diff(ys) >= 0)
