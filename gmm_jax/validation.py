"""Input validation for the entry points (runs before jit; nothing inside jitted code raises).

Validation is skipped for traced values (a caller composing ``fit`` inside its own ``jax.jit``), since their
values are unknown at trace time; such callers rely on the result flags (``finite``, ``converged``).
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np

from gmm_jax.config import all_finite, is_traced, to_device
from gmm_jax.params import COVARIANCE_TYPES, GMMParams, StudentTParams, check_covariance_type, prec_chol_shape
from gmm_jax.stats import FIXABLE

INITS = ("kmeans", "k-means++", "random", "random_from_data")


# one compiled check instead of two eager operations (each eager operation compiles on its first use); arrays of
# up to _HOST_CHECK_ELEMENTS elements are checked on the host instead
_finite_on_device = jax.jit(all_finite)
_HOST_CHECK_ELEMENTS = 1 << 18


def key_form(key):
    """(key array, form) with form 'one' for a single PRNG key, 'batch' for a 1-D batch of keys (typed keys or raw
    uint32 key data), None for anything else."""
    keys = key if isinstance(key, jax.Array) else jnp.asarray(key)
    typed = jnp.issubdtype(keys.dtype, jax.dtypes.prng_key)
    if (typed and keys.ndim == 0) or (not typed and keys.shape == (2,)):
        return keys, "one"
    if (typed and keys.ndim == 1) or (not typed and keys.ndim == 2 and keys.shape[1] == 2):
        return keys, "batch"
    return keys, None


def float_dtype(x) -> np.dtype:
    """float64 if the input is float64 and x64 is enabled, else float32."""
    dt = getattr(x, "dtype", None)
    if dt is not None and dt == np.float64 and jax.config.jax_enable_x64:
        return np.dtype(np.float64)
    return np.dtype(np.float32)


def as_data(X, name: str = "X", allow_nan: bool = False):
    """Convert to a 2-D floating JAX array; raise ValueError naming the problem.  ``allow_nan``: NaN entries are
    missing values (infinities are still rejected)."""
    if allow_nan and not is_traced(X):
        arr = np.asarray(X, dtype=float_dtype(np.asarray(X)) if np.issubdtype(np.asarray(X).dtype, np.number) else None)
        if arr.ndim == 2 and arr.size and np.issubdtype(arr.dtype, np.floating):
            if np.any(np.isinf(arr)):
                bad = np.argwhere(np.isinf(arr))[0]
                raise ValueError(f"{name} contains infinity (first at row {bad[0]}, column {bad[1]}); NaN marks a "
                                 "missing value")
            return to_device(arr)
    if is_traced(X):
        if X.ndim != 2:
            raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {X.shape}")
        return X if jnp.issubdtype(X.dtype, jnp.floating) else X.astype(jnp.float32)
    if isinstance(X, jax.Array):  # validate on the device: no host copy of the data
        if X.ndim != 2:
            raise ValueError(f"{name} must be 2-D (n_samples, n_features), got ndim={X.ndim} with shape {X.shape}")
        if X.shape[0] == 0 or X.shape[1] == 0:
            raise ValueError(f"{name} is empty: shape {X.shape}")
        if not (jnp.issubdtype(X.dtype, jnp.number) or X.dtype == jnp.bool_):
            raise ValueError(f"{name} must be numeric, got dtype {X.dtype}")
        dtype = float_dtype(X)
        if X.dtype != dtype:
            X = X.astype(dtype)
        # small arrays on the host (a jitted check compiles once per shape)
        finite = np.all(np.isfinite(np.asarray(X))) if X.size <= _HOST_CHECK_ELEMENTS else bool(_finite_on_device(X))
        if not finite:
            bad = np.argwhere(~np.isfinite(np.asarray(X)))[0]
            raise ValueError(f"{name} contains NaN or infinity (first at row {bad[0]}, column {bad[1]})")
        return X
    try:
        arr = np.asarray(X)
    except Exception as exc:  # ragged lists etc.
        raise ValueError(f"{name} could not be converted to a numeric array: {exc}") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got ndim={arr.ndim} with shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {arr.shape}")
    dtype = float_dtype(arr)
    arr = arr.astype(dtype, copy=False)
    step = 1 << 16  # check finiteness in row chunks: scratch stays small for large data
    for start in range(0, arr.shape[0], step):
        chunk = arr[start : start + step]
        if not np.all(np.isfinite(chunk)):
            bad = np.argwhere(~np.isfinite(chunk))[0]
            raise ValueError(f"{name} contains NaN or infinity (first at row {start + bad[0]}, column {bad[1]})")
    return to_device(arr)


def as_sample_weight(sample_weight, n: int, dtype):
    if sample_weight is None:
        return None
    if is_traced(sample_weight):
        return sample_weight.astype(dtype)
    w = np.asarray(sample_weight, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"sample_weight must have shape ({n},), got {w.shape}")
    if not np.all(np.isfinite(w)):
        raise ValueError("sample_weight contains NaN or infinity")
    if np.any(w < 0):
        raise ValueError("sample_weight must be non-negative")
    if not np.sum(w) > 0:
        raise ValueError("sample_weight sums to zero")
    return to_device(w.astype(dtype))


def check_positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_lower_bound(value, name: str = "init_lower_bound") -> float:
    """A log-likelihood to start from: a number, -inf allowed, not NaN or +inf."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or np.isnan(value) or value == np.inf:
        raise ValueError(f"{name} must be a number below +inf, got {value!r}")
    return float(value)


