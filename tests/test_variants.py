"""Variants of the one engine: known labels for some points (semi-supervised EM) and parameter blocks held fixed.

Oracles: the whole-array math layer (``gmm_jax.em``) with the labelled rows' responsibilities set to one-hot by
hand, ``fit_supervised`` (every point labelled) and the plain fit (no point labelled); the constrained M-steps are
checked against optax ascent in ``tests/test_verify.py``.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.special import logsumexp

import gmm_jax
from gmm_jax import em
from gmm_jax.config import Config
from gmm_jax.engine import em_pass
from gmm_jax.forms import data_extent
from gmm_jax.verify_variants import semi_supervised_objective
from tests.conftest import make_blobs, random_params

CFG = Config()


def reference_pass(X, w, p, labels, covariance_type):
    """Statistics about ``p.means`` and the weighted objective, from the math layer with labelled rows one-hot."""
    log_resp, log_norm = em.e_step(X, p, covariance_type)
    lj = log_resp + log_norm[:, None]
    known = labels >= 0
    resp = jnp.where(known[:, None], jax.nn.one_hot(labels, p.means.shape[0], dtype=X.dtype), jnp.exp(log_resp))
    own = jnp.take_along_axis(lj, jnp.maximum(labels, 0)[:, None], axis=1)[:, 0]
    ll = jnp.sum(w * jnp.where(known, own, logsumexp(lj, axis=1)))
    return em.sufficient_stats(X, resp, p.means, covariance_type, w), ll


@pytest.mark.parametrize("covariance_type,d", [("full", 2), ("full", 5), ("tied", 4), ("diag", 4), ("spherical", 4)])
def test_every_form_of_the_pass_applies_the_labels(covariance_type, d):
    """The fused pass with labels (centred, small-D and product forms; blocks with a shifted last block) equals the
    math layer with the labelled rows' responsibilities one-hot and their log p(x, y) in the objective."""
    rng = np.random.default_rng(d)
    k, n = 4, 203
    p, _ = random_params(rng, k, d, covariance_type)
    X = jnp.asarray(rng.normal(size=(n, d)) * 2 + 0.5)
    w = jnp.asarray(rng.uniform(0.2, 2.0, n))
    labels = jnp.asarray(np.where(rng.uniform(size=n) < 0.4, rng.integers(0, k, n), -1), jnp.int32)
    shift = jnp.asarray(rng.normal(size=d))
    ps = p._replace(means=p.means - shift)
    ref, ref_ll = reference_pass(X, w, p, labels, covariance_type)
    run = jax.jit(lambda X, w, p, lab, e: em_pass(X, w, shift, p, covariance_type, 64, CFG, extent=e, labels=lab))
    extents = [None] + ([data_extent(X, w, shift, 64)] if covariance_type != "full" or d > 3 else [])
    for extent in extents:  # the reference form (or small-D), then the product form
        stats, ll = run(X, w, ps, labels, extent)
        np.testing.assert_allclose(float(ll), float(ref_ll), rtol=1e-12)
        for a, b in zip(stats, ref):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-9, atol=1e-9)
    counts, ll = jax.jit(lambda X, w, p, lab: em_pass(X, w, shift, p, covariance_type, 64, CFG, False, labels=lab))(
        X, w, ps, labels)
    np.testing.assert_allclose(np.asarray(counts), np.asarray(ref.nk), rtol=1e-10)


