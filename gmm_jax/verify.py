"""Autodiff checks of every derivation gmm_jax implements (and of the errors in the source notes).

    python -m gmm_jax.verify [--broken-m-step]

Each check compares a closed form with what ``jax.grad`` or an optax optimiser finds on a generated problem, in
float64, and reports the largest discrepancy against a tolerance.  :func:`run_checks` accepts another M-step
function (same signature as :func:`gmm_jax.m_step`), so a wrong derivation is caught: the command exits non-zero
if any check fails.  See docs/derivations.md for the claims and the errata of the notes.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gmm_jax.ascent import ascent_m_step, maximize, params_close, rel_error
from gmm_jax.em import e_step, elbo, log_gaussian, log_likelihood, m_step, sufficient_stats
from gmm_jax.params import (
    COVARIANCE_TYPES,
    GMMParams,
    covariances_from_prec_chol,
    from_covariances,
    from_unconstrained,
    prec_chol_from_covariances,
    to_unconstrained,
)
from gmm_jax.supervised import fit_supervised
from gmm_jax.verify_variants import (
    FIXED_CASES,
    check_fixed_m_step,
    check_map_m_step,
    check_semi_supervised,
    check_student_dof,
    check_student_fit,
    check_student_m_step,
    t_problem,
)
from gmm_jax.verify_vb import check_vb_all


class Check(NamedTuple):
    claim: str
    quantity: str
    discrepancy: float
    tolerance: float

    @property
    def passed(self) -> bool:
        return bool(np.isfinite(self.discrepancy) and self.discrepancy <= self.tolerance)


# --------------------------------------------------------------------------------------------------------------
# optimisers


def kl_rows(q, log_post):
    """sum_i KL(q_i || p(z | x_i)) with 0 log 0 = 0."""
    return jnp.sum(jnp.where(q > 0, q * (jnp.log(jnp.where(q > 0, q, 1.0)) - log_post), 0.0))


# --------------------------------------------------------------------------------------------------------------
# the problem


def problem(seed: int = 0, n: int = 240, d: int = 2, k: int = 3):
    """Anisotropic blobs and a random parameter point theta0 (float64)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d)) * 4
    y = rng.integers(0, k, n)
    a = rng.normal(size=(k, d, d)) * 0.5 + np.eye(d)
    X = centers[y] + np.einsum("nd,ned->ne", rng.normal(size=(n, d)), a[y])
    return jnp.asarray(X, jnp.float64), jnp.asarray(y), random_theta(rng, k, d)


def random_theta(rng, k, d, covariance_type="full"):
    w = rng.dirichlet(np.full(k, 2.0))
    means = rng.normal(size=(k, d)) * 3
    b = rng.normal(size=(k, d, d))
    cov = b @ np.swapaxes(b, 1, 2) + np.eye(d)
    if covariance_type == "tied":
        cov = cov[0]
    elif covariance_type == "diag":
        cov = np.stack([np.diag(c) for c in cov])
    elif covariance_type == "spherical":
        cov = np.array([np.trace(c) / d for c in cov])
    return from_covariances(jnp.asarray(w), jnp.asarray(means), jnp.asarray(cov), covariance_type)


# --------------------------------------------------------------------------------------------------------------
# the checks


def check_categorical_mle(y, k) -> Check:
    """Theorem 1: optax on logits maximising sum_j n_j log phi_j finds phi_j = n_j / n."""
    counts = jnp.bincount(y, length=k).astype(jnp.float64)
    f = lambda logits: jnp.sum(counts * jax.nn.log_softmax(logits)) / y.shape[0]  # noqa: E731
    logits, _ = maximize(f, jnp.zeros(k), 100)
    return Check("Thm 1: categorical MLE is counts / n", "max |softmax(optax logits) - counts/n|",
                 float(jnp.max(jnp.abs(jax.nn.softmax(logits) - counts / y.shape[0]))), 1e-8)