def check_nonneg_float(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def check_n_samples(n: int, n_components: int, what: str = "n_components") -> None:
    if n < n_components:
        raise ValueError(f"too few points: n_samples={n} must be >= {what}={n_components}")


def _check_params_shapes(params: GMMParams, covariance_type: str, n_components: int, n_features: int,
                         name: str) -> None:
    """Shapes of ``params`` against K, D and the covariance type (static: checked for traced parameters too)."""
    if not isinstance(params, (GMMParams, StudentTParams)):
        raise ValueError(f"{name} must be a GMMParams or StudentTParams, got {type(params).__name__}")
    lw, means, pc = (tuple(np.shape(p)) for p in params[:3])
    if isinstance(params, StudentTParams) and tuple(np.shape(params.dof)) != (n_components,):
        raise ValueError(f"{name}.dof must have shape ({n_components},), got {tuple(np.shape(params.dof))}")
    if lw != (n_components,):
        raise ValueError(f"{name}.log_weights must have shape ({n_components},), got {lw}")
    if means != (n_components, n_features):
        raise ValueError(f"{name}.means must have shape ({n_components}, {n_features}), got {means}")
    want = prec_chol_shape(covariance_type, n_components, n_features)
    if pc != want:
        raise ValueError(f"{name}.prec_chol for covariance_type={covariance_type!r} must have shape {want}, got {pc}")


def validate_params(params: GMMParams, covariance_type: str, n_components: int, n_features: int, dtype, atol=None,
                    name: str = "init_params"):
    """Check explicit parameters: shapes, finite values, weights summing to one, positive-definite factors.
    Traced parameters get the shape checks only.  ``name`` is how error messages call them."""
    _check_params_shapes(params, covariance_type, n_components, n_features, name)
    if any(is_traced(p) for p in params):
        return type(params)(*(to_device(p, dtype) for p in params))
    lw = np.asarray(params.log_weights, dtype=np.float64)
    means = np.asarray(params.means, dtype=np.float64)
    pc = np.asarray(params.prec_chol, dtype=np.float64)
    for part, a in (("log_weights", lw), ("means", means), ("prec_chol", pc)):
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name}.{part} contains NaN or infinity")
    total = np.exp(lw).sum()
    tol = atol if atol is not None else (1e-6 if np.dtype(dtype) == np.float64 else 1e-4)
    if abs(total - 1.0) > tol:
        raise ValueError(f"{name} weights must sum to one, got sum(exp(log_weights)) = {total:.8g}")
    if covariance_type in ("full", "tied"):
        diag = np.diagonal(pc, axis1=-2, axis2=-1)
        if np.any(np.tril(pc, -1) != 0):
            raise ValueError(f"{name}.prec_chol must be upper-triangular (precision Cholesky factor U, U U^T = P)")
        if np.any(diag <= 0):
            raise ValueError(f"{name}.prec_chol has a non-positive diagonal: the covariance is not positive definite")
    elif np.any(pc <= 0):
        raise ValueError(f"{name}.prec_chol must be positive: the covariance is not positive definite")
    out = GMMParams(to_device(lw, dtype), to_device(means, dtype), to_device(pc, dtype))
    if isinstance(params, StudentTParams):
        dof = np.asarray(params.dof, dtype=np.float64)
        if not np.all(np.isfinite(dof) & (dof > 0)):
            raise ValueError(f"{name}.dof must be positive and finite")
        return StudentTParams(*out, to_device(dof, dtype))
    return out


