"""Bad input to the model functions, the supervised fit, K-means prediction, the math layer and the metrics: a
ValueError that names the problem, raised before anything runs; traced inputs inside a caller's jit still compose."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gmm_jax

RNG = np.random.default_rng(0)
X = RNG.normal(size=(40, 3)).astype(np.float32)


def _params(covariance_type="full"):
    k, d = 2, 3
    cov = {"full": np.stack([np.eye(d), 2 * np.eye(d)]), "tied": np.eye(d), "diag": np.ones((k, d)),
           "spherical": np.ones(k)}[covariance_type]
    return gmm_jax.from_covariances(jnp.array([0.4, 0.6]), jnp.asarray(X[:2]), jnp.asarray(cov, jnp.float32),
                                    covariance_type)


P = _params()


@pytest.mark.parametrize("fn", [gmm_jax.predict, gmm_jax.predict_proba, gmm_jax.predict_log_proba, gmm_jax.score,
                                gmm_jax.bic, gmm_jax.aic])
def test_model_functions_check_x_and_params(fn):
    assert np.all(np.isfinite(np.asarray(fn(X, P))))
    with pytest.raises(ValueError, match="X has 2 features, but the mixture's means have 3"):
        fn(X[:, :2], P)
    with pytest.raises(ValueError, match=r"X contains NaN or infinity \(first at row 1, column 2\)"):
        fn(np.where(np.arange(40)[:, None] * 3 + np.arange(3) == 5, np.nan, X), P)
    with pytest.raises(ValueError, match="must be 2-D"):
        fn(X[0], P)
    with pytest.raises(ValueError, match=r"params.prec_chol for covariance_type='diag' must have shape \(2, 3\)"):
        fn(X, P, "diag")
    with pytest.raises(ValueError, match="unknown covariance_type"):
        fn(X, P, "ful")
    with pytest.raises(ValueError, match="params.means contains NaN"):
        fn(X, P._replace(means=P.means.at[0, 0].set(jnp.nan)))
    with pytest.raises(ValueError, match="weights must sum to one"):
        fn(X, P._replace(log_weights=jnp.log(jnp.array([0.5, 0.6]))))
    with pytest.raises(ValueError, match="not positive definite"):
        fn(X, P._replace(prec_chol=P.prec_chol.at[1, 0, 0].set(-1.0)))
    with pytest.raises(ValueError, match="params must be a GMMParams"):
        fn(X, tuple(P))


def test_model_functions_compose_inside_jit_and_take_any_float_params():
    # inside a caller's jit only the (static) shapes are checked; the result is the eager one
    np.testing.assert_array_equal(jax.jit(gmm_jax.predict)(X, P), gmm_jax.predict(X, P))
    with pytest.raises(ValueError, match="X has 2 features"):
        jax.jit(gmm_jax.predict)(X[:, :2], P)
    # float64 NumPy parameters are cast to X's dtype, the same labels and log-likelihoods
    p64 = gmm_jax.GMMParams(*(np.asarray(a, np.float64) for a in P))
    np.testing.assert_array_equal(gmm_jax.predict(X, p64), gmm_jax.predict(X, P))
    np.testing.assert_allclose(gmm_jax.score(X, p64), gmm_jax.score(X, P), rtol=1e-6)


@pytest.mark.parametrize("covariance_type", ["tied", "spherical"])
def test_sampling_checks_counts_components_and_params(covariance_type):
    p = _params(covariance_type)
    key = jax.random.key(0)
    xs, zs = gmm_jax.sample(key, p, 5, covariance_type)
    assert xs.shape == (5, 3) and zs.shape == (5,)
    assert gmm_jax.sample_component(key, p, 1, 4, covariance_type).shape == (4, 3)
    assert gmm_jax.sample_component(key, p, np.array([1, 0, 1]), 4, covariance_type).shape == (3, 4, 3)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="n_samples must be an integer >= 1"):
            gmm_jax.sample(key, p, bad, covariance_type)
        with pytest.raises(ValueError, match="n_samples must be an integer >= 1"):
            gmm_jax.sample_component(key, p, 0, bad, covariance_type)
    for bad in (2, -1, np.array([0, 2])):
        with pytest.raises(ValueError, match=r"component must be in \[0, 2\) \(the mixture has 2 components\)"):
            gmm_jax.sample_component(key, p, bad, 4, covariance_type)
    for bad in (0.5, np.zeros((2, 2), int)):
        with pytest.raises(ValueError, match="component must be an integer or a 1-D array of integers"):
            gmm_jax.sample_component(key, p, bad, 4, covariance_type)
    with pytest.raises(ValueError, match="prec_chol"):
        gmm_jax.sample(key, p, 5, "full")


def test_fit_supervised_rejects_what_has_no_closed_form():
    y = np.r_[np.zeros(20, int), np.ones(20, int)]
    p = gmm_jax.fit_supervised(X, y, 2, "diag")
    np.testing.assert_allclose(p.means[1], X[20:].mean(0), rtol=1e-5)
    with pytest.raises(ValueError, match=r"class\(es\) \[2\] have no points"):
        gmm_jax.fit_supervised(X, y, 3)
    with pytest.raises(ValueError, match=r"class\(es\) \[1\] have no points with positive weight"):
        gmm_jax.fit_supervised(X, y, 2, sample_weight=np.r_[np.ones(20), np.zeros(20)])
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\), got values from 0 to 4"):
        gmm_jax.fit_supervised(X, np.r_[y[:-1], 4], 2)
    with pytest.raises(ValueError, match=r"labels must have shape \(40,\)"):
        gmm_jax.fit_supervised(X, y[:5], 2)
    with pytest.raises(ValueError, match="labels must be integers"):
        gmm_jax.fit_supervised(X, y + 0.5, 2)
    with pytest.raises(ValueError, match="X contains NaN"):
        gmm_jax.fit_supervised(np.where(X > 2, np.inf, X), y, 2)
    # two points of class 1 in three dimensions: singular without regularisation, named; fine with it
    y2 = np.r_[np.zeros(38, int), 1, 1]
    with pytest.raises(ValueError, match=r"covariance of class\(es\) \[1\] \(with \[2\] points\) is singular"):
        gmm_jax.fit_supervised(X, y2, 2, "full")
    assert np.all(np.isfinite(np.asarray(gmm_jax.fit_supervised(X, y2, 2, "full", reg_covar=1e-3).prec_chol)))
    # inside jit: shapes checked, values not (a singular class gives NaN factors there, as documented)
    means = jax.jit(lambda x, lab: gmm_jax.fit_supervised(x, lab, 2, "diag").means)(X, y)
    np.testing.assert_allclose(means, p.means, rtol=1e-6, atol=1e-6)  # float32 sums of 20 values of size ~1, fused differently


def test_kmeans_predict_checks_its_inputs():
    labels = gmm_jax.kmeans_predict(X, X[:4])
    np.testing.assert_array_equal(labels[:4], np.arange(4))
    with pytest.raises(ValueError, match=r"X has 3 features, but the centres have 2"):
        gmm_jax.kmeans_predict(X, X[:4, :2])
    with pytest.raises(ValueError, match="centers contains NaN"):
        gmm_jax.kmeans_predict(X, np.full((2, 3), np.nan))
    with pytest.raises(ValueError, match="block_size must be an integer >= 1"):
        gmm_jax.kmeans_predict(X, X[:4], block_size=0)


def test_math_layer_checks_shapes_and_covariance_type_at_trace_time():
    with pytest.raises(ValueError, match=r"same D, got shapes \(40, 2\) and \(2, 3\)"):
        gmm_jax.e_step(X[:, :2], P)
    with pytest.raises(ValueError, match=r"prec_chol for covariance_type='diag' with K=2, D=3 must have shape \(2, 3\)"):
        gmm_jax.log_likelihood(X, P, "diag")
    with pytest.raises(ValueError, match="unknown covariance_type 'xx'"):
        jax.jit(lambda x: gmm_jax.log_likelihood(x, P, "xx"))(X)
    resp = jnp.full((40, 2), 0.5)
    with pytest.raises(ValueError, match=r"responsibilities must have shape \(n, K\) = \(40, 2\)"):
        gmm_jax.sufficient_stats(X, resp[:30], P.means)
    with pytest.raises(ValueError, match="unknown covariance_type"):
        gmm_jax.m_step(gmm_jax.sufficient_stats(X, resp, P.means), P.means, "fulll")
    with pytest.raises(ValueError, match="unknown covariance_type"):
        gmm_jax.n_parameters("xx", 2, 3)


def test_metrics_check_label_arrays():
    assert gmm_jax.matched_accuracy(np.r_[0, 1, 1], np.r_[1, 0, 0]) == 1.0
    with pytest.raises(ValueError, match=r"same length, got shapes \(3,\) and \(2,\)"):
        gmm_jax.matched_accuracy(np.r_[0, 1, 1], np.r_[1, 0])
    with pytest.raises(ValueError, match="pred must be non-negative integers"):
        gmm_jax.matched_accuracy(np.r_[0, 1, 1], np.r_[1.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="labels must be non-negative integers"):
        gmm_jax.component_to_class(np.r_[0, -1, 1], np.r_[1, 0, 0])


def test_streaming_fits_check_batches_and_flag_their_results():
    from gmm_jax.stream import fit_online, fit_stream

    batches = [X[:20], X[20:]]
    res = fit_stream(batches, P, max_iter=300, tol=1e-4)
    assert res.finite and res.converged and res.n_iter == res.trace.shape[0] and np.all(np.diff(res.trace) > -1e-6)
    bad = np.where(np.arange(20)[:, None] == 7, np.nan, X[20:])
    with pytest.raises(ValueError, match=r"batch 1 contains NaN or infinity \(first at row 7, column 0\)"):
        fit_stream([X[:20], bad], P)
    with pytest.raises(ValueError, match="batch 1 has 2 features, but the initial parameters have 3"):
        fit_stream([X[:20], X[20:, :2]], P)
    with pytest.raises(ValueError, match="batch 0 must be 2-D"):
        fit_stream([X[0]], P)
    with pytest.raises(ValueError, match=r"init_params.prec_chol for covariance_type='diag' must have shape"):
        fit_stream(batches, P, covariance_type="diag")
    with pytest.raises(ValueError, match="max_iter must be an integer >= 1"):
        fit_stream(batches, P, max_iter=0)
    with pytest.raises(ValueError, match="init_params must be a GMMParams"):
        fit_online(batches, tuple(P))
    with pytest.raises(ValueError, match=r"batch 1 contains NaN or infinity"):
        fit_online([X[:20], bad], P)
    online = fit_online(batches, P)
    assert online.finite and online.trace.shape == (2,)
    # a degenerate M-step (a point mass without regularisation): stopped and flagged, the last finite params kept
    deg = fit_stream([np.ones((10, 3), np.float32)], P, reg_covar=0.0)
    assert not deg.finite and not deg.converged and deg.n_iter == 0
    assert all(np.all(np.isfinite(np.asarray(a))) for a in deg.params)


def test_gmm_vae_checks_training_data_and_generation_requests():
    from flax import nnx

    from gmm_jax.vae import GMMVAE, train

    m = GMMVAE(3, 2, 2, hidden=(8,), rngs=nnx.Rngs(0))  # bernoulli
    with pytest.raises(ValueError, match=r"bernoulli likelihood needs data in \[0, 1\]"):
        train(m, jax.random.key(0), X, pretrain_epochs=0, epochs=1)
    with pytest.raises(ValueError, match="X has 2 features, but the model was built for n_features=3"):
        train(m, jax.random.key(0), np.abs(X[:, :2]) / 10, pretrain_epochs=0, epochs=1)
    with pytest.raises(ValueError, match="X contains NaN"):
        train(m, jax.random.key(0), np.full((5, 3), np.nan), pretrain_epochs=0, epochs=1)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        train(m, jax.random.key(0), np.abs(X) / 10, batch_size=0)
    assert m.generate(jax.random.key(0), 1, 4).shape == (4, 3)
    with pytest.raises(ValueError, match=r"component must be in \[0, 2\)"):
        m.generate(jax.random.key(0), 2, 4)
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        m.generate(jax.random.key(0), 0, 0)
