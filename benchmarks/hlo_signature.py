"""What the fit and K-means programs compile to, as a signature per case, so that two versions of the package can be
compared op for op (a refactoring that changes no computation should change no signature).

    python benchmarks/hlo_signature.py --out sig_after.json
    PYTHONPATH=/path/to/other/tree python benchmarks/hlo_signature.py --out sig_before.json
    python benchmarks/hlo_signature.py --compare sig_before.json sig_after.json

A signature is the multiset of the optimized HLO's instructions: fusions by name and output shape, dots by output
shape and operand precision, loops, conditionals and copies.  Names of values and metadata are left out.  Works with
this package and with the code before the one-engine redesign (310e4f2), whose programs had private names.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import sys

GRID = [(cov, d, r) for cov in ("full", "tied", "diag", "spherical") for d in (2, 6, 16) for r in (1, 4)]
N = 20000  # single fits of this many rows also compile the product form of the pass


def signature(text: str) -> dict:
    """Instruction counts of an optimized HLO module, names and metadata removed."""
    sig = collections.Counter()
    for line in text.splitlines():
        m = re.match(r"\s*(?:ROOT )?%([a-z_\-]+?)(?:\.\d+)? = (\S+) ([a-z\-]+)\(", line)
        if not m:
            continue
        name, shape, op = m.groups()
        if op in ("fusion", "dot", "while", "conditional", "copy", "custom-call", "sort", "scatter", "gather"):
            key = f"{op} {name if op == 'fusion' else ''} {shape}"
            if op == "dot":
                key += " " + (re.search(r"operand_precision=\{[^}]*\}", line) or re.search("$", "")).group(0)
            sig[key.strip()] += 1
    return dict(sorted(sig.items()))


def _programs():
    """(name, lower) pairs for this package's version: lower() returns the jitted program lowered for the case."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import gmm_jax

    new = hasattr(gmm_jax, "Config")
    rng = np.random.default_rng(0)
    cases = []
    for cov, d, r in GRID:
        X = jnp.asarray(rng.normal(size=(N, d)).astype(np.float32))
        keys = jax.random.split(jax.random.key(0), r)
        kw = dict(n_components=4, covariance_type=cov, init="kmeans", max_iter=5, block_size=4096 if r == 1 else 1024,
                  init_block_size=4096, n_split=0, weighted=True)
        if new:
            from gmm_jax.loop import fit_program

            cfg = gmm_jax.default_config()
            prog = fit_program(cov, N, cfg)
            kw["config"] = cfg
        else:
            import importlib

            prog = importlib.import_module("gmm_jax.fit")._fit_program(cov, N)
        args = (keys, X, None, None, jnp.float32(1e-3), jnp.float32(1e-6))
        cases.append((f"fit {cov} d={d} R={r}", lambda p=prog, a=args, k=kw: p.lower(*a, **k)))
    for n, alg in ((60000, True), (20000, False)):
        X = jnp.asarray(rng.normal(size=(n, 8)).astype(np.float32))
        kw = dict(n_clusters=8, n_restarts=2, max_iter=20, block_size=4096, init_random=False, split_key=True,
                  bounds=alg)
        if new:
            from gmm_jax.clustering import kmeans_program as prog

            kw["config"] = gmm_jax.default_config()
        else:
            import importlib

            prog = importlib.import_module("gmm_jax.kmeans")._kmeans_jit
        args = (jax.random.key(0), X, None, None, jnp.float32(1e-4))
        cases.append((f"kmeans n={n} bounds={alg}", lambda p=prog, a=args, k=kw: p.lower(*a, **k)))
    return cases


def compare(before: dict, after: dict) -> int:
    same = 0
    for case in before:
        a, b = before[case], after.get(case)
        if a == b:
            same += 1
            continue
        print(f"{case}: differs")
        keys = sorted(set(a) | set(b or {}))
        for k in keys:
            if a.get(k, 0) != (b or {}).get(k, 0):
                print(f"    {k}: {a.get(k, 0)} -> {(b or {}).get(k, 0)}")
    print(f"{same} of {len(before)} programs compile to the same instructions")
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="write the signatures (JSON) here")
    ap.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"), help="compare two signature files")
    args = ap.parse_args(argv)
    if args.compare:
        with open(args.compare[0]) as f, open(args.compare[1]) as g:
            return compare(json.load(f), json.load(g))
    out = {}
    for name, lower in _programs():
        out[name] = signature(lower().compile().as_text())
        print(name, sum(out[name].values()), "instructions counted", file=sys.stderr, flush=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