def gaussian_loglik(X, mu, cov):
    return jnp.sum(log_gaussian(X, mu[None], prec_chol_from_covariances(cov[None], "full"), "full"))


@jax.jit
def _gaussian_mle_arrays(X):
    n = X.shape[0]
    mu = jnp.mean(X, axis=0)
    cov = (X - mu).T @ (X - mu) / n
    uncentred = X.T @ X / n  # the notes' statement of Theorem 2
    gmu, gcov = jax.grad(gaussian_loglik, argnums=(1, 2))(X, mu, cov)
    _, gcov_bad = jax.grad(gaussian_loglik, argnums=(1, 2))(X, mu, uncentred)
    ll_gap = gaussian_loglik(X, mu, cov) - gaussian_loglik(X, mu, uncentred)
    # ascent from elsewhere (mean 0, identity covariance) converges to the closed form
    f = lambda u: gaussian_loglik(X, u.means[0], covariances_from_prec_chol(  # noqa: E731
        from_unconstrained(u, "full").prec_chol, "full")[0]) / n
    p0 = from_covariances(jnp.ones(1, X.dtype), jnp.zeros((1, X.shape[1]), X.dtype), jnp.eye(X.shape[1], dtype=X.dtype)[None],
                          "full")
    u, _ = maximize(f, to_unconstrained(p0, "full"), 200)
    p = from_unconstrained(u, "full")
    # Hessian in mu is -n Sigma^{-1} (the notes drop the factor n)
    hess = jax.hessian(gaussian_loglik, argnums=1)(X, mu, cov)
    return mu, cov, gmu, gcov, gcov_bad, ll_gap, p.means[0], covariances_from_prec_chol(p.prec_chol, "full")[0], hess


def check_gaussian_mle(X) -> list[Check]:
    """Theorem 2: the gradient vanishes at the sample mean and the *centred* covariance, not at (1/n) sum x x^T."""
    n = X.shape[0]
    # one compiled program for all the arrays (op by op, each of ~170 small operations would compile on its own)
    mu, cov, gmu, gcov, gcov_bad, ll_gap, mean_asc, cov_asc, hess = _gaussian_mle_arrays(X)
    scale = float(jnp.max(jnp.abs(gcov_bad)))
    grad_at_mle = float(max(jnp.max(jnp.abs(gmu)), jnp.max(jnp.abs(gcov)))) / scale
    ll_gap = float(ll_gap)
    err = max(rel_error(mean_asc, mu), rel_error(cov_asc, cov))
    return [
        Check("Thm 2: grad log-lik = 0 at (mean, centred covariance)", "max |grad| / max |grad at uncentred|",
              grad_at_mle, 1e-9),
        Check("Thm 2 (erratum): uncentred (1/n) sum x x^T is not the MLE", "-(loglik(centred) - loglik(uncentred))",
              -ll_gap if ll_gap > 0 else float("inf"), 0.0),
        Check("Thm 2: optax ascent from (0, I) reaches the closed form", "relative error (mean, covariance)", err, 1e-6),
        Check("Thm 2 (erratum): Hessian in mu is -n Sigma^-1", "relative error", rel_error(hess, -n * jnp.linalg.inv(cov)), 1e-10),
    ]


def check_matrix_identities(X) -> list[Check]:
    """The identities of Theorem 2's proof, with the signs the notes get wrong."""
    n, d = X.shape
    cov = (X - X.mean(0)).T @ (X - X.mean(0)) / n + jnp.eye(d)
    prec = jnp.linalg.inv(cov)
    a = jnp.asarray(np.random.default_rng(1).normal(size=(d, d)))
    g_logdet = jax.grad(lambda p: -jnp.linalg.slogdet(p)[1])(prec)  # log|Sigma| = -log|P|
    g_trace = jax.grad(lambda p: jnp.trace(a @ p))(prec)
    return [
        Check("Identity (erratum): d log|Sigma| / d Sigma^-1 = -Sigma", "relative error", rel_error(g_logdet, -cov), 1e-10),
        Check("Identity (erratum): d tr(A Sigma^-1) / d Sigma^-1 = A^T", "relative error", rel_error(g_trace, a.T), 1e-12),
    ]


