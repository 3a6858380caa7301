"""scikit-learn's own KMeans tests (its installed test_k_means.py) run with ``sklearn.cluster.KMeans`` replaced by
``gmm_jax.sklearn.KMeans`` (tests/sklearn_swap.py): dense and sparse (CSR) data, 'lloyd' and 'elkan', weights,
verbose output, warnings and error messages.

Counted: the tests that construct our KMeans and are not skipped, nor listed in EXCLUDED (MiniBatchKMeans and the
tests of scikit-learn's private Cython helpers construct no KMeans and are not counted).
"""

from tests.sklearn_swap import pass_rate, run_suite

EXCLUDED = {
    "test_sample_weight_init": "calls scikit-learn's private KMeans._init_centroids (seeding with weights is tested in "
                               "tests/test_sparse_kmeans.py, dense and sparse)",
    "test_sample_weight_zero": "calls scikit-learn's private KMeans._init_centroids (as above)",
}


def test_sklearn_kmeans_tests_pass_against_ours(tmp_path):
    outcomes, tail = run_suite(["sklearn.cluster.tests.test_k_means"], tmp_path / "report.json",
                               env={"SKLEARN_RUN_FLOAT32_TESTS": "0"})  # float32 variants: docs/sklearn.md
    rate, counted, failed = pass_rate(outcomes, EXCLUDED)
    assert counted >= 150, f"only {counted} tests constructed our KMeans: the swap did not take\n{tail}"
    assert rate >= 0.90, (rate, counted, failed, tail)
