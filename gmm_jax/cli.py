"""The ``gmm-jax`` command line: demo, fit, predict, sample, verify.

Errors in the user's input print one line naming the file (and row) and exit with status 2; outputs are written
atomically.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys

import numpy as np


class InputError(Exception):
    """A problem with the user's input: reported in one line, exit status 2."""


def read_data(path: str, allow_nan: bool = False) -> np.ndarray:
    """Load a 2-D float array from .npy, .npz (first array) or .csv (optional header row).  ``allow_nan``: NaN (in
    a CSV also an empty field) marks a missing value."""
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file")
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext == ".npy":
            X = np.load(path, allow_pickle=False)
        elif ext == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if not z.files:
                    raise InputError(f"{path}: the .npz file holds no array")
                X = z["X"] if "X" in z.files else z[z.files[0]]
        elif ext in (".csv", ".txt"):
            X = _read_csv(path, allow_nan)
        else:
            raise InputError(f"{path}: unsupported file type {ext!r} (use .npy, .npz or .csv)")
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{path}: could not read data ({exc})") from None
    if X.dtype == object or not np.issubdtype(X.dtype, np.number):
        raise InputError(f"{path}: data must be numeric, got dtype {X.dtype}")
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2 or X.shape[0] == 0:
        raise InputError(f"{path}: data must be a non-empty 2-D array, got shape {X.shape}")
    bad = np.argwhere(np.isinf(X) if allow_nan else ~np.isfinite(X))
    if bad.size:
        what = "infinite value" if allow_nan else "NaN or infinite value (--missing marginalize accepts NaN)"
        raise InputError(f"{path}: row {bad[0][0] + 1}: {what} in column {bad[0][1] + 1}")
    return X.astype(np.float64) if X.dtype == np.float64 else X.astype(np.float32)


def _read_csv(path: str, allow_nan: bool = False) -> np.ndarray:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    rows = [(i, r) for i, r in enumerate(rows, start=1) if any(c.strip() for c in r) or (allow_nan and len(r) > 1)]
    if not rows:
        raise InputError(f"{path}: empty CSV file")
    out, width = [], None
    for n, (lineno, r) in enumerate(rows):
        try:
            vals = [float(c) if (c.strip() or not allow_nan) else float("nan") for c in r]
        except ValueError:
            if n == 0:  # header
                continue
            bad = next(c for c in r if not _is_float(c))
            raise InputError(f"{path}: row {lineno}: not a number: {bad.strip()!r}") from None
        if width is None:
            width = len(vals)
        elif len(vals) != width:
            raise InputError(f"{path}: row {lineno}: {len(vals)} values, expected {width} (ragged CSV)")
        out.append(vals)
    if not out:
        raise InputError(f"{path}: no numeric rows")
    return np.asarray(out, dtype=np.float64)


