"""``BayesianGaussianMixture``: scikit-learn's variational Bayesian mixture on gmm_jax's engine
(:mod:`gmm_jax.variational`), with scikit-learn 1.9's constructor arguments and fitted attributes.

From the same initial responsibilities, in float64, the fitted attributes equal scikit-learn's
(``tests/test_variational.py``); ``n_init`` restarts run at once (vmapped), as ``GaussianMixture``'s.
"""

from __future__ import annotations

import jax
import numpy as np

from gmm_jax import model
from gmm_jax.config import to_device
from gmm_jax.loop import fit as _fit
from gmm_jax.sklearn import GaussianMixture, covariances_and_precisions
from gmm_jax.sklearn_checks import FLOAT_DTYPES, in_fitted_precision, precision_of, random_key
from gmm_jax.variational import (
    WEIGHT_PRIORS,
    VBParams,
    VBPrior,
    effective_params,
    mixture_weights,
    point_params,
    resolve_vb_prior,
)


class BayesianGaussianMixture(GaussianMixture):
    """Variational Bayesian Gaussian mixture (scikit-learn API; parameters of
    ``sklearn.mixture.BayesianGaussianMixture`` 1.9).  Inits 'kmeans', 'k-means++' and 'random' (as
    ``gmm_jax.fit``'s); computation in the input's precision."""

    def __init__(self, *, n_components=1, covariance_type="full", tol=1e-3, reg_covar=1e-6, max_iter=100, n_init=1,
                 init_params="kmeans", weight_concentration_prior_type="dirichlet_process",
                 weight_concentration_prior=None, mean_precision_prior=None, mean_prior=None,
                 degrees_of_freedom_prior=None, covariance_prior=None, random_state=None, warm_start=False, verbose=0,
                 verbose_interval=10):
        super().__init__(n_components, covariance_type=covariance_type, tol=tol, reg_covar=reg_covar,
                         max_iter=max_iter, n_init=n_init, init_params=init_params, random_state=random_state,
                         warm_start=warm_start, verbose=verbose, verbose_interval=verbose_interval)
        self.weight_concentration_prior_type = weight_concentration_prior_type
        self.weight_concentration_prior = weight_concentration_prior
        self.mean_precision_prior = mean_precision_prior
        self.mean_prior = mean_prior
        self.degrees_of_freedom_prior = degrees_of_freedom_prior
        self.covariance_prior = covariance_prior

    def _prior(self):
        return VBPrior(self.weight_concentration_prior_type, self.weight_concentration_prior, self.mean_precision_prior,
                       self.mean_prior, self.degrees_of_freedom_prior, self.covariance_prior)

    def _check_parameters(self, X=None):
        super()._check_parameters()
        if self.init_params == "random_from_data":
            raise ValueError("init_params='random_from_data' is not supported by gmm_jax's BayesianGaussianMixture; "
                             "use 'kmeans', 'k-means++' or 'random'")
        if self.weight_concentration_prior_type not in WEIGHT_PRIORS:
            raise ValueError(f"weight_concentration_prior_type must be one of {WEIGHT_PRIORS}, got "
                             f"{self.weight_concentration_prior_type!r}")
        if X is not None:
            self._set_priors(np.asarray(X))

    def _set_priors(self, X):
        """The resolved prior as scikit-learn's ``*_prior_`` attributes (its error message for the dof)."""
        d = X.shape[1]
        dof = self.degrees_of_freedom_prior
        if dof is not None and not dof > d - 1.0:
            raise ValueError(f"The parameter 'degrees_of_freedom_prior' should be greater than {d - 1}, but got "
                             f"{dof:.3f}.")
        arrays = resolve_vb_prior(self._prior(), X, self.n_components, self.covariance_type, np.float64)
        self.weight_concentration_prior_ = float(arrays.alpha)
        self.mean_precision_prior_ = float(arrays.beta)
        self.mean_prior_ = np.asarray(arrays.mean, X.dtype)
        self.degrees_of_freedom_prior_ = float(arrays.dof)
        cov = np.asarray(arrays.covariance, X.dtype)
        self.covariance_prior_ = float(cov) if cov.ndim == 0 else cov
        return arrays

    def _family_options(self):
        return dict(variational=self._prior())

    def _initial(self, X, key, sample_weight):
        return None

    def fit_predict(self, X, y=None, sample_weight=None):
        self._check_parameters()
        from sklearn.utils.validation import validate_data

        X = validate_data(self, X, dtype=FLOAT_DTYPES, ensure_min_samples=2)
        with precision_of(X.dtype):
            self._set_priors(X)
            return self._fit_predict(X, sample_weight)

    def _initialize_parameters(self, X, random_state):
        """scikit-learn's hook: the hyper-parameters the fit starts from (no iteration) as the fitted attributes."""
        X = np.asarray(X)
        with precision_of(X.dtype):
            self._set_priors(X)
            res = _fit(random_key(random_state), to_device(X), self.n_components, covariance_type=self.covariance_type,
                       init=self.init_params, max_iter=0, reg_covar=self.reg_covar, variational=self._prior())
            self._set_hyper(jax.tree.map(lambda a: np.asarray(a)[0], res.all_params))

    def _vb_params(self) -> VBParams:
        dt = self.means_.dtype
        a, b = (self.weight_concentration_ if isinstance(self.weight_concentration_, tuple)
                else (self.weight_concentration_, None))
        arr = [to_device(np.asarray(v, dt)) if v is not None else None
               for v in (a, b, self.mean_precision_, self.means_, self.degrees_of_freedom_, self.precisions_cholesky_)]
        return VBParams(*arr)

    def _effective(self):
        """(the Gaussians of the variational E-step with their log-weights normalised, the normaliser c): scikit-learn
        evaluates ``E_q[log phi_k] + E_q[log N(x | mu_k, Lambda_k^-1)]``, which is their log-joint plus c."""
        eff = effective_params(self._vb_params())
        c = jax.scipy.special.logsumexp(eff.log_weights)
        return eff._replace(log_weights=eff.log_weights - c), float(c)

    def _params(self):
        """What ``predict`` and ``predict_proba`` evaluate (the responsibilities do not see c)."""
        return self._effective()[0]

    @in_fitted_precision("means_")
    def score_samples(self, X):
        params, c = self._effective()
        return np.asarray(model.per_row(model.score_samples_blocked, self._check_X(X), params, self.covariance_type,
                                        None, None)) + c

    def _warm_params(self):
        return self._vb_params()

    def _warm_lower_bound(self, n):
        return self.lower_bound_ / n

    def _set_hyper(self, p: VBParams):
        dp = p.weight_concentration_b is not None
        self.weight_concentration_ = (np.asarray(p.weight_concentration), np.asarray(p.weight_concentration_b)) if dp \
            else np.asarray(p.weight_concentration)
        self.mean_precision_ = np.asarray(p.mean_precision)
        self.means_ = np.asarray(p.means)
        dof = np.asarray(p.degrees_of_freedom)
        self.degrees_of_freedom_ = float(dof) if dof.ndim == 0 else dof
        self.precisions_cholesky_ = np.asarray(p.prec_chol)
        cov, prec = covariances_and_precisions(to_device(p.prec_chol), self.covariance_type)
        self.covariances_, self.precisions_ = np.asarray(cov), np.asarray(prec)
        w = np.asarray(mixture_weights(jax.tree.map(to_device, p)), np.float64)
        self.weights_ = (w / w.sum()).astype(self.means_.dtype)

    def _set_fitted(self, res, n_total=None):
        lb = np.asarray(res.lower_bound)
        b = int(np.argmax(lb)) if np.isfinite(lb).any() else lb.shape[0] - 1
        self._set_hyper(jax.tree.map(lambda a: np.asarray(a)[b], res.all_params))
        self.converged_ = bool(np.asarray(res.converged)[b])
        self.n_iter_ = int(np.asarray(res.n_iter)[b])
        self.lower_bounds_ = [float(v) * n_total for v in np.asarray(res.trace[b])[: self.n_iter_]]
        self.lower_bound_ = float(lb[b]) * n_total

    def _n_parameters(self):
        raise AttributeError("BayesianGaussianMixture has no bic/aic (scikit-learn's neither)")

    @in_fitted_precision("means_")
    def sample(self, n_samples=1):
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self)
        if n_samples < 1:
            raise ValueError(f"Invalid value for 'n_samples': {n_samples}. It must be at least one.")
        X, y = model.sample(random_key(self.random_state), point_params(self._vb_params()), int(n_samples),
                            self.covariance_type)
        order = np.argsort(np.asarray(y), kind="stable")
        return np.asarray(X)[order], np.asarray(y)[order]


__all__ = ["BayesianGaussianMixture"]
