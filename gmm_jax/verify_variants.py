"""Verification rows of the engine's variants (part of ``python -m gmm_jax.verify``): parameter blocks held fixed,
and known labels for some points (semi-supervised EM).

* Fixed blocks: with q fixed, optax ascent on the ELBO over the free blocks (the fixed ones frozen at their values)
  reaches :func:`gmm_jax.stats.constrained_m_step` and no iterate beats it.
* Known labels: the objective is ``L(theta) = sum_unlabelled log p(x_i) + sum_labelled log p(x_i, y_i)``, written
  here directly (not through the engine's masking); the fit with labels climbs it at every iteration and stops
  where ``jax.grad L`` vanishes; with every point labelled it is the supervised MLE (Theorems 1 and 2).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import digamma, gammaln, logsumexp

from gmm_jax.ascent import maximize, params_close, rel_error
from gmm_jax.em import e_step, elbo, sufficient_stats
from gmm_jax.loop import fit
from gmm_jax.missing import dense_covariances
from gmm_jax.params import (
    GMMParams,
    StudentTParams,
    from_covariances,
    from_unconstrained,
    to_unconstrained,
    with_dof,
)
from gmm_jax.prior import Prior, log_prior, map_m_step, resolve_prior
from gmm_jax.stats import constrained_m_step
from gmm_jax.student import TStats, dof_update, student_m_step
from gmm_jax.supervised import fit_supervised

FIXED_CASES = (("full", ("means",)), ("tied", ("means",)), ("diag", ("means",)), ("spherical", ("means",)),
               ("full", ("weights", "covariances")))


def random_theta(rng, k: int, d: int, covariance_type: str) -> GMMParams:
    """Random parameters (float64) of a covariance type: Dirichlet weights, spread means, well-conditioned scales."""
    w = rng.dirichlet(np.full(k, 2.0))
    b = rng.normal(size=(k, d, d))
    cov = b @ np.swapaxes(b, 1, 2) + np.eye(d)
    cov = {"full": cov, "tied": cov[0], "diag": np.stack([np.diag(c) for c in cov]),
           "spherical": np.array([np.trace(c) / d for c in cov])}[covariance_type]
    return from_covariances(jnp.asarray(w), jnp.asarray(rng.normal(size=(k, d)) * 3), jnp.asarray(cov), covariance_type)


def frozen(p: GMMParams, theta: GMMParams, fixed: tuple) -> GMMParams:
    """``p`` with the blocks named in ``fixed`` replaced by ``theta``'s."""
    return p._replace(log_weights=theta.log_weights if "weights" in fixed else p.log_weights,
                      means=theta.means if "means" in fixed else p.means,
                      prec_chol=theta.prec_chol if "covariances" in fixed else p.prec_chol)


def check_fixed_m_step(X, theta: GMMParams, covariance_type: str, fixed: tuple, check, steps: int = 300,
                       m_step_fn=constrained_m_step) -> list:
    """The constrained M-step (``fixed`` blocks at ``theta``'s values) against optax ascent with those blocks
    frozen; ``theta`` of this covariance type, ``check(claim, quantity, discrepancy, tolerance)`` makes a row;
    ``m_step_fn`` replaces :func:`gmm_jax.stats.constrained_m_step` (its signature)."""
    n = X.shape[0]

    @jax.jit
    def arrays(X, theta):
        resp = jnp.exp(e_step(X, theta, covariance_type)[0])
        stats = sufficient_stats(X, resp, theta.means, covariance_type)
        closed = m_step_fn(stats, theta, covariance_type, 0.0, fixed)

        def f(u):
            return elbo(X, frozen(from_unconstrained(u, covariance_type), theta, fixed), resp, covariance_type) / n

        u, values = maximize(f, to_unconstrained(theta, covariance_type), steps)
        asc = frozen(from_unconstrained(u, covariance_type), theta, fixed)
        return closed, asc, values * n, elbo(X, closed, resp, covariance_type)

    closed, asc, values, e_closed = arrays(X, theta)
    what = f"M-step ({covariance_type}, fixed {'+'.join(fixed)})"
    exceed = float(jnp.nanmax(values) - e_closed) / float(jnp.abs(e_closed))
    return [check(f"{what}: ascent with them frozen reaches the closed form",
                  "max relative error (weights, means, covariances)", params_close(asc, closed, covariance_type), 1e-4),
            check(f"{what}: no ascent iterate beats the closed form", "max (ELBO_iter - ELBO_closed) / |ELBO|",
                  max(0.0, exceed), 1e-12)]


