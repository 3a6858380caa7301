"""Verification rows of variational Bayes (part of ``python -m gmm_jax.verify``), full covariances, both weight priors.

The full variational ELBO ``L(q) = E_q[log p(X, Z, phi, mu, Lambda)] - E_q[log q]`` is written out here term by term
(Bishop, PRML 10.71-10.77; the stick-breaking terms for the Dirichlet process) as a function of *any*
responsibilities and hyper-parameters, independently of :mod:`gmm_jax.variational` (which only needs it at its
optimum).  The rows check: each update of the library (the E-step, the weights', the means' and the precisions'
hyper-parameters) is a stationary point of L in its block (``jax.grad`` vanishes there); L never decreases over the
fit's iterations; and L equals a Monte Carlo estimate of ``E_q[log p - log q]`` (parameters drawn from q) within
four standard errors.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import digamma, gammaln, logsumexp

from gmm_jax.em import e_step, sufficient_stats
from gmm_jax.variational import VBParams, VBPrior, effective_params, resolve_vb_prior, vb_m_step


def _elog_det(nu, logdet_w, d):
    """E[log |Lambda|] under Wishart(W, nu): sum_i psi((nu - i) / 2) + D log 2 + log |W|."""
    return jnp.sum(digamma(0.5 * (nu[:, None] - jnp.arange(d)[None])), axis=1) + d * math.log(2.0) + logdet_w


def _log_wishart_b(logdet_w, nu, d):
    """log B(W, nu), the Wishart's normaliser."""
    return (-0.5 * nu * logdet_w - 0.5 * nu * d * math.log(2.0) - 0.25 * d * (d - 1) * math.log(math.pi)
            - jnp.sum(gammaln(0.5 * (nu[..., None] - jnp.arange(d))), axis=-1))


def _weights_terms(a, b, alpha0):
    """(E[log phi] (K,), E[log p(phi)] - E[log q(phi)]) for Dirichlet(a) (b None) or stick-breaking Beta(a, b)."""
    if b is None:
        elog = digamma(a) - digamma(jnp.sum(a))
        k = a.shape[0]
        log_c0 = gammaln(k * alpha0) - k * gammaln(alpha0)
        log_c = gammaln(jnp.sum(a)) - jnp.sum(gammaln(a))
        return elog, log_c0 + (alpha0 - 1) * jnp.sum(elog) - log_c - jnp.sum((a - 1) * elog)
    ev, e1v = digamma(a) - digamma(a + b), digamma(b) - digamma(a + b)
    elog = ev + jnp.concatenate([jnp.zeros((1,), a.dtype), jnp.cumsum(e1v)[:-1]])
    prior = jnp.sum(jnp.log(alpha0) + (alpha0 - 1) * e1v)  # Beta(1, alpha0) sticks
    log_beta = gammaln(a) + gammaln(b) - gammaln(a + b)
    entropy_part = jnp.sum((a - 1) * ev + (b - 1) * e1v - log_beta)
    return elog, prior - entropy_part


def full_elbo(X, resp, vb: VBParams, prior):
    """The variational ELBO for full covariances (module docstring), ``W_k = U_k U_k^T / nu_k`` with U_k
    ``vb.prec_chol`` (so that ``W_k^-1 / nu_k`` is scikit-learn's ``covariances_``)."""
    n, d = X.shape
    nu, beta, m = vb.degrees_of_freedom, vb.mean_precision, vb.means
    w = jnp.einsum("kij,klj->kil", vb.prec_chol, vb.prec_chol) / nu[:, None, None]  # W_k
    logdet_w = jnp.linalg.slogdet(w)[1]
    elog_det = _elog_det(nu, logdet_w, d)
    diff = X[:, None, :] - m[None]  # (n, K, D)
    maha = jnp.einsum("nki,kij,nkj->nk", diff, w, diff)
    elog_w, weights_part = _weights_terms(vb.weight_concentration, vb.weight_concentration_b, prior.alpha)
    like = 0.5 * jnp.sum(resp * (elog_det - d / beta - nu * maha - d * math.log(2 * math.pi)))
    z_part = jnp.sum(resp * elog_w) - jnp.sum(jnp.where(resp > 0, resp * jnp.log(resp), 0.0))
    w0_inv = prior.covariance
    dm = m - prior.mean
    log_b0 = _log_wishart_b(-jnp.linalg.slogdet(w0_inv)[1], prior.dof, d)
    p_mu_lam = jnp.sum(0.5 * (d * jnp.log(prior.beta / (2 * math.pi)) + elog_det - d * prior.beta / beta
                              - prior.beta * nu * jnp.einsum("ki,kij,kj->k", dm, w, dm))
                       + log_b0 + 0.5 * (prior.dof - d - 1) * elog_det
                       - 0.5 * nu * jnp.einsum("ij,kji->k", w0_inv, w))
    entropy_lam = -_log_wishart_b(logdet_w, nu, d) - 0.5 * (nu - d - 1) * elog_det + 0.5 * nu * d
    q_mu_lam = jnp.sum(0.5 * elog_det + 0.5 * d * jnp.log(beta / (2 * math.pi)) - 0.5 * d - entropy_lam)
    return like + z_part + weights_part + p_mu_lam - q_mu_lam


