"""GMM-VAE training: one compiled program per epoch (``gmm_jax.vae.train_epoch``, ``lax.scan`` over the batches)
against a Python loop calling a jitted step per batch (what ``train`` did before).

    python benchmarks/bench_vae_epoch.py [--epochs 10] [--batch-size 64]

Digits / 16 (1797 x 64), latent 10, K = 10, hidden (256, 128), ELBO epochs (no pre-training).  Prints the
seconds per epoch of both (compilation excluded: one epoch first) and the speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import optax
from flax import nnx
from sklearn.datasets import load_digits

from gmm_jax.vae import GMMVAE, train_epoch, train_step


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    X = jax.numpy.asarray(load_digits().data / 16.0, jax.numpy.float32)
    graphdef, state = nnx.split(GMMVAE(64, 10, 10, hidden=(256, 128), rngs=nnx.Rngs(0)))
    tx = optax.adam(1e-3)
    bs, n = args.batch_size, X.shape[0]
    step = jax.jit(train_step, static_argnames=("graphdef", "tx", "pretrain"))

    def scanned(state, opt_state, key):
        return train_epoch(graphdef, state, opt_state, key, X, None, tx, bs)

    def looped(state, opt_state, key):
        kp, ks = jax.random.split(key)
        perm = jax.random.permutation(kp, n)
        for b in range(n // bs):
            state, opt_state, loss = step(graphdef, state, opt_state, jax.random.fold_in(ks, b),
                                          X[perm[b * bs:(b + 1) * bs]], tx)
        return state, opt_state, loss

    out = {}
    for name, fn in (("python_loop", looped), ("scanned_epoch", scanned)):
        s, o = state, tx.init(state)
        s, o, loss = fn(s, o, jax.random.key(0))  # compile
        jax.block_until_ready(loss)
        t = time.perf_counter()
        for e in range(args.epochs):
            s, o, loss = fn(s, o, jax.random.key(e + 1))
        jax.block_until_ready(loss)
        out[f"{name}_s_per_epoch"] = (time.perf_counter() - t) / args.epochs
    out["speedup"] = out["python_loop_s_per_epoch"] / out["scanned_epoch_s_per_epoch"]
    out.update(batches_per_epoch=n // bs, batch_size=bs, epochs=args.epochs)
    print(json.dumps(out, indent=1))
    if args.out:
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
