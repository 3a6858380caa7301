"""Streaming EM over batches equals the in-memory fit."""

import jax
import numpy as np

import gmm_jax
from gmm_jax.stream import fit_stream
from tests.conftest import make_blobs, random_params


def test_stream_equals_in_memory_fit(covariance_type):
    X, _ = make_blobs(seed=80, n_per=70, d=3, k=3)
    params, _ = random_params(np.random.default_rng(81), 3, 3, covariance_type)
    ref = gmm_jax.fit(jax.random.key(0), X, 3, covariance_type=covariance_type, init_params=params, max_iter=15,
                      tol=0.0)
    # a memmap-like source: row slices of 50 (the last batch shorter)
    got, trace = fit_stream(lambda: (X[i:i + 50] for i in range(0, X.shape[0], 50)), params,
                            covariance_type=covariance_type, max_iter=15, tol=0.0)
    np.testing.assert_allclose(trace, ref.trace[0], rtol=1e-10)
    for a, b in zip(got, ref.params):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-10)
