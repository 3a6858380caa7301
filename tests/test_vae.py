"""GMM-VAE: analytic ELBO terms against Monte Carlo, q(c|x), training on a synthetic problem, generation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from sklearn.metrics import adjusted_rand_score

from gmm_jax.vae import GMMVAE, loss_fn, train


def _synthetic(seed=0, n=600, d=10):
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(3, d)) * 3
    y = rng.integers(0, 3, n)
    return (c[y] + rng.normal(size=(n, d)) * 0.5).astype(np.float32), y


def test_analytic_component_terms_equal_monte_carlo():
    """H[q(z|x)] + logsumexp_c a_c equals the MC estimate of E_q[sum_c g_c (log pi_c N(z|c) - log g_c) - log q(z)]."""
    m = GMMVAE(6, 3, 4, hidden=(8,), likelihood="gaussian", rngs=nnx.Rngs(0))
    rng = np.random.default_rng(1)
    m.logits[...] = jnp.asarray(rng.normal(size=4), jnp.float32)
    m.prior_means[...] = jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)
    m.prior_logvars[...] = jnp.asarray(rng.normal(size=(4, 3)) * 0.3, jnp.float32)
    mu = jnp.asarray(rng.normal(size=3))  # float64 (x64 is on in the tests)
    lv = jnp.asarray(rng.normal(size=3) * 0.3)
    a = m.component_scores(mu, lv).astype(jnp.float64)
    analytic = 0.5 * jnp.sum(jnp.log(2 * jnp.pi * jnp.e) + lv) + jax.nn.logsumexp(a)
    gamma = jax.nn.softmax(a)
    n = 400_000
    z = mu + jnp.exp(0.5 * lv) * jax.random.normal(jax.random.key(0), (n, 3), jnp.float64)
    pm, plv = m.prior_means[...].astype(jnp.float64), m.prior_logvars[...].astype(jnp.float64)
    log_n = -0.5 * jnp.sum(jnp.log(2 * jnp.pi) + plv + jnp.square(z[:, None, :] - pm) / jnp.exp(plv), axis=-1)
    log_pi = jax.nn.log_softmax(m.logits[...].astype(jnp.float64))
    log_q = -0.5 * jnp.sum(jnp.log(2 * jnp.pi) + lv + jnp.square(z - mu) / jnp.exp(lv), axis=-1)
    samples = jnp.sum(gamma * (log_pi + log_n - jnp.log(gamma)), axis=-1) - log_q
    se = float(jnp.std(samples) / jnp.sqrt(n))
    assert abs(float(jnp.mean(samples)) - float(analytic)) < 5 * se
    assert se < 1e-2  # the bound is tight enough to catch a wrong term


def test_cluster_proba_sums_to_one_and_loss_differentiable():
    X, _ = _synthetic()
    m = GMMVAE(10, 2, 3, hidden=(16,), likelihood="gaussian", rngs=nnx.Rngs(0))
    q = m.cluster_proba(jnp.asarray(X[:50]))
    np.testing.assert_allclose(np.asarray(q).sum(1), 1.0, rtol=1e-5)
    graphdef, state = nnx.split(m)
    g = jax.jit(jax.grad(loss_fn, argnums=1), static_argnums=0)(graphdef, state, jax.random.key(0), jnp.asarray(X[:50]))
    leaves = jax.tree.leaves(g)
    assert all(bool(jnp.all(jnp.isfinite(v))) for v in leaves) and any(float(jnp.abs(v).max()) > 0 for v in leaves)


def test_training_increases_elbo_and_recovers_clusters():
    X, y = _synthetic()
    m = GMMVAE(10, 2, 3, hidden=(32,), likelihood="gaussian", rngs=nnx.Rngs(0))
    Xj = jnp.asarray(X)
    before = float(jnp.mean(m.elbo(jax.random.key(5), Xj)))
    logs = train(m, jax.random.key(1), X, pretrain_epochs=10, epochs=20, batch_size=64, log_every=5)
    after = float(jnp.mean(m.elbo(jax.random.key(5), Xj)))
    assert after > before
    assert logs[-1].nonempty == 3 and logs[-1].phase == "elbo"
    pred = np.asarray(jnp.argmax(m.cluster_proba(Xj), axis=1))
    assert adjusted_rand_score(y, pred) >= 0.9


def test_generation_is_deterministic_with_right_shapes():
    m = GMMVAE(10, 2, 3, hidden=(16,), rngs=nnx.Rngs(0))
    a = m.generate(jax.random.key(3), 1, 5)
    b = m.generate(jax.random.key(3), 1, 5)
    assert a.shape == (5, 10)
    np.testing.assert_array_equal(a, b)
    assert m.generate(jax.random.key(3), jnp.arange(3), 4).shape == (3, 4, 10)
    assert float(a.min()) >= 0 and float(a.max()) <= 1  # Bernoulli means
    from gmm_jax.vae import interpolate

    path = interpolate(m, 0, 2, 5)  # decoded means from component 0's mean to component 2's
    assert path.shape == (5, 10)
    np.testing.assert_allclose(path[0], m.mean_image(m.prior_means[...][0]), rtol=1e-6)
    np.testing.assert_allclose(path[-1], m.mean_image(m.prior_means[...][2]), rtol=1e-6)
    np.testing.assert_allclose(path[2], m.mean_image(m.prior_means[...][jnp.array([0, 2])].mean(0)), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="component"):
        interpolate(m, 0, 3)


def test_labels_in_the_elbo_and_the_supervised_prior_at_initialisation():
    """A labelled point's ELBO uses a_y instead of logsumexp_c a_c (same reparameterised sample); all -1 is the
    unlabelled ELBO; with every point labelled the prior's EM initialisation is the supervised MLE of the codes
    (fit_supervised on the latent means, diag, reg_covar 1e-4)."""
    import gmm_jax

    X, y = _synthetic(seed=3, n=240)
    m = GMMVAE(10, 2, 3, hidden=(16,), likelihood="gaussian", rngs=nnx.Rngs(0))
    x = jnp.asarray(X[:20])
    key = jax.random.key(5)
    lab = jnp.asarray(y[:20], jnp.int32)
    mu, lv = m.encode(x)
    a = m.component_scores(mu, lv)
    diff = m.elbo(key, x, lab) - m.elbo(key, x)
    np.testing.assert_allclose(diff, a[jnp.arange(20), lab] - jax.nn.logsumexp(a, axis=1), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(m.elbo(key, x, jnp.full((20,), -1)), m.elbo(key, x))
    train(m, jax.random.key(1), X, labels=y, pretrain_epochs=2, epochs=0, batch_size=64)
    codes, _ = m.encode(jnp.asarray(X))
    sup = gmm_jax.fit_supervised(codes, y, 3, "diag", reg_covar=1e-4)
    np.testing.assert_allclose(m.prior_means[...], sup.means, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(m.logits[...], sup.log_weights, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(jnp.exp(-m.prior_logvars[...]), jnp.square(sup.prec_chol), rtol=1e-3)


def test_semi_supervised_training_names_the_components_and_the_epoch_is_one_program():
    """Half the labels: after training, component c is class c for the labelled and the unlabelled points alike.
    One epoch of train_epoch equals the Python loop of train_step over the same batches and keys."""
    import optax

    from gmm_jax.vae import train_epoch, train_step

    X, y = _synthetic(seed=4, n=300)
    labels = np.where(np.arange(300) % 2 == 0, y, -1)
    m = GMMVAE(10, 2, 3, hidden=(16,), likelihood="gaussian", rngs=nnx.Rngs(1))
    train(m, jax.random.key(2), X, labels=labels, pretrain_epochs=15, epochs=15, batch_size=50, log_every=15)
    pred = np.asarray(jnp.argmax(m.cluster_proba(jnp.asarray(X)), axis=1))
    assert np.mean(pred[labels < 0] == y[labels < 0]) > 0.95 and np.mean(pred[labels >= 0] == y[labels >= 0]) > 0.95
    graphdef, state = nnx.split(m)
    tx = optax.adam(1e-3)
    Xj, lab = jnp.asarray(X), jnp.asarray(labels, jnp.int32)
    key = jax.random.key(9)
    s1, _, loss1 = train_epoch(graphdef, state, tx.init(state), key, Xj, lab, tx, 50)
    kp, ks = jax.random.split(key)
    perm = jax.random.permutation(kp, 300)[:300].reshape(6, 50)
    s2, o2 = state, tx.init(state)
    for idx, k in zip(perm, jax.random.split(ks, 6)):
        s2, o2, loss2 = train_step(graphdef, s2, o2, k, Xj[idx], tx, False, lab[idx])
    np.testing.assert_allclose(loss1, loss2, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(s1), jax.tree.leaves(s2)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_heldout_selection_early_stopping_warmup_and_exact_save_load(tmp_path):
    """With held-out data the model ends at the logged epoch of highest held-out ELBO, training stops after
    ``patience`` evaluations without improvement, KL warm-up compiles no new program per beta, train_best keeps the
    initialisation of highest held-out ELBO, and save/load round-trips every parameter bit for bit."""
    from gmm_jax.vae import heldout_elbo, optimizer, train_best, train_epoch
    from gmm_jax.vae_io import load, save

    X, _ = _synthetic(seed=5, n=300)
    Xtr, Xval = X[:60], X[240:]  # few training points: the held-out ELBO soon stops improving

    def build(rngs):
        return GMMVAE(10, 2, 3, hidden=(16,), likelihood="gaussian", rngs=rngs)

    m = build(nnx.Rngs(0))
    logs = train(m, jax.random.key(3), Xtr, pretrain_epochs=2, epochs=16, batch_size=60, log_every=1, lr=0.05,
                 X_val=Xval, patience=2, kl_warmup=4)
    scores = [lg.heldout_elbo for lg in logs if lg.phase == "elbo"]
    assert all(np.isfinite(scores)) and all(np.isnan(lg.heldout_elbo) for lg in logs if lg.phase == "pretrain")
    best = int(np.argmax(scores))
    assert len(scores) < 16 and len(scores) - 1 - best == 2  # stopped by patience, two evaluations after the best
    graphdef, state = nnx.split(m)
    assert float(heldout_elbo(graphdef, state, jnp.asarray(Xval))) == scores[best]  # ends at the best epoch
    tx = optimizer(0.05)
    n_programs = train_epoch._cache_size()
    train_epoch(graphdef, state, tx.init(state), jax.random.key(0), jnp.asarray(Xtr), None, tx, 60, pretrain=False,
                beta=jnp.float32(0.3))  # the arguments of train's ELBO epochs, another beta
    assert train_epoch._cache_size() == n_programs  # a new warm-up factor reuses the compiled epoch

    model, init_scores, best_logs = train_best(build, jax.random.key(4), Xtr, Xval, n_init=2, pretrain_epochs=2,
                                               epochs=3, batch_size=60, log_every=1)
    graphdef, state = nnx.split(model)
    assert len(init_scores) == 2 and float(heldout_elbo(graphdef, state, jnp.asarray(Xval))) == max(init_scores)
    assert best_logs[-1].phase == "elbo"

    save(model, tmp_path / "vae.npz")
    loaded = load(tmp_path / "vae.npz")
    a, b = nnx.to_flat_state(nnx.state(model)), nnx.to_flat_state(nnx.state(loaded))
    assert [p for p, _ in a] == [p for p, _ in b]
    for (_, u), (_, v) in zip(a, b):
        assert u.get_value().dtype == v.get_value().dtype
        np.testing.assert_array_equal(u.get_value(), v.get_value())
    np.testing.assert_array_equal(loaded.cluster_proba(jnp.asarray(Xval)), model.cluster_proba(jnp.asarray(Xval)))
    assert loaded.likelihood == "gaussian" and loaded.hidden == (16,)
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="not a GMM-VAE"):
        load(tmp_path / "other.npz")


def test_continuous_bernoulli_is_normalised_with_the_stated_mean():
    """exp(log C(eta) - BCE(eta, x)) integrates to 1 over [0, 1] and its mean is continuous_bernoulli_mean, for
    logits near 0 (the series branch) and far from it (float64, SciPy quadrature); the model's mean image lies in
    [0, 1] and its log-likelihood is the sum of those log-densities."""
    import optax
    from scipy import integrate

    from gmm_jax.vae import continuous_bernoulli_log_norm, continuous_bernoulli_mean

    for eta in (-25.0, -2.0, -0.003, 0.0, 0.008, 0.6, 7.0):
        e = jnp.float64(eta)

        def density(x, e=e):
            return float(jnp.exp(continuous_bernoulli_log_norm(e) - optax.sigmoid_binary_cross_entropy(e, x)))

        z = integrate.quad(density, 0.0, 1.0, epsabs=1e-12, epsrel=1e-12)[0]
        mean = integrate.quad(lambda x: x * density(x), 0.0, 1.0, epsabs=1e-12, epsrel=1e-12)[0]
        assert abs(z - 1.0) < 1e-7, (eta, z)
        assert abs(mean - float(continuous_bernoulli_mean(e))) < 1e-7, (eta, mean)
    m = GMMVAE(10, 2, 3, hidden=(16,), likelihood="continuous_bernoulli", rngs=nnx.Rngs(0))
    img = m.generate(jax.random.key(0), 1, 6)
    assert float(img.min()) >= 0 and float(img.max()) <= 1
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(4, 10)), jnp.float32)
    out = m.decode(m.encode(x)[0])
    expected = jnp.sum(continuous_bernoulli_log_norm(out) - optax.sigmoid_binary_cross_entropy(out, x), axis=-1)
    np.testing.assert_allclose(m.log_likelihood(x, out), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="likelihood"):
        GMMVAE(10, 2, 3, likelihood="poisson", rngs=nnx.Rngs(0))