@pytest.mark.parametrize("covariance_type", ["full", "spherical"])  # the labels enter before the type's M-step
def test_every_point_labelled_is_the_supervised_fit_and_none_is_the_plain_fit(covariance_type):
    X, y = make_blobs(seed=3, n_per=40, d=2)
    sup = gmm_jax.fit_supervised(X, y, 3, covariance_type, reg_covar=1e-6)
    kw = dict(covariance_type=covariance_type, n_restarts=2, tol=1e-12)  # one compiled program for both fits
    res = gmm_jax.fit(jax.random.key(0), X, 3, labels=y, **kw)
    assert bool(np.all(res.converged)) and int(np.max(res.n_iter)) <= 3
    chex.assert_trees_all_close(res.params, sup, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(res.counts[0], np.bincount(y), rtol=1e-12)
    none = gmm_jax.fit(jax.random.key(0), X, 3, labels=np.full(len(y), -1), **kw)
    plain = gmm_jax.fit(jax.random.key(0), X, 3, **kw)
    chex.assert_trees_all_close(none.all_params, plain.all_params, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(none.n_iter, plain.n_iter)


def test_semi_supervised_fit_climbs_its_objective_and_keeps_the_labels():
    """Some labels: the trace is the semi-supervised objective (mean per point) and never decreases; labelled
    components start at their labelled points' mean; at the end every labelled point's component is its label
    (responsibility exactly 1 in the fit) and the counts include the labelled points."""
    X, y = make_blobs(seed=5, n_per=60, d=3, sep=3.0)
    rng = np.random.default_rng(1)
    labels = np.where(rng.uniform(size=len(y)) < 0.2, y, -1)
    res = gmm_jax.fit(jax.random.key(1), X, 3, labels=labels, tol=0.0, max_iter=60, n_restarts=2)
    trace = np.asarray(res.trace)
    assert np.all(np.diff(trace, axis=1) >= -1e-12 * np.abs(trace[:, 1:]))
    obj = semi_supervised_objective(jnp.asarray(X), res.params, jnp.asarray(labels)) / len(y)
    np.testing.assert_allclose(res.log_likelihood[res.best], obj, rtol=1e-12)
    start = gmm_jax.fit(jax.random.key(1), X, 3, labels=labels, max_iter=0)
    for j in range(3):
        np.testing.assert_allclose(start.params.means[j], X[labels == j].mean(0), rtol=1e-12)
    # the labels decide: on these overlapping blobs the labelled fit recovers the classes better than the plain one
    acc = gmm_jax.matched_accuracy(y, np.asarray(gmm_jax.predict(X, res.params)))
    assert np.mean(np.asarray(gmm_jax.predict(X, res.params)) == y) == acc  # components are the classes themselves
    assert acc > 0.9


def test_fixed_blocks_stay_and_the_others_are_their_constrained_updates():
    """``fixed``: those blocks equal the initial parameters bit for bit; each iteration's free blocks are
    ``constrained_m_step`` of the math layer's statistics; the log-likelihood never decreases."""
    X, _ = make_blobs(seed=7, n_per=50, d=2)
    init = gmm_jax.initialize(jax.random.key(2), X, 3, covariance_type="diag")
    for fixed in (("means",), ("weights",), ("covariances",), ("weights", "means")):
        res = gmm_jax.fit(jax.random.key(2), X, 3, covariance_type="diag", init_params=init, fixed=fixed, tol=0.0,
                          max_iter=25)
        for name, a, b in zip(("weights", "means", "covariances"), res.params, init):
            if name in fixed:
                np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-14)
        trace = np.asarray(res.trace[0])
        assert np.all(np.diff(trace) >= -1e-12 * np.abs(trace[1:])), fixed
    fixed = ("weights", "means")  # one iteration: the constrained update of the math layer's statistics
    one = gmm_jax.fit(jax.random.key(2), X, 3, covariance_type="diag", init_params=init, fixed=fixed, max_iter=1)
    q = jnp.exp(em.e_step(jnp.asarray(X), init, "diag")[0])
    ref = gmm_jax.stats.constrained_m_step(em.sufficient_stats(jnp.asarray(X), q, init.means, "diag"), init, "diag",
                                           1e-6, fixed)
    chex.assert_trees_all_close(one.params, ref, rtol=1e-10, atol=1e-12)
    free = gmm_jax.fit(jax.random.key(2), X, 3, covariance_type="diag", init_params=init, tol=0.0, max_iter=25)
    assert float(free.log_likelihood[0]) > float(res.log_likelihood[0])  # fixing costs likelihood


def test_fixed_means_covariances_are_second_moments_about_them():
    """Means fixed (full): the covariance update is sum_i q_ik (x_i - mu_k)(x_i - mu_k)^T / N_k about the fixed
    means (not about the responsibility-weighted means)."""
    X, _ = make_blobs(seed=8, n_per=40, d=2)
    p, _ = random_params(np.random.default_rng(0), 3, 2, "full")
    res = gmm_jax.fit(jax.random.key(0), X, 3, init_params=p, fixed="means", max_iter=1, reg_covar=0.0)
    q = np.exp(np.asarray(em.e_step(jnp.asarray(X), p, "full")[0]))
    for j in range(3):
        xc = X - np.asarray(p.means[j])
        cov = (q[:, j, None] * xc).T @ xc / q[:, j].sum()
        np.testing.assert_allclose(gmm_jax.covariances_from_prec_chol(res.params.prec_chol, "full")[j], cov,
                                   rtol=1e-10)


def test_labels_and_fixed_are_checked():
    X, y = make_blobs(seed=3, n_per=20, d=2)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="labels must have shape"):
        gmm_jax.fit(key, X, 3, labels=y[:-1])
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\) or -1"):
        gmm_jax.fit(key, X, 3, labels=np.where(y == 0, -2, y))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\) or -1"):
        gmm_jax.fit(key, X, 3, labels=y + 1)
    with pytest.raises(ValueError, match="labels must be integers"):
        gmm_jax.fit(key, X, 3, labels=y + 0.5)
    with pytest.raises(ValueError, match="fixed must name parameter blocks"):
        gmm_jax.fit(key, X, 3, fixed=("mean",))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\), got"):  # no unknowns in the supervised fit
        gmm_jax.fit_supervised(X, np.where(y == 0, -1, y), 3)


def test_greedy_matching_of_classes_to_components():
    """No labelled rows: the identity (the fit without labels is unchanged); otherwise the component holding most
    of each class, the largest scores first."""
    from gmm_jax.initialization import greedy_matching

    np.testing.assert_array_equal(greedy_matching(jnp.zeros((4, 4))), np.arange(4))
    perm = np.array([2, 0, 3, 1])
    scores = np.eye(4)[perm] * np.array([[5.0], [4.0], [3.0], [2.0]]) + 0.1
    np.testing.assert_array_equal(greedy_matching(jnp.asarray(scores)), perm)
    # class 1 has no labelled rows: it gets the component left over
    scores = np.array([[0.0, 3.0, 1.0], [0.0, 0.0, 0.0], [2.0, 2.5, 0.0]])
    np.testing.assert_array_equal(greedy_matching(jnp.asarray(scores)), [1, 2, 0])
