"""The EM loop: one jitted program runs every restart (vmapped) from initialisation to convergence.

Each iteration is one fused pass over row blocks (:func:`gmm_jax.engine.em_pass`: the E-step and the sufficient
statistics about the current means, block by block, so scratch memory is one block's worth), then the closed-form
M-step (:func:`gmm_jax.stats.m_step`).  The data are never copied: a reference point near the data's mean is
subtracted block by block, which keeps float32 accurate for data with a large offset.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gmm_jax.config import Config, all_finite, any_traced, compiler_options_supported, resolve_config, to_device
from gmm_jax.engine import em_pass, pass_form, product_applies
from gmm_jax.forms import data_extent, product_error_bound
from gmm_jax.initialization import init_context, initial_params, kmeans_init_centers, labelled_means, map_restarts, match_to_labels
from gmm_jax.missing import column_mean_filled
from gmm_jax.params import GMMParams, StudentTParams, is_student, with_dof
from gmm_jax.precision import EXACT, PassPrecision, pass_precision
from gmm_jax.prior import PriorArrays, map_m_step, resolve_prior
from gmm_jax.rows import bucket_rows, resolve_block_size
from gmm_jax.stats import active_mask, constrained_m_step, mask_components
from gmm_jax.student import student_m_step
from gmm_jax.variational import (
    VBPrior,
    VBPriorArrays,
    check_variational,
    effective_params,
    is_vb,
    lower_bound,
    resp_entropy,
    vb_m_step,
)


class FitResult(NamedTuple):
    """Result of :func:`fit` (R = number of restarts, T = max_iter).

    Attributes:
      params: ``GMMParams`` of the best restart (highest final log-likelihood among finite restarts).
      best: () index of the best restart.
      log_likelihood: (R,) mean (weighted) log-likelihood per point of each restart's returned parameters.
      lower_bound: (R,) scikit-learn's ``lower_bound_``: the mean log-likelihood computed in the last iteration's
        E-step, i.e. of the parameters *before* the last M-step.
      n_iter: (R,) EM iterations run.
      converged: (R,) |change of mean log-likelihood| < tol reached within max_iter.
      finite: (R,) False if an update produced non-finite values (the last finite parameters are kept).
      trace: (R, T) mean log-likelihood at each iteration's E-step; entries at and after ``n_iter`` are NaN.
      counts: (R, K) effective (weighted) number of points per component under the returned parameters; a
        component with a count below 1 is (near-)empty.
      all_params: ``GMMParams`` with a leading (R,) axis: every restart's parameters.
    """

    params: GMMParams
    best: jax.Array
    log_likelihood: jax.Array
    lower_bound: jax.Array
    n_iter: jax.Array
    converged: jax.Array
    finite: jax.Array
    trace: jax.Array
    counts: jax.Array
    all_params: GMMParams


class EMState(NamedTuple):
    """The EM loop's state (one restart)."""

    n_iter: jax.Array  # () iterations run
    params: GMMParams  # current parameters (shifted coordinates)
    log_likelihood: jax.Array  # () mean log-likelihood of the last E-step
    trace: jax.Array  # (T,) per-iteration mean log-likelihood, NaN after n_iter
    converged: jax.Array  # ()
    finite: jax.Array  # () False once an update was not finite (the last finite parameters are kept)


class Context(NamedTuple):
    """What every restart's loop reads besides its state: the data, weights and their total, the reference point,
    the data's extent (None: no product form), the rows' known labels (None: none; -1: unknown) and a prior (MAP
    EM, :mod:`gmm_jax.prior`)."""

    X: jax.Array
    w: jax.Array | None
    shift: jax.Array
    wsum: jax.Array
    extent: tuple | None
    labels: jax.Array | None = None
    prior: PriorArrays | None = None


def em_state(params: GMMParams, max_iter: int, dtype, lower_bound=None) -> EMState:
    """The state before the first iteration; ``lower_bound``: the log-likelihood the first iteration's change is
    measured from (default -inf: no convergence on the first iteration)."""
    ll = jnp.array(-jnp.inf, dtype) if lower_bound is None else jnp.asarray(lower_bound, dtype)
    return EMState(jnp.zeros((), jnp.int32), params, ll, jnp.full((max_iter,), jnp.nan, dtype), jnp.array(False),
                   all_finite(params))


