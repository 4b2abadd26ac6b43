# The GPU-machine runs behind docs/results.md, one stage per device call (each under 10 minutes).
# On the GPU host, after `.gpu/full-a/stage.sh`:  source .gpu/full-b/env.sh; bash tests/gpu/h100_session.sh STAGE
# Results go to $OUT (at most 8 files come back per call); scratch goes to /tmp/fcm-run.
set -u
STAGE=${1:?stage: layers | bench | tune | tuned | ncu}
OUT=${OUT:-/tmp/fcm-out}
RUN=/tmp/fcm-run
mkdir -p "$OUT" "$RUN"
FCM="python -m fcm_tvm.cli"
TUNED=$RUN/tuning  # <model>_b<batch>_<precision>_stock, as fcm-tvm bench expects

case "$STAGE" in
layers)  # per-chain: FCM vs stock (dlight) vs cuDNN vs the DRAM floor
  timeout 280 python -m fcm_tvm.benchmarks.layers --models mobilenet_v2,efficientnet_b0 \
    --batch 1 --precision fp32 --number 20 --repeat 10 --out "$OUT" 2>&1 | tail -45 ;;
bench)  # end to end, untuned variants
  timeout 300 $FCM bench mobilenet_v2,efficientnet_b0,mobilenet_v3_large --baseline stock --variants fcm \
    --batch 1,32 --precision fp32 -o "$OUT" 2>&1 | tail -20 ;;
tune)  # MetaSchedule on the stock MobileNetV2 graph, then the tuned variants side by side
  $FCM models mobilenet_v2 -o $RUN/mobilenet_v2.onnx
  timeout 420 $FCM tune $RUN/mobilenet_v2.onnx --fuse none --trials "${TRIALS:-600}" \
    -o $TUNED/mobilenet_v2_b1_fp32_stock 2>&1 | grep -v "^\s*$" | tail -5
  cp $TUNED/mobilenet_v2_b1_fp32_stock/database_*.json "$OUT"/
  timeout 150 $FCM bench mobilenet_v2 --baseline stock,stock-tuned --variants fcm,fcm-tuned --batch 1 \
    --precision fp32 --tuning-records $TUNED -o "$OUT" 2>&1 | tail -12 ;;
ncu)  # DRAM bytes of every chain, fused and unfused, for the cost model's validation
  timeout 500 ncu --cache-control none --metrics dram__bytes_read.sum,dram__bytes_write.sum --csv \
    --page raw --log-file $RUN/ncu.csv \
    python -m fcm_tvm.benchmarks.layers --models mobilenet_v2,efficientnet_b0 --batch 1 --precision fp32 \
    --profile-run --out $RUN >/dev/null 2>&1
  python -m fcm_tvm.benchmarks.ncu_bytes $RUN 2>&1 | tail -45; cp $RUN/dram_bytes.json "$OUT"/ ;;
esac
