"""GMM-VAE: analytic ELBO terms against Monte Carlo, q(c|x), training on a synthetic problem, generation."""

import jax
import jax.numpy as jnp
import numpy as np
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