def em_run(state: EMState, ctx: Context, tol, reg_covar, until, *, covariance_type, bs, config, axis_name=None,
           fixed: tuple = (), masked: bool = False, missing: bool = False, precision: PassPrecision = EXACT,
           guard_extent=None):
    """EM iterations from ``state`` until ``until`` iterations in all, convergence, or a non-finite update;
    ``fixed``: parameter blocks held at their values (:func:`gmm_jax.stats.constrained_m_step`); ``masked``: the
    inactive components of the state's parameters stay so (:func:`gmm_jax.stats.mask_components`); ``missing``: NaN
    entries of the data are marginalised (:mod:`gmm_jax.missing`).  ``precision``: of the passes' products; a
    reduced one (:mod:`gmm_jax.precision`) also stops the iterations once its error bound for data within
    ``guard_extent`` (:func:`gmm_jax.forms.data_extent`) exceeds ``config.precision_tol``."""

    def cond(s):
        go = (s.n_iter < until) & ~s.converged & s.finite
        if precision.exact:
            return go
        g = product_error_bound(guard_extent, s.params, covariance_type, precision.unit)
        return go & (g <= config.precision_tol)

    def body(s):
        pp = effective_params(s.params) if is_vb(s.params) else s.params  # variational Bayes: its E-step's Gaussians
        stats, ll_sum = em_pass(ctx.X, ctx.w, ctx.shift, pp, covariance_type, bs, config, axis_name=axis_name,
                                extent=ctx.extent, labels=ctx.labels, missing=missing, precision=precision)
        ll = ll_sum / ctx.wsum
        if is_vb(s.params):  # the posterior's hyper-parameters; the trace holds the lower bound per point
            new = vb_m_step(stats, pp.means, covariance_type, reg_covar, ctx.prior)
            ll = lower_bound(new, resp_entropy(stats, pp, ll_sum, covariance_type), covariance_type) / ctx.wsum
        elif is_student(s.params):
            new = student_m_step(stats, s.params, covariance_type, reg_covar, fixed)
        elif ctx.prior is not None:
            new = map_m_step(stats, s.params.means, covariance_type, reg_covar, ctx.prior)
        else:
            new = constrained_m_step(stats, s.params, covariance_type, reg_covar, fixed)
        if masked:
            new = mask_components(new, active_mask(s.params))
        ok = all_finite(new) & jnp.isfinite(ll)
        params = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, s.params)
        trace = s.trace.at[s.n_iter].set(ll) if s.trace.shape[0] else s.trace  # max_iter = 0: never runs
        return EMState(s.n_iter + 1, params, ll, trace, jnp.abs(ll - s.log_likelihood) < tol, ok)

    return lax.while_loop(cond, body, state)


def em_finish(state: EMState, ctx: Context, *, covariance_type, bs, config, axis_name=None, missing: bool = False):
    """The per-restart outputs: (params, mean log-likelihood of them, lower bound, n_iter, converged, finite, trace,
    counts)."""
    vb = is_vb(state.params)
    counts, ll_sum = em_pass(ctx.X, ctx.w, ctx.shift, effective_params(state.params) if vb else state.params,
                             covariance_type, bs, config, with_stats=False, axis_name=axis_name, extent=ctx.extent,
                             labels=ctx.labels, missing=missing)
    ll = state.log_likelihood if vb else ll_sum / ctx.wsum  # variational Bayes: the last lower bound
    return (state.params, ll, state.log_likelihood, state.n_iter, state.converged, state.finite, state.trace, counts)


