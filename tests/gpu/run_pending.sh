#!/usr/bin/env bash
# On the GPU host: what tests/gpu/export_pending.sh exported, carried in under .gpu/.
#   kernels  the stream sweep, fp16 then fp32 (sweep_stream_fp16.json, kept in /tmp/fcm-pending for
#            bench, and sweep_stream_fp32.json);
#            the runtime alone is enough (source .gpu/rt/env.sh, or .gpu/full-b/env.sh)
#   bench    full TVM, on the same warm host: the H200 table rebuilt with that sweep, then
#            bench_each of MODELS (default MobileNetV2 and MnasNet) at batch 32 in fp16 planned on it
set -u
OUT=${OUT:-/tmp/fcm-out}
KEEP=/tmp/fcm-pending
mkdir -p "$OUT" "$KEEP"
case "${1:?kernels | bench}" in
kernels)
  tar xJf .gpu/stream.tar.xz -C /tmp
  for precision in fp16 fp32; do  # fp16 first: the bench below plans on it
    timeout 240 python tests/gpu/check_fcm_kernels.py run /tmp/stream --only "_${precision}@" \
      --json "$OUT/sweep_stream_$precision.json" --jobs 16 > $KEEP/stream_$precision.log 2>&1
    echo "stream $precision exit $?: $(tail -1 $KEEP/stream_$precision.log)"
  done
  cp "$OUT/sweep_stream_fp16.json" $KEEP/sweep_pw_dw_stream.json ;;
bench)
  sweep=$KEEP/sweep_pw_dw_stream.json; [ -f $sweep ] || sweep=${SWEEP:?no sweep_pw_dw_stream.json: run kernels first, or name SWEEP}
  EXTRA_SWEEPS=$sweep MODELS=${MODELS:-mobilenet_v2,mnasnet1_0} BATCH=32 PRECISION=fp16 \
    BENCH_TIMEOUT=${MODEL_TIMEOUT:-190} bash tests/gpu/h100_session.sh table_bench ;;
esac