def check_elbo(X, theta, covariance_type="full") -> list[Check]:
    """ELBO(q) <= log-likelihood, equality at the posterior, gap = KL(q || posterior)."""
    ll = log_likelihood(X, theta, covariance_type)
    log_post, _ = e_step(X, theta, covariance_type)
    qs = jax.random.dirichlet(jax.random.key(0), jnp.ones(theta.means.shape[0]), (8, X.shape[0]))
    elbos = jax.vmap(lambda q: elbo(X, theta, q, covariance_type))(qs)
    kls = jax.vmap(lambda q: kl_rows(q, log_post))(qs)
    post = jnp.exp(log_post)
    joint_only = jnp.sum(jnp.where(post > 0, post * (log_post + e_step(X, theta, covariance_type)[1][:, None]), 0.0))
    return [
        Check("ELBO <= log-likelihood for random q (Jensen, log concave)", "max (ELBO - loglik) / |loglik|",
              max(0.0, float(jnp.max(elbos - ll) / jnp.abs(ll))), 0.0),
        Check("ELBO = log-likelihood at q = posterior", "relative error",
              rel_error(elbo(X, theta, post, covariance_type), ll), 1e-12),
        Check("log-likelihood - ELBO(q) = KL(q || posterior)", "max relative error",
              rel_error(ll - elbos, kls), 1e-9),
        Check("ELBO (erratum): without the entropy term it is not tight", "-(loglik - E_q[log p(x,z)]) / |loglik|",
              -float((ll - joint_only) / jnp.abs(ll)) if float(ll - joint_only) > 0 else float("inf"), 0.0),
    ]


def check_m_step(X, theta_full, m_step_fn, covariance_type, steps=300) -> list[Check]:
    """With q fixed, optax ascent on the ELBO reaches the closed-form M-step and never exceeds it."""
    k, d = theta_full.means.shape
    theta = random_theta(np.random.default_rng(7), k, d, covariance_type)

    @jax.jit  # one compiled program for the four checks (the L-BFGS loop compiles the rest)
    def arrays(X, theta):
        resp = jnp.exp(e_step(X, theta, covariance_type)[0])
        closed = m_step_fn(sufficient_stats(X, resp, theta.means, covariance_type), theta.means, covariance_type, 0.0)
        asc, values = ascent_m_step(X, resp, theta, covariance_type, steps)
        return closed, asc, values, elbo(X, closed, resp, covariance_type)

    closed, asc, values, e_closed = arrays(X, theta)
    exceed = float(jnp.nanmax(values) - e_closed) / float(jnp.abs(e_closed))
    return [
        Check(f"M-step ({covariance_type}): ascent on ELBO reaches the closed form",
              "max relative error (weights, means, covariances)", params_close(asc, closed, covariance_type), 1e-4),
        Check(f"M-step ({covariance_type}): no ascent iterate beats the closed form", "max (ELBO_iter - ELBO_closed) / |ELBO|",
              max(0.0, exceed), 1e-12),
    ]


def reg_covar_penalty(params: GMMParams, nk, covariance_type: str, reg_covar) -> jax.Array:
    """``(reg_covar / 2) sum_k N_k tr(Sigma_k^-1)`` (tied: ``N tr(Sigma^-1)``): the term whose addition to the
    ELBO makes ``Sigma_k = S_k / N_k + reg_covar I`` its maximiser (a Wishart-like prior on the precisions)."""
    u2 = jnp.square(params.prec_chol)  # tr(U U^T) = sum of squares of U
    d = params.means.shape[1]
    if covariance_type == "full":
        tr = jnp.sum(u2, axis=(1, 2))
    elif covariance_type == "tied":
        return 0.5 * reg_covar * jnp.sum(nk) * jnp.sum(u2)
    elif covariance_type == "diag":
        tr = jnp.sum(u2, axis=1)
    else:
        tr = d * u2
    return 0.5 * reg_covar * jnp.sum(nk * tr)