def start(keys, X, w, init_params, reg_covar, *, n_components, covariance_type, init, max_iter, block_size,
          init_block_size=None, mask=None, axis_name=None, weighted=True, n_split=0, config=None,
          init_lower_bound=None, labels=None, fixed: tuple = (), dof0=None, prior=None, missing: bool = False):
    """Initialisation of every restart: (loop states with a leading restart axis, :class:`Context`).  The data's
    extent (for the product form of the passes) is computed for one restart where
    :func:`gmm_jax.engine.product_applies` says so.  ``n_split`` > 0: ``keys`` is one key, split here into that
    many restart keys (inside the compiled program: an eager split is a compilation of its own).
    ``init_lower_bound``, ``labels``: see :func:`fit` (``fixed`` is the loop's; it changes nothing here); ``dof0``
    (K,): initial degrees of freedom of a Student-t mixture started from Gaussian initial parameters."""
    cfg = resolve_config(config)
    if n_split:
        keys = restart_keys(keys, n_split)
    X_data = X
    if missing:  # the initialisation runs on the data with each missing entry at its column's (weighted) mean
        X = column_mean_filled(X, w)
    shift, wsum, data_cov, tol_kmeans = init_context(X, w, reg_covar, n_components=n_components,
                                                     covariance_type=covariance_type, init=init, bs=block_size,
                                                     mask=mask, axis_name=axis_name)
    centers = None
    if init == "kmeans" and init_params is None and keys.shape[0] > 1:
        centers = kmeans_init_centers(keys, X, w, shift, tol_kmeans, n_components=n_components, bs=block_size,
                                      bs_lloyd=init_block_size or block_size, mask=mask, axis_name=axis_name,
                                      weighted=weighted, config=cfg)
    seeded = None
    if labels is not None and init_params is None:
        seeded = labelled_means(X, w, shift, labels, n_components, block_size)

    prior = None if prior is None else prior._replace(mean=prior.mean - shift)  # the loop's coordinates
    vb_prior = prior if isinstance(prior, VBPriorArrays) else None

    def one(key, c):
        p0 = initial_params(key, X, w, shift, wsum, init_params, data_cov, tol_kmeans, reg_covar,
                            n_components=n_components, covariance_type=covariance_type, init=init, bs=block_size,
                            mask=mask, axis_name=axis_name, weighted=weighted, centers=c, config=cfg, vb_prior=vb_prior)
        if seeded is not None:  # component c: the one holding most of class c's labels, at their mean
            p0 = match_to_labels(p0, X, w, shift, labels, covariance_type, block_size, seeded)
        if dof0 is not None and not is_student(p0):
            p0 = with_dof(p0, dof0)
        return em_state(p0, max_iter, X.dtype, init_lower_bound)

    extent = None
    if product_applies(covariance_type, *X.shape, cfg) and (n_split or keys.shape[0]) == 1 and not missing:
        extent = data_extent(X, w, shift, block_size, axis_name)
    return map_restarts(one, keys, centers), Context(X_data, w, shift, wsum, extent, labels, prior)


def fit_body(keys, X, w, init_params, tol, reg_covar, *, n_components, covariance_type, init, max_iter, block_size,
             init_block_size=None, mask=None, axis_name=None, weighted=True, n_split=0, config=None,
             init_lower_bound=None, labels=None, fixed: tuple = (), dof0=None, prior=None, missing: bool = False):
    """The whole fit (all restarts) as one traced function; also the per-device program of the sharded fit.
    ``init_block_size``: rows per block of the K-means initialisation's Lloyd steps for R > 1 restarts (default
    ``block_size``)."""
    cfg = resolve_config(config)
    state, ctx = start(keys, X, w, init_params, reg_covar, n_components=n_components, covariance_type=covariance_type,
                       init=init, max_iter=max_iter, block_size=block_size, init_block_size=init_block_size, mask=mask,
                       axis_name=axis_name, weighted=weighted, n_split=n_split, config=cfg,
                       init_lower_bound=init_lower_bound, labels=labels, dof0=dof0, prior=prior, missing=missing)
    kw = dict(covariance_type=covariance_type, bs=block_size, axis_name=axis_name, config=cfg, missing=missing)
    reduced = pass_precision(cfg, X.dtype)
    has_products = ctx.extent is not None or pass_form(covariance_type, X.shape[1], cfg, False) == "centred" and \
        covariance_type in ("full", "tied")
    two_phase = has_products and not (reduced.exact or missing or is_student(state.params) or is_vb(state.params))
    guard_extent = data_extent(ctx.X, ctx.w, ctx.shift, block_size, axis_name) if two_phase else None

    def one(s):
        if two_phase:  # reduced-precision products while their error bound allows, then full precision
            s = em_run(s, ctx, tol, reg_covar, max_iter, fixed=fixed, precision=reduced, guard_extent=guard_extent, **kw)
            s = s._replace(converged=jnp.zeros_like(s.converged))
        return em_finish(em_run(s, ctx, tol, reg_covar, max_iter, fixed=fixed, **kw), ctx, **kw)

    in_sequence = cfg.restarts_in_sequence and not cfg.accelerator and state.n_iter.shape[0] > 1
    return collect(lax.map(one, state) if in_sequence else map_restarts(one, state), ctx.shift)


