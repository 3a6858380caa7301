"""Save and load a trained :class:`gmm_jax.vae.GMMVAE`: its constructor arguments and every array of its ``nnx``
state in one NumPy ``.npz`` archive; the round trip is exact."""

from __future__ import annotations

import json
import os
import tempfile

import jax.numpy as jnp
import numpy as np
from flax import nnx

from gmm_jax.vae import GMMVAE

_CONFIG_KEY = "__gmm_vae_config__"


def save(model: GMMVAE, path) -> None:
    """Write ``model`` (its constructor arguments and every array of its ``nnx`` state) to ``path`` as a NumPy
    ``.npz`` archive; :func:`load` rebuilds an equal model.  The file is written whole or not at all (a temporary
    file in the same directory, then renamed)."""
    arrays = {"/".join(map(str, p)): np.asarray(v.get_value()) for p, v in nnx.to_flat_state(nnx.state(model))}
    config = dict(n_features=model.n_features, n_latent=model.n_latent, n_components=model.n_components,
                  hidden=list(model.hidden), likelihood=model.likelihood)
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays, **{_CONFIG_KEY: np.array(json.dumps(config))})
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def load(path) -> GMMVAE:
    """The model :func:`save` wrote to ``path`` (every parameter bit for bit).

    Raises:
      ValueError: the file is not a saved GMM-VAE, or an array is missing or has another shape or dtype.
    """
    with np.load(os.fspath(path), allow_pickle=False) as f:
        if _CONFIG_KEY not in f.files:
            raise ValueError(f"{path} is not a GMM-VAE saved by gmm_jax.vae_io.save (no {_CONFIG_KEY} entry)")
        config = json.loads(str(f[_CONFIG_KEY]))
        model = GMMVAE(config["n_features"], config["n_latent"], config["n_components"], tuple(config["hidden"]),
                       config["likelihood"], rngs=nnx.Rngs(0))
        state = nnx.state(model)
        for p, v in nnx.to_flat_state(state):
            name = "/".join(map(str, p))
            if name not in f.files:
                raise ValueError(f"{path}: no array for parameter {name}")
            a = f[name]
            if a.shape != v.get_value().shape or a.dtype != v.get_value().dtype:
                raise ValueError(f"{path}: parameter {name} has shape {a.shape} and dtype {a.dtype}, the model "
                                 f"needs {v.get_value().shape} and {v.get_value().dtype}")
            v.set_value(jnp.asarray(a))
    nnx.update(model, state)
    return model


__all__ = ["load", "save"]