def check_m_step_reg(X, theta_full, m_step_fn, covariance_type, reg_covar=0.05, steps=300) -> Check:
    """With ``reg_covar`` > 0 the closed-form M-step is the argmax of ELBO - :func:`reg_covar_penalty`."""
    k, d = theta_full.means.shape
    theta = random_theta(np.random.default_rng(8), k, d, covariance_type)
    n = X.shape[0]

    @jax.jit
    def arrays(X, theta):
        resp = jnp.exp(e_step(X, theta, covariance_type)[0])
        nk = jnp.sum(resp, axis=0)
        stats = sufficient_stats(X, resp, theta.means, covariance_type)
        closed = m_step_fn(stats, theta.means, covariance_type, reg_covar)

        def f(u):
            p = from_unconstrained(u, covariance_type)
            return (elbo(X, p, resp, covariance_type) - reg_covar_penalty(p, nk, covariance_type, reg_covar)) / n

        u, _ = maximize(f, to_unconstrained(theta, covariance_type), steps)
        return closed, from_unconstrained(u, covariance_type)

    closed, asc = arrays(X, theta)
    return Check(f"M-step ({covariance_type}, reg_covar > 0): ascent on ELBO - penalty reaches the closed form",
                 "max relative error (weights, means, covariances)", params_close(asc, closed, covariance_type), 1e-4)


def check_em_monotone(X, theta, m_step_fn, iters=15) -> list[Check]:
    """Theorem 3: the log-likelihood never decreases; each gain = M-step ELBO gain + KL closed by the next E-step."""
    worst_drop, worst_split = 0.0, 0.0
    p = theta
    for _ in range(iters):
        log_q, ln = e_step(X, p, "full")
        q = jnp.exp(log_q)
        new = m_step_fn(sufficient_stats(X, q, p.means, "full"), p.means, "full", 0.0)
        ll0, ll1 = jnp.sum(ln), log_likelihood(X, new, "full")
        gain_m = elbo(X, new, q, "full") - elbo(X, p, q, "full")
        kl = kl_rows(q, e_step(X, new, "full")[0])
        worst_drop = max(worst_drop, float(ll0 - ll1) / float(jnp.abs(ll0)))
        worst_split = max(worst_split, abs(float(ll1 - ll0 - gain_m - kl)) / float(jnp.abs(ll0)))
        p = new
    return [
        Check("Thm 3: EM never decreases the log-likelihood", "max relative decrease", max(0.0, worst_drop), 1e-12),
        Check("Thm 3: gain = ELBO gain of M-step + KL(q_t || posterior_t+1)", "max relative error", worst_split, 1e-10),
    ]


def check_fisher_identity(X, theta) -> Check:
    """grad log p(X; theta) = grad_theta ELBO(theta; q = posterior under theta, held fixed)."""
    u0 = to_unconstrained(theta, "full")

    def ll(u):
        return log_likelihood(X, from_unconstrained(u, "full"), "full")

    def elbo_fixed(u):
        q = jax.lax.stop_gradient(jnp.exp(e_step(X, from_unconstrained(u, "full"), "full")[0]))
        return elbo(X, from_unconstrained(u, "full"), q, "full")

    g1 = jnp.concatenate([a.ravel() for a in jax.tree.leaves(jax.grad(ll)(u0))])
    g2 = jnp.concatenate([a.ravel() for a in jax.tree.leaves(jax.grad(elbo_fixed)(u0))])
    return Check("Fisher identity: grad loglik = grad ELBO at q = posterior", "relative error", rel_error(g2, g1), 1e-10)