def _draw_wishart(key, w_chol, nu, d):
    """Lambda ~ Wishart(W, nu) by Bartlett's decomposition (W = L L^T): L A A^T L^T."""
    k1, k2 = jax.random.split(key)
    chi = jnp.sqrt(2.0 * jax.random.gamma(k1, 0.5 * (nu - jnp.arange(d)), dtype=w_chol.dtype))
    a = jnp.tril(jax.random.normal(k2, (d, d), w_chol.dtype), -1) + jnp.diag(chi)
    la = w_chol @ a
    return la @ la.T


def _log_wishart(lam, w, nu, d):
    return (_log_wishart_b(jnp.linalg.slogdet(w)[1], nu, d) + 0.5 * (nu - d - 1) * jnp.linalg.slogdet(lam)[1]
            - 0.5 * jnp.trace(jnp.linalg.solve(w, lam)))


def _log_normal(x, mu, prec):
    d = x.shape[-1]
    diff = x - mu
    return 0.5 * (jnp.linalg.slogdet(prec)[1] - d * math.log(2 * math.pi) - diff @ prec @ diff)


def mc_elbo_draw(key, X, resp, vb: VBParams, prior):
    """One draw of ``log p(X, Z, theta) - log q(Z, theta)`` with theta ~ q (Z summed exactly over ``resp``)."""
    n, d = X.shape
    k = vb.means.shape[0]
    keys = jax.random.split(key, k + 1)
    nu, beta = vb.degrees_of_freedom, vb.mean_precision
    w = jnp.einsum("kij,klj->kil", vb.prec_chol, vb.prec_chol) / nu[:, None, None]
    w0 = jnp.linalg.inv(prior.covariance)
    a, b = vb.weight_concentration, vb.weight_concentration_b
    if b is None:  # log-space draws (loggamma): a component with a small concentration underflows otherwise
        g = jax.random.loggamma(keys[0], a)
        log_phi = g - logsumexp(g)
        log_p_phi = gammaln(k * prior.alpha) - k * gammaln(prior.alpha) + (prior.alpha - 1) * jnp.sum(log_phi)
        log_q_phi = gammaln(jnp.sum(a)) - jnp.sum(gammaln(a)) + jnp.sum((a - 1) * log_phi)
    else:
        ka, kb = jax.random.split(keys[0])
        ga, gb = jax.random.loggamma(ka, a), jax.random.loggamma(kb, b)
        lv, l1v = ga - jnp.logaddexp(ga, gb), gb - jnp.logaddexp(ga, gb)  # log v, log(1 - v)
        log_phi = lv + jnp.concatenate([jnp.zeros((1,), lv.dtype), jnp.cumsum(l1v)[:-1]])
        log_p_phi = jnp.sum(jnp.log(prior.alpha) + (prior.alpha - 1) * l1v)
        log_q_phi = jnp.sum((a - 1) * lv + (b - 1) * l1v - gammaln(a) - gammaln(b) + gammaln(a + b))

    def component(kk, wk, nuk, betak, mk):
        k1, k2 = jax.random.split(kk)
        lam = _draw_wishart(k1, jnp.linalg.cholesky(wk), nuk, d)
        mu = mk + jnp.linalg.solve(jnp.linalg.cholesky(betak * lam).T, jax.random.normal(k2, (d,), mk.dtype))
        log_p = _log_wishart(lam, w0, prior.dof, d) + _log_normal(mu, prior.mean, prior.beta * lam)
        log_q = _log_wishart(lam, wk, nuk, d) + _log_normal(mu, mk, betak * lam)
        loglik = jax.vmap(lambda x: _log_normal(x, mu, lam))(X)
        return log_p - log_q, loglik

    parts, loglik = jax.vmap(component)(keys[1:], w, nu, beta, vb.means)  # (K,), (K, n)
    z = jnp.sum(resp * (log_phi[None] + loglik.T)) - jnp.sum(jnp.where(resp > 0, resp * jnp.log(resp), 0.0))
    return z + log_p_phi - log_q_phi + jnp.sum(parts)


def vb_problem(seed: int = 0):
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal(size=(40, 2)) @ rng.normal(size=(2, 2)) * 0.7 + c
                        for c in ([0.0, 0.0], [4.0, 1.0], [-1.0, 5.0])])
    return jnp.asarray(X)


def _blocks(vb: VBParams):
    """The hyper-parameters as the blocks of the coordinate ascent: weights; means (beta, m); precisions (nu, U)."""
    return {"weights": (vb.weight_concentration, vb.weight_concentration_b), "means": (vb.mean_precision, vb.means),
            "precisions": (vb.degrees_of_freedom, vb.prec_chol)}