def model_params(params, covariance_type: str, n_features=None, dtype=None, name: str = "params") -> GMMParams:
    """A fitted mixture's parameters, checked for the model functions (predict, score, sample, ...): a valid
    covariance type, shapes consistent with it (and with ``n_features`` when given), finite values, weights summing
    to one, positive-definite factors.  Returned in ``dtype`` (default: that of the means, float32 unless float64
    with x64 on)."""
    check_covariance_type(covariance_type)
    if not isinstance(params, (GMMParams, StudentTParams)):
        raise ValueError(f"{name} must be a GMMParams or StudentTParams, got {type(params).__name__}")
    shape = np.shape(params.means)
    if len(shape) != 2:
        raise ValueError(f"{name}.means must have shape (n_components, n_features), got {shape}")
    k, d = shape
    if n_features is not None and d != n_features:
        raise ValueError(f"X has {n_features} features, but the mixture's means have {d} ({name}.means shape {shape})")
    if dtype is None:
        dtype = float_dtype(params.means)
    return validate_params(params, covariance_type, k, d, dtype, name=name)


def check_component(component, n_components: int) -> None:
    """``component``: an integer in [0, K) or a 1-D array of them (values checked unless traced)."""
    if np.ndim(component) > 1:
        raise ValueError(f"component must be an integer or a 1-D array of integers, got shape {np.shape(component)}")
    if is_traced(component):
        return
    c = np.asarray(component)
    if not (np.issubdtype(c.dtype, np.integer) or (np.issubdtype(c.dtype, np.floating) and np.all(c == np.round(c)))):
        raise ValueError(f"component must be an integer or a 1-D array of integers, got {component!r}")
    if c.size and (c.min() < 0 or c.max() >= n_components):
        raise ValueError(f"component must be in [0, {n_components}) (the mixture has {n_components} components), "
                         f"got {component!r}")


def model_inputs(X, params, covariance_type: str, allow_nan: bool = False):
    """(X, params) for the model functions: X as :func:`as_data` makes it (2-D, numeric, finite; ``allow_nan``:
    NaN entries allowed, missing values), the parameters as :func:`model_params` checks them, in X's dtype."""
    check_covariance_type(covariance_type)
    X = as_data(X, allow_nan=allow_nan)
    return X, model_params(params, covariance_type, X.shape[1], X.dtype)


def validate_fit(X, n_components, covariance_type, init, init_params, max_iter, tol, reg_covar, sample_weight, n_restarts,
                 allow_nan: bool = False):
    n_components = check_positive_int(n_components, "n_components")
    check_covariance_type(covariance_type)
    if init_params is None and init not in INITS:
        raise ValueError(f"unknown init {init!r}; expected one of {', '.join(INITS)} or explicit init_params")
    check_positive_int(max_iter, "max_iter", 0)
    check_positive_int(n_restarts, "n_restarts")
    check_nonneg_float(tol, "tol")
    check_nonneg_float(reg_covar, "reg_covar")
    X = as_data(X, allow_nan=allow_nan)
    n, d = X.shape
    check_n_samples(n, n_components)
    if allow_nan and not is_traced(X):
        empty = np.flatnonzero(np.all(np.isnan(np.asarray(X)), axis=0))
        if empty.size:
            raise ValueError(f"X: column(s) {empty.tolist()} have no observed value")
    w = as_sample_weight(sample_weight, n, X.dtype)
    if init_params is not None:
        init_params = validate_params(init_params, covariance_type, n_components, d, X.dtype)
    return X, w, init_params


