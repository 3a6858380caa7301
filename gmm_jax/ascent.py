"""Gradient ascent with optax, for the verification of the closed forms (:mod:`gmm_jax.verify`): L-BFGS on a
function of a pytree, the M-step found by ascent on the ELBO, and the relative errors the checks report."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from gmm_jax.em import elbo
from gmm_jax.params import GMMParams, covariances_from_prec_chol, from_unconstrained, to_unconstrained


def maximize(f: Callable, x0, steps: int = 300, gtol: float = 1e-13):
    """Maximise ``f`` with optax L-BFGS (zoom line search): at most ``steps`` iterations, stopping once the
    gradient's norm is below ``gtol`` (past that point the curvature pairs are pure rounding noise).

    Returns:
      (argmax, values (steps,)) where ``values[t]`` is ``f`` at iterate ``t`` (NaN after the stop).
    """
    neg = lambda x: -f(x)  # noqa: E731
    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(neg)
    dtype = jax.tree.leaves(x0)[0].dtype

    def cond(c):
        t, _, _, gnorm, _ = c
        return (t < steps) & (gnorm > gtol)

    def body(c):
        t, x, state, _, values = c
        value, grad = value_and_grad(x, state=state)
        gnorm = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grad)))
        updates, state = opt.update(grad, state, x, value=value, grad=grad, value_fn=neg)
        x = jax.tree.map(lambda a, u: jnp.where(gnorm > gtol, a + u, a), x, updates)
        return t + 1, x, state, gnorm, values.at[t].set(-value)

    c0 = (0, x0, opt.init(x0), jnp.array(jnp.inf, dtype), jnp.full((steps,), jnp.nan, dtype))
    _, x, _, _, values = lax.while_loop(cond, body, c0)
    return x, values


def ascent_m_step(X, resp, params0: GMMParams, covariance_type: str, steps: int = 300):
    """The M-step found by gradient ascent: maximise ELBO(theta; q fixed) over the unconstrained parametrisation.

    Returns:
      (params, values): the ascent's optimum and the ELBO at every iterate.
    """
    n = X.shape[0]
    f = lambda u: elbo(X, from_unconstrained(u, covariance_type), resp, covariance_type) / n  # noqa: E731
    u, values = maximize(f, to_unconstrained(params0, covariance_type), steps)
    return from_unconstrained(u, covariance_type), values * n


def rel_error(a, b) -> float:
    """max |a - b| / max |b|."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(1e-300, np.max(np.abs(b))))


def params_close(p: GMMParams, q: GMMParams, covariance_type: str) -> float:
    """Largest relative error of weights, means and covariances."""
    return max(
        rel_error(jnp.exp(p.log_weights), jnp.exp(q.log_weights)),
        rel_error(p.means, q.means),
        rel_error(covariances_from_prec_chol(p.prec_chol, covariance_type),
             covariances_from_prec_chol(q.prec_chol, covariance_type)),
    )


__all__ = ["ascent_m_step", "maximize", "params_close", "rel_error"]