def check_stationary_at_convergence(X, theta, m_step_fn, iters=500) -> Check:
    """At EM's fixed point the log-likelihood gradient is ~0 (relative to its size at the start)."""
    u = lambda p: to_unconstrained(p, "full")  # noqa: E731
    grad = lambda p: jnp.concatenate([a.ravel() for a in jax.tree.leaves(  # noqa: E731
        jax.grad(lambda v: log_likelihood(X, from_unconstrained(v, "full"), "full"))(u(p)))])

    def body(p, _):
        q = jnp.exp(e_step(X, p, "full")[0])
        return m_step_fn(sufficient_stats(X, q, p.means, "full"), p.means, "full", 0.0), None

    p, _ = lax.scan(body, theta, None, length=iters)
    return Check("EM fixed point is stationary: grad loglik -> 0", "|grad at convergence| / |grad at start|",
                 float(jnp.linalg.norm(grad(p)) / jnp.linalg.norm(grad(theta))), 1e-4)


def check_supervised(X, y, k, m_step_fn) -> list[Check]:
    """Supervised MLE = per-class Theorems 1 and 2 = M-step with one-hot responsibilities."""
    p = fit_supervised(X, y, k, "full")
    Xn, yn = np.asarray(X), np.asarray(y)
    w = np.array([np.mean(yn == j) for j in range(k)])
    mu = np.stack([Xn[yn == j].mean(0) for j in range(k)])
    cov = np.stack([np.cov(Xn[yn == j].T, bias=True) for j in range(k)])
    ref = from_covariances(jnp.asarray(w), jnp.asarray(mu), jnp.asarray(cov), "full")
    onehot = jax.nn.one_hot(y, k, dtype=X.dtype)
    c0 = jnp.zeros((k, X.shape[1]), X.dtype)
    via_m = m_step_fn(sufficient_stats(X, onehot, c0, "full"), c0, "full", 0.0)
    return [
        Check("Supervised fit = per-class MLE (Thms 1, 2)", "max relative error", params_close(p, ref, "full"), 1e-10),
        Check("Supervised fit = M-step with one-hot q", "max relative error", params_close(via_m, ref, "full"), 1e-10),
    ]


def check_kmeans_limit(X, k, sigma2=1e-4, iters=50) -> Check:
    """K-means is the limit of EM on a spherical GMM with shared variance sigma^2 -> 0 and equal weights."""
    from gmm_jax.clustering import kmeans

    rng = np.random.default_rng(3)
    init = X[rng.choice(X.shape[0], k, replace=False)]
    km = kmeans(jax.random.key(0), X, k, init=init, tol=0.0, max_iter=iters)
    scale = float(jnp.mean(jnp.var(X, axis=0)))
    prec = jnp.full((k,), 1.0 / np.sqrt(sigma2 * scale))
    log_w = jnp.full((k,), -np.log(k))

    def body(means, _):
        p = GMMParams(log_w, means, prec)
        q = jnp.exp(e_step(X, p, "spherical")[0])
        st = sufficient_stats(X, q, means, "spherical")
        return means + st.sx / st.nk[:, None], None

    means, _ = lax.scan(body, init, None, length=iters)
    labels = jnp.argmax(e_step(X, GMMParams(log_w, means, prec), "spherical")[0], axis=1)
    mismatch = float(jnp.mean(labels != km.labels))
    return Check("K-means = EM limit (spherical, sigma^2 -> 0, equal weights)",
                 "max(rel. centre error, fraction of labels differing)", max(rel_error(means, km.centers), mismatch), 1e-8)


