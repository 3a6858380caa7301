"""Missing values marginalised (``missing='marginalize'``): without NaN it is the ordinary fit; the observed-data
log-likelihood equals SciPy's marginal densities and EM climbs it; conditional means by hand; recovery against
mean imputation; input checks."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import gmm_jax
from tests.conftest import COV_TYPES, make_blobs, random_params


def with_missing(X, fraction, seed):
    rng = np.random.default_rng(seed)
    Xm = np.array(X, dtype=np.float64)
    Xm[rng.uniform(size=X.shape) < fraction] = np.nan
    return Xm


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_without_nan_it_is_the_ordinary_fit_and_with_nan_it_climbs_the_observed_likelihood(covariance_type):
    X, _ = make_blobs(seed=51, n_per=40, d=3)
    kw = dict(covariance_type=covariance_type, n_restarts=2, tol=1e-10, max_iter=40)
    plain = gmm_jax.fit(jax.random.key(0), X, 3, **kw)
    marg = gmm_jax.fit(jax.random.key(0), X, 3, missing="marginalize", **kw)
    chex.assert_trees_all_close(marg.all_params, plain.all_params, rtol=1e-8, atol=1e-10)
    Xm = with_missing(X, 0.3, 1)
    res = gmm_jax.fit(jax.random.key(0), Xm, 3, missing="marginalize", **kw)
    trace = np.asarray(res.trace)
    for t in trace:
        t = t[np.isfinite(t)]
        assert np.all(np.diff(t) >= -1e-11 * np.abs(t[1:])), np.diff(t).min()
    np.testing.assert_allclose(gmm_jax.score(Xm, res.params, covariance_type, missing="marginalize"),
                               res.log_likelihood[res.best], rtol=1e-10)


def test_observed_likelihood_posteriors_and_conditional_means_by_hand():
    rng = np.random.default_rng(2)
    p, _ = random_params(rng, 3, 4, "full")
    Xm = with_missing(rng.normal(size=(30, 4)) * 2, 0.35, 3)
    Xm[0] = np.nan  # a row with nothing observed: log p = 0, posterior = the weights
    cov = np.asarray(gmm_jax.covariances_from_prec_chol(p.prec_chol, "full"))
    mu, w = np.asarray(p.means), np.exp(np.asarray(p.log_weights))
    dens = np.ones((30, 3))
    for i, x in enumerate(Xm):
        o = ~np.isnan(x)
        if o.any():
            dens[i] = [stats.multivariate_normal(mu[k][o], cov[k][np.ix_(o, o)]).pdf(x[o]) for k in range(3)]
    joint = dens * w
    np.testing.assert_allclose(gmm_jax.score(Xm, p, missing="marginalize"), np.mean(np.log(joint.sum(1))), rtol=1e-12)
    post = joint / joint.sum(1, keepdims=True)
    np.testing.assert_allclose(gmm_jax.predict_proba(Xm, p, missing="marginalize"), post, rtol=1e-9, atol=1e-14)
    imputed = np.asarray(gmm_jax.impute(Xm, p))
    for i in (1, 2, 3):
        o, m = ~np.isnan(Xm[i]), np.isnan(Xm[i])
        if not (o.any() and m.any()):
            continue
        cond = [mu[k][m] + cov[k][np.ix_(m, o)] @ np.linalg.solve(cov[k][np.ix_(o, o)], Xm[i][o] - mu[k][o])
                for k in range(3)]
        np.testing.assert_allclose(imputed[i][m], sum(post[i, k] * cond[k] for k in range(3)), rtol=1e-10)
        np.testing.assert_array_equal(imputed[i][o], Xm[i][o])
    np.testing.assert_allclose(imputed[0], np.sum(w[:, None] * mu, axis=0), rtol=1e-10)


def test_marginalising_recovers_the_parameters_better_than_mean_imputation():
    """30% of the entries missing at random from three correlated 4-D blobs: the means and covariances of the
    marginalised fit are far closer to the generating ones than those of a fit on mean-imputed data."""
    rng = np.random.default_rng(7)
    k, d, n = 3, 4, 900
    centers = rng.normal(size=(k, d)) * 4
    a = rng.normal(size=(k, d, d)) * 0.7 + np.eye(d)
    y = rng.integers(0, k, n)
    X = centers[y] + np.einsum("nd,ned->ne", rng.normal(size=(n, d)), a[y])
    Xm = with_missing(X, 0.3, 8)
    truth = gmm_jax.fit_supervised(X, y, k, "full", reg_covar=1e-6)
    marg = gmm_jax.fit(jax.random.key(0), Xm, k, missing="marginalize", n_restarts=4, tol=1e-6).params
    filled = np.where(np.isnan(Xm), np.nanmean(Xm, axis=0), Xm)
    mean_imp = gmm_jax.fit(jax.random.key(0), filled, k, n_restarts=4, tol=1e-6).params

    def errors(p):
        order = [int(np.argmin(np.sum((np.asarray(p.means) - m) ** 2, 1))) for m in np.asarray(truth.means)]
        cov = np.asarray(gmm_jax.covariances_from_prec_chol(p.prec_chol, "full"))[order]
        ref = np.asarray(gmm_jax.covariances_from_prec_chol(truth.prec_chol, "full"))
        return (np.max(np.abs(np.asarray(p.means)[order] - np.asarray(truth.means))),
                np.max(np.abs(cov - ref)) / np.max(np.abs(ref)))

    (m_mu, m_cov), (i_mu, i_cov) = errors(marg), errors(mean_imp)
    assert m_mu < 0.5 * i_mu and m_cov < 0.5 * i_cov, (m_mu, i_mu, m_cov, i_cov)


def test_missing_inputs_are_checked():
    X, _ = make_blobs(seed=3, n_per=10, d=2)
    Xm = with_missing(X, 0.2, 0)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="contains NaN"):
        gmm_jax.fit(key, Xm, 3)  # the default still rejects NaN
    with pytest.raises(ValueError, match="missing must be None or 'marginalize'"):
        gmm_jax.fit(key, Xm, 3, missing="drop")
    bad = Xm.copy()
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="contains infinity"):
        gmm_jax.fit(key, bad, 3, missing="marginalize")
    empty = Xm.copy()
    empty[:, 1] = np.nan
    with pytest.raises(ValueError, match=r"column\(s\) \[1\] have no observed value"):
        gmm_jax.fit(key, empty, 3, missing="marginalize")
    with pytest.raises(ValueError, match="for Gaussian mixtures"):
        gmm_jax.fit(key, Xm, 3, missing="marginalize", family="student-t")
    p = gmm_jax.initialize(key, X, 3)
    with pytest.raises(ValueError, match="contains NaN"):
        gmm_jax.predict(Xm, p)
    assert np.asarray(gmm_jax.predict(jnp.asarray(Xm), p, missing="marginalize")).shape == (30,)


def test_missing_values_from_the_command_line(tmp_path):
    """--missing marginalize: empty CSV fields are missing values for fit and predict (every row kept)."""
    import subprocess
    import sys

    X, _ = make_blobs(seed=52, n_per=40, d=3)
    Xm = with_missing(X, 0.25, 4)
    Xm[5] = np.nan  # an all-missing row stays a row
    path = tmp_path / "m.csv"
    path.write_text("a,b,c\n" + "\n".join(",".join("" if np.isnan(v) else f"{v:.6f}" for v in r) for r in Xm) + "\n")

    def run(*args):
        return subprocess.run([sys.executable, "-m", "gmm_jax.cli", *args], capture_output=True, text=True, timeout=600)

    r = run("fit", str(path), "-k", "3", "--missing", "marginalize", "--out", str(tmp_path / "m.npz"))
    assert r.returncode == 0, r.stderr
    r = run("predict", str(tmp_path / "m.npz"), str(path), "--missing", "marginalize")
    assert r.returncode == 0 and len(r.stdout.split()) == 120, r.stderr
    r = run("fit", str(path), "-k", "3", "--out", str(tmp_path / "x.npz"))
    assert r.returncode == 2 and "not a number" in r.stderr


def test_gaussian_mixture_estimator_with_missing_values():
    """``GaussianMixture(missing='marginalize')`` fits, predicts and scores data with NaN; the default still
    rejects it (scikit-learn's message)."""
    from gmm_jax.sklearn import GaussianMixture

    X, y = make_blobs(seed=53, n_per=50, d=3, sep=8.0)
    Xm = with_missing(X, 0.2, 5)
    est = GaussianMixture(3, missing="marginalize", n_init=4, random_state=0).fit(Xm)
    params = gmm_jax.GMMParams(jnp.log(jnp.asarray(est.weights_)), jnp.asarray(est.means_),
                               jnp.asarray(est.precisions_cholesky_))
    np.testing.assert_allclose(est.score(Xm), gmm_jax.score(Xm, params, missing="marginalize"), rtol=1e-10)
    assert gmm_jax.matched_accuracy(y, est.predict(Xm)) > 0.95
    with pytest.raises(ValueError, match="NaN"):
        GaussianMixture(3).fit(Xm)
