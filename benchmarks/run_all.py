"""Run every benchmark and write one summary table (Markdown and JSON) with the machine's description.

    python benchmarks/run_all.py                 # CPU: the full set (about 25 minutes on 2 cores)
    python benchmarks/run_all.py --only em,restarts --quick
    python benchmarks/run_all.py --gpu           # lent GPU: the EM and K-means grids with n x 10, restarts, gmmx
                                                 # (also with gmm_jax's products at TF32, gmmx_tf32)

Each benchmark runs as its own process (so each one's BLAS environment and peak memory are its own) and writes its
JSON into the results folder (``benchmarks/results``, or ``benchmarks/results/gpu`` with ``--gpu``); the summary
is then built from those JSON files, so ``--summary-only`` rebuilds it from the last runs.  OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE are removed for these commands only, so the scikit-learn baseline uses NumPy's best BLAS kernel.
Every row states its target and whether the measurement meets it; nothing is hidden when it does not.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _common import machine_description, write_json  # noqa: E402

BENCHES = ["em", "em_tied", "em_diag", "em_spherical", "kmeans", "restarts", "select_k", "gmmx", "gmmx_tf32", "memory",
           "progress", "stream"]


def commands(args, out):
    scale = ["--scale", "10"] if args.gpu else []
    quick = ["--quick"] if args.quick else []
    skr = ["--sklearn-repeats", "1"] if args.gpu else []
    ski = ["--sklearn-step"] if args.gpu else []
    py = [sys.executable]
    cmds = {"em": py + [f"{HERE}/bench_em.py", "--out", f"{out}/em.json"] + scale + quick + skr + ski}
    for cov in ("tied", "diag", "spherical"):
        cmds[f"em_{cov}"] = py + [f"{HERE}/bench_em.py", "--covariance-type", cov, "--out", f"{out}/em_{cov}.json"]
        cmds[f"em_{cov}"] += scale + quick + skr + ski
    cmds["kmeans"] = py + [f"{HERE}/bench_kmeans.py", "--out", f"{out}/kmeans.json"] + scale + quick + skr
    cmds["restarts"] = py + [f"{HERE}/bench_restarts.py", "--out", f"{out}/restarts.json"]
    cmds["select_k"] = py + [f"{HERE}/bench_select_k.py", "--out", f"{out}/select_k.json"]
    gmmx = ["--n", "8192"] if args.quick else []
    timeout = ["--timeout", "600" if args.gpu else "150"]
    cmds["gmmx"] = py + [f"{HERE}/bench_gmmx.py", "--out", f"{out}/gmmx.json"] + timeout + gmmx
    # GPUs: gmm_jax with Config(precision='default') (TF32 products, as gmmx's)
    cmds["gmmx_tf32"] = py + [f"{HERE}/bench_gmmx.py", "--gmm-jax-precision", "default",
                              "--out", f"{out}/gmmx_tf32.json"] + timeout + gmmx
    sizes = ["--sizes", "100000", "1000000"] if args.quick else []
    cmds["memory"] = py + [f"{HERE}/bench_memory.py", "--out", f"{out}/memory.json"] + sizes
    cmds["progress"] = py + [f"{HERE}/bench_progress.py", "--out", f"{out}/progress.json"]
    n_stream = ["--n", "2000000"] if args.quick else []
    cmds["stream"] = py + [f"{HERE}/bench_stream.py", "--out", f"{out}/stream.json"] + n_stream
    return cmds


def _load(out, name):
    path = os.path.join(out, name + ".json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _fmt(v, nd=3):
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        return f"{v:.{nd}g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def summarize(out, machine, log):
    """Rows of (benchmark, cell, gmm_jax, reference, ratio, target, met, note) from the JSON results."""
    rows = []

    def add(bench, cell, ours, ref, ratio, target, met, note=""):
        rows.append({"benchmark": bench, "cell": cell, "gmm_jax": ours, "reference": ref, "ratio": ratio,
                     "target": target, "met": met, "note": note})

    for cov in ("full", "tied", "diag", "spherical"):
        res = _load(out, "em" if cov == "full" else f"em_{cov}")
        for r in res or []:
            cell = f"{r['n']:.0e} x {r['d']} x {r['k']} {cov}".replace("+0", "")
            sp = r.get("speedup_vs_sklearn")
            add("EM iteration vs scikit-learn", cell, f"{r['ms_per_iter']:.1f} ms",
                f"{r['sklearn_ms_per_iter']:.1f} ms" if sp else "-", sp, ">= 10x", None if sp is None else sp >= 10,
                f"{r['gflops']:.0f} GFLOP/s = {100 * r['fraction_of_peak']:.0f}% of jnp.dot {r['peak_gflops']:.0f}")
            if cov == "full" and r["d"] >= 32:
                add("EM iteration, share of matmul peak", cell, f"{r['gflops']:.0f} GFLOP/s",
                    f"{r['peak_gflops']:.0f} GFLOP/s", r["fraction_of_peak"], ">= 0.40", r["fraction_of_peak"] >= 0.40)
            add("compile time of fit (first call)", cell, f"{r['compile_s']:.2f} s", "-", None, "<= 2 s",
                r["compile_s"] <= 2.0)
    res = _load(out, "kmeans")
    for r in res or []:
        if "ms_per_iter" in r:
            cell = f"{r['n']:.0e} x {r['d']} x {r['k']}".replace("+0", "")
            differ = (f"labels differing: {r['labels_differing']}" if "labels_differing" in r
                      else f"same labels: {r['same_labels']}")
            add("K-means iteration vs scikit-learn (iterations 4-8)", cell,
                f"{r['ms_per_iter']:.1f} ms", f"{r['sklearn_ms_per_iter']:.1f} ms", r["speedup_vs_sklearn"], ">= 1x",
                r["speedup_vs_sklearn"] >= 1.0,
                f"algorithm {r.get('algorithm', 'lloyd')}; plain Lloyd {r['ms_per_iter_lloyd']:.1f} ms "
                f"({r['lloyd_speedup_vs_sklearn']:.2f}x); scikit-learn elkan {r['sklearn_elkan_ms_per_iter']:.1f} ms "
                f"({r['speedup_vs_sklearn_elkan']:.2f}x); {differ}, iterations {r['iters']}"
                if "ms_per_iter_lloyd" in r else f"{differ}, iterations {r['iters']}")
            if "fit_ms" in r:
                add("K-means whole fit vs scikit-learn", cell, f"{r['fit_ms']:.0f} ms", f"{r['sklearn_fit_ms']:.0f} ms",
                    r["fit_speedup_vs_sklearn"], ">= 1x", r["fit_speedup_vs_sklearn"] >= 1.0,
                    f"the K-means figure (issue 23): seeding, iterations to convergence; iterations {r['fit_iters']}")
                add("K-means iteration vs scikit-learn (iterations 4 to convergence)", cell, f"{r['fit_ms_per_iter']:.1f} ms",
                    f"{r['sklearn_fit_ms_per_iter']:.1f} ms", r["fit_per_iter_speedup_vs_sklearn"], ">= 1x",
                    r["fit_per_iter_speedup_vs_sklearn"] >= 1.0,
                    f"whole fits {r['fit_ms']:.0f} / {r['sklearn_fit_ms']:.0f} ms ({r['fit_speedup_vs_sklearn']:.2f}x), "
                    f"iterations {r['fit_iters']}, labels differing: {r['fit_labels_differing']}")
        else:
            add("K-means, 32 vmapped restarts vs n_init=32", "2000 x 2 x 5", f"{r['ms_32_restarts']:.1f} ms",
                f"{r['sklearn_ms_n_init_32']:.1f} ms", r["speedup_vs_sklearn"], "-", None,
                f"cost of 32 restarts / 1 = {r['cost_32_over_1']:.1f}")
    res = _load(out, "restarts")
    for r in res or []:
        init = r.get("init", "kmeans")
        how = "in sequence" if r.get("in_sequence") else "vmapped"
        cell = f"{r['n']} x {r['d']} x {r['k']}, R={r['restarts']}, init={init}, {how}"
        add("GMM restarts: cost(R) / cost(1)", cell, f"{r['ms_R_restarts']:.1f} ms",
            f"{r['ms_one_restart']:.1f} ms (R=1)", r["cost_R_over_1"], "<= 6x", r["cost_R_over_1"] <= 6.0,
            f"EM iterations per restart: mean {r['mean_iters']:.1f}, max {r['max_iters']}")
        if not r.get("in_sequence"):
            add(f"compile time of fit, init='{init}' (first call)", f"{r['n']} x {r['d']} x {r['k']}, R=1",
                f"{r['first_call_s_one']:.2f} s", "-", None, "<= 2 s", r["first_call_s_one"] <= 2.0,
                "first call including the run; the initialisation is compiled with EM")
        add("GMM restarts vs scikit-learn n_init=R", cell, f"{r['ms_R_restarts']:.1f} ms",
            f"{r['sklearn_ms_n_init_R']:.0f} ms", r["speedup_vs_sklearn"], ">= 20x", r["speedup_vs_sklearn"] >= 20,
            f"best log-lik {r['best_log_likelihood']:.4f} vs {r['sklearn_log_likelihood']:.4f}")
    res = _load(out, "select_k")
    for r in (res or {}).get("rows", []):
        cell = f"iris {r['n']} x {r['d']}, K = 1..{r['kmax']}, R={r['restarts']}"
        add("choosing K: every K in one program (fit_path), first call", cell, f"{r['path_first_s']:.2f} s",
            f"{r['separate_first_s']:.2f} s (a fit per K)", r["first_call_speedup_vs_separate"], "-", None,
            "compilation included: one program instead of one per K")
        add("choosing K: `gmm-jax fit --select-k` from the shell", cell, f"{r['cli_s']:.2f} s",
            f"{r['import_s']:.2f} s (import gmm_jax)", None, "<= 3 s", r["cli_s"] <= 3.0,
            "a new process: Python, JAX import and compilation included")
        add("choosing K vs scikit-learn, a GaussianMixture per K (warm)", cell, f"{r['path_warm_ms']:.1f} ms",
            f"{r['sklearn_ms']:.0f} ms", r["warm_speedup_vs_sklearn"], "-", None, f"BIC picks K={r['best_k']}")
    res = _load(out, "gmmx")
    for r in res or []:
        cell = f"{r['n']} x {r['d']} x {r['k']}, {r['iters']} iterations"
        if r.get("skipped"):
            add("gmm_jax vs gmmx 0.7", cell, "-", "-", None, ">= 2x", None, r["skipped"])
            continue
        sp = r.get("speedup_vs_gmmx")
        note = r.get("gmmx_error", "")
        if sp is not None:
            note = f"max |mean diff| {r['max_abs_mean_diff']:.1e}, |weight diff| {r['max_abs_weight_diff']:.1e}"
        ours = f"{r['gmm_jax_s']:.2f} s" if r.get("gmm_jax_s") else "-"
        theirs = f"{r['gmmx_s']:.2f} s" if r.get("gmmx_s") else "did not finish"
        add("gmm_jax vs gmmx 0.7", cell, ours, theirs, sp, ">= 2x", None if sp is None else sp >= 2, note)
    for r in _load(out, "gmmx_tf32") or []:
        if r.get("skipped"):
            continue
        cell = f"{r['n']} x {r['d']} x {r['k']}, {r['iters']} iterations"
        sp = r.get("speedup_vs_gmmx")
        note = "experiment, not the library's setting" + (
            f"; max |mean diff| {r['max_abs_mean_diff']:.1e}" if sp is not None else "; " + r.get("gmmx_error", ""))
        add("gmm_jax at default matmul precision (TF32 on NVIDIA) vs gmmx 0.7", cell,
            f"{r['gmm_jax_s']:.3f} s" if r.get("gmm_jax_s") else "-",
            f"{r['gmmx_s']:.3f} s" if r.get("gmmx_s") else "did not finish", sp, "-", None, note)
    res = _load(out, "memory")
    if res:
        b = res["rows"][-1]
        ratio = res.get("fit_growth_over_data")
        add("memory: fit's peak-RSS growth / data size", f"n={b['n']:.0e}, d={res['d']}, K={res['k']}",
            f"{b.get('fit_growth_mb') or 0:.0f} MB", f"{b['data_mb']:.0f} MB data", ratio, "<= 1.5",
            None if ratio is None else ratio <= 1.5,
            f"two-size growth ratio {res['growth_ratio']:.2f}; fit {b['fit_s']:.1f} s")
    res = _load(out, "progress")
    if res and "boundary" in res:
        b = res["boundary"]
        add("progress: host work per chunk boundary", "1e5 x 16 x 16, 40 iterations, chunks of 10",
            f"{b['seconds_per_chunk'] * 1e3:.3f} ms x {b['chunks']}", f"{res['off']['seconds'] * 1e3:.0f} ms fit",
            b["overhead_pct"], "<= 5 %", b["overhead_pct"] <= 5.0, "measured directly (no wall-clock noise)")
    if res:
        for name in ("callback", "print"):
            if name in res:
                ov = res[name]["overhead_pct"]
                add(f"progress overhead ({name}), wall clock", "1e5 x 16 x 16, 40 iterations",
                    f"{res[name]['seconds'] * 1e3:.1f} ms", f"{res['off']['seconds'] * 1e3:.1f} ms (off)", ov, "<= 5 %",
                    ov <= 5.0)
    res = _load(out, "stream")
    if res:
        for r in res if isinstance(res, list) else [res]:
            add("streaming EM over a memmap", f"n={r['n']:.0e}, d={r['d']}, K={r['k']}",
                f"{r['s_per_pass']:.1f} s/pass", f"{r['file_mb']:.0f} MB file", r["peak_rss_mb"], "peak RSS < 1024 MB",
                r["peak_rss_mb"] < 1024, f"{r['passes']} passes")
    return rows


def write_summary(out, rows, machine, log, title):
    md = [f"# {title}", "", "Written by `python benchmarks/run_all.py" + (" --gpu" if "gpu" in out else "") + "`.", "",
          "Machine: " + f"{machine['cpu']} ({machine['cores']} cores); JAX {machine['jax']} on "
          + ", ".join(machine["jax_devices"]) + f" ({machine.get('device_kind')}); NumPy {machine['numpy']}; "
          + f"scikit-learn {machine['sklearn']}; "
          + f"Python {machine['python']}.", "", f"BLAS (NumPy, for scikit-learn): {machine['blas']}.", "",
          "| benchmark | cell | gmm_jax | reference | ratio | target | met | note |",
          "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        met = {True: "yes", False: "**no**", None: "-"}[r["met"]]
        md.append(f"| {r['benchmark']} | {r['cell']} | {r['gmm_jax']} | {r['reference']} | {_fmt(r['ratio'])} | "
                  f"{r['target']} | {met} | {r['note']} |")
    md += ["", "Where a target is missed, what limits it is measured in `benchmarks/results/PROFILE.md`.", "",
           "Runs (seconds, exit status):", ""]
    md += [f"- {name}: {entry['seconds']:.0f} s, exit {entry['rc']}" for name, entry in log.items()]
    with open(os.path.join(out, "summary.md.tmp"), "w") as f:
        f.write("\n".join(md) + "\n")
    os.replace(os.path.join(out, "summary.md.tmp"), os.path.join(out, "summary.md"))
    write_json(os.path.join(out, "summary.json"), {"machine": machine, "rows": rows, "runs": log})
    print("\n".join(md))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=None, help="comma-separated subset of " + ",".join(BENCHES) + " (default: all; "
                    "with --gpu: em,kmeans,restarts,gmmx, which fit the 5-minute budget of a lent GPU)")
    ap.add_argument("--skip", default="", help="comma-separated benchmarks to leave out")
    ap.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run; figures not comparable)")
    ap.add_argument("--gpu", action="store_true", help="n x 10 grids, results in results/gpu, no memory/progress")
    ap.add_argument("--summary-only", action="store_true", help="rebuild the summary from the existing JSON")
    ap.add_argument("--out", default=None, help="results folder (default benchmarks/results[/gpu])")
    args = ap.parse_args(argv)
    out = args.out or os.path.join(HERE, "results", "gpu" if args.gpu else "")
    out = out.rstrip("/")
    os.makedirs(out, exist_ok=True)
    # gmmx_tf32 only on accelerators: on a CPU the default precision of float32 products is full float32
    default = "em,kmeans,restarts,gmmx,gmmx_tf32" if args.gpu else ",".join(b for b in BENCHES if b != "gmmx_tf32")
    only = [b for b in (args.only or default).split(",") if b]
    unknown = [b for b in only + [s for s in args.skip.split(",") if s] if b not in BENCHES]
    if unknown:
        ap.error(f"unknown benchmark(s) {unknown}; choose from {BENCHES}")
    if args.gpu:
        only = [b for b in only if b not in ("memory", "progress", "stream")]
    only = [b for b in only if b not in args.skip.split(",")]
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    log_path = os.path.join(out, "runs.json")
    log = _load(out, "runs") or {}
    if not args.summary_only:
        cmds = commands(args, out)
        for name in only:
            print(f"\n=== {name}: {' '.join(os.path.relpath(c) if c.startswith('/') else c for c in cmds[name])}",
                  flush=True)
            t = time.perf_counter()
            rc = subprocess.run(cmds[name], env=env).returncode
            log[name] = {"seconds": time.perf_counter() - t, "rc": rc}
            write_json(log_path, log)
    machine = machine_description()
    if args.summary_only and _load(out, "summary"):  # the machine that ran the benchmarks, not this one
        machine = _load(out, "summary")["machine"]
    rows = summarize(out, machine, log)
    title = "Benchmark summary" + (" (GPU, n x 10)" if args.gpu else "")
    write_summary(out, rows, machine, log, title)
    return 0 if all(v["rc"] == 0 for k, v in log.items() if k in only) else 1


if __name__ == "__main__":
    sys.exit(main())