def check_labels(labels, n: int, n_components: int, unknown: bool = False):
    """Known labels of the ``n`` rows as an int32 array: integers in [0, K), or -1 for an unknown label when
    ``unknown``; ValueError names a wrong shape, a non-integer or an out-of-range value.  Traced labels: only the
    shape is checked."""
    if np.shape(labels) != (n,):
        raise ValueError(f"labels must have shape ({n},) (one per row of X), got {np.shape(labels)}")
    if is_traced(labels):
        return to_device(labels, jnp.int32)
    lab = np.asarray(labels)
    if not (np.issubdtype(lab.dtype, np.integer) or (np.issubdtype(lab.dtype, np.floating) and np.all(lab == np.round(lab)))):
        raise ValueError(f"labels must be integers, got dtype {lab.dtype}")
    low = -1 if unknown else 0
    if n and (lab.min() < low or lab.max() >= n_components):
        what = f"in [0, {n_components})" + (" or -1 (unknown)" if unknown else "")
        raise ValueError(f"labels must be {what}, got values from {lab.min()} to {lab.max()}")
    return to_device(lab.astype(np.int32))


FAMILIES = ("gaussian", "student-t")


def check_family(family, init_params=None) -> str:
    """``fit``'s ``family`` ('gaussian' or 'student-t'; Student-t ``init_params`` imply 'student-t')."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {', '.join(FAMILIES)}")
    return "student-t" if isinstance(init_params, StudentTParams) else family


def check_dof(dof, n_components: int, dtype):
    """Degrees of freedom: a positive finite number or (K,) of them, as a (K,) array of ``dtype``."""
    a = np.asarray(dof, dtype=np.float64)
    if a.ndim > 1 or (a.ndim == 1 and a.shape[0] != n_components):
        raise ValueError(f"dof must be a number or have shape ({n_components},), got shape {a.shape}")
    if not np.all(np.isfinite(a) & (a > 0)):
        raise ValueError(f"dof must be positive and finite, got {dof!r}")
    return to_device(np.broadcast_to(a, (n_components,)), dtype)


def check_fixed(fixed, family: str = "gaussian") -> tuple:
    """``fit``'s ``fixed``: a name or a sequence of names from ``gmm_jax.stats.FIXABLE`` (a Student-t mixture also
    'dof'), returned as a tuple in that order (a static option of the compiled fit)."""
    allowed = FIXABLE + (("dof",) if family == "student-t" else ())
    names = (fixed,) if isinstance(fixed, str) else tuple(fixed)
    bad = [f for f in names if f not in allowed]
    if bad:
        raise ValueError(f"fixed must name parameter blocks among {', '.join(allowed)}; got {bad}")
    return tuple(f for f in allowed if f in names)


def validate_kmeans(X, n_clusters, init, max_iter, tol, sample_weight, n_restarts):
    n_clusters = check_kmeans_options(n_clusters, max_iter, tol, n_restarts)
    X = as_data(X)
    n, d = X.shape
    check_n_samples(n, n_clusters, "n_clusters")
    return X, as_sample_weight(sample_weight, n, X.dtype), check_init_centers(init, n_clusters, d, X.dtype)


def check_kmeans_options(n_clusters, max_iter, tol, n_restarts) -> int:
    """K-means' integer and tolerance options checked; returns ``n_clusters`` as an int."""
    n_clusters = check_positive_int(n_clusters, "n_clusters")
    check_positive_int(max_iter, "max_iter")
    check_positive_int(n_restarts, "n_restarts")
    check_nonneg_float(tol, "tol")
    return n_clusters


def check_init_centers(init, n_clusters: int, n_features: int, dtype):
    """K-means' ``init``: None for 'k-means++' and 'random', else the (K, D) centres as a JAX array of ``dtype``."""
    if isinstance(init, str):
        if init not in ("k-means++", "random"):
            raise ValueError(f"unknown init {init!r}; expected 'k-means++', 'random' or a (K, D) array")
        return None
    c = np.asarray(init, dtype=np.float64)
    if c.shape != (n_clusters, n_features):
        raise ValueError(f"init centres must have shape ({n_clusters}, {n_features}), got {c.shape}")
    if not np.all(np.isfinite(c)):
        raise ValueError("init centres contain NaN or infinity")
    return to_device(c.astype(dtype))


__all__ = ["COVARIANCE_TYPES", "INITS"]
