#!/usr/bin/env bash
# On the GPU host: what tests/gpu/export_pending.sh exported, carried in under .gpu/.
#   kernels [fp16] [fp32]  the stream sweep of those precisions (fp16 unless named; ~480 kernels
#            each, 139 s for fp16 on an H100), sweep_stream_<precision>.json, kept in
#            /tmp/fcm-pending for bench (fp16's is in the shipped H200 table since the
#            thirty-fourth session: fp32's is what waits);
#            the runtime alone is enough (source .gpu/rt/env.sh, or .gpu/full-b/env.sh); each
#            precision's run is cut off after KERNELS_TIMEOUT seconds (400), keeping what it timed
#   bench    full TVM, on the same warm host: the table that holds PRECISION's batch-32 chains
#            (fp32, the default: the H100's; fp16: the H200's) rebuilt with that precision's sweep,
#            then bench_each of MODELS (default MobileNetV2 and MnasNet) at batch 32 planned on it
set -u
OUT=${OUT:-/tmp/fcm-out}
KEEP=/tmp/fcm-pending
mkdir -p "$OUT" "$KEEP"
case "${1:?kernels | bench}" in
kernels)
  tar xJf .gpu/stream.tar.xz -C /tmp
  shift
  for precision in ${@:-fp16}; do
    timeout ${KERNELS_TIMEOUT:-400} python tests/gpu/check_fcm_kernels.py run /tmp/stream --only "_${precision}@" \
      --json "$OUT/sweep_stream_$precision.json" --jobs 16 > $KEEP/stream_$precision.log 2>&1
    echo "stream $precision exit $?: $(tail -1 $KEEP/stream_$precision.log)"
    [ -f "$OUT/sweep_stream_$precision.json" ] && cp "$OUT/sweep_stream_$precision.json" $KEEP/
  done ;;
bench)
  precision=${PRECISION:-fp32}
  sweep=$KEEP/sweep_stream_$precision.json
  [ -f $sweep ] || sweep=${SWEEP:?no sweep_stream_$precision.json: run kernels $precision first, or name SWEEP}
  table=h100; [ "$precision" = fp16 ] && table=h200
  EXTRA_SWEEPS=$sweep TABLE=$table MODELS=${MODELS:-mobilenet_v2,mnasnet1_0} BATCH=32 PRECISION=$precision \
    BENCH_TIMEOUT=${MODEL_TIMEOUT:-190} bash tests/gpu/h100_session.sh table_bench ;;
esac
