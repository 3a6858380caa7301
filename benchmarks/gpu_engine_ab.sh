#!/usr/bin/env bash
# A/B on a lent GPU: this tree's package against the code before the one-engine redesign (a copy of its gmm_jax/
# package in .before/), in one run: EM per iteration on the n x 10 grid (full and diag) and 32 restarts.
#   mkdir -p .before && git --work-tree=.before checkout 310e4f2 -- gmm_jax && git reset -q  (or copy the package)
#   OUT=/tmp/ab bash benchmarks/gpu_engine_ab.sh
set -u
OUT=${OUT:-/tmp/ab}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -c "import jax; print(jax.__version__, jax.devices())"
for cov in full diag; do
  for side in before after; do
    root=$([ "$side" = before ] && echo .before || echo .)
    echo "=== em $cov $side"
    PYTHONPATH=$root timeout 240 python3 benchmarks/bench_em.py --scale 10 --no-sklearn --covariance-type "$cov" \
      --out "$OUT/em_${cov}_${side}.json" 2>&1 | grep -v Warning
  done
done
for side in after before; do
  root=$([ "$side" = before ] && echo .before || echo .)
  echo "=== restarts $side"
  PYTHONPATH=$root timeout 120 python3 benchmarks/bench_restarts.py --out "$OUT/restarts_${side}.json" 2>&1 | grep -v Warning
done
