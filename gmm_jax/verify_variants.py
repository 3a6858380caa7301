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
from jax.scipy.special import logsumexp

from gmm_jax.ascent import maximize, params_close
from gmm_jax.em import e_step, elbo, sufficient_stats
from gmm_jax.loop import fit
from gmm_jax.params import GMMParams, from_unconstrained, to_unconstrained
from gmm_jax.stats import constrained_m_step
from gmm_jax.supervised import fit_supervised

FIXED_CASES = (("full", ("means",)), ("tied", ("means",)), ("diag", ("means",)), ("spherical", ("means",)),
               ("full", ("weights", "covariances")))


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
    every = fit(jax.random.key(seed), X, k, labels=y, reg_covar=0.0, max_iter=20).params
    return [
        check("Known labels: EM never decreases log p(x_U) + log p(x_L, y_L)", "max relative decrease", drop, 1e-12),
        check("Known labels: EM fixed point is stationary for log p(x_U) + log p(x_L, y_L)",
              "|grad at the fit's end| / |grad at its start|",
              float(jnp.linalg.norm(grad(res.params)) / jnp.linalg.norm(grad(start))), 1e-4),
        check("Known labels: every point labelled = supervised MLE (Thms 1, 2)", "max relative error",
              params_close(every, fit_supervised(X, y, k, "full"), "full"), 1e-10),
    ]


__all__ = ["FIXED_CASES", "check_fixed_m_step", "check_semi_supervised", "frozen", "semi_supervised_objective"]
