#!/usr/bin/env bash
# On the GPU host: what tests/gpu/export_pending.sh exported, carried in under .gpu/.
#   kernels [fp16] [fp32]  the stream sweep of those precisions (fp16 unless named; ~480 kernels
#            each, ~5 min: one precision a call), sweep_stream_<precision>.json, fp16's kept in
#            /tmp/fcm-pending for bench;
#            the runtime alone is enough (source .gpu/rt/env.sh, or .gpu/full-b/env.sh); each
#            precision's run is cut off after KERNELS_TIMEOUT seconds (400), keeping what it timed
#   bench    full TVM, on the same warm host: the H200 table rebuilt with that sweep, then
#            bench_each of MODELS (default MobileNetV2 and MnasNet) at batch 32 in fp16 planned on it
set -u
OUT=${OUT:-/tmp/fcm-out}
KEEP=/tmp/fcm-pending
mkdir -p "$OUT" "$KEEP"
case "${1:?kernels | bench}" in
kernels)
  tar xJf .gpu/stream.tar.xz -C /tmp
  shift
  for precision in ${@:-fp16}; do  # fp16 (the bench below plans on it); fp32 in a call of its own
    timeout ${KERNELS_TIMEOUT:-400} python tests/gpu/check_fcm_kernels.py run /tmp/stream --only "_${precision}@" \
      --json "$OUT/sweep_stream_$precision.json" --jobs 16 > $KEEP/stream_$precision.log 2>&1
    echo "stream $precision exit $?: $(tail -1 $KEEP/stream_$precision.log)"
  done
  [ -f "$OUT/sweep_stream_fp16.json" ] && cp "$OUT/sweep_stream_fp16.json" $KEEP/sweep_pw_dw_stream.json ;;
bench)
  sweep=$KEEP/sweep_pw_dw_stream.json; [ -f $sweep ] || sweep=${SWEEP:?no sweep_pw_dw_stream.json: run kernels first, or name SWEEP}
  EXTRA_SWEEPS=$sweep MODELS=${MODELS:-mobilenet_v2,mnasnet1_0} BATCH=32 PRECISION=fp16 \
    BENCH_TIMEOUT=${MODEL_TIMEOUT:-190} bash tests/gpu/h100_session.sh table_bench ;;
esac
