"""scikit-learn-compatible estimators (NumPy in, NumPy out) on top of the functional core.

Requires scikit-learn (``pip install gmm_jax[sklearn]``).  ``GaussianMixture`` takes the constructor arguments of
scikit-learn 1.9's ``GaussianMixture``; ``n_init`` restarts run at once by ``vmap``.  Given the same explicit
initial parameters, the fitted attributes equal scikit-learn's (tests/test_sklearn.py).

Precision follows the input, as in scikit-learn: float64 data (and integer data, converted to float64) are fit in
float64 and give float64 attributes; float32 data stay float32.  For a float64 call the estimator turns on JAX's
64-bit mode for that call only (``jax.enable_x64``, a thread-local setting restored afterwards), so the user's global
``jax_enable_x64`` is left as it is.  Later ``predict`` / ``score`` calls run in the fitted attributes' precision.
The estimators take and return NumPy arrays and are not meant to be traced inside a user's ``jit``; there, use the
functional API, whose precision is the traced arrays' (float64 only with ``jax_enable_x64`` on).
"""

from __future__ import annotations

import warnings
from functools import partial

import jax
import numpy as np

try:
    from sklearn.base import BaseEstimator, DensityMixin
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError as exc:  # pragma: no cover
    raise ImportError("gmm_jax.sklearn needs scikit-learn: pip install 'gmm_jax[sklearn]'") from exc

from gmm_jax import model
from gmm_jax.config import to_device
from gmm_jax.em import sufficient_stats
from gmm_jax.initialization import initialize
from gmm_jax.loop import fit as _fit
from gmm_jax.loop import restart_keys
from gmm_jax.params import (
    GMMParams,
    covariances_from_prec_chol,
    n_parameters,
    prec_chol_from_covariances,
    prec_chol_from_precisions,
    precisions_from_prec_chol,
    with_dof,
)
from gmm_jax.sklearn_checks import FLOAT_DTYPES, ILL_DEFINED, checked_inits, in_fitted_precision, precision_of, random_key
from gmm_jax.sklearn_kmeans import KMeans
from gmm_jax.stats import m_step_covariances


@partial(jax.jit, static_argnums=1)
def covariances_and_precisions(prec_chol, covariance_type):
    """(covariances, precisions) of the Cholesky factors of the precisions, as one compiled program (eagerly, each
    operation of the two would compile on its own for every new shape)."""
    return (covariances_from_prec_chol(prec_chol, covariance_type),
            precisions_from_prec_chol(prec_chol, covariance_type))


def _log_weights(weights):
    """Host log of the mixture weights (a zero weight gives -inf, without NumPy's warning)."""
    with np.errstate(divide="ignore"):
        return np.log(weights)


def _report(res, verbose, interval):
    """What ``verbose`` prints after a fit: each restart's outcome, and (verbose >= 2) every ``interval``-th
    iteration's lower bound."""
    converged, n_iter, ll = (np.asarray(a) for a in (res.converged, res.n_iter, res.log_likelihood))
    for r in range(n_iter.shape[0]):
        print(f"Initialization {r}: converged={bool(converged[r])} n_iter={int(n_iter[r])} "
              f"log-likelihood={float(ll[r]):.6f}")
        if verbose >= 2:
            tr = np.asarray(res.trace[r])
            for it in range(0, int(res.n_iter[r]), interval):
                print(f"  Iteration {it + 1}: lower bound {tr[it]:.6f}")


