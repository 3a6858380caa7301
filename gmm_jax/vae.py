"""A Gaussian-mixture VAE (VaDE-style) as a ``flax.nnx`` module, with a pure loss and a jitted training step.

Model:  c ~ Cat(softmax(logits)),  z | c ~ N(mu_c, diag(exp(logvar_c))),  x | z ~ decoder (Bernoulli or Gaussian).
Encoder: q(z | x) = N(m(x), diag(exp(s(x)))).  With the mean-field q(z, c | x) = q(z | x) q(c | x), the optimal
q(c | x) for that bound is gamma_c ∝ pi_c exp(E_q log N(z | mu_c, sigma_c^2)), and the component sum collapses to a
log-sum-exp (the expectation over c is exact, log pi counted once):

    ELBO(x) = E_q(z|x)[log p(x | z)] + H[q(z | x)] + logsumexp_c( log pi_c + E_q(z|x)[log N(z | mu_c, sigma_c^2)] )

    E_q log N(z | mu_c, s_c^2) = -1/2 sum_l [log 2 pi + log s_cl^2 + (v_l + (m_l - mu_cl)^2) / s_cl^2]
    H[q] = 1/2 sum_l [log 2 pi e + log v_l]

Only the reconstruction term is estimated (one reparameterised sample); the rest is analytic.  Training follows the
known recipe against collapse: autoencoder pre-training, then the prior initialised by gmm_jax's own EM on the
latent means, then joint ELBO training; the number of non-empty clusters and the prior's entropy are logged.
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from gmm_jax.density import known_labels


class GMMVAE(nnx.Module):
    """VaDE-style GMM-VAE.

    Args:
      n_features: D (input size).
      n_latent: L.
      n_components: K.
      hidden: hidden layer sizes of the encoder (the decoder mirrors them).
      likelihood: 'bernoulli' (data in [0, 1]) or 'gaussian' (a learned variance per feature).
      rngs: ``nnx.Rngs``.
    """

    def __init__(self, n_features: int, n_latent: int, n_components: int, hidden=(256, 128),
                 likelihood: str = "bernoulli", *, rngs: nnx.Rngs):
        if likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(f"unknown likelihood {likelihood!r}; expected 'bernoulli' or 'gaussian'")
        self.likelihood = likelihood
        sizes = (n_features,) + tuple(hidden)
        self.enc = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])
        self.enc_mean = nnx.Linear(sizes[-1], n_latent, rngs=rngs)
        self.enc_logvar = nnx.Linear(sizes[-1], n_latent, rngs=rngs)
        dsizes = (n_latent,) + tuple(reversed(hidden))
        self.dec = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(dsizes[:-1], dsizes[1:])])
        self.dec_out = nnx.Linear(dsizes[-1], n_features, rngs=rngs)
        self.dec_logvar = nnx.Param(jnp.zeros((n_features,)))  # used by the gaussian likelihood
        self.logits = nnx.Param(jnp.zeros((n_components,)))
        self.prior_means = nnx.Param(jax.random.normal(rngs.params(), (n_components, n_latent)))
        self.prior_logvars = nnx.Param(jnp.zeros((n_components, n_latent)))

    def encode(self, x):
        h = x
        for layer in self.enc:
            h = nnx.relu(layer(h))
        return self.enc_mean(h), jnp.clip(self.enc_logvar(h), -12.0, 8.0)

    def decode(self, z):
        """Decoder output: Bernoulli logits or Gaussian means, (..., D)."""
        h = z
        for layer in self.dec:
            h = nnx.relu(layer(h))
        return self.dec_out(h)

    def mean_image(self, z):
        out = self.decode(z)
        return jax.nn.sigmoid(out) if self.likelihood == "bernoulli" else out

    def component_scores(self, m, logvar):
        """a_c = log pi_c + E_q(z|x) log N(z | mu_c, sigma_c^2), shape (..., K)."""
        mu_c, lv_c = self.prior_means[...], self.prior_logvars[...]
        v = jnp.exp(logvar)[..., None, :]
        quad = (v + jnp.square(m[..., None, :] - mu_c)) / jnp.exp(lv_c)
        e_log_n = -0.5 * jnp.sum(math.log(2 * math.pi) + lv_c + quad, axis=-1)
        return jax.nn.log_softmax(self.logits[...]) + e_log_n

    def log_likelihood(self, x, out):
        if self.likelihood == "bernoulli":
            return -jnp.sum(optax.sigmoid_binary_cross_entropy(out, x), axis=-1)
        lv = jnp.clip(self.dec_logvar[...], -9.0, 4.0)
        return -0.5 * jnp.sum(jnp.square(x - out) * jnp.exp(-lv) + lv + math.log(2 * math.pi), axis=-1)

    def elbo(self, key, x, labels=None):
        """Per-point ELBO (n,) with one reparameterised sample for the reconstruction term.  ``labels`` (n,) (-1:
        unknown): a labelled point's q(c | x) is one-hot at its label, so its last term is ``a_y`` instead of
        ``logsumexp_c a_c`` (the engine's :func:`gmm_jax.density.known_labels`)."""
        m, logvar = self.encode(x)
        z = m + jnp.exp(0.5 * logvar) * jax.random.normal(key, m.shape, m.dtype)
        rec = self.log_likelihood(x, self.decode(z))
        entropy = 0.5 * jnp.sum(math.log(2 * math.pi * math.e) + logvar, axis=-1)
        scores = self.component_scores(m, logvar)
        if labels is not None:
            scores = known_labels(scores, labels, 1)
        return rec + entropy + jax.nn.logsumexp(scores, axis=-1)

    def cluster_proba(self, x):
        """q(c | x) (n, K): rows sum to one."""
        m, logvar = self.encode(x)
        return jax.nn.softmax(self.component_scores(m, logvar), axis=-1)

    def generate(self, key, component, n: int, observation_noise: bool = False):
        """n points from prior component(s) ``component`` (int -> (n, D); (m,) -> (m, n, D)).

        By default the decoder's mean E[x | z] for z ~ p(z | c); with ``observation_noise`` (gaussian likelihood)
        a draw from p(x | z) itself.
        """
        from gmm_jax.validation import check_component, check_positive_int

        mu_c, lv_c = self.prior_means[...], self.prior_logvars[...]
        check_positive_int(n, "n")
        check_component(component, mu_c.shape[0])
        component = jnp.asarray(component, jnp.int32)

        def one(k, c):
            kz, kx = jax.random.split(k)
            z = mu_c[c] + jnp.exp(0.5 * lv_c[c]) * jax.random.normal(kz, (n, mu_c.shape[1]), mu_c.dtype)
            x = self.mean_image(z)
            if observation_noise and self.likelihood == "gaussian":
                sd = jnp.exp(0.5 * jnp.clip(self.dec_logvar[...], -9.0, 4.0))
                x = x + sd * jax.random.normal(kx, x.shape, x.dtype)
            return x

        if component.ndim == 0:
            return one(key, component)
        return jax.vmap(one)(jax.random.split(key, component.shape[0]), component)


def loss_fn(graphdef, state, key, x, labels=None):
    """Pure loss: mean negative ELBO per point (``labels``: see :meth:`GMMVAE.elbo`); differentiable in ``state``
    under jit/grad."""
    model = nnx.merge(graphdef, state)
    return -jnp.mean(model.elbo(key, x, labels))


def pretrain_loss_fn(graphdef, state, x):
    """Autoencoder loss (deterministic z = encoder mean)."""
    model = nnx.merge(graphdef, state)
    m, _ = model.encode(x)
    return -jnp.mean(model.log_likelihood(x, model.decode(m)))


class TrainLog(NamedTuple):
    step: int
    phase: str
    loss: float
    nonempty: int
    prior_entropy: float


def train_step(graphdef, state, opt_state, key, x, tx, pretrain=False, labels=None):
    """One optax step on the negative ELBO (or the autoencoder loss when ``pretrain``)."""
    if pretrain:
        loss, grads = jax.value_and_grad(pretrain_loss_fn, argnums=1)(graphdef, state, x)
    else:
        loss, grads = jax.value_and_grad(loss_fn, argnums=1)(graphdef, state, key, x, labels)
    updates, opt_state = tx.update(grads, opt_state, state)
    return optax.apply_updates(state, updates), opt_state, loss


@partial(jax.jit, static_argnames=("graphdef", "tx", "batch_size", "pretrain"))
def train_epoch(graphdef, state, opt_state, key, X, labels, tx, batch_size: int, pretrain=False):
    """One epoch as one compiled program: a random permutation, then :func:`train_step` on each full batch by
    ``lax.scan`` (the last ``n mod batch_size`` points of the permutation sit the epoch out).  Returns (state,
    optimiser state, the last batch's loss)."""
    kp, ks = jax.random.split(key)
    steps = max(1, X.shape[0] // batch_size)
    perm = jax.random.permutation(kp, X.shape[0])[:steps * batch_size].reshape(steps, -1)

    def body(carry, inputs):
        state, opt_state = carry
        idx, k = inputs
        lab = None if labels is None else labels[idx]
        state, opt_state, loss = train_step(graphdef, state, opt_state, k, X[idx], tx, pretrain, lab)
        return (state, opt_state), loss

    (state, opt_state), losses = jax.lax.scan(body, (state, opt_state), (perm, jax.random.split(ks, steps)))
    return state, opt_state, losses[-1]


def _diagnostics(model, X):
    q = model.cluster_proba(X)
    counts = jnp.bincount(jnp.argmax(q, axis=1), length=q.shape[1])
    pi = jax.nn.softmax(model.logits[...])
    return int(jnp.sum(counts > 0)), float(-jnp.sum(pi * jnp.log(pi)))


def train(model: GMMVAE, key, X, labels=None, *, pretrain_epochs=20, epochs=60, batch_size=128, lr=1e-3,
          gmm_init=True, log_every=10, verbose=False):
    """Fit the GMM-VAE in place: autoencoder pre-training, prior from gmm_jax EM on latent means, ELBO training;
    every epoch is one compiled program (:func:`train_epoch`).

    ``labels`` (n,) (class = component; -1: unknown): labelled points keep q(c | x) one-hot at their label in the
    ELBO, and the prior's EM initialisation is ``gmm_jax.fit(..., labels=labels)`` on the latent means (every point
    labelled: the supervised MLE of the codes, :func:`gmm_jax.fit_supervised`); without labels, as before.

    Returns:
      list of :class:`TrainLog` (loss, number of non-empty clusters, prior entropy), so collapse is visible.

    Raises:
      ValueError: X not 2-D, NaN, a feature count other than the model's, data outside [0, 1] for the bernoulli
      likelihood, fewer points than components, non-integer or negative epoch counts.
    """
    from gmm_jax.loop import fit as gmm_fit
    from gmm_jax.params import covariances_from_prec_chol
    from gmm_jax.validation import as_data, check_labels, check_positive_int

    X = jnp.asarray(as_data(X), jnp.float32)
    if labels is not None:
        labels = check_labels(labels, X.shape[0], model.logits[...].shape[0], unknown=True)
    d = (model.enc[0] if len(model.enc) else model.enc_mean).in_features
    if X.shape[1] != d:
        raise ValueError(f"X has {X.shape[1]} features, but the model was built for n_features={d}")
    if model.likelihood == "bernoulli" and not bool(jnp.all((X >= 0) & (X <= 1))):
        raise ValueError(f"the bernoulli likelihood needs data in [0, 1], got values from {float(jnp.min(X))} to "
                         f"{float(jnp.max(X))} (scale the data, or build the model with likelihood='gaussian')")
    for name, v, lo in (("pretrain_epochs", pretrain_epochs, 0), ("epochs", epochs, 0), ("batch_size", batch_size, 1),
                        ("log_every", log_every, 1)):
        check_positive_int(v, name, lo)
    k_components = model.logits[...].shape[0]
    if gmm_init and X.shape[0] < k_components:
        raise ValueError(f"too few points: n_samples={X.shape[0]} must be >= n_components={k_components}")
    n = X.shape[0]
    tx = optax.adam(lr)
    graphdef, state = nnx.split(model)
    logs = []
    bs = min(batch_size, n)

    def run(phase, n_epochs, state, key):
        opt_state = tx.init(state)
        for epoch in range(n_epochs):
            key, ke = jax.random.split(key)
            state, opt_state, loss = train_epoch(graphdef, state, opt_state, ke, X, labels, tx, bs,
                                                 pretrain=phase == "pretrain")
            if (epoch + 1) % log_every == 0 or epoch == n_epochs - 1:
                nnx.update(model, state)
                ne, ent = _diagnostics(model, X)
                logs.append(TrainLog(epoch + 1, phase, float(loss), ne, ent))
                if verbose:
                    print(f"{phase} epoch {epoch + 1}: loss {float(loss):.3f}, non-empty clusters {ne}, "
                          f"prior entropy {ent:.3f}")
        return state, key

    if pretrain_epochs:
        state, key = run("pretrain", pretrain_epochs, state, key)
        nnx.update(model, state)
    if gmm_init:
        m, _ = model.encode(X)
        key, kg = jax.random.split(key)
        res = gmm_fit(kg, m, k_components, covariance_type="diag", n_restarts=4, reg_covar=1e-4, labels=labels)
        model.logits[...] = res.params.log_weights
        model.prior_means[...] = res.params.means
        model.prior_logvars[...] = jnp.log(covariances_from_prec_chol(res.params.prec_chol, "diag"))
        graphdef, state = nnx.split(model)
    state, key = run("elbo", epochs, state, key)
    nnx.update(model, state)
    return logs
