# MetaSchedule on the stock graph (--fuse none) of zoo models: the records that ship in
# fcm_tvm/data/tuning/<gpu>/<model>_b<batch>_<precision>_stock/, and a summary of what built and ran.
# On the GPU host, after `.gpu/full-a/stage.sh`:
#   source .gpu/full-b/env.sh; bash tests/gpu/tune_zoo.sh [MODEL:BATCH:PRECISION ...]
# Default cases: mobilenet_v2, efficientnet_b0, mobilenet_v3_large at batch 1, fp32.
# Environment: TRIALS (per model, 384), TRIALS_PER_TASK (32), SEARCH (evolutionary), TASKS (all; START:END
# resumes into the same work dir on a warm host), RUN_TIMEOUT (150 s),
# TOTAL (s for the whole script, 510: each run's timeout shrinks to fit), OUT (results),
# TARGET (cuda; llvm for a dry run of the script on a machine without a GPU).
# MetaSchedule has no time budget and records a task's results only when it comes back to that task
# (or at the end): size TRIALS to finish (tasks x TRIALS_PER_TASK) within RUN_TIMEOUT, or tune in
# slices (TASKS=0:15, then TASKS=15:30, ... in later calls on the same warm host).
# Back in $OUT (8 files at most): tune_zoo.tar.gz (everything: tuning/<gpu>/<case>/ pruned databases
# to ship, runs/<case>/ full work dirs with logs and summaries, tune logs), tune_zoo_summary.json,
# and the pruned databases of the first three cases in $OUT/<case>/.
# To ship: tar xzf tune_zoo.tar.gz -C fcm_tvm/data tuning
set -u
OUT=${OUT:-/tmp/fcm-out}
RUN=/tmp/fcm-tune
TRIALS=${TRIALS:-384}
TRIALS_PER_TASK=${TRIALS_PER_TASK:-32}
RUN_TIMEOUT=${RUN_TIMEOUT:-150}
TOTAL=${TOTAL:-510}
TARGET=${TARGET:-cuda}
CASES=("$@")
[ ${#CASES[@]} -gt 0 ] || CASES=(mobilenet_v2:1:fp32 efficientnet_b0:1:fp32 mobilenet_v3_large:1:fp32)
# tvm-ffi would import torch and JIT-build a DLPack add-on in every MetaSchedule worker process
export TVM_FFI_DISABLE_TORCH_C_DLPACK=1
START=$(date +%s)
[ -n "${TASKS:-}" ] || rm -rf "$RUN"  # a slice resumes the work dirs of the slices before it
rm -rf "$RUN/tuning" && mkdir -p "$OUT" "$RUN/runs"
GPU=$(python -c "from fcm_tvm.target import resolve_target; print(resolve_target('cuda').gpu.key)") || exit 1
mkdir -p "$RUN/tuning/$GPU"
echo "GPU: $GPU; $TRIALS trials per model, $TRIALS_PER_TASK per task; $(nproc) CPUs"

left=${#CASES[@]}
names=()
for case in "${CASES[@]}"; do
  IFS=: read -r model batch precision <<< "$case"
  name=${model}_b${batch}_${precision}_stock
  names+=("$name")
  work=$RUN/runs/$name
  python -c "import onnx, sys; from fcm_tvm.models import build_model; from fcm_tvm.precision import with_precision
onnx.save(with_precision(build_model('$model', batch=$batch), '$precision'), sys.argv[1])" "$RUN/$name.onnx" \
    || { echo "$name: could not build the model"; left=$((left - 1)); continue; }
  budget=$(( (TOTAL - ($(date +%s) - START) - 20) / left - 15 ))  # 15 s: the kill grace and the summary
  limit=$(( budget < RUN_TIMEOUT ? budget : RUN_TIMEOUT ))
  if [ "$limit" -lt 30 ]; then echo "$name: skipped, no time left"; left=$((left - 1)); continue; fi
  echo "== $name: tuning for at most $limit s"
  timeout -s INT -k 10 "$limit" python -m fcm_tvm.cli tune "$RUN/$name.onnx" --target "$TARGET" --fuse none \
    --trials "$TRIALS" --trials-per-task "$TRIALS_PER_TASK" --search "${SEARCH:-evolutionary}" ${TASKS:+--tasks "$TASKS"} -o "$work" > "$RUN/runs/$name.log" 2>&1
  echo "   exit $? after $(( $(date +%s) - START )) s; $(grep '^\[fcm-tvm\] .*candidates' "$RUN/runs/$name.log" | tail -1)"
  if [ -d "$work" ]; then
    python -m fcm_tvm.records prune "$work" "$RUN/tuning/$GPU/$name" > /dev/null 2>&1 \
      || echo "   no database to ship for $name"
  fi
  left=$((left - 1))
done

cd "$RUN" || exit 1
works=(); for name in "${names[@]}"; do [ -d "runs/$name" ] && works+=("runs/$name"); done
echo; python -m fcm_tvm.tuning_summary "${works[@]}"
python - "${works[@]}" > "$OUT/tune_zoo_summary.json" <<'EOF'
import json, sys
from pathlib import Path
runs = {Path(p).name: Path(p, "tuning_summary.json") for p in sys.argv[1:]}
print(json.dumps({name: json.loads(f.read_text()) if f.is_file() else None for name, f in runs.items()}, indent=1))
EOF
tar czf "$OUT/tune_zoo.tar.gz" tuning runs
copied=0
for name in "${names[@]}"; do
  if [ $copied -lt 3 ] && [ -f "tuning/$GPU/$name/database_tuning_record.json" ]; then
    mkdir -p "$OUT/$name" && cp "tuning/$GPU/$name"/database_*.json "$OUT/$name/" && copied=$((copied + 1))
  fi
done
echo "done in $(( $(date +%s) - START )) s; $OUT: $(ls "$OUT" | tr '\n' ' ')"
