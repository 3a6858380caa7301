"""Autodiff verification of the derivations (issue: every claim checked by jax.grad / optax).

The checks live in gmm_jax.verify so users can run them (``python -m gmm_jax.verify``); here each claim is a test
of its own, and the command's exit status is tested on the library and on a deliberately broken M-step.
"""

import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from gmm_jax import verify

CLAIMS = [
    "Thm 1: categorical MLE is counts / n",
    "Thm 2: grad log-lik = 0 at (mean, centred covariance)",
    "Thm 2 (erratum): uncentred (1/n) sum x x^T is not the MLE",
    "Thm 2: optax ascent from (0, I) reaches the closed form",
    "Thm 2 (erratum): Hessian in mu is -n Sigma^-1",
    "Identity (erratum): d log|Sigma| / d Sigma^-1 = -Sigma",
    "Identity (erratum): d tr(A Sigma^-1) / d Sigma^-1 = A^T",
    "ELBO <= log-likelihood for random q (Jensen, log concave)",
    "ELBO = log-likelihood at q = posterior",
    "log-likelihood - ELBO(q) = KL(q || posterior)",
    "ELBO (erratum): without the entropy term it is not tight",
    *[f"M-step ({ct}): ascent on ELBO reaches the closed form" for ct in ("full", "tied", "diag", "spherical")],
    *[f"M-step ({ct}): no ascent iterate beats the closed form" for ct in ("full", "tied", "diag", "spherical")],
    *[f"M-step ({ct}, reg_covar > 0): ascent on ELBO - penalty reaches the closed form"
      for ct in ("full", "tied", "diag", "spherical")],
    "Thm 3: EM never decreases the log-likelihood",
    "Thm 3: gain = ELBO gain of M-step + KL(q_t || posterior_t+1)",
    "Fisher identity: grad loglik = grad ELBO at q = posterior",
    "EM fixed point is stationary: grad loglik -> 0",
    "Supervised fit = per-class MLE (Thms 1, 2)",
    "Supervised fit = M-step with one-hot q",
    "K-means = EM limit (spherical, sigma^2 -> 0, equal weights)",
    *[f"M-step ({ct}, fixed {'+'.join(f)}): {what}" for ct, f in verify.FIXED_CASES
      for what in ("ascent with them frozen reaches the closed form", "no ascent iterate beats the closed form")],
    "Known labels: EM never decreases log p(x_U) + log p(x_L, y_L)",
    "Known labels: EM fixed point is stationary for log p(x_U) + log p(x_L, y_L)",
    "Known labels: every point labelled = supervised MLE (Thms 1, 2)",
    *[f"Student-t M-step ({ct}, dof fixed): {what}" for ct in ("full", "tied", "diag", "spherical")
      for what in ("ascent on Q reaches the closed form", "no ascent iterate beats the closed form")],
    "Student-t dof update: the argmax of its part of Q",
    *[f"MAP M-step ({ct}): {what}" for ct in ("full", "tied", "diag", "spherical")
      for what in ("ascent on ELBO + log prior reaches the closed form", "no ascent iterate beats the closed form")],
    "Student-t EM never decreases the log-likelihood",
    "Student-t EM fixed point is stationary: grad loglik -> 0 (dof included)",
    *[f"VB ({name}): {what}" for name in ("DP", "Dirichlet")
      for what in ("the weights' update is a stationary point of the ELBO",
                   "the means' update is a stationary point of the ELBO",
                   "the precisions' update is a stationary point of the ELBO",
                   "the E-step is a stationary point of the ELBO", "the ELBO never decreases",
                   "ELBO = Monte Carlo E_q[log p - log q]")],
]


@pytest.fixture(scope="module")
def command():
    """What ``python -m gmm_jax.verify`` computes and prints (run in-process once for all claims)."""
    return verify.run([])


@pytest.fixture(scope="module")
def rows(command):
    return {r.claim: r for r in command[1]}


def test_verify_command_passes_on_the_library(command):
    code, _, text = command
    assert code == 0, text
    assert "FAIL" not in text and "max discrepancy" in text