def semi_supervised_objective(X, params: GMMParams, labels, covariance_type: str = "full"):
    """``sum_{y_i = -1} log p(x_i) + sum_{y_i >= 0} log p(x_i, y_i)``, from the math layer's log-joints."""
    log_resp, log_norm = e_step(X, params, covariance_type)
    lj = log_resp + log_norm[:, None]
    own = jnp.take_along_axis(lj, jnp.maximum(labels, 0)[:, None], axis=1)[:, 0]
    return jnp.sum(jnp.where(labels >= 0, own, logsumexp(lj, axis=1)))


def check_semi_supervised(X, y, k: int, check, fraction: float = 0.3, seed: int = 3) -> list:
    """The fit with a ``fraction`` of the labels (the others -1): the objective never decreases along the trace, and
    its gradient (unconstrained parameters) at the fit's end is ~0 relative to the gradient at the start; with every
    label it equals :func:`gmm_jax.fit_supervised` (reg_covar 0)."""
    rng = np.random.default_rng(seed)
    labels = jnp.asarray(np.where(rng.uniform(size=y.shape[0]) < fraction, np.asarray(y), -1), jnp.int32)
    res = fit(jax.random.key(seed), X, k, labels=labels, reg_covar=0.0, tol=0.0, max_iter=400)
    grad = jax.jit(lambda p: jnp.concatenate([a.ravel() for a in jax.tree.leaves(jax.grad(
        lambda u: semi_supervised_objective(X, from_unconstrained(u, "full"), labels))(to_unconstrained(p, "full")))]))
    trace = np.asarray(res.trace[0])
    trace = trace[np.isfinite(trace)]
    drop = float(np.max(np.maximum(trace[:-1] - trace[1:], 0.0)) / np.abs(trace[-1]))
    start = fit(jax.random.key(seed), X, k, labels=labels, reg_covar=0.0, max_iter=0).params
    every = fit(jax.random.key(seed), X, k, labels=y, reg_covar=0.0, tol=0.0, max_iter=400).params  # one program
    return [
        check("Known labels: EM never decreases log p(x_U) + log p(x_L, y_L)", "max relative decrease", drop, 1e-12),
        check("Known labels: EM fixed point is stationary for log p(x_U) + log p(x_L, y_L)",
              "|grad at the fit's end| / |grad at its start|",
              float(jnp.linalg.norm(grad(res.params)) / jnp.linalg.norm(grad(start))), 1e-4),
        check("Known labels: every point labelled = supervised MLE (Thms 1, 2)", "max relative error",
              params_close(every, fit_supervised(X, y, k, "full"), "full"), 1e-10),
    ]