def _is_float(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _write_text(path: str, text: str) -> None:
    from gmm_jax.io import atomic_write

    atomic_write(path, lambda f: f.write(text.encode()))


def _bayesian_summary(res, k: int):
    """Report a variational fit on stderr; returns the mixture its ``predict`` evaluates (scikit-learn's, the
    weights normalised) for the model file."""
    import jax

    from gmm_jax.variational import effective_params, mixture_weights

    b = int(res.best)
    kept = int(np.sum(np.asarray(mixture_weights(res.params)) > 0.01))
    print(f"K={k}: lower bound per point {float(res.log_likelihood[b]):.6f}, components with weight > 1%: "
          f"{kept}, iterations {int(res.n_iter[b])}, converged {bool(res.converged[b])}", file=sys.stderr)
    eff = effective_params(res.params)
    return eff._replace(log_weights=eff.log_weights - jax.scipy.special.logsumexp(eff.log_weights))


def cmd_fit(args) -> int:
    import jax

    import gmm_jax
    from gmm_jax.io import save_params

    X = read_data(args.data, allow_nan=args.missing is not None)
    if args.select_k:
        try:
            kmin, kmax = (int(v) for v in args.select_k.split(":"))
        except ValueError:
            raise InputError(f"--select-k must be KMIN:KMAX, got {args.select_k!r}") from None
        ks = range(kmin, kmax + 1)
    else:
        if args.k is None:
            raise InputError("give -k K or --select-k KMIN:KMAX")
        ks = [args.k]
    kw = dict(covariance_type=args.covariance_type, n_restarts=args.restarts, max_iter=args.max_iter, tol=args.tol,
              reg_covar=args.reg_covar, family=args.family)
    if args.dof is not None:
        if args.family != "student-t":
            raise InputError("--dof needs --family student-t")
        kw.update(dof=args.dof, fixed=("dof",))
    if args.missing is not None:
        if args.select_k:
            raise InputError("--missing: give -k (--select-k fits complete data)")
        kw.update(missing=args.missing)
    if args.prior_strength is not None:
        if args.family != "gaussian" or args.select_k:
            raise InputError("--prior-strength: MAP EM is for a Gaussian mixture with -k")
        kw.update(prior=gmm_jax.Prior(strength=args.prior_strength))
    if args.bayesian is not None:
        if args.family != "gaussian" or args.select_k or args.missing or args.prior_strength is not None:
            raise InputError("--bayesian: variational Bayes for a Gaussian mixture with -k (K: the most components)")
        kw.update(variational=gmm_jax.VBPrior(args.bayesian))
    try:  # every K in one compiled program (one K: the plain fit)
        path = gmm_jax.fit_path(jax.random.key(args.seed), X, ks, **kw) if args.select_k else None
        res = None if args.select_k else gmm_jax.fit(jax.random.key(args.seed), X, ks[0], **kw)
    except ValueError as exc:
        raise InputError(f"{args.data}: {exc}") from None
    if path is None and args.bayesian is not None:
        k, params = ks[0], _bayesian_summary(res, ks[0])
    elif path is None:
        b = int(res.best)
        bic = float(gmm_jax.bic(X, res.params, args.covariance_type, missing=args.missing))  # with --dof: not free
        bic -= ks[0] * np.log(X.shape[0]) if args.dof is not None else 0.0
        print(f"K={ks[0]}: mean log-likelihood {float(res.log_likelihood[b]):.6f}, "
              f"BIC {bic:.3f}, iterations {int(res.n_iter[b])}, "
              f"converged {bool(res.converged[b])}", file=sys.stderr)
        k, params = ks[0], res.params
    else:
        for i, kk in enumerate(path.n_components):
            print(f"K={kk}: mean log-likelihood {path.log_likelihood[i]:.6f}, BIC {path.bic[i]:.3f}, "
                  f"iterations {path.n_iter[i]}, converged {bool(path.converged[i])}", file=sys.stderr)
        k = path.best
        params = path.params[list(path.n_components).index(k)]
    save_params(args.out, params, args.covariance_type)
    print(f"wrote {args.out} (K={k}, covariance_type={args.covariance_type}, family={args.family})")
    return 0


def _load_model(path):
    from gmm_jax.io import load_params

    try:
        return load_params(path)
    except ValueError as exc:
        raise InputError(str(exc)) from None


def cmd_predict(args) -> int:
    import gmm_jax

    params, ct = _load_model(args.model)
    X = read_data(args.data, allow_nan=args.missing is not None)
    d = np.asarray(params.means).shape[1]
    if X.shape[1] != d:
        raise InputError(f"{args.data}: {X.shape[1]} features, but the model in {args.model} has {d}")
    X = X.astype(np.asarray(params.means).dtype)
    labels = np.asarray(gmm_jax.predict(X, params, ct, missing=args.missing))
    text = "\n".join(str(v) for v in labels) + "\n"
    if args.out:
        _write_text(args.out, text)
    else:
        sys.stdout.write(text)
    return 0


def cmd_sample(args) -> int:
    import jax

    import gmm_jax

    params, ct = _load_model(args.model)
    k = np.asarray(params.means).shape[0]
    if args.n < 1:
        raise InputError(f"-n must be >= 1, got {args.n}")
    key = jax.random.key(args.seed)
    if args.component is not None:
        if not 0 <= args.component < k:
            raise InputError(f"--component must be in [0, {k}), got {args.component}")
        X = np.asarray(gmm_jax.sample_component(key, params, args.component, args.n, ct))
        y = np.full(args.n, args.component)
    else:
        X, y = (np.asarray(a) for a in gmm_jax.sample(key, params, args.n, ct))
    buf = io.StringIO()
    np.savetxt(buf, np.column_stack([X, y]), delimiter=",", fmt="%.8g",
               header=",".join([f"x{j}" for j in range(X.shape[1])] + ["component"]), comments="")
    if args.out:
        _write_text(args.out, buf.getvalue())
    else:
        sys.stdout.write(buf.getvalue())
    return 0


def cmd_verify(args) -> int:
    from gmm_jax import verify

    return verify.main(["--broken-m-step"] if args.broken_m_step else [])


def cmd_demo(args) -> int:
    from gmm_jax import demo

    return demo.main(["--out", args.out] + (["--quick"] if args.quick else []))


class _DefaultsHelp(argparse.HelpFormatter):
    """Help lines end with the option's default, where it has one."""

    def _get_help_string(self, action):
        text = action.help or ""
        d = action.default
        if not (d is None or d is False or d == argparse.SUPPRESS) and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


def _add_fit_parser(sub, fmt) -> None:
    """The ``fit`` subcommand's options."""
    p = sub.add_parser("fit", formatter_class=fmt, help="fit a GMM to DATA (.npy, .npz, .csv) and save the model (.npz)")
    p.add_argument("data", help="the data file (n rows x D features)")
    p.add_argument("-k", type=int, metavar="K", help="number of components (or use --select-k)")
    p.add_argument("--covariance-type", default="full", choices=["full", "tied", "diag", "spherical"],
                   help="full: one D x D covariance per component; tied: one shared by all; diag: per-feature "
                        "variances; spherical: one variance per component")
    p.add_argument("--restarts", type=int, default=4, metavar="R",
                   help="EM restarts run at once (vmapped); the one with the highest log-likelihood is kept")
    p.add_argument("--select-k", metavar="KMIN:KMAX",
                   help="fit every K in KMIN..KMAX (inclusive; one compiled program for all, gmm_jax.fit_path) "
                        "and keep the one with the lowest BIC; replaces -k")
    p.add_argument("--family", choices=("gaussian", "student-t"), default="gaussian",
                   help="mixture family: Gaussian components, or Student-t ones (heavy tails, degrees of freedom "
                        "learned per component unless --dof is given)")
    p.add_argument("--dof", type=float, metavar="NU", help="Student-t degrees of freedom, held fixed at NU")
    p.add_argument("--missing", choices=("marginalize",),
                   help="NaN (or empty CSV fields) are missing values, marginalised in the E-step (exact EM for "
                        "data missing at random); without it they are an error")
    p.add_argument("--prior-strength", type=float, metavar="N0",
                   help="MAP EM with gmm_jax.Prior: N0 pseudo-points per component with 1e-3 times the data's mean "
                        "variance (docs/variants.md)")
    p.add_argument("--bayesian", choices=("dirichlet_process", "dirichlet_distribution"),
                   help="variational Bayes with this weight prior (scikit-learn's BayesianGaussianMixture): -k is the "
                        "most components, unneeded ones get (near-)zero weight")
    p.add_argument("--max-iter", type=int, default=100, metavar="N", help="maximum EM iterations per restart")
    p.add_argument("--tol", type=float, default=1e-3,
                   help="stop when the mean log-likelihood per point changes by less than this (nats)")
    p.add_argument("--reg-covar", type=float, default=1e-6,
                   help="added to the covariance diagonals, in data units squared (keeps covariances invertible)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random initialisation (integer)")
    p.add_argument("--out", required=True, help="model file to write (.npz: weights, means, precision factors)")
    p.set_defaults(func=cmd_fit)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="gmm-jax", description="Gaussian mixtures fit by EM in JAX. Data files: .npy, "
                                 ".npz (its first array) or .csv (comma-separated numbers, header row optional); "
                                 "one row per point. Outputs are written atomically.")
    sub = ap.add_subparsers(dest="command", required=True)
    fmt = _DefaultsHelp
    p = sub.add_parser("demo", formatter_class=fmt,
                       help="the main job: fits, comparisons and checks on bundled data; writes a report")
    p.add_argument("--out", default="gmm_jax_demo", help="folder for report.md and its PNG figures")
    p.add_argument("--quick", action="store_true", help="fewer restarts and seeds (a smoke run, about a minute)")
    p.set_defaults(func=cmd_demo)
    _add_fit_parser(sub, fmt)
    p = sub.add_parser("predict", formatter_class=fmt, help="most probable component of each row of DATA")
    p.add_argument("model", help="a model file written by 'gmm-jax fit' (.npz)")
    p.add_argument("data", help="the data file (same number of features as the model)")
    p.add_argument("--out", help="write the labels here (one integer per line) instead of standard output")
    p.add_argument("--missing", choices=("marginalize",), help="NaN (or empty CSV fields) are missing values, "
                   "marginalised; without it they are an error")
    p.set_defaults(func=cmd_predict)
    p = sub.add_parser("sample", formatter_class=fmt, help="draw points from a saved model (CSV: features, component)")
    p.add_argument("model", help="a model file written by 'gmm-jax fit' (.npz)")
    p.add_argument("-n", type=int, default=10, metavar="N", help="number of points to draw")
    p.add_argument("--component", type=int, metavar="C",
                   help="draw only from component C (0-based); default: from the whole mixture")
    p.add_argument("--seed", type=int, default=0, help="seed of the random draws (integer)")
    p.add_argument("--out", help="write the CSV here instead of standard output")
    p.set_defaults(func=cmd_sample)
    p = sub.add_parser("verify", formatter_class=fmt, help="autodiff checks of every derivation (exit 1 if any fails)")
    p.add_argument("--broken-m-step", action="store_true",
                   help="check a deliberately wrong M-step instead, to show the checks failing")
    p.set_defaults(func=cmd_verify)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except InputError as exc:
        print(f"gmm-jax: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