def _with(vb: VBParams, block: str, value) -> VBParams:
    if block == "weights":
        return vb._replace(weight_concentration=value[0], weight_concentration_b=value[1])
    if block == "means":
        return vb._replace(mean_precision=value[0], means=value[1])
    return vb._replace(degrees_of_freedom=value[0], prec_chol=value[1])


@jax.jit
def block_gradients(X, resp, vb: VBParams, prior):
    """max |dL/d block| of :func:`full_elbo` for each hyper-parameter block at ``vb`` with ``resp`` fixed, and of the
    responsibilities' logits (the E-step's block: the responsibilities of ``vb``'s E-step in place of ``resp``)."""
    out = {}
    for block, value in _blocks(vb).items():
        g = jax.grad(lambda v, b=block: full_elbo(X, resp, _with(vb, b, v), prior))(value)
        out[block] = jnp.max(jnp.stack([jnp.max(jnp.abs(x)) for x in jax.tree.leaves(g)]))
    logits = e_step(X, effective_params(vb), "full")[0]
    g = jax.grad(lambda z: full_elbo(X, jax.nn.softmax(z, axis=1), vb, prior))(logits)
    out["E-step"] = jnp.max(jnp.abs(g))
    return out


def check_vb(weight_prior: str, check, iters: int = 30) -> list:
    """The rows for one weight prior (full covariances, reg_covar 0), ``check(claim, quantity, discrepancy,
    tolerance)`` making a row."""
    from gmm_jax.loop import fit

    X = vb_problem()
    k, name = 4, "DP" if weight_prior == "dirichlet_process" else "Dirichlet"
    prior = resolve_vb_prior(VBPrior(weight_prior), np.asarray(X), k, "full", X.dtype)
    res = fit(jax.random.key(1), X, k, covariance_type="full", variational=VBPrior(weight_prior), max_iter=iters,
              tol=0.0, reg_covar=0.0)
    vb = res.params
    resp = jnp.exp(e_step(X, effective_params(vb), "full")[0])
    new = vb_m_step(sufficient_stats(X, resp, vb.means, "full"), vb.means, "full", 0.0, prior)
    rows = []
    scale = abs(float(full_elbo(X, resp, new, prior)))
    grads = block_gradients(X, resp, new, prior)
    for block in ("weights", "means", "precisions"):
        rows.append(check(f"VB ({name}): the {block}' update is a stationary point of the ELBO",
                          "max |dL/d block| / |L|", float(grads[block]) / scale, 1e-9))
    rows.append(check(f"VB ({name}): the E-step is a stationary point of the ELBO", "max |dL/d logits| / |L|",
                      float(grads["E-step"]) / scale, 1e-9))
    rows.append(check(f"VB ({name}): the ELBO never decreases", "max decrease / |L| over E- and M-steps",
                      _max_decrease(X, res, prior, k, iters), 1e-12))
    rows.append(check(f"VB ({name}): ELBO = Monte Carlo E_q[log p - log q]", "|closed - MC| / standard error",
                      _mc_z(X, resp, new, prior), 4.0))
    return rows


def _max_decrease(X, res, prior, k, iters):
    """Run the updates again from the fit's initial state (max_iter=0) and evaluate L after each half-step."""
    from gmm_jax.loop import fit

    vb = fit(jax.random.key(1), X, k, covariance_type="full", variational=VBPrior(prior_type(prior)), max_iter=0,
             reg_covar=0.0).params
    @jax.jit
    def step(vb):
        resp = jnp.exp(e_step(X, effective_params(vb), "full")[0])
        new = vb_m_step(sufficient_stats(X, resp, vb.means, "full"), vb.means, "full", 0.0, prior)
        return new, full_elbo(X, resp, vb, prior), full_elbo(X, resp, new, prior)

    values = []
    for _ in range(iters):
        vb, after_e, after_m = step(vb)
        values += [float(after_e), float(after_m)]
    v = np.asarray(values)
    return max(0.0, float(np.max(v[:-1] - v[1:]) / np.max(np.abs(v))))


def prior_type(prior) -> str:
    from gmm_jax.variational import is_dirichlet_process

    return "dirichlet_process" if is_dirichlet_process(prior) else "dirichlet_distribution"


def _mc_z(X, resp, vb, prior, draws: int = 4000):
    keys = jax.random.split(jax.random.key(5), draws)
    vals = np.asarray(jax.jit(jax.vmap(lambda kk: mc_elbo_draw(kk, X, resp, vb, prior)))(keys))
    closed = float(full_elbo(X, resp, vb, prior))
    return abs(closed - float(np.mean(vals))) / (float(np.std(vals)) / math.sqrt(draws))


def check_vb_all(check) -> list:
    return [r for wp in ("dirichlet_process", "dirichlet_distribution") for r in check_vb(wp, check)]


__all__ = ["block_gradients", "check_vb", "check_vb_all", "full_elbo", "mc_elbo_draw", "vb_problem"]
