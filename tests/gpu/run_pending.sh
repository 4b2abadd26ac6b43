#!/usr/bin/env bash
# On the GPU host: what tests/gpu/export_pending.sh exported, carried in under .gpu/.
#   kernels [fp16] [fp32]  the stream sweep of those precisions (fp16 unless named; ~480 kernels
#            each, 139 s for fp16 on an H100), sweep_stream_<precision>.json, kept in
#            /tmp/fcm-pending for bench (fp16's is in the shipped H200 table since the
#            thirty-fourth session: fp32's is what waits);
#            the runtime alone is enough (source .gpu/rt/env.sh, or .gpu/full-b/env.sh); each
#            precision's run is cut off after KERNELS_TIMEOUT seconds (400), keeping what it timed
#   bench    full TVM, on the same warm host: the table that holds PRECISION's chains at BATCH (32
#            unless named; fp16 at batch 32: the H200's, else the H100's) rebuilt with that
#            precision's sweep, then bench_each of MODELS (default MobileNetV2 and MnasNet) planned on it;
#            at batch 1 (whose table rows are CUDA-graph times) through h100_session.sh tc_graph: the
#            chains' best tiles re-timed inside a graph first (LAYERS_TIMEOUT a model, 200 s) rather
#            than priced there from their wall-clock times (planner/measured.py, from_row)
# STREAM names the export (.gpu/stream.tar.xz, the batch-32 one, unless named; export_pending.sh
# B1=1 packs the batch-1 one as .gpu/stream_b1.tar.xz, IMAGE=1 the whole-image kernels in fp32 as
# .gpu/image.tar.xz: 267 kernels swept in ~80 s; IMAGE_RUNS=1 as .gpu/image_runs.tar.xz, 645
# kernels in ~110 s; IMAGE_HEADS_FP16=1 as .gpu/image_heads_fp16.tar.xz, 528 kernels, with
# kernels fp16 and PRECISION=fp16 for bench): its folder's name is in each sweep's name,
# sweep_<folder>_<precision>.json, for kernels and bench alike.
set -u
OUT=${OUT:-/tmp/fcm-out}
KEEP=/tmp/fcm-pending
STREAM=${STREAM:-.gpu/stream.tar.xz}
name=$(basename "$STREAM" .tar.xz)
mkdir -p "$OUT" "$KEEP"
case "${1:?kernels | bench}" in
kernels)
  tar xJf "$STREAM" -C /tmp
  shift
  for precision in ${@:-fp16}; do
    sweep=sweep_${name}_$precision.json
    timeout ${KERNELS_TIMEOUT:-400} python tests/gpu/check_fcm_kernels.py run /tmp/$name --only "_${precision}@" \
      --json "$OUT/$sweep" --jobs 16 > $KEEP/${name}_$precision.log 2>&1
    echo "$name $precision exit $?: $(tail -1 $KEEP/${name}_$precision.log)"
    [ -f "$OUT/$sweep" ] && cp "$OUT/$sweep" $KEEP/
  done ;;
bench)
  precision=${PRECISION:-fp32} batch=${BATCH:-32}
  sweep=$KEEP/sweep_${name}_$precision.json
  [ -f $sweep ] || sweep=${SWEEP:?no sweep_${name}_$precision.json: run kernels $precision first, or name SWEEP}
  models=${MODELS:-mobilenet_v2,mnasnet1_0}
  if [ "$batch" = 1 ]; then  # the table's batch-1 rows are graph times: time the sweep's tiles there too
    SWEEP=$sweep MODELS=$models BATCH=1 PRECISION=$precision BENCH_TIMEOUT=${MODEL_TIMEOUT:-150} \
      MODEL_TIMEOUT=${LAYERS_TIMEOUT:-200} bash tests/gpu/h100_session.sh tc_graph
    exit
  fi
  table=h100; [ "$precision$batch" = fp1632 ] && table=h200
  EXTRA_SWEEPS=$sweep TABLE=$table MODELS=$models BATCH=$batch PRECISION=$precision \
    BENCH_TIMEOUT=${MODEL_TIMEOUT:-190} bash tests/gpu/h100_session.sh table_bench ;;
esac