def collect(out, shift) -> "FitResult":
    """The :class:`FitResult` of every restart's outputs (means back to data coordinates, the best restart)."""
    params, ll, lb, n_iter, conv, finite, trace, counts = out
    params = params._replace(means=params.means + shift)
    best = jnp.argmax(jnp.where(finite & jnp.isfinite(ll), ll, -jnp.inf))
    best_params = jax.tree.map(lambda a: a[best], params)
    return FitResult(best_params, best, ll, lb, n_iter, conv, finite, trace, counts, params)


FIT_STATICS = ("n_components", "covariance_type", "init", "max_iter", "block_size", "init_block_size", "axis_name",
               "weighted", "n_split", "config", "fixed", "missing")


def compiler_options(covariance_type: str, n: int, config: Config, traced: bool = False) -> tuple:
    """Compiler options (as sorted items) of a fit of this covariance type on ``n`` rows on a CPU: below
    ``config.product_min_rows`` rows ``config.small_fit_options`` (none by default), from there
    ``config.cpu_dot_options`` for full covariances (the matrix products then go to the default dot kernels, see
    PROFILE.md); only options this XLA knows; none on an accelerator or when ``traced`` (inside a caller's jit,
    whose compilation options are the caller's)."""
    if traced or config.accelerator:
        return ()
    if n < config.product_min_rows:
        opts = tuple(sorted(config.small_fit_options))
    else:
        opts = tuple(sorted(config.cpu_dot_options)) if covariance_type == "full" else ()
    return opts if opts and compiler_options_supported(opts) else ()


@functools.cache
def program(fn, static_argnames: tuple, options: tuple):
    """``jax.jit(fn)`` with these compiler options (one jitted function per combination, so each keeps its cache)."""
    return jax.jit(fn, static_argnames=static_argnames, compiler_options=dict(options) or None)


def fit_program(covariance_type: str, n: int, config: Config, traced: bool = False):
    """The jitted whole fit :func:`fit` calls for this covariance type and ``n`` rows (``traced``: inside a caller's
    jit)."""
    return program(fit_body, FIT_STATICS, compiler_options(covariance_type, n, config, traced))


def restart_keys(key, n_restarts: int):
    """The per-restart keys :func:`fit` uses: ``jax.random.split(key, n_restarts)``."""
    return jax.random.split(key, n_restarts)


def key_input(key, n_restarts: int):
    """(key or keys, R, n_split) from one PRNG key (to be split into ``n_restarts``: n_split = R) or a 1-D batch of
    keys (typed or raw uint32; n_split = 0)."""
    from gmm_jax.validation import key_form

    keys, form = key_form(key)
    if form == "one":
        return keys, n_restarts, n_restarts
    if form == "batch":
        return keys, keys.shape[0], 0
    raise ValueError(f"key must be a PRNG key or a 1-D batch of keys (one per restart), got shape {keys.shape}")


def key_batch(key, n_restarts: int):
    """(keys (R,), R) from one PRNG key (split into ``n_restarts``) or a 1-D batch of keys (typed or raw uint32)."""
    keys, n_restarts, n_split = key_input(key, n_restarts)
    return (restart_keys(keys, n_split) if n_split else keys), n_restarts


