"""This tree's benchmarks against a git revision's, in one run on one machine: every row of ``run_all.py`` for both,
alternating which side runs first per benchmark, then a table of after / before per row.

    python benchmarks/compare_revisions.py --before 310e4f2                   # the default set (~30 minutes)
    python benchmarks/compare_revisions.py --before 310e4f2 --only em,restarts --quick

Each side runs its own ``benchmarks/run_all.py`` (from a temporary ``git worktree`` of the revision, and from this
tree) with its own package first on ``PYTHONPATH``; results go to ``OUT/before`` and ``OUT/after`` and the table to
``OUT/comparison.md`` (default OUT: ``benchmarks/results/revisions``).  A row is flagged when the time after is more
than 10% above the time before; ratios of a few percent either way are this machine's noise.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT = "em,em_tied,em_diag,em_spherical,kmeans,restarts,progress"
UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "MB": 1.0, "s/pass": 1.0}


def _value(text):
    """'23.4 ms' -> seconds (MB values as they are); None for anything else."""
    m = re.match(r"^\s*([0-9.]+)\s*(us|ms|s/pass|s|MB)\b", str(text))
    return float(m.group(1)) * UNITS[m.group(2)] if m else None


def _run(tree, out, only, quick):
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    env["PYTHONPATH"] = tree + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, os.path.join(tree, "benchmarks", "run_all.py"), "--only", only, "--out", out]
    print(f"\n### {tree}: {' '.join(cmd[1:])}", flush=True)
    return subprocess.run(cmd + (["--quick"] if quick else []), env=env, cwd=tree).returncode


def compare(out):
    """Rows of both summaries, matched by (benchmark, cell): (row, before, after, after / before)."""
    rows = {}
    for side in ("before", "after"):
        with open(os.path.join(out, side, "summary.json")) as f:
            for r in json.load(f)["rows"]:
                rows.setdefault((r["benchmark"], r["cell"]), {})[side] = r["gmm_jax"]
    table = []
    for key, v in rows.items():
        b, a = _value(v.get("before")), _value(v.get("after"))
        table.append((key, v.get("before", "-"), v.get("after", "-"), (a / b) if a and b else None))
    return table


def write_table(out, table, before, head):
    lines = [f"# Benchmarks: this tree ({head}) against {before}", "",
             f"Written by `python benchmarks/compare_revisions.py --before {before}`: both sides in one run on this "
             "machine, alternating which runs first.  after / before > 1.10 is flagged.", "",
             "| benchmark | cell | before | after | after / before |", "|---|---|---|---|---|"]
    for (bench, cell), b, a, r in table:
        flag = "" if r is None or r <= 1.10 else " **slower**"
        lines.append(f"| {bench} | {cell} | {b} | {a} | {'-' if r is None else f'{r:.3f}'}{flag} |")
    with open(os.path.join(out, "comparison.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, help="git revision to compare against")
    ap.add_argument("--only", default=DEFAULT, help=f"run_all.py benchmarks (default {DEFAULT})")
    ap.add_argument("--quick", action="store_true", help="run_all.py --quick on both sides")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "revisions"))
    args = ap.parse_args(argv)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    with tempfile.TemporaryDirectory() as tmp:
        tree = os.path.join(tmp, "before")
        subprocess.run(["git", "worktree", "add", "--detach", tree, args.before], cwd=ROOT, check=True)
        try:
            rc = 0
            for i, name in enumerate(args.only.split(",")):
                sides = [("before", tree), ("after", ROOT)]
                for side, path in (sides if i % 2 == 0 else sides[::-1]):
                    rc |= _run(path, os.path.join(args.out, side), name, args.quick)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", tree], cwd=ROOT)
    write_table(args.out, compare(args.out), args.before, head.strip() + " + working tree")
    return rc


if __name__ == "__main__":
    sys.exit(main())
