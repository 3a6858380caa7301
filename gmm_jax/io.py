"""Save/load fitted parameters (npz with a format version) and atomic file writes."""

from __future__ import annotations

import os
import tempfile

import numpy as np

from gmm_jax.params import COVARIANCE_TYPES, GMMParams, StudentTParams

FORMAT_VERSION = 1


def atomic_write(path: str, write) -> None:
    """Call ``write(fileobj)`` on a temporary file in the target's folder, then rename it over ``path``.

    A failing or interrupted write leaves no partial file and never replaces a good one.
    """
    folder = os.path.dirname(os.path.abspath(path)) or "."
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_params(path: str, params: GMMParams, covariance_type: str) -> None:
    """Write parameters to ``path`` (.npz) atomically: format version, covariance type, dtype, arrays."""
    arrays = {k: np.asarray(v) for k, v in params._asdict().items()}
    meta = dict(format_version=np.array(FORMAT_VERSION), covariance_type=np.array(covariance_type),
                dtype=np.array(str(arrays["means"].dtype)))
    atomic_write(path, lambda f: np.savez(f, **arrays, **meta))


def load_params(path: str) -> tuple[GMMParams, str]:
    """Read parameters written by :func:`save_params` (``StudentTParams`` when the file has degrees of freedom);
    raise ValueError naming the problem."""
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a gmm_jax model file ({exc})") from None
    missing = {"format_version", "covariance_type", "log_weights", "means", "prec_chol"} - set(data)
    if missing:
        raise ValueError(f"{path}: not a gmm_jax model file (missing {', '.join(sorted(missing))})")
    if int(data["format_version"]) > FORMAT_VERSION:
        raise ValueError(f"{path}: format version {int(data['format_version'])} is newer than this gmm_jax")
    ct = str(data["covariance_type"])
    if ct not in COVARIANCE_TYPES:
        raise ValueError(f"{path}: unknown covariance type {ct!r}")
    params = GMMParams(data["log_weights"], data["means"], data["prec_chol"])
    return (StudentTParams(*params, data["dof"]) if "dof" in data else params), ct