class GaussianMixture(DensityMixin, BaseEstimator):
    """Gaussian mixture fit by EM (scikit-learn API).

    Parameters are those of ``sklearn.mixture.GaussianMixture`` (1.9).  Computation runs in the input's precision
    (float64 data: float64, whatever the global ``jax_enable_x64``; see the module docstring).
    """

    def __init__(self, n_components=1, *, covariance_type="full", tol=1e-3, reg_covar=1e-6, max_iter=100, n_init=1,
                 init_params="kmeans", weights_init=None, means_init=None, precisions_init=None, random_state=None,
                 warm_start=False, verbose=0, verbose_interval=10, missing=None):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.missing = missing

    # ------------------------------------------------------------------ helpers
    def _check_parameters(self):
        from gmm_jax.params import check_covariance_type
        from gmm_jax.validation import INITS, check_nonneg_float, check_positive_int

        check_positive_int(self.n_components, "n_components")
        check_covariance_type(self.covariance_type)
        check_positive_int(self.max_iter, "max_iter", 0)
        check_positive_int(self.n_init, "n_init")
        check_nonneg_float(self.tol, "tol")
        check_nonneg_float(self.reg_covar, "reg_covar")
        if self.init_params not in INITS:
            raise ValueError(f"unknown init_params {self.init_params!r}; expected one of {', '.join(INITS)}")
        if self.missing not in (None, "marginalize"):
            raise ValueError(f"missing must be None or 'marginalize', got {self.missing!r}")

    def _params(self):
        return GMMParams(to_device(_log_weights(self.weights_)), to_device(self.means_),
                         to_device(self.precisions_cholesky_))

    def _family_options(self):
        """Extra options of ``gmm_jax.fit`` for this estimator's mixture family (none: Gaussian)."""
        return {}

    def _warm_params(self):
        """The parameters a warm start continues from."""
        return self._params()

    def _warm_lower_bound(self, n):
        """The lower bound a warm start measures its first change from, in ``fit``'s units (per point here)."""
        return self.lower_bound_

    def _n_parameters(self):
        """Free parameters of the fitted model (weights, means, covariances), as BIC and AIC count them."""
        return n_parameters(self.covariance_type, *self.means_.shape)

    def _initial(self, X, key, sample_weight):
        """Explicit initial parameters when any of weights/means/precisions_init is given (the rest estimated as
        the first restart would start; with ``n_init`` > 1 every restart starts there)."""
        w, m, p = checked_inits(self.weights_init, self.means_init, self.precisions_init, self.n_components,
                                X.shape[1], self.covariance_type)
        if w is None and m is None and p is None:
            return None
        base = None
        if w is None or m is None or p is None:
            base = initialize(restart_keys(key, 1)[0], X, self.n_components, covariance_type=self.covariance_type,
                              init=self.init_params, reg_covar=self.reg_covar, sample_weight=sample_weight)
        dt = X.dtype
        return GMMParams(base.log_weights if w is None else to_device(_log_weights(np.asarray(w, dt))),
                         base.means if m is None else to_device(m, dt),
                         base.prec_chol if p is None else
                         prec_chol_from_precisions(to_device(p), self.covariance_type).astype(dt))

    def _set_parameters(self, params):
        """scikit-learn's hook: set (weights, means, covariances, precisions_cholesky) and the precisions."""
        self.weights_, self.means_, self.covariances_, self.precisions_cholesky_ = (np.asarray(a) for a in params)
        self.precisions_ = np.asarray(covariances_and_precisions(to_device(self.precisions_cholesky_),
                                                                  self.covariance_type)[1])

    def _initialize(self, X, resp):
        """scikit-learn's hook: the parameters estimated from responsibilities ``resp`` (n, K), the given
        ``*_init`` values taking their place."""
        X, resp = np.asarray(X), np.asarray(resp, X.dtype)
        with precision_of(X.dtype):
            Xj = to_device(X)
            center = to_device((resp.T @ X) / np.maximum(resp.sum(0), np.finfo(X.dtype).tiny)[:, None])
            stats = sufficient_stats(Xj, to_device(resp), center, self.covariance_type)
            weights, means, cov = m_step_covariances(stats, center, self.covariance_type, self.reg_covar)
            w, m, p = checked_inits(self.weights_init, self.means_init, self.precisions_init, resp.shape[1],
                                    X.shape[1], self.covariance_type)
            pc = (prec_chol_from_covariances(cov, self.covariance_type) if p is None
                  else prec_chol_from_precisions(to_device(p), self.covariance_type))
            self.weights_ = np.asarray(weights if w is None else w, X.dtype)
            self.means_ = np.asarray(means if m is None else m, X.dtype)
            self.covariances_ = np.asarray(cov if p is None else covariances_from_prec_chol(pc, self.covariance_type))
            self.precisions_cholesky_ = np.asarray(pc, X.dtype)

    # ------------------------------------------------------------------ API
    def fit(self, X, y=None, sample_weight=None):
        self.fit_predict(X, y, sample_weight=sample_weight)
        return self

    def fit_predict(self, X, y=None, sample_weight=None):
        self._check_parameters()
        X = validate_data(self, X, dtype=FLOAT_DTYPES, ensure_min_samples=2, ensure_all_finite=self._finite())
        with precision_of(X.dtype):
            return self._fit_predict(X, sample_weight)

    def _fit_predict(self, X, sample_weight):
        if X.shape[0] < self.n_components:
            raise ValueError(f"Expected n_samples >= n_components but got n_components = {self.n_components}, "
                             f"n_samples = {X.shape[0]}")
        if sample_weight is not None:
            sample_weight = np.asarray(sample_weight, dtype=np.float64)
        key = random_key(self.random_state)
        Xj = to_device(X)
        init = self._initial(Xj, key, sample_weight)  # checks the *_init values on every fit, as scikit-learn
        warm = self.warm_start and hasattr(self, "converged_")
        if warm:  # continue from the fitted parameters, convergence measured from the last lower bound
            init = self._warm_params()
        n_init = 1 if warm else self.n_init
        res = _fit(key, Xj, self.n_components, covariance_type=self.covariance_type, n_restarts=n_init,
                   init=self.init_params, init_params=init,
                   init_lower_bound=self._warm_lower_bound(X.shape[0]) if warm else None,
                   max_iter=self.max_iter, tol=self.tol, reg_covar=self.reg_covar, sample_weight=sample_weight,
                   missing=self.missing, **self._family_options())
        if not bool(np.all(np.asarray(res.finite))):
            raise ValueError(ILL_DEFINED)
        self._set_fitted(res, X.shape[0] if sample_weight is None else float(np.sum(sample_weight)))
        if self.verbose:
            _report(res, self.verbose, self.verbose_interval)
        if not self.converged_ and self.max_iter > 0:
            warnings.warn("Best performing initialization did not converge. Try different init parameters, or "
                          "increase max_iter, tol, or check for degenerate data.", ConvergenceWarning, stacklevel=2)
        return self.predict(X)

    def _set_fitted(self, res, n_total=None):
        """The fitted attributes from the restart with the highest lower bound (the first of equals, as
        scikit-learn; with max_iter=0, when every bound is -inf, the last restart).  ``n_total``: the data's total
        weight (unused here: the lower bound is per point, as scikit-learn's)."""
        lb = np.asarray(res.lower_bound)
        b = int(np.argmax(lb)) if np.isfinite(lb).any() else lb.shape[0] - 1
        p = jax.tree.map(lambda a: np.asarray(a)[b], res.all_params)  # on the host: no program per shape
        self.weights_ = np.exp(np.asarray(p.log_weights, np.float64)).astype(p.means.dtype)
        self.weights_ /= self.weights_.sum()
        self.means_ = np.asarray(p.means)
        self.precisions_cholesky_ = np.asarray(p.prec_chol)
        cov, prec = covariances_and_precisions(to_device(p.prec_chol), self.covariance_type)
        self.covariances_, self.precisions_ = np.asarray(cov), np.asarray(prec)
        self.converged_ = bool(np.asarray(res.converged)[b])
        self.n_iter_ = int(np.asarray(res.n_iter)[b])
        self.lower_bounds_ = [float(v) for v in np.asarray(res.trace[b])[: self.n_iter_]]
        self.lower_bound_ = float(lb[b])
        if hasattr(p, "dof"):
            self.dof_ = np.asarray(p.dof)

    def _check_X(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, dtype=FLOAT_DTYPES, reset=False, ensure_all_finite=self._finite())
        return to_device(X, self.means_.dtype)

    def _finite(self):
        """scikit-learn's ``ensure_all_finite``: NaN allowed with ``missing='marginalize'``."""
        return "allow-nan" if getattr(self, "missing", None) else True

    @in_fitted_precision("means_")
    def predict(self, X):
        return np.asarray(model.predict(self._check_X(X), self._params(), self.covariance_type, missing=self.missing))

    @in_fitted_precision("means_")
    def predict_proba(self, X):
        return np.asarray(model.predict_proba(self._check_X(X), self._params(), self.covariance_type,
                                              missing=self.missing))

    @in_fitted_precision("means_")
    def score_samples(self, X):
        return np.asarray(model.per_row(model.score_samples_blocked, self._check_X(X), self._params(),
                                         self.covariance_type, None, self.missing))

    def score(self, X, y=None):
        return float(np.mean(self.score_samples(X)))

    def bic(self, X):
        """``-2 log L + p log n`` with ``p`` = :meth:`_n_parameters` (lower is better)."""
        n = np.shape(X)[0]
        return float(-2.0 * self.score(X) * n + self._n_parameters() * np.log(n))

    def aic(self, X):
        """``-2 log L + 2 p`` (lower is better)."""
        return float(-2.0 * self.score(X) * np.shape(X)[0] + 2.0 * self._n_parameters())

    @in_fitted_precision("means_")
    def sample(self, n_samples=1):
        check_is_fitted(self)
        if n_samples < 1:
            raise ValueError(f"Invalid value for 'n_samples': {n_samples}. It must be at least one.")
        X, y = model.sample(random_key(self.random_state), self._params(), int(n_samples), self.covariance_type)
        order = np.argsort(np.asarray(y), kind="stable")  # grouped by component, as scikit-learn returns them
        return np.asarray(X)[order], np.asarray(y)[order]


