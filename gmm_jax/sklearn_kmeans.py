"""scikit-learn's ``KMeans`` on top of :func:`gmm_jax.kmeans` (dense or ``scipy.sparse`` data).

The constructor takes scikit-learn 1.9's arguments.  ``algorithm``: 'lloyd' (every point's distances every
iteration), 'hamerly' (Hamerly's bounds skip the distances that cannot change a label: the same iterates, the
centres can differ in the last bits), 'auto' (default: the bounds on a CPU for larger data, where they pay) or
'elkan' (accepted for scikit-learn code, whose reason to choose it is speed: runs 'auto').  Sparse data run the plain Lloyd
iteration on the stored entries (:mod:`gmm_jax.sparse_kmeans`).  ``copy_x`` is accepted and has no effect: X is
never modified.  Precision follows the input as in :mod:`gmm_jax.sklearn`.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, ClusterMixin, TransformerMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.validation import validate_data

from gmm_jax.clustering import center_distances, kmeans, kmeans_predict
from gmm_jax.rows import bucketed_rows
from gmm_jax.sklearn_checks import FLOAT_DTYPES, in_fitted_precision, precision_of, random_key
from gmm_jax.sparse_kmeans import is_sparse, sparse_center_distances

ALGORITHMS = {"lloyd": "lloyd", "elkan": "auto", "hamerly": "hamerly", "auto": "auto"}


def initial_centers(init, X, n_clusters: int, random_state):
    """An explicit init (array-like, or a callable ``init(X, n_clusters, random_state)``) as a float array, checked
    against K and the data's features with scikit-learn's messages."""
    centers = init(X, n_clusters, random_state=random_state) if callable(init) else init
    centers = np.array(centers, dtype=X.dtype)  # a copy: the caller's array is never shared or changed
    if centers.ndim != 2 or centers.shape[0] != n_clusters:
        raise ValueError(f"The shape of the initial centers {centers.shape} does not match the number of clusters "
                         f"{n_clusters}.")
    if centers.shape[1] != X.shape[1]:
        raise ValueError(f"The shape of the initial centers {centers.shape} does not match the number of features "
                         f"of the data {X.shape[1]}.")
    return centers


def restarts_for(init, n_init, estimator: str = "KMeans") -> int:
    """scikit-learn's number of initialisations: 'auto' is 1 for 'k-means++' and explicit centres, 10 otherwise;
    explicit centres run once (with a RuntimeWarning when more were asked for)."""
    explicit = not isinstance(init, str) and not callable(init)
    if n_init == "auto":
        n = 1 if (isinstance(init, str) and init == "k-means++") or explicit else 10
    else:
        n = int(n_init)
    if explicit and n != 1:
        warnings.warn(f"Explicit initial center position passed: performing only one init in {estimator} instead of "
                      f"n_init={n}.", RuntimeWarning, stacklevel=3)
        n = 1
    return n


def report(res, tol: float):
    """What ``verbose`` prints, in scikit-learn's words: per restart, each iteration's inertia and why it stopped."""
    trace = np.asarray(res.trace)
    for r in range(trace.shape[0]):
        print("Initialization complete")
        n_iter = int(res.all_n_iter[r])
        for i in range(n_iter):
            print(f"Iteration {i}, inertia {trace[r, i, 0]}.")
        if n_iter and trace[r, n_iter - 1, 2] == 0:
            print(f"Converged at iteration {n_iter - 1}: strict convergence.")
        elif bool(res.converged[r]):
            print(f"Converged at iteration {n_iter - 1}: center shift {trace[r, n_iter - 1, 1]} within tolerance "
                  f"{tol}.")


class KMeans(ClassNamePrefixFeaturesOutMixin, TransformerMixin, ClusterMixin, BaseEstimator):
    """K-means (Lloyd) with all restarts in one compiled call (scikit-learn API; see the module docstring)."""

    def __init__(self, n_clusters=8, *, init="k-means++", n_init="auto", max_iter=300, tol=1e-4, verbose=0,
                 random_state=None, copy_x=True, algorithm="auto"):
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.verbose = verbose
        self.random_state = random_state
        self.copy_x = copy_x
        self.algorithm = algorithm

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    def _validated(self, X, reset: bool):
        return validate_data(self, X, accept_sparse="csr", dtype=FLOAT_DTYPES, reset=reset)

    def fit(self, X, y=None, sample_weight=None):
        X = self._validated(X, reset=True)
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {self.algorithm!r}; expected one of {sorted(ALGORITHMS)}")
        if X.shape[0] < self.n_clusters:
            raise ValueError(f"n_samples={X.shape[0]} should be >= n_clusters={self.n_clusters}.")
        self._n_init = restarts_for(self.init, self.n_init, type(self).__name__)
        algorithm = self.algorithm
        if algorithm == "elkan" and self.n_clusters == 1:
            warnings.warn("algorithm='elkan' doesn't make sense for a single cluster. Using 'lloyd' instead.",
                          RuntimeWarning, stacklevel=2)
            algorithm = "lloyd"
        with precision_of(X.dtype):
            res = self._run(X, sample_weight, ALGORITHMS[algorithm])
        self.cluster_centers_ = np.asarray(res.centers, X.dtype)
        self.labels_ = np.asarray(res.labels)
        self.inertia_ = float(res.inertia)
        self.n_iter_ = int(res.n_iter)
        self._n_features_out = self.cluster_centers_.shape[0]
        distinct = len(np.unique(self.labels_))
        if distinct < self.n_clusters:
            warnings.warn(f"Number of distinct clusters ({distinct}) found smaller than n_clusters "
                          f"({self.n_clusters}). Possibly due to duplicate points in X.", ConvergenceWarning,
                          stacklevel=2)
        return self

    def _run(self, X, sample_weight, algorithm):
        """All restarts; a callable init is called once per restart (each restart its own call of kmeans)."""
        rng = check_random_state(self.random_state)
        w = None if sample_weight is None else np.asarray(sample_weight, np.float64)
        record = bool(self.verbose)
        if not callable(self.init):
            init = self.init if isinstance(self.init, str) else initial_centers(self.init, X, self.n_clusters, rng)
            res = kmeans(random_key(rng), X, self.n_clusters, n_restarts=self._n_init, init=init,
                         max_iter=self.max_iter, tol=self.tol, sample_weight=w, algorithm=algorithm, record=record)
        else:
            runs = [kmeans(random_key(rng), X, self.n_clusters, init=initial_centers(self.init, X, self.n_clusters, rng),
                           max_iter=self.max_iter, tol=self.tol, sample_weight=w, algorithm=algorithm, record=record)
                    for _ in range(self._n_init)]
            res = min(runs, key=lambda r: float(r.inertia))
        if record:
            report(res, self.tol)
        return res

    @in_fitted_precision("cluster_centers_")
    def predict(self, X):
        X = self._validated(X, reset=False)
        return np.asarray(kmeans_predict(X, np.asarray(self.cluster_centers_, X.dtype)))

    @in_fitted_precision("cluster_centers_")
    def transform(self, X):
        X = self._validated(X, reset=False)
        centers = np.asarray(self.cluster_centers_, X.dtype)
        if is_sparse(X):
            return np.asarray(sparse_center_distances(X, centers))
        return np.asarray(bucketed_rows(center_distances, np.asarray(X), centers))

    def score(self, X, y=None, sample_weight=None):
        d = self.transform(X).min(axis=1) ** 2
        return float(-np.sum(d if sample_weight is None else d * np.asarray(sample_weight)))


__all__ = ["ALGORITHMS", "KMeans", "initial_centers", "report", "restarts_for"]
