# MetaSchedule on the stock graph (--fuse none) of zoo models, or on fcm-tvm's (a case ending in
# ":auto": the kernels around the FCMs): the records that ship in
# fcm_tvm/data/tuning/<gpu>/<model>_b<batch>_<precision>_<stock|fcm>/, and a summary of what built and ran.
# On the GPU host, after `.gpu/full-a/stage.sh`:
#   source .gpu/full-b/env.sh; bash tests/gpu/tune_zoo.sh [MODEL:BATCH:PRECISION[:auto] ...]
# A fair pair tunes both graphs with the same budget: m:32:fp16 m:32:fp16:auto (fcm-tvm's graph
# as a build with CUDA graphs fuses it, as bench_each builds).
# Default cases: mobilenet_v2, efficientnet_b0, mobilenet_v3_large at batch 1, fp32.
# `fcm-tvm tune` measures every task's default (dlight) schedule, then tunes the slowest tasks
# (FOCUS of the time) one by one and stops between tasks at its time budget; running it again on
# the same work dir goes on. Environment: TRIALS_PER_TASK (32), FOCUS (0.9), SEARCH (evolutionary),
# TOTAL (s for the whole script, 540, shared by the cases), RESUME (a folder of earlier work dirs,
# e.g. a carried runs/ from tune_zoo.tar.gz, copied in first), START_FROM (a root of record folders,
# e.g. fcm_tvm/data/tuning/h200: each case starts from its folder there, where it has one, and
# tunes only the tasks it holds no tuned record of: tune --start-from; an fcm case starts from its
# own folder there, else from the stock one, as a build falls back to it; a work dir that already
# holds a database just goes on), OUT (results),
# TARGET (cuda; llvm for a dry run of the script on a machine without a GPU).
# Back in $OUT (8 files at most): tune_zoo.tar.gz (tuning/<gpu>/<case>/ pruned databases to ship,
# runs/<case>/ full work dirs with logs, summaries and tasks.json), tune_zoo_summary.json.
# To ship (pruned and xz-packed): python -m fcm_tvm.records pack runs/<case> fcm_tvm/data/tuning/<gpu>/<case>
set -u
OUT=${OUT:-/tmp/fcm-out}
RUN=/tmp/fcm-tune
TRIALS_PER_TASK=${TRIALS_PER_TASK:-32}
TOTAL=${TOTAL:-540}
TARGET=${TARGET:-cuda}
CASES=("$@")
[ ${#CASES[@]} -gt 0 ] || CASES=(mobilenet_v2:1:fp32 efficientnet_b0:1:fp32 mobilenet_v3_large:1:fp32)
# tvm-ffi would import torch and JIT-build a DLPack add-on in every MetaSchedule worker process
export TVM_FFI_DISABLE_TORCH_C_DLPACK=1
START=$(date +%s)
mkdir -p "$OUT" "$RUN/runs"
[ -n "${RESUME:-}" ] && cp -r "$RESUME"/. "$RUN/runs/"
rm -rf "$RUN/tuning"
GPU=$(python -c "from fcm_tvm.target import resolve_target; print(resolve_target('$TARGET').gpu.key)" 2>/dev/null || echo cpu)
mkdir -p "$RUN/tuning/$GPU"
echo "GPU: $GPU; $TRIALS_PER_TASK trials per task, focus ${FOCUS:-0.9}; $(nproc) CPUs"

left=${#CASES[@]}
names=()
for case in "${CASES[@]}"; do
  IFS=: read -r model batch precision fuse <<< "$case"
  fuse=${fuse:-none}; kind=$([ "$fuse" = none ] && echo stock || echo fcm)
  name=${model}_b${batch}_${precision}_$kind
  names+=("$name")
  work=$RUN/runs/$name
  python -c "import onnx, sys; from fcm_tvm.models import build_model; from fcm_tvm.precision import with_precision
onnx.save(with_precision(build_model('$model', batch=$batch), '$precision'), sys.argv[1])" "$RUN/$name.onnx" \
    || { echo "$name: could not build the model"; left=$((left - 1)); continue; }
  budget=$(( (TOTAL - ($(date +%s) - START) - 30) / left ))  # 30 s: pruning, the summary, the tarball
  if [ "$budget" -lt 60 ]; then echo "$name: skipped, no time left"; left=$((left - 1)); continue; fi
  from=${START_FROM:+$START_FROM/$name}
  [ -n "$from" ] && [ ! -d "$from" ] && from=$START_FROM/${model}_b${batch}_${precision}_stock
  [ -n "$from" ] && { [ ! -d "$from" ] || [ -f "$work/database_tuning_record.json" ]; } && from=  # going on
  echo "== $name: tuning for at most $budget s${from:+, starting from $from}"
  # the budget is checked between tasks: the kill is a safety net for one task running long
  timeout -s INT -k 10 $((budget + 60)) python -m fcm_tvm.cli tune "$RUN/$name.onnx" --target "$TARGET" \
    --fuse "$fuse" $([ "$fuse" = none ] || echo --cuda-graph) --trials 100000 --trials-per-task "$TRIALS_PER_TASK" --focus "${FOCUS:-0.9}" \
    --time-budget "$budget" --search "${SEARCH:-evolutionary}" ${from:+--start-from "$from"} -o "$work" \
    > "$RUN/runs/$name.log" 2>&1
  echo "   exit $? after $(( $(date +%s) - START )) s; $(grep '^\[fcm-tvm\] .*candidates' "$RUN/runs/$name.log" | tail -1)"
  if [ -d "$work" ]; then
    python -m fcm_tvm.records prune "$work" "$RUN/tuning/$GPU/$name" > /dev/null 2>&1 \
      || echo "   no database to ship for $name"
    python -m fcm_tvm.tuning_progress "$work" | tail -3
  fi
  left=$((left - 1))
done

cd "$RUN" || exit 1
works=(); for name in "${names[@]}"; do [ -d "runs/$name" ] && works+=("runs/$name"); done
echo; python -m fcm_tvm.tuning_summary "${works[@]}"
python - "${works[@]}" > "$OUT/tune_zoo_summary.json" <<'PY'
import json, sys
from pathlib import Path
runs = {Path(p).name: Path(p, "tuning_summary.json") for p in sys.argv[1:]}
print(json.dumps({name: json.loads(f.read_text()) if f.is_file() else None for name, f in runs.items()}, indent=1))
PY
tar czf "$OUT/tune_zoo.tar.gz" tuning runs
echo "done in $(( $(date +%s) - START )) s; $OUT: $(ls "$OUT" | tr '\n' ' ')"