def run_checks(m_step_fn: Callable = m_step, seed: int = 0, only: str | None = None) -> list[Check]:
    """Run every check on a generated problem (float64). ``m_step_fn`` replaces the library's M-step; ``only``
    keeps the claims containing that text (the M-step checks with ``only="M-step"``)."""
    with jax.enable_x64(True):
        X, y, theta = problem(seed)
        k = theta.means.shape[0]
        groups = [
            ("Thm 1", lambda: [check_categorical_mle(y, k)]),
            ("Thm 2 Identity", lambda: check_gaussian_mle(X[y == 0]) + check_matrix_identities(X)),
            ("ELBO log-likelihood", lambda: check_elbo(X, theta)),
            ("M-step", lambda: [r for ct in COVARIANCE_TYPES for r in check_m_step(X, theta, m_step_fn, ct)]),
            ("reg_covar", lambda: [check_m_step_reg(X, theta, m_step_fn, ct) for ct in COVARIANCE_TYPES]),
            ("Thm 3", lambda: check_em_monotone(X, theta, m_step_fn)),
            ("Fisher", lambda: [check_fisher_identity(X, theta)]),
            ("EM fixed point", lambda: [check_stationary_at_convergence(X, theta, m_step_fn)]),
            ("Supervised", lambda: check_supervised(X, y, k, m_step_fn)),
            ("K-means", lambda: [check_kmeans_limit(X, k)]),
            ("Fixed", lambda: [r for ct, fixed in FIXED_CASES for r in check_fixed_m_step(
                X, random_theta(np.random.default_rng(9), k, X.shape[1], ct), ct, fixed, Check)]),
            ("Known labels", lambda: check_semi_supervised(X, y, k, Check)),
            ("MAP", lambda: [r for ct in COVARIANCE_TYPES for r in check_map_m_step(X, ct, Check)]),
            ("Student-t", lambda: [r for ct in COVARIANCE_TYPES for r in check_student_m_step(t_problem(), ct, Check)]
             + [check_student_dof(Check)] + check_student_fit(t_problem(), Check)),
            ("VB variational Bayes", lambda: check_vb_all(Check)),
        ]
        rows = []
        for key, make in groups:
            if only is None or only.lower() in key.lower():
                rows += make()
    if only is not None:
        rows = [r for r in rows if only in r.claim]
    return rows


def broken_m_step(stats, center, covariance_type="full", reg_covar=1e-6):
    """A deliberately wrong M-step: the second moment about the *old* reference point, not the new mean (the
    uncentred-covariance error of the notes' Theorem 2)."""
    from gmm_jax.em import SuffStats

    return m_step(SuffStats(stats.nk, jnp.zeros_like(stats.sx), stats.sxx), center + stats.sx / stats.nk[:, None],
                  covariance_type, reg_covar)


def format_table(rows: list[Check]) -> str:
    w1 = max(len(r.claim) for r in rows)
    w2 = max(len(r.quantity) for r in rows)
    lines = [f"{'claim':<{w1}}  {'quantity compared':<{w2}}  {'max discrepancy':>15}  {'tolerance':>9}  result"]
    for r in rows:
        lines.append(f"{r.claim:<{w1}}  {r.quantity:<{w2}}  {r.discrepancy:15.3e}  {r.tolerance:9.1e}  "
                     f"{'pass' if r.passed else 'FAIL'}")
    return "\n".join(lines)


def run(argv=None) -> tuple[int, list[Check], str]:
    """The command without printing: (exit status, rows, table text)."""
    ap = argparse.ArgumentParser(prog="python -m gmm_jax.verify", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--broken-m-step", action="store_true",
                    help="check a deliberately wrong M-step (uncentred covariance): the command must fail")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", help="run only the claims containing this text (e.g. 'M-step')")
    args = ap.parse_args(argv)
    rows = run_checks(broken_m_step if args.broken_m_step else m_step, seed=args.seed, only=args.only)
    if not rows:
        raise SystemExit(f"no claim contains {args.only!r}")
    failed = [r for r in rows if not r.passed]
    text = format_table(rows) + f"\n\n{len(rows) - len(failed)} passed, {len(failed)} failed"
    return (1 if failed else 0), rows, text


def main(argv=None) -> int:
    code, _, text = run(argv)
    print(text)
    return code


if __name__ == "__main__":
    sys.exit(main())
