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
latent means, then joint ELBO training; the number of non-empty clusters and the prior's entropy are logged, and
with held-out data the held-out ELBO selects the epoch (early stopping) and, in :func:`train_best`, the
initialisation.  :func:`gmm_jax.vae_io.save` / :func:`gmm_jax.vae_io.load` round-trip a trained model exactly.

Likelihoods: 'bernoulli' (the classic choice for [0, 1] data, although grey levels are not binary), 'continuous_bernoulli'
(the normalised density on [0, 1] with the same logits, Loaiza-Ganem & Cunningham 2019: log C(eta) =
log(eta / tanh(eta / 2)) is added per pixel) and 'gaussian' (a learned variance per feature).
"""

from __future__ import annotations

import functools
import math
import sys
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from gmm_jax.config import to_device
from gmm_jax.density import known_labels


class GMMVAE(nnx.Module):
    """VaDE-style GMM-VAE.

    Args:
      n_features: D (input size).
      n_latent: L.
      n_components: K.
      hidden: hidden layer sizes of the encoder (the decoder mirrors them).
      likelihood: 'bernoulli' or 'continuous_bernoulli' (data in [0, 1]), or 'gaussian' (a learned variance per
        feature).
      rngs: ``nnx.Rngs``.
    """

    def __init__(self, n_features: int, n_latent: int, n_components: int, hidden=(256, 128),
                 likelihood: str = "bernoulli", *, rngs: nnx.Rngs):
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {likelihood!r}; expected one of {', '.join(LIKELIHOODS)}")
        self.likelihood = likelihood
        self.n_features, self.n_latent, self.n_components = int(n_features), int(n_latent), int(n_components)
        self.hidden = tuple(int(h) for h in hidden)
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
        """E[x | z]: the decoder's mean (for the continuous Bernoulli its mean, not the sigmoid of its logits)."""
        out = self.decode(z)
        if self.likelihood == "bernoulli":
            return jax.nn.sigmoid(out)
        return continuous_bernoulli_mean(out) if self.likelihood == "continuous_bernoulli" else out

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
        if self.likelihood == "continuous_bernoulli":
            return jnp.sum(continuous_bernoulli_log_norm(out) - optax.sigmoid_binary_cross_entropy(out, x), axis=-1)
        lv = jnp.clip(self.dec_logvar[...], -9.0, 4.0)
        return -0.5 * jnp.sum(jnp.square(x - out) * jnp.exp(-lv) + lv + math.log(2 * math.pi), axis=-1)

    def elbo(self, key, x, labels=None):
        """Per-point ELBO (n,) with one reparameterised sample for the reconstruction term.  ``labels`` (n,) (-1:
        unknown): a labelled point's q(c | x) is one-hot at its label, so its last term is ``a_y`` instead of
        ``logsumexp_c a_c`` (the engine's :func:`gmm_jax.density.known_labels`)."""
        rec, prior_terms = self.elbo_terms(key, x, labels)
        return rec + prior_terms

    def elbo_terms(self, key, x, labels=None):
        """(reconstruction term, H[q(z|x)] + the component term), each (n,): their sum is :meth:`elbo`, and the
        second is minus the KL part that KL warm-up scales."""
        m, logvar = self.encode(x)
        z = m + jnp.exp(0.5 * logvar) * jax.random.normal(key, m.shape, m.dtype)
        rec = self.log_likelihood(x, self.decode(z))
        entropy = 0.5 * jnp.sum(math.log(2 * math.pi * math.e) + logvar, axis=-1)
        scores = self.component_scores(m, logvar)
        if labels is not None:
            scores = known_labels(scores, labels, 1)
        return rec, entropy + jax.nn.logsumexp(scores, axis=-1)

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


LIKELIHOODS = ("bernoulli", "continuous_bernoulli", "gaussian")


def continuous_bernoulli_log_norm(eta):
    """log C of the continuous Bernoulli with logits ``eta``: C = eta / tanh(eta / 2) (2 at eta = 0, where the
    series log 2 + eta^2 / 12 is used)."""
    small = jnp.abs(eta) < 1e-2
    safe = jnp.where(small, 1.0, eta)
    return jnp.where(small, math.log(2.0) + jnp.square(eta) / 12.0,
                     jnp.log(jnp.abs(safe)) - jnp.log(jnp.abs(jnp.tanh(safe / 2))))