def test_every_claim_is_checked(rows):
    assert sorted(rows) == sorted(CLAIMS)


@pytest.mark.parametrize("claim", CLAIMS)
def test_claim_holds(rows, claim):
    r = rows[claim]
    assert r.passed, f"{claim}: {r.quantity} = {r.discrepancy:.3e} > {r.tolerance:.1e}"


def test_checks_can_fail():
    """The comparisons are not vacuous: the notes' uncentred covariance as an M-step fails the M-step checks."""
    with verify.jax.enable_x64(True):
        X, _, theta = verify.problem(0)
        bad = verify.check_m_step(X, theta, verify.broken_m_step, "full")
        good = verify.check_m_step(X, theta, verify.m_step, "full")
    assert not bad[0].passed and not bad[1].passed
    assert good[0].passed and good[1].passed
    # ascent really moves: from the start point it gains ELBO
    assert bad[0].discrepancy > 1e-2


def test_reg_covar_row_catches_a_dropped_reg_covar():
    """The reg_covar > 0 rows fail for an M-step that ignores reg_covar in one covariance type (diag), and only
    there (every other row runs with reg_covar = 0 and cannot see it)."""
    import gmm_jax

    def dropped(stats, center, covariance_type="full", reg_covar=1e-6):
        return gmm_jax.m_step(stats, center, covariance_type, 0.0 if covariance_type == "diag" else reg_covar)

    with verify.jax.enable_x64(True):
        X, _, theta = verify.problem(0)
        bad = verify.check_m_step_reg(X, theta, dropped, "diag")
        good = verify.check_m_step_reg(X, theta, gmm_jax.m_step, "diag")
    assert not bad.passed and good.passed, (bad, good)


def test_fit_supervised_public_and_weighted():
    import gmm_jax

    with verify.jax.enable_x64(True):
        X, y, _ = verify.problem(1)
        p = gmm_jax.fit_supervised(X, y, 3, "diag")
        w = jnp.ones(X.shape[0]) * 2.0
        pw = gmm_jax.fit_supervised(X, y, 3, "diag", sample_weight=w)
        np.testing.assert_allclose(p.means, pw.means, rtol=1e-12)
        Xn, yn = np.asarray(X), np.asarray(y)
        np.testing.assert_allclose(p.means[1], Xn[yn == 1].mean(0), rtol=1e-12)
        np.testing.assert_allclose(1 / np.square(p.prec_chol[1]), Xn[yn == 1].var(0), rtol=1e-10)


def test_verify_command_fails_on_a_broken_m_step():
    # the M-step group only (the other groups do not use the M-step and are covered by the fixture above)
    out = subprocess.run([sys.executable, "-m", "gmm_jax.verify", "--broken-m-step", "--only", "M-step"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "max discrepancy" in out.stdout and "FAIL" in out.stdout


def test_fixed_row_catches_an_unconstrained_m_step():
    """The fixed-block rows fail for the ordinary M-step (which moves the means: the ascent, means frozen, cannot
    reach it) and for a subtler error, means kept but covariances centred about the moved means (a feasible point
    the ascent beats), and pass for the constrained M-step."""
    import gmm_jax

    def ignores_fixed(stats, current, covariance_type, reg_covar, fixed):
        return gmm_jax.m_step(stats, current.means, covariance_type, reg_covar)

    def wrong_centre(stats, current, covariance_type, reg_covar, fixed):
        return ignores_fixed(stats, current, covariance_type, reg_covar, fixed)._replace(means=current.means)

    with verify.jax.enable_x64(True):
        X, _, _ = verify.problem(0)
        theta = verify.random_theta(np.random.default_rng(9), 3, 2, "diag")
        run = lambda fn: verify.check_fixed_m_step(X, theta, "diag", ("means",), verify.Check, m_step_fn=fn)  # noqa: E731
        moved, centred, good = run(ignores_fixed), run(wrong_centre), run(gmm_jax.stats.constrained_m_step)
    assert not moved[0].passed, moved
    assert not centred[0].passed and not centred[1].passed, centred
    assert good[0].passed and good[1].passed, good