def t_problem(seed: int = 4, n: int = 300, d: int = 2, k: int = 3, dof: float = 3.0):
    """Heavy-tailed blobs (Student-t noise with ``dof`` degrees of freedom), float64."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    X = rng.normal(size=(k, d))[y] * 6 + rng.standard_t(dof, size=(n, d))
    return jnp.asarray(X, jnp.float64)


def t_log_density(X, p: StudentTParams, covariance_type: str):
    """(n, K) log phi_k + log t(x_i | mu_k, S_k, nu_k), written with ``jnp.linalg`` from the scale matrices (not
    through the engine's whitened residuals), and the squared Mahalanobis distances (n, K)."""
    d = X.shape[1]
    s = dense_covariances(p, covariance_type)
    diff = X[:, None, :] - p.means[None]
    delta = jnp.einsum("nkd,nkd->nk", diff, jnp.linalg.solve(s[None], diff[..., None])[..., 0])
    nu = p.dof
    logdet = jnp.linalg.slogdet(s)[1]
    lt = (gammaln(0.5 * (nu + d)) - gammaln(0.5 * nu) - 0.5 * d * jnp.log(nu * jnp.pi) - 0.5 * logdet
          - 0.5 * (nu + d) * jnp.log1p(delta / nu))
    return lt + p.log_weights, delta


def check_student_m_step(X, covariance_type: str, check, steps: int = 300) -> list:
    """With the E-step's responsibilities and scales fixed, optax ascent on Q (weights, means, scale matrices; dof
    fixed) reaches :func:`gmm_jax.student.student_m_step` and no iterate beats it."""
    k, n, d = 3, X.shape[0], X.shape[1]
    theta = with_dof(random_theta(np.random.default_rng(11), k, d, covariance_type), jnp.array([2.0, 4.0, 9.0]))

    def q(p, tau, u):
        lj, delta = t_log_density(X, with_dof(p, theta.dof), covariance_type)
        logdet = jnp.linalg.slogdet(dense_covariances(p, covariance_type))[1]
        return jnp.sum(tau * (p.log_weights - 0.5 * logdet - 0.5 * u * delta)) / n

    @jax.jit
    def arrays(X, theta):
        lj, delta = t_log_density(X, theta, covariance_type)
        tau = jnp.exp(lj - logsumexp(lj, axis=1, keepdims=True))
        u = (theta.dof + d) / (theta.dof + delta)
        stats = TStats(sufficient_stats(X, tau * u, theta.means, covariance_type), jnp.sum(tau, 0),
                       jnp.sum(tau * (jnp.log(u) - u), 0))
        closed = student_m_step(stats, theta, covariance_type, 0.0, ("dof",))
        g0 = GMMParams(*theta[:3])
        uopt, values = maximize(lambda v: q(from_unconstrained(v, covariance_type), tau, u),
                                to_unconstrained(g0, covariance_type), steps)
        return closed, from_unconstrained(uopt, covariance_type), values, q(GMMParams(*closed[:3]), tau, u)

    closed, asc, values, q_closed = arrays(X, theta)
    exceed = float(jnp.nanmax(values) - q_closed) / float(jnp.abs(q_closed))
    what = f"Student-t M-step ({covariance_type}, dof fixed)"
    return [check(f"{what}: ascent on Q reaches the closed form", "max relative error (weights, means, scales)",
                  params_close(asc, GMMParams(*closed[:3]), covariance_type), 1e-4),
            check(f"{what}: no ascent iterate beats the closed form", "max (Q_iter - Q_closed) / |Q|",
                  max(0.0, exceed), 1e-12)]


def check_student_dof(check):
    """The degrees-of-freedom update (bisection) is the maximiser of its part of Q,
    ``(nu/2) log(nu/2) - lgamma(nu/2) + (nu/2) E[log g - g]``, found here by optax on log(nu)."""
    m = jnp.array([-1.05, -1.3, -2.0, -1.0004])  # E[log g - g] <= -1; near -1: light tails, large nu
    nk, d = jnp.ones(4), 2
    dof_old = jnp.array([3.0, 3.0, 3.0, 3.0])
    log_u = m - digamma(0.5 * (dof_old + d)) + jnp.log(0.5 * (dof_old + d))  # so that E[log g - g] = m
    closed = dof_update(nk, log_u, dof_old, d)

    def f(lognu):
        nu = jnp.exp(lognu)
        return jnp.sum(0.5 * nu * jnp.log(0.5 * nu) - gammaln(0.5 * nu) + 0.5 * nu * m)

    lognu, _ = maximize(f, jnp.log(dof_old), 500, gtol=1e-12)
    return check("Student-t dof update: the argmax of its part of Q", "max relative error of nu",
                 rel_error(closed, jnp.exp(lognu)), 1e-6)


def check_student_fit(X, check) -> list:
    """The Student-t fit (learned dof) never decreases the observed log-likelihood and stops where its gradient
    (unconstrained weights, means, scales and log dof) vanishes."""
    res = fit(jax.random.key(0), X, 3, family="student-t", reg_covar=0.0, tol=0.0, max_iter=600)
    trace = np.asarray(res.trace[0])
    trace = trace[np.isfinite(trace)]
    drop = float(np.max(np.maximum(trace[:-1] - trace[1:], 0.0)) / np.abs(trace[-1]))

    def ll(v):
        g, lognu = v
        return jnp.sum(logsumexp(t_log_density(X, with_dof(from_unconstrained(g, "full"), jnp.exp(lognu)), "full")[0],
                                 axis=1))

    grad = jax.jit(lambda p: jnp.concatenate([a.ravel() for a in jax.tree.leaves(jax.grad(ll)(
        (to_unconstrained(GMMParams(*p[:3]), "full"), jnp.log(p.dof))))]))
    start = fit(jax.random.key(0), X, 3, family="student-t", reg_covar=0.0, max_iter=0).params
    return [check("Student-t EM never decreases the log-likelihood", "max relative decrease", drop, 1e-12),
            check("Student-t EM fixed point is stationary: grad loglik -> 0 (dof included)",
                  "|grad at the fit's end| / |grad at its start|",
                  float(jnp.linalg.norm(grad(res.params)) / jnp.linalg.norm(grad(start))), 1e-4)]



TEST_PRIOR = Prior(weight_concentration=3.0, mean_precision=2.0, mean=np.array([1.0, -2.0]), covariance=0.7,
                   strength=4.0)


def check_map_m_step(X, covariance_type: str, check, steps: int = 300) -> list:
    """With q fixed, optax ascent on ELBO + log prior (:data:`TEST_PRIOR`: every part of the prior active) reaches
    :func:`gmm_jax.prior.map_m_step` and no iterate beats it."""
    n = X.shape[0]
    prior = resolve_prior(TEST_PRIOR, X, X.dtype)
    theta = random_theta(np.random.default_rng(9), 3, X.shape[1], covariance_type)

    @jax.jit
    def arrays(X, theta):
        resp = jnp.exp(e_step(X, theta, covariance_type)[0])
        closed = map_m_step(sufficient_stats(X, resp, theta.means, covariance_type), theta.means, covariance_type,
                            0.0, prior)

        def f(p):
            return (elbo(X, p, resp, covariance_type) + log_prior(p, prior, covariance_type)) / n

        u, values = maximize(lambda v: f(from_unconstrained(v, covariance_type)), to_unconstrained(theta, covariance_type),
                             steps)
        return closed, from_unconstrained(u, covariance_type), values, f(closed)

    closed, asc, values, f_closed = arrays(X, theta)
    what = f"MAP M-step ({covariance_type})"
    return [check(f"{what}: ascent on ELBO + log prior reaches the closed form",
                  "max relative error (weights, means, covariances)", params_close(asc, closed, covariance_type), 1e-4),
            check(f"{what}: no ascent iterate beats the closed form", "max (f_iter - f_closed) / |f|",
                  max(0.0, float(jnp.nanmax(values) - f_closed) / float(jnp.abs(f_closed))), 1e-12)]


__all__ = ["FIXED_CASES", "TEST_PRIOR", "check_fixed_m_step", "check_map_m_step", "check_semi_supervised",
           "check_student_dof", "check_student_fit", "check_student_m_step", "frozen",
           "random_theta", "semi_supervised_objective", "t_log_density", "t_problem"]
