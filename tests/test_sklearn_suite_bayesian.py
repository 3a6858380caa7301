"""scikit-learn's own BayesianGaussianMixture tests (its installed test_bayesian_mixture.py) run with
``sklearn.mixture.BayesianGaussianMixture`` replaced by ``gmm_jax.sklearn.BayesianGaussianMixture``
(tests/sklearn_swap.py): priors and their defaults, both weight priors, the four covariance types, monotone lower
bound under warm starts, translation invariance, fit_predict, predict_proba.

Counted: the tests that construct our estimator and are not skipped (the tests of scikit-learn's private
``_log_dirichlet_norm`` / ``_log_wishart_norm`` construct none and are not counted).  No exclusions.
"""

from tests.sklearn_swap import pass_rate, run_suite


def test_sklearn_bayesian_mixture_tests_pass_against_ours(tmp_path):
    outcomes, tail = run_suite(["sklearn.mixture.tests.test_bayesian_mixture"], tmp_path / "report.json")
    rate, counted, failed = pass_rate(outcomes, {})
    assert counted >= 15, f"only {counted} tests constructed our BayesianGaussianMixture: the swap did not take\n{tail}"
    assert rate >= 0.90, (rate, counted, failed, tail)
