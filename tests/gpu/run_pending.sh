#!/usr/bin/env bash
# On the GPU host: what tests/gpu/export_pending.sh exported, carried in under .gpu/.
#   kernels  the patch-reuse sweep (tc_reuse: sweep_tc_reuse.json and patch_reuse.md, the sweep
#            also kept in /tmp/fcm-pending for bench), the fast-sigmoid A/B (ab_old, ab_new:
#            ab_fast_sigmoid.md), and ncu
#            sections of the six slow tensor-core kernels (prof_tc: ncu_prof_tc.csv); the runtime
#            alone is enough (source .gpu/rt/env.sh, or .gpu/full-b/env.sh)
#   bench    full TVM, on the same warm host: the H200 table rebuilt with that sweep, then
#            bench_each of MODELS (default MobileNetV2 and MnasNet) at batch 32 in fp16 planned on it
set -u
OUT=${OUT:-/tmp/fcm-out}
KEEP=/tmp/fcm-pending
mkdir -p "$OUT" "$KEEP"
check="python tests/gpu/check_fcm_kernels.py run"
case "${1:?kernels | bench}" in
kernels)
  timeout 180 $check .gpu/tc_reuse --json "$OUT/sweep_tc_reuse.json" --jobs 16 > $KEEP/tc_reuse.log 2>&1
  echo "tc_reuse exit $?: $(tail -1 $KEEP/tc_reuse.log)"
  python tests/gpu/compare_runs.py -o "$OUT/patch_reuse.md" knob "$OUT/sweep_tc_reuse.json" patch_reuse | tail -1
  cp "$OUT/sweep_tc_reuse.json" $KEEP/
  for v in old new; do
    timeout 120 $check .gpu/ab_$v --json "$OUT/ab_$v.json" --jobs 16 > $KEEP/ab_$v.log 2>&1
    echo "ab_$v exit $?: $(tail -1 $KEEP/ab_$v.log)"
  done
  python tests/gpu/compare_runs.py -o "$OUT/ab_fast_sigmoid.md" ab "$OUT/ab_old.json" "$OUT/ab_new.json" | tail -1
  timeout 200 ncu --section SpeedOfLight --section WarpStateStats --section ComputeWorkloadAnalysis \
    -k regex:fcm_ --csv --page details python tests/gpu/profile_kernels.py run .gpu/prof_tc \
    > "$OUT/ncu_prof_tc.csv" 2> $KEEP/ncu.log
  echo "ncu exit $?: $(tail -1 $KEEP/ncu.log)" ;;
bench)
  sweep=$KEEP/sweep_tc_reuse.json; [ -f $sweep ] || sweep=${SWEEP:?no sweep_tc_reuse.json: run kernels first, or name SWEEP}
  EXTRA_SWEEPS=$sweep MODELS=${MODELS:-mobilenet_v2,mnasnet1_0} BATCH=32 PRECISION=fp16 \
    BENCH_TIMEOUT=${MODEL_TIMEOUT:-190} bash tests/gpu/h100_session.sh table_bench ;;
esac