def continuous_bernoulli_mean(eta):
    """Mean of the continuous Bernoulli with logits ``eta``: 1/2 + 1/(2 tanh(eta/2)) - 1/eta (1/2 + eta/12 near 0)."""
    small = jnp.abs(eta) < 1e-2
    safe = jnp.where(small, 1.0, eta)
    return jnp.where(small, 0.5 + eta / 12.0, 0.5 + 0.5 / jnp.tanh(safe / 2) - 1.0 / safe)


def interpolate(model: GMMVAE, a: int, b: int, steps: int = 8):
    """What only a latent model shows: the decoder's mean E[x | z] along the straight line from prior component
    ``a``'s mean to component ``b``'s, ``steps`` points including both ends; (steps, D)."""
    from gmm_jax.validation import check_component, check_positive_int

    check_positive_int(steps, "steps", 2)
    for c in (a, b):
        if np.ndim(c):
            raise ValueError(f"interpolate takes two component indices, got {c!r}")
        check_component(c, model.n_components)
    mu = model.prior_means[...]
    a, b = int(a), int(b)
    t = jnp.linspace(0.0, 1.0, steps, dtype=mu.dtype)[:, None]
    return model.mean_image((1 - t) * mu[a] + t * mu[b])


def loss_fn(graphdef, state, key, x, labels=None, beta=1.0):
    """Pure loss: mean negative ELBO per point (``labels``: see :meth:`GMMVAE.elbo`), the KL part scaled by ``beta``
    (1: the ELBO; below 1 during KL warm-up); differentiable in ``state`` under jit/grad."""
    model = nnx.merge(graphdef, state)
    rec, prior_terms = model.elbo_terms(key, x, labels)
    return -jnp.mean(rec + beta * prior_terms)


def pretrain_loss_fn(graphdef, state, x):
    """Autoencoder loss (deterministic z = encoder mean)."""
    model = nnx.merge(graphdef, state)
    m, _ = model.encode(x)
    return -jnp.mean(model.log_likelihood(x, model.decode(m)))


class TrainLog(NamedTuple):
    """One logged epoch: its phase ('pretrain' or 'elbo'), the last batch's loss, the number of non-empty clusters,
    the prior's entropy and the mean held-out ELBO (NaN without held-out data or in pre-training)."""
    step: int
    phase: str
    loss: float
    nonempty: int
    prior_entropy: float
    heldout_elbo: float = float("nan")


def train_step(graphdef, state, opt_state, key, x, tx, pretrain=False, labels=None, beta=1.0):
    """One optax step on the negative ELBO (KL part scaled by ``beta``), or the autoencoder loss when ``pretrain``."""
    if pretrain:
        loss, grads = jax.value_and_grad(pretrain_loss_fn, argnums=1)(graphdef, state, x)
    else:
        loss, grads = jax.value_and_grad(loss_fn, argnums=1)(graphdef, state, key, x, labels, beta)
    updates, opt_state = tx.update(grads, opt_state, state)
    return optax.apply_updates(state, updates), opt_state, loss