class StudentTMixture(GaussianMixture):
    """Mixture of multivariate Student-t distributions fit by EM (:mod:`gmm_jax.student`), with
    ``GaussianMixture``'s constructor and API plus ``dof``.

    Parameters:
      dof: None (default): each component's degrees of freedom are learned (starting from 10); a positive number:
        fixed at that value for every component.

    Fitted attributes as ``GaussianMixture``'s, with ``covariances_`` (and the precisions) those of the *scale*
    matrices S_k (a component's covariance is ``dof_k / (dof_k - 2) S_k`` for dof_k > 2), plus ``dof_`` (K,).
    """

    def __init__(self, n_components=1, *, covariance_type="full", tol=1e-3, reg_covar=1e-6, max_iter=100, n_init=1,
                 init_params="kmeans", weights_init=None, means_init=None, precisions_init=None, random_state=None,
                 warm_start=False, verbose=0, verbose_interval=10, dof=None):
        super().__init__(n_components, covariance_type=covariance_type, tol=tol, reg_covar=reg_covar,
                         max_iter=max_iter, n_init=n_init, init_params=init_params, weights_init=weights_init,
                         means_init=means_init, precisions_init=precisions_init, random_state=random_state,
                         warm_start=warm_start, verbose=verbose, verbose_interval=verbose_interval)
        self.dof = dof

    def _family_options(self):
        if self.dof is None:
            return dict(family="student-t")
        return dict(family="student-t", dof=self.dof, fixed=("dof",))

    def _params(self):
        return with_dof(super()._params(), to_device(self.dof_, self.means_.dtype))

    def _n_parameters(self):
        return super()._n_parameters() + (self.n_components if self.dof is None else 0)


def __getattr__(name):
    """``BayesianGaussianMixture`` lives in :mod:`gmm_jax.sklearn_bayesian` (it builds on this module's class)."""
    if name == "BayesianGaussianMixture":
        from gmm_jax.sklearn_bayesian import BayesianGaussianMixture

        return BayesianGaussianMixture
    raise AttributeError(f"module 'gmm_jax.sklearn' has no attribute {name!r}")


__all__ = ["GaussianMixture", "KMeans", "StudentTMixture"]  # and BayesianGaussianMixture (module __getattr__)