def fit(
    key,
    X,
    n_components: int,
    *,
    covariance_type: str = "full",
    n_restarts: int = 1,
    init: str = "kmeans",
    init_params: GMMParams | None = None,
    init_lower_bound: float | None = None,
    max_iter: int = 100,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    sample_weight=None,
    labels=None,
    fixed=(),
    family: str = "gaussian",
    dof=None,
    prior=None,
    missing: str | None = None,
    variational: VBPrior | None = None,
    block_size: int | None = None,
    progress=None,
    progress_every: int = 10,
    config: Config | None = None,
) -> FitResult:
    """Fit a Gaussian mixture by EM, ``n_restarts`` restarts at once (vmapped); the best is returned.

    Iterates E-step / M-step until the mean log-likelihood changes by less than ``tol`` (absolute, per point) or
    ``max_iter`` iterations, as scikit-learn's ``GaussianMixture``.

    Args:
      key: a PRNG key (restart ``r`` uses ``jax.random.split(key, n_restarts)[r]``), or an array of R keys used
        directly, one per restart (``n_restarts`` is then R).
      X: (n, D) data; float64 is kept when ``jax_enable_x64`` is on, anything else becomes float32.
      n_components: K.
      covariance_type: 'full', 'tied', 'diag' or 'spherical'.
      n_restarts: R.
      init: 'kmeans' (k-means++ then Lloyd, hard assignments, M-step), 'k-means++' (seeds, hard assignments,
        M-step), 'random' (random responsibilities, M-step) or 'random_from_data' (K distinct points as means,
        the data covariance, equal weights). Ignored when ``init_params`` is given.
      init_params: explicit initial ``GMMParams`` (warm start), used by every restart.
      init_lower_bound: with ``init_params`` from an earlier fit, that fit's ``lower_bound``: the first iteration's
        change is measured from it, so a fit continued from converged parameters stops after one iteration
        (scikit-learn's ``warm_start``).  Default: none (the first iteration never converges).
      max_iter: maximum EM iterations (also the length of ``trace``); 0 returns the initial parameters (lower bound
        -inf, not converged).
      tol: convergence threshold on the change of the mean log-likelihood.
      reg_covar: added to the covariance diagonals (in data units squared).
      sample_weight: optional (n,) non-negative weights.
      labels: optional (n,) known labels (semi-supervised EM): a component index in [0, K) for a labelled row, -1
        for an unknown one.  A labelled row's responsibility is one-hot at its label; the objective (and
        ``log_likelihood``) is ``log p(x)`` over the unlabelled rows plus ``log p(x, y)`` over the labelled ones.
        Without ``init_params``, the components ``init`` gives are first matched to the classes (component c: the
        one holding most of class c's labelled rows, greedily) and a class's component starts at its labelled rows'
        mean.
        Every row labelled: the fit converges to :func:`gmm_jax.fit_supervised`'s estimate; every row -1: as
        without labels.
      fixed: parameter blocks kept at their initial values, any of 'weights', 'means', 'covariances' (initial:
        ``init_params``, or what ``init`` gives); the others get their constrained maxima
        (:func:`gmm_jax.stats.constrained_m_step`); a Student-t mixture also 'dof'.
      family: 'gaussian', or 'student-t' (:mod:`gmm_jax.student`: heavy-tailed components, ``params`` are then
        :class:`gmm_jax.StudentTParams` and the model functions evaluate Student-t densities).  ``init_params`` of
        type ``StudentTParams`` imply it.
      dof: Student-t initial degrees of freedom, a number or (K,) (default 10; with ``fixed=("dof",)`` they stay).
      prior: a :class:`gmm_jax.Prior`: MAP EM with conjugate priors (:mod:`gmm_jax.prior`; ``reg_covar`` is still
        added); the trace and log-likelihoods stay those of the data (the log-posterior adds
        :func:`gmm_jax.prior.log_prior`).  Gaussian mixtures without ``fixed`` blocks.
      missing: None (NaN in X is an error) or 'marginalize': NaN entries are missing values, marginalised in the
        E-step with their conditional expectations in the statistics (exact EM for data missing at random,
        :mod:`gmm_jax.missing`); the initialisation uses each column's mean in their place.  Gaussian mixtures.
      variational: a :class:`gmm_jax.VBPrior`: variational Bayes (scikit-learn's ``BayesianGaussianMixture``,
        :mod:`gmm_jax.variational`): ``params`` are then the posterior's :class:`gmm_jax.VBParams`, and
        ``log_likelihood``, ``lower_bound`` and ``trace`` hold its lower bound per point (``tol`` applies to the total,
        as scikit-learn's).  Inits 'kmeans', 'k-means++', 'random' or explicit ``VBParams``; Gaussian mixtures without
        ``fixed``, ``prior``, ``labels`` or ``missing``.
      block_size: rows per block (default: the (block, K, D) scratch near 8 MiB on a CPU, 4 MiB for R > 1 restarts
        together, 512 MiB on an accelerator).
      progress: ``True`` prints each iteration's mean log-likelihood per restart to stderr; a callable
        ``f(iteration, log_likelihoods (R,))`` receives them instead (NaN for restarts that already stopped).
        The loop then runs in jitted chunks of ``progress_every`` iterations and the host reports between chunks, so
        nothing leaves the device inside the loop; results are the same as without progress (log-likelihoods up to
        the last bit: the chunk is compiled separately).
      progress_every: iterations per chunk when ``progress`` is set.
      config: :class:`gmm_jax.Config`, the engine's tuning (default: the backend's); part of the compiled program.
        ``Config(precision="default")`` multiplies in TF32 on NVIDIA GPUs while an error bound allows, then at full
        precision until convergence (:mod:`gmm_jax.precision`; not with ``progress``).

    Returns:
      :class:`FitResult`.

    Example:
      >>> res = gmm_jax.fit(jax.random.key(0), X, 3, n_restarts=8)
      >>> labels = gmm_jax.predict(X, res.params)
    """
    from gmm_jax.progress import fit_with_progress, print_progress
    from gmm_jax.validation import check_dof, check_family, check_fixed, check_labels, check_lower_bound, validate_fit

    cfg = resolve_config(config)
    keys, n_restarts, n_split = key_input(key, n_restarts)
    if missing not in (None, "marginalize"):
        raise ValueError(f"missing must be None or 'marginalize', got {missing!r}")
    if missing and (family != "gaussian" or isinstance(init_params, StudentTParams)):
        raise ValueError("missing='marginalize' is for Gaussian mixtures")
    vb_init = init_params if variational is not None else None
    X, w, init_params = validate_fit(X, n_components, covariance_type, init, None if vb_init else init_params, max_iter,
                                     tol, reg_covar, sample_weight, n_restarts, allow_nan=missing is not None)
    family = check_family(family, init_params)
    fixed = check_fixed(fixed, family)
    dof0 = None if family == "gaussian" else check_dof(10.0 if dof is None else dof, n_components, X.dtype)
    if prior is not None:
        if family != "gaussian" or fixed:
            raise ValueError("prior: MAP EM is for Gaussian mixtures without fixed blocks")
        if any_traced(X):
            raise ValueError("prior: its defaults are computed from X on the host; call fit outside jit")
        prior = resolve_prior(prior, X, X.dtype)
    if variational is not None:
        if family != "gaussian" or fixed or prior is not None or labels is not None or missing:
            raise ValueError("variational: for Gaussian mixtures without fixed, prior, labels or missing")
        prior, init_params, tol = check_variational(variational, vb_init, X, w, n_components, covariance_type, init,
                                                    tol)
    labels = None if labels is None else check_labels(labels, X.shape[0], n_components, unknown=True)
    with_progress = not (progress is None or progress is False)
    if with_progress:
        if not (progress is True or callable(progress)):
            raise ValueError(f"progress must be True, False, None or a callable f(iteration, log_likelihoods), got "
                             f"{progress!r}")
        if isinstance(progress_every, bool) or not isinstance(progress_every, int) or progress_every < 1:
            raise ValueError(f"progress_every must be a positive integer, got {progress_every!r}")
    traced = any_traced(keys, X, w, init_params, labels)
    n = X.shape[0]
    X, w, mask, weighted = bucket_rows(X, w, traced, cfg.bucket_max_rows)  # nearby row counts share one program
    if labels is not None and X.shape[0] > n:  # padding rows: unknown labels (and weight 0)
        labels = to_device(np.concatenate([np.asarray(labels), np.full((X.shape[0] - n,), -1, np.int32)]))
    bs = resolve_block_size(block_size, X.shape[0], n_components, X.shape[1], n_restarts, cfg)
    statics = dict(n_components=n_components, covariance_type=covariance_type,
                   init=init if init_params is None else "explicit", max_iter=max_iter, block_size=bs,
                   init_block_size=resolve_block_size(block_size, X.shape[0], n_components, X.shape[1], config=cfg),
                   n_split=n_split, weighted=weighted, config=cfg, fixed=fixed, missing=missing is not None)
    tol_a, reg_a = to_device(tol, X.dtype), to_device(reg_covar, X.dtype)
    lb0 = None if init_lower_bound is None else to_device(check_lower_bound(init_lower_bound), X.dtype)
    if not with_progress:
        return fit_program(covariance_type, X.shape[0], cfg, traced)(keys, X, w, init_params, tol_a, reg_a, mask=mask,
                                                                     init_lower_bound=lb0, labels=labels, dof0=dof0,
                                                                     prior=prior, **statics)
    return fit_with_progress(keys, X, w, init_params, tol_a, reg_a, print_progress if progress is True else progress,
                             progress_every, mask=mask, init_lower_bound=lb0, labels=labels, dof0=dof0,
                             prior=prior, **statics)


__all__ = ["Context", "EMState", "FitResult", "collect", "em_finish", "em_run", "em_state", "fit", "fit_body",
           "fit_program", "key_batch", "key_input", "program", "restart_keys", "start"]