@partial(jax.jit, static_argnames=("graphdef", "tx", "batch_size", "pretrain"))
def train_epoch(graphdef, state, opt_state, key, X, labels, tx, batch_size: int, pretrain=False, beta=1.0):
    """One epoch as one compiled program: a random permutation, then :func:`train_step` on each full batch by
    ``lax.scan`` (the last ``n mod batch_size`` points of the permutation sit the epoch out).  ``beta`` (traced: a
    warm-up schedule compiles once) scales the KL part.  Returns (state, optimiser state, the last batch's loss)."""
    kp, ks = jax.random.split(key)
    steps = max(1, X.shape[0] // batch_size)
    perm = jax.random.permutation(kp, X.shape[0])[:steps * batch_size].reshape(steps, -1)

    def body(carry, inputs):
        state, opt_state = carry
        idx, k = inputs
        lab = None if labels is None else labels[idx]
        state, opt_state, loss = train_step(graphdef, state, opt_state, k, X[idx], tx, pretrain, lab, beta)
        return (state, opt_state), loss

    (state, opt_state), losses = jax.lax.scan(body, (state, opt_state), (perm, jax.random.split(ks, steps)))
    return state, opt_state, losses[-1]


@partial(jax.jit, static_argnames=("graphdef",))
def heldout_elbo(graphdef, state, X):
    """Mean ELBO of held-out points (no labels), with one fixed draw per point: the same state gives the same
    value, so epochs and initialisations are compared on equal terms."""
    return jnp.mean(nnx.merge(graphdef, state).elbo(jax.random.key(0), X))


def _diagnostics(model, X):
    q = model.cluster_proba(X)
    counts = jnp.bincount(jnp.argmax(q, axis=1), length=q.shape[1])
    pi = jax.nn.softmax(model.logits[...])
    return int(jnp.sum(counts > 0)), float(-jnp.sum(pi * jnp.log(pi)))


def _checked_data(model, X, name):
    from gmm_jax.validation import as_data

    X = to_device(as_data(X, name), np.float32)
    if X.shape[1] != model.n_features:
        raise ValueError(f"{name} has {X.shape[1]} features, but the model was built for n_features={model.n_features}")
    if model.likelihood != "gaussian" and not bool(jnp.all((X >= 0) & (X <= 1))):
        raise ValueError(f"the {model.likelihood} likelihood needs data in [0, 1], got {name} values from "
                         f"{float(jnp.min(X))} to {float(jnp.max(X))} (scale the data, or build the model with "
                         "likelihood='gaussian')")
    return X


@functools.cache
def optimizer(lr: float):
    """The optax optimiser of :func:`train` (Adam) for learning rate ``lr``, one object per rate: it is a static
    argument of :func:`train_epoch`, so a new object would compile the epoch again."""
    return optax.adam(lr)


class _Best(NamedTuple):
    """Early stopping's record: the best held-out ELBO, the state that had it, evaluations since it improved."""
    score: float
    state: object
    stale: int


def train(model: GMMVAE, key, X, labels=None, *, pretrain_epochs=20, epochs=60, batch_size=128, lr=1e-3,
          gmm_init=True, log_every=10, verbose=False, X_val=None, patience=None, kl_warmup=0):
    """Fit the GMM-VAE in place: autoencoder pre-training, prior from gmm_jax EM on latent means, ELBO training;
    every epoch is one compiled program (:func:`train_epoch`).

    ``labels`` (n,) (class = component; -1: unknown): labelled points keep q(c | x) one-hot at their label in the
    ELBO, and the prior's EM initialisation is ``gmm_jax.fit(..., labels=labels)`` on the latent means (every point
    labelled: the supervised MLE of the codes, :func:`gmm_jax.fit_supervised`); without labels, as before.

    ``X_val``: held-out points; every ``log_every`` ELBO epochs their mean ELBO (:func:`heldout_elbo`) is logged and
    the model ends at the logged epoch where it was highest.  ``patience``: stop once that many held-out evaluations
    in a row brought no improvement (needs ``X_val``).  ``kl_warmup``: the KL part of the loss is scaled by
    (epoch + 1) / kl_warmup over the first ``kl_warmup`` ELBO epochs (0: none).  ``verbose``: progress on stderr.

    Returns:
      list of :class:`TrainLog` (loss, number of non-empty clusters, prior entropy, held-out ELBO), so collapse and
      over-fitting are visible.

    Raises:
      ValueError: X (or X_val) not 2-D, NaN, a feature count other than the model's, data outside [0, 1] for the
      Bernoulli likelihoods, fewer points than components, non-integer or negative epoch counts, ``patience``
      without ``X_val``.
    """
    from gmm_jax.validation import check_labels, check_positive_int

    X = _checked_data(model, X, "X")
    X_val = None if X_val is None else _checked_data(model, X_val, "X_val")
    if labels is not None:
        labels = check_labels(labels, X.shape[0], model.n_components, unknown=True)
    for name, v, lo in (("pretrain_epochs", pretrain_epochs, 0), ("epochs", epochs, 0), ("batch_size", batch_size, 1),
                        ("log_every", log_every, 1), ("kl_warmup", kl_warmup, 0)):
        check_positive_int(v, name, lo)
    if patience is not None:
        check_positive_int(patience, "patience", 1)
        if X_val is None:
            raise ValueError("patience (early stopping) needs held-out data: pass X_val")
    if gmm_init and X.shape[0] < model.n_components:
        raise ValueError(f"too few points: n_samples={X.shape[0]} must be >= n_components={model.n_components}")
    tx = optimizer(float(lr))
    logs = []
    run = partial(_run_phase, model, X, labels, X_val, tx, min(batch_size, X.shape[0]), log_every, verbose, logs)
    if pretrain_epochs:
        key = run("pretrain", pretrain_epochs, key)
    if gmm_init:
        key = _prior_from_em(model, X, labels, key)
    run("elbo", epochs, key, patience=patience, kl_warmup=kl_warmup)
    return logs


def _prior_from_em(model, X, labels, key):
    """The prior's weights, means and variances from a diagonal EM fit (4 restarts) of the latent means."""
    from gmm_jax.loop import fit as gmm_fit
    from gmm_jax.params import covariances_from_prec_chol

    m, _ = model.encode(X)
    key, kg = jax.random.split(key)
    res = gmm_fit(kg, m, model.n_components, covariance_type="diag", n_restarts=4, reg_covar=1e-4, labels=labels)
    model.logits[...] = res.params.log_weights
    model.prior_means[...] = res.params.means
    model.prior_logvars[...] = jnp.log(covariances_from_prec_chol(res.params.prec_chol, "diag"))
    return key


def _run_phase(model, X, labels, X_val, tx, bs, log_every, verbose, logs, phase, n_epochs, key, patience=None,
               kl_warmup=0):
    """``n_epochs`` epochs of one phase on ``model`` (updated in place); with ``X_val`` in the ELBO phase the model
    ends at the best logged held-out ELBO.  Returns the advanced key."""
    graphdef, state = nnx.split(model)
    opt_state = tx.init(state)
    best = _Best(-math.inf, state, 0)
    for epoch in range(n_epochs):
        key, ke = jax.random.split(key)
        beta = min(1.0, (epoch + 1) / kl_warmup) if kl_warmup else 1.0
        state, opt_state, loss = train_epoch(graphdef, state, opt_state, ke, X, labels, tx, bs,
                                             pretrain=phase == "pretrain", beta=jnp.float32(beta))
        if (epoch + 1) % log_every and epoch != n_epochs - 1:
            continue
        nnx.update(model, state)
        ne, ent = _diagnostics(model, X)
        score = float(heldout_elbo(graphdef, state, X_val)) if X_val is not None and phase == "elbo" else math.nan
        logs.append(TrainLog(epoch + 1, phase, float(loss), ne, ent, score))
        if verbose:
            print(f"{phase} epoch {epoch + 1}: loss {float(loss):.3f}, non-empty clusters {ne}, prior entropy "
                  f"{ent:.3f}" + ("" if math.isnan(score) else f", held-out ELBO {score:.3f}"), file=sys.stderr)
        if not math.isnan(score):
            best = _Best(score, state, 0) if score > best.score else best._replace(stale=best.stale + 1)
            if patience is not None and best.stale >= patience:
                break
    nnx.update(model, best.state if best.score > -math.inf else state)
    return key


def train_best(build, key, X, X_val, labels=None, *, n_init=3, **train_kwargs):
    """Train ``n_init`` models ``build(nnx.Rngs(seed))`` (seeds 0, 1, ...), each by :func:`train` with ``X_val`` and
    ``train_kwargs``, and keep the one with the highest held-out ELBO.

    Returns:
      (the best model, the held-out ELBO of each initialisation (list), the best one's training log).
    """
    from gmm_jax.validation import check_positive_int

    check_positive_int(n_init, "n_init")
    best, scores, best_logs, val = None, [], None, None
    for i, k in enumerate(jax.random.split(key, n_init)):
        model = build(nnx.Rngs(i))
        logs = train(model, k, X, labels, X_val=X_val, **train_kwargs)
        val = _checked_data(model, X_val, "X_val") if val is None else val  # validated once
        graphdef, state = nnx.split(model)
        scores.append(float(heldout_elbo(graphdef, state, val)))
        if scores[-1] == max(scores):
            best, best_logs = model, logs
    return best, scores, best_logs
