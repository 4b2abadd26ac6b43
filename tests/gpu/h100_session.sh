# The GPU-machine runs behind docs/results.md, one stage per device call (each under 10 minutes).
# On the GPU host, after `.gpu/full-a/stage.sh`:  source .gpu/full-b/env.sh; bash tests/gpu/h100_session.sh STAGE
# Results go to $OUT (at most 8 files come back per call); scratch goes to /tmp/fcm-run.
# Run from a snapshot of the tree (helpers editing files do not leak into a run), e.g. with
# .gpu/snap carried: cd .gpu/snap; ln -s .. .gpu; export PYTHONPATH=/tmp/fcm-gpu/site:$PWD.
# Measured costs (H100 host, 2026-11-25): stage + unpack ~1 min; faults ~1 min; ncu at batch 1
# ~2 min; MobileNetV2 tuning, replay-trace 16/task, 57 tasks: 8.5 min; bench of one model with
# the four variants: 3.3 min. A 30-minute device budget (half-counted) is about five such calls.
# Second session: layers, two models at batch 1: 1.7 min, at batch 32: 2.1 min; bench stock vs fcm,
# four models at batch 1: 3.6-4.5 min, two models at batch 32: 3.7 min; check_fcm_kernels.py run
# of 185 exported split kernels (runtime only, .gpu/rt): 6.2 min.
# Third session: check_fcm_kernels.py run compiles each library once on 16 threads: 499 kernels in
# 41 s, 563 in 90 s; layers --sub-chains --unmeasured, three models at batch 1 (50 chains) plus
# MobileNetV2 fp16 (32 chains): 5.8 min; at batch 32 (50 chains): 5.2 min; bench stock vs fcm,
# four models at batch 1 plus MobileNetV2 fp16: 5.6 min; two models at batch 32: 3.0 min.
# Fourth session: tune (tune_zoo.sh, 32 candidates per task, evolutionary): ~26 s per task, 16-20
# tasks per 8-minute call, defaults measured in ~15 s; bench of the four models at batch 1 with all
# four variants: 7.5 min (records carried in as xz and unpacked into /tmp/fcm-tune/tuning/h100).
# Fifth session: layers --sub-chains --tuning-records, the four models at batch 1 (99 chains), one
# process per model: 5.7 min; tune_zoo.sh two models at batch 32: 8.3 min (6-7 tasks each); bench
# --cuda-graph, four models x four variants at batch 1: 6.9 min; stock-tuned and fcm-tuned, four
# models at batch 32, one process per model: 6.4 min.
# Sixth session: profile (two models, ncu kernel times + FCM sections): 3.1 min; bench stock-tuned
# against fcm-tuned, four models at batch 1 with graphs: 3.1-5.7 min; a broad sweep export of 1023
# kernels needs about 10 min on the host's CPUs (over the call limit: export here, on 2 cores in
# 8 min), and checking them with the runtime only took 68 s in two calls of 33 and 27 MB.
# Eighth session: 431 patch-row kernels exported here in a few minutes (two parts of 18 MB: the
# runtime bundle and one 35 MB part exceed the 64 MiB a call may carry), checked in 45 + 27 s;
# bench_each, four models: 6.4 min at batch 32, 4.1 min at batch 1.
# Tenth session: ncu stage (--sub-chains, fcm + stock [+ stock_tuned]), batch 1: four untuned
# models 4.4 min, the four tuned models 7 min; batch 32: 140 s per model was too short for
# MobileNetV2 and MnasNet (EfficientNet-B0 and MobileNetV3-Large finished); layers with
# LAYERS_FLAGS="--sub-chains --graph-clock 10", MobileNetV3-Small and -Large at batch 1: 4.7 min.
# Eleventh session: layers --graph-clock 10, MobileNetV2 + EfficientNet-B0 at batch 1: 5.9 min
# (MODEL_TIMEOUT=380), MnasNet alone 5.0 min; bench_each, four models at batch 1: 3.1 min; at
# batch 32 MobileNetV2 alone ~2.2 min, EfficientNet-B0 + MobileNetV3-Large 3.6 min; ncu at batch
# 32 with --profile-variants fcm, EfficientNet-B0 + MobileNetV3-Large: 2.8 min; check_fcm_kernels
# run of 280-431 exported kernels (24-28 MB parts, runtime only): 41-58 s per call.
# Twelfth session (the H100's time counted in full, not at two thirds): layers --graph-clock 10 in
# fp16 without TUNING, EfficientNet-B0 + MobileNetV3-Large 4.9 min, MnasNet and ProxylessNAS 230 s
# each; bench_each at batch 32, MobileNetV2 + MnasNet 170 s, EfficientNet-B0 + MobileNetV3-Large
# 180 s; fp16, five models stock against fcm, 336 s.
# Thirteenth session: check_fcm_kernels run, 358-379 kernels per 22 MB part, 22-29 s each (working
# tree + .gpu/rt + one part must stay under 64 MiB); layers --graph-clock 10 --variants fcm (FCMs
# only), four models at batch 1: 184-199 s; MobileNetV2 fp16 with stock: 120 s; table rebuilt on
# the host (tests/gpu/h100_table.sh, OUTPUT=/tmp/fcm-measured/h100.json, FCM_TVM_MEASURED) then
# bench_each fp16 five models: 350 s in one call; layers fp16 batch 32 two models (fcm,stock):
# 185 s, and bench_each of both at batch 32 in fp16: 210 s. MobileViT-XXS/-XS fp16 builds in the
# bench took over 100 s each (MODEL_TIMEOUT=100 cut both off): give them 200 s.
# Fourteenth session (an H200 now, time counted in full): tune of two fp16 models, TOTAL=530:
# 481 s (4-5 tasks each); bench_each fp16 two models 191 s; fp32 four models at batch 1 306 s;
# two at batch 32 261 s. The machine goes cold 30 s after a call: /tmp is lost with it.
# Fifteenth session (H200): tune of EfficientNet-B0 + MobileNetV3-Large fp16, TOTAL=540: 125.6 s
# (failed at the first task, 0 tuned; defaults measured in 51-55 s each); bench_each fp16,
# MobileNetV2 + MnasNet stock-tuned/fcm-tuned then EfficientNet-B0 + MobileNetV3-Large stock/fcm,
# one call from .gpu/snap: 257.4 s. A call issued over 30 s after the last found the machine cold.
# Sixteenth session (H200): a cold start counted ~180 s of device time before the stage ran; layers
# --sub-chains --variants stock at batch 32 fp16, MobileNetV2 + MnasNet, then measured_table and
# bench_each stock/fcm of both with FCM_TVM_MEASURED: 517 s in one call. Refused starts cost 15-90 s.
# tune_zoo.sh EfficientNet-B0 + MobileNetV3-Large fp16, TOTAL=300 (2 and 1 tasks tuned), then
# bench_each stock-tuned/fcm-tuned of both with RECORDS=/tmp/fcm-tune/tuning/h200: 461 s in one call.
# Seventeenth session (H200): stage part a 0.3 s after a ~90 s cold start; tune_zoo.sh one model
# at batch 32 fp16, TOTAL=290 (4-5 tasks), then bench_each stock-tuned/fcm-tuned of it: 361-373 s a call.
# Eighteenth session (H200): a refused start cost 91 s, the next start ~180 s; layers --sub-chains
# --variants stock, EfficientNet-B0 + MobileNetV3-Large at batch 32 fp16: 169 s; h200_table.sh then
# bench_each stock/fcm of both: 286 s; tune_zoo.sh one model TOTAL=250 then bench_each tuned: 325-409 s;
# layers with TUNING and stock_tuned, EfficientNet-B0 at batch 32 fp16: ~120 s (its bench needs
# MODEL_TIMEOUT over 150 s: two builds of ~60 s with records).
# Nineteenth session (H200): tuned_table for EfficientNet-B0 at batch 32 fp16 (layers, table,
# bench_each): 238 s. Two cold starts were lost when more than 30 s passed between stage and env.sh.
# Twentieth session (H200): stage 0.3 s after a ~30 s start; tuned_table, one model per call at
# batch 32 fp16 (MobileNetV3-Large, MobileNetV2, MnasNet): 329-348 s each, three calls in 1056 s.
# Then a second stage (0.2 s, warm) and tc_table: the export's forked workers failed on CUDA (fixed:
# spawn), bench of EfficientNet-B0 alone 229 s; the sweep by hand, export of 281 TC kernels on 16
# cores + check: 157 s. tc_table with one model's bench should take ~380 s.
# Twenty-first session (an H100 again, time counted in full): stage 0.2 s after a ~26 s start;
# bench_each fp16 batch 32 with TARGET=h200, two models per call: 166-206 s; tc_table of the
# DW->PW TC tiles (176 kernels of 20 chains, export + check) then two models' bench: 242 s. A failed
# start cost 255 s. One model's bench at batch 32 plus four at batch 1 (fp16): 367 s; 133 TC PW->DW
# kernels of two models at batch 1, export + check by hand (check_fcm_kernels.py): 70 s.
# Twenty-second session (H100): a 148-kernel TC sweep of two models at batch 1 (export + check) then
# tc_graph of one model: 244 s; tc_graph of two models at batch 1: 324 s; tuned_table with TABLE=h100
# KINDS=dw_pw, two models at batch 32 fp16: 347 s; bench_each of two models at batch 32 fp16: 190-220 s.
# Twenty-third session (H100): a refused start cost 181 s; bench_each of one model at batch 32 fp16
# then tune of two models at batch 1 fp16 with START_FROM (TOTAL=390): 418 s; tune going on
# (TOTAL=290) then bench_each of both at batch 1 with RECORDS: 374 s; tune of two more (TOTAL=300)
# then their bench: 359 s. A task takes 25-60 s at 32 candidates (10-15% fail to build: make_uint4).
# Twenty-fourth session (H100): a refused start cost 91 s; check_cuda_postproc.py run (81 kernels,
# runtime only) 71 s with the start; layers --sub-chains --graph-clock 10 --variants fcm,stock,stock_tuned
# with TUNING=fcm_tvm/data/tuning/h100 at batch 1 fp16: EfficientNet-B0 + MobileNetV3-Large 221 s,
# MnasNet ~150 s, MobileNetV2 ~270 s (MODEL_TIMEOUT=200 cut it off: give it 330); the table and
# bench_each of three models at batch 1 fp16: 180 s. (Since then the graph-timed builds of the layers
# stage are about 4x faster: expect less than these times.)
# Twenty-fifth session (H100, also when asked for as nvidia-h200): four refused starts cost 15-195 s
# each; excite (128 kernels: two models, batch 1 and 32, fp16 and fp32, both placements of the
# hidden vector) plus bench_each of two models at batch 1 fp16: 301 s; bench_each of two models at
# batch 1 and one at batch 32 (fp16): ~250 s; two models at batch 32 fp16 (MODEL_TIMEOUT=200)
# then two at batch 1 fp32: 359 s.
# Twenty-sixth session (H100, asked for as nvidia-h200): seven start calls got no machine (15-180 s
# each, about 660 s in all); bench_each of two models at batch 32 fp16 (MODEL_TIMEOUT=190) 227 s, then
# excite (128 kernels, fp16, batch 1 and 32, four variants) 138 s, then bench_each of both at batch
# 1 fp16 149 s: 514 s in one call; bench_each fp32 batch 32, two models 211 s, two more 163 s.
# Twenty-seventh session (H200): gated_pw of two models at batch 1 with every split (58 kernels) and
# at batch 32 (18), excite GATE_ONLY=1 (80 kernels), then bench_each of one model at batch 32 fp16:
# 354 s in one call. Six failed starts (91-180 s each) and six refusals in lockouts (15 s each) used
# the rest of the budget.
# Twenty-eighth session: no call ran. Fifteen start calls got no machine (90-180 s each, 1531 s
# in all, asked for as either kind), until too little time was left to start one.
# Thirtieth session: no call ran either. Seventeen start calls got no machine (15-180 s each; 1411 s).
# Thirty-first session: eight start calls got no machine (90 s each); then an H100 for four calls:
# run_pending.sh kernels on the runtime only (104 + 44 kernels checked, ncu of 6) 63 s with the
# start; stage 0.2 s; run_pending.sh bench of two models at batch 32 fp16: 208 s and 179 s;
# bench_each of two models at batch 1 fp16 and one at batch 8: 207 s.
# Thirty-fifth session (H100, after 508 s of start calls): run_pending.sh kernels fp32 (481
# kernels) + the batch-1 fp16 export (210) + bench of two models fp32 batch 32: 354 s in one call;
# run_pending.sh bench at BATCH=1 (tc_graph: layers --graph-clock of two models, then their
# bench): 526 s; bench of two more models fp32 batch 32: 214 s.
# Thirty-sixth session (H100; six start calls, one got a machine, the others cost 91-137 s each):
# run_pending.sh kernels fp32 of the whole-image export (267 kernels) + bench of two models fp32
# batch 32: 252 s; bench of two more: 275 s; bench_each of two models at batch 1 fp16: 212 s.
# Thirty-seventh session (H100; two machines, three start calls between them refused): kernels
# fp32 of 452 staged whole-image kernels + bench of two models fp32 batch 32: 258 s; of the 645
# image_runs kernels + two models: 272 s; bench of two models alone: 151-168 s.
# Thirty-eighth session (H100, after four refused start calls, ~290 s): tune of the seven other zoo
# models at batch 1 fp32, TOTAL=530: 495 s, of it 60-75 s a model measuring the defaults (0-1
# tasks tuned each, two models skipped: a model needs a call of its own); run_pending.sh kernels
# fp16 of image_heads_fp16 (528 kernels) + one model's bench fp16 batch 32: 245 s; bench of three
# models fp16 batch 32: 498 s.
# Thirty-ninth session: no call ran (three start calls refused, then no machine lent); the issue3
# stage below is written but untried: give it TIMEOUT=500 and watch the builds' share.
set -u
STAGE=${1:?stage: faults | tunecheck | layers | issue3 | bench | bench_each | excite | gated_pw | gated_study | gated_b32 | tuned_table | tc_table | table_bench | tc_graph | tune | tune_bench | ncu | profile}
shift
OUT=${OUT:-/tmp/fcm-out}
RUN=/tmp/fcm-run
mkdir -p "$OUT" "$RUN"
FCM="python -m fcm_tvm.cli"

# tvm-ffi imports torch whenever it is installed. On the GPU host that triples the modules loaded,
# and TVMScript's parser (inspect.getmodule walks them all) then needed over 60 s to import TVM's
# tensor intrinsics in each process: MetaSchedule measured nothing in 150 s. Tuning and the
# end-to-end bench need no torch, so they run with it hidden; layers and ncu need it.
hide_torch() {
  mkdir -p /tmp/no-torch/torch
  echo 'raise ImportError("torch is hidden from TVM in this run (tests/gpu/h100_session.sh)")' \
    > /tmp/no-torch/torch/__init__.py
  export PYTHONPATH=/tmp/no-torch${PYTHONPATH:+:$PYTHONPATH}
}

# The table of GPU $1 (h100 or h200) rebuilt with EXTRA_LAYERS / EXTRA_SWEEPS into
# /tmp/fcm-measured, for $FCM_TVM_MEASURED (a copy comes back as measured_$1.json)
table_for() {
  mkdir -p /tmp/fcm-measured
  OUTPUT=/tmp/fcm-measured/$1.json bash tests/gpu/$1_table.sh || return
  cp /tmp/fcm-measured/$1.json "$OUT/measured_$1.json"
}

# bench_each of MODELS planned on the tables in /tmp/fcm-measured
bench_measured() {
  FCM_TVM_MEASURED=/tmp/fcm-measured MODEL_TIMEOUT=${BENCH_TIMEOUT:-240} bash "$0" bench_each
}

# The gated PWs of models $1 swept at batch 32, smallest images first, for at most $2 seconds
# (rows back as gated_pw.json)
sweep_gated_b32() {
  MODELS=$1 BATCH=32 TILES=sweep DEEP_FIRST=1 TAIL=3 timeout "$2" bash "$0" gated_pw
}

layer_results() {  # the layers.json the layers stage left for each of MODELS
  for model in ${MODELS//,/ }; do printf ' %s' "$RUN/layers_$model/layers.json"; done
}

bench_on_table() {  # TABLE's table (h200 unless named) rebuilt, then bench_each planned on it (not on a failed rebuild)
  table_for ${TABLE:-h200} && bench_measured
}

case "$STAGE" in
faults)  # issue 8 on the runtime only: OOM, launch failure, no nvcc, a bad file (build: check_faults.py build)
  env -u PYTHONPATH bash -c 'source .gpu/rt/env.sh; python tests/gpu/check_faults.py run .gpu/faults' \
    2>&1 | tee "$OUT/faults.log" | tail -8 ;;
tunecheck)  # a short MetaSchedule run whose logs say what builds and what fails
  timeout 300 $FCM tune mobilenet_v2 --fuse none --trials "${TRIALS:-192}" -o $RUN/tunecheck > $RUN/tunecheck.log 2>&1
  echo "tune exit $?"; tail -5 $RUN/tunecheck.log
  grep -rhoiE "(error|fail|timeout)[^\"]{0,160}" $RUN/tunecheck/logs | sort | uniq -c | sort -rn | head -12
  tar czf "$OUT/tunecheck.tgz" -C $RUN tunecheck tunecheck.log ;;
layers)  # per-chain: FCM vs stock (dlight), tuned stock (TUNING), cuDNN and the DRAM floor
  # One process per model: with tuning records, a second model in the same process (torch loaded
  # for cuDNN) aborted with "corrupted size vs. prev_size" (fifth session; not isolated further).
  models=${MODELS:-mobilenet_v2,efficientnet_b0}
  for model in ${models//,/ }; do
    timeout ${MODEL_TIMEOUT:-280} python -m fcm_tvm.benchmarks.layers --models "$model" --batch ${BATCH:-1} \
      --precision ${PRECISION:-fp32} --number 20 --repeat 10 --out "$RUN/layers_$model" \
      ${TUNING:+--tuning-records $TUNING} ${LAYERS_FLAGS:-} > "$RUN/layers_$model.log" 2>&1
    echo "$model: exit $?"; tail -${TAIL:-3} "$RUN/layers_$model.log"
    cp "$RUN/layers_$model/layers.json" "$OUT/layers_$model.json" 2>/dev/null
  done ;;
issue3)  # issue 3's per-layer run: MODELS (the issue's three) at batch 1 and 32 (BATCHES) in fp32 and
  # fp16, every case a process of its own (--jobs: the builds in parallel, the GPU in turns): the
  # FCMs planned as a tuned graph build, against stock, tuned stock (the H100's records, the H200's
  # for fp16 at batch 32) and cuDNN, each in CUDA graphs; meanwhile, in the same turns, ncu's DRAM
  # bytes of the batch-32 chains whose intermediate outgrows the L2; then the targets judged
  recs=/tmp/fcm-issue3-records; rm -rf $recs; mkdir -p $recs
  ln -s $PWD/fcm_tvm/data/tuning/h100/* $recs/; ln -s $PWD/fcm_tvm/data/tuning/h200/*_b32_fp16_stock $recs/
  flags="--models ${MODELS:-mobilenet_v2,mobilenet_v3_large,efficientnet_b0} --tuning-records $recs --cuda-graph"
  flags="$flags --variants fcm,stock,stock_tuned"
  rm -rf $RUN/issue3*; mkdir -p $RUN/issue3
  for p in fp32 fp16; do
    dir=$RUN/issue3_ncu_$p; mkdir -p $dir
    timeout ${TIMEOUT:-500} ncu --cache-control none --clock-control none \
      --metrics dram__bytes_read.sum,dram__bytes_write.sum,lts__t_bytes.sum,gpu__time_duration.sum --csv \
      --page raw --log-file $dir/ncu.csv python -m fcm_tvm.benchmarks.layers $flags --batch 32 --precision $p \
      --beyond-l2 --profile-run --gpu-lock $RUN/issue3/gpu.lock --out $dir > $dir/run.log 2>&1 &
  done
  timeout ${TIMEOUT:-500} python -m fcm_tvm.benchmarks.layers $flags --batch ${BATCHES:-1,32} --precision fp32,fp16 \
    --graph-clock 10 --number 20 --repeat 10 --jobs ${JOBS:-12} --out $RUN/issue3 > $RUN/issue3.log 2>&1
  echo "layers: exit $?"; tail -4 $RUN/issue3.log; wait
  for p in fp32 fp16; do
    python -m fcm_tvm.benchmarks.ncu_bytes $RUN/issue3_ncu_$p > $RUN/issue3_ncu_$p/summary.txt 2>&1
    echo "ncu $p: exit $?"; tail -2 $RUN/issue3_ncu_$p/run.log
  done
  # the cases' own reports: they are there also where the joined one is not (a timeout)
  python -m fcm_tvm.benchmarks.layer_targets $RUN/issue3/targets $(ls $RUN/issue3/*/layers.json) \
    $(ls $RUN/issue3_ncu_*/dram_bytes.json 2>/dev/null) | head -${TAIL:-40}
  cp $RUN/issue3/layers.json $RUN/issue3/targets.json $RUN/issue3/targets.md "$OUT/" 2>/dev/null
  tar czf "$OUT/issue3.tgz" -C $RUN issue3 issue3.log issue3_ncu_fp32 issue3_ncu_fp16 ;;
bench)  # end to end, all four variants, with the records tune_zoo.sh left in /tmp/fcm-tune
  hide_torch
  timeout 560 $FCM bench ${MODELS:-mobilenet_v2,efficientnet_b0,mobilenet_v3_large} --baseline stock,stock-tuned \
    --variants fcm,fcm-tuned --batch ${BATCH:-1} --precision ${PRECISION:-fp32} ${BENCH_FLAGS:-} \
    --tuning-records /tmp/fcm-tune/tuning/h100 -o "$OUT" 2>&1 | tail -${TAIL:-20} ;;
excite)  # every squeeze-excitation kernel of MODELS at BATCH(es) and PRECISION(s) on this GPU
  # against float64, with its kernel time, in four variants (default tiles, the hidden vector moved,
  # each with unrolled row loads; the rows come back as excite.json)
  hide_torch
  python tests/gpu/check_squeeze_excite.py --models ${MODELS:-efficientnet_b0,mobilenet_v3_large} \
    --batch ${BATCH:-1} --precision ${PRECISION:-fp16} ${GATE_ONLY:+--gate-only} --json "$OUT/excite.json" \
    2>&1 | tail -${TAIL:-40} ;;
gated_pw)  # the gated pointwise kernel of every project PW after a squeeze-excitation of MODELS at
  # BATCH(es), fp16, against float64, with its kernel time (rows back as gated_pw.json); TILES=splits
  # or sweep times more tiles (check_gated_pw.py tile_choices)
  hide_torch
  python tests/gpu/check_gated_pw.py --models ${MODELS:-efficientnet_b0,mobilenet_v3_large} \
    --batch ${BATCH:-1,32} --tiles ${TILES:-default} ${DEEP_FIRST:+--deep-first} --json "$OUT/gated_pw.json" \
    2>&1 | tail -${TAIL:-40} ;;
gated_study)  # the gated path in one call: MODELS (EfficientNet-B0, MobileNetV3-Large) at batch 1 in
  # fp16 built with it (bench_<model>_gated.json) and without (bench_<model>.json), then
  # EfficientNet-B0's batch-32 tile sweep (gated_pw.json) for what time is left
  models=${MODELS:-efficientnet_b0,mobilenet_v3_large}
  FCM_TVM_GATED_PW=1 MODELS=$models BATCH=1 PRECISION=fp16 MODEL_TIMEOUT=130 bash "$0" bench_each
  for f in "$OUT"/bench_*.json; do mv "$f" "${f%.json}_gated.json"; done
  MODELS=$models BATCH=1 PRECISION=fp16 MODEL_TIMEOUT=130 bash "$0" bench_each
  sweep_gated_b32 efficientnet_b0 "${SWEEP_S:-190}" ;;
gated_b32)  # the gated path at batch 32 in one call: MODELS' (EfficientNet-B0) project PWs swept,
  # smallest images first, for SWEEP_S seconds (gated_pw.json), then their builds with the fastest
  # tiles the sweep found (FCM_TVM_GATED_TILES) against stock-tuned, fp16
  models=${MODELS:-efficientnet_b0}
  sweep_gated_b32 "$models" "${SWEEP_S:-150}"
  FCM_TVM_GATED_PW=1 FCM_TVM_GATED_TILES="$OUT/gated_pw.json" MODELS=$models BATCH=32 PRECISION=fp16 \
    MODEL_TIMEOUT=${MODEL_TIMEOUT:-190} bash "$0" bench_each ;;
bench_each)  # stock-tuned against fcm-tuned with CUDA graphs, one process per model (without
  # RECORDS, the records shipped for this GPU: the H100 and H200 borrow each other's; BASELINE=stock
  # VARIANTS=fcm for models without them); each model's JSON comes back as bench_<model>.json.
  # TARGET=h100 plans and looks records up as for an H100 whatever GPU runs it
  hide_torch
  records=${RECORDS:-}
  for model in ${MODELS//,/ }; do
    timeout ${MODEL_TIMEOUT:-150} $FCM bench $model --baseline ${BASELINE:-stock-tuned} \
      --variants ${VARIANTS:-fcm-tuned} --batch ${BATCH:-1} --precision ${PRECISION:-fp32} --cuda-graph \
      ${TARGET:+--target $TARGET} ${records:+--tuning-records $records} -o $RUN/$model 2>&1 | tail -4
    cp $RUN/$model/bench.json "$OUT/bench_$model.json"
  done ;;
tuned_table)  # MODELS' chains (of KINDS only, if given) re-timed with this GPU's shipped records
  # (stock_tuned), the table of TABLE (h200 unless named; EXTRA_SWEEPS join it) rebuilt with them
  # into /tmp/fcm-measured (for FCM_TVM_MEASURED), then stock-tuned against fcm-tuned planned on
  # it: so that the planner weighs a tuned build against tuned stock chains. GRAPH=K times them
  # inside CUDA graphs too (the FCMs as well: the table keeps graph times only of rows that have
  # the FCM's), for graph builds at batch 1, e.g. TUNING=fcm_tvm/data/tuning/h100 TABLE=h100 GRAPH=10
  variants=stock,stock_tuned; [ -n "${GRAPH:-}" ] && variants=fcm,$variants
  TUNING=${TUNING:-fcm_tvm/data/tuning/h200} \
    LAYERS_FLAGS="--sub-chains ${GRAPH:+--graph-clock $GRAPH} --variants $variants ${KINDS:+--kinds $KINDS}" \
    bash "$0" layers
  EXTRA_LAYERS="$(layer_results)" table_for ${TABLE:-h200}; bench_measured ;;
tc_table)  # tensor-core tiles of TC_MODELS' chains of TC_KINDS exported on this host's cores, checked
  # against float64 torch and timed, the H200 table rebuilt with them, then bench_each of MODELS;
  # TC_CHOICES picks the tiles (check_fcm_kernels.py splits: --tensor-cores, or --patch-reuse for
  # the table's tile with 1-8 channel tiles a block); TC_DIR names kernels exported beforehand
  # (carried in, e.g. on the CPU machine), which skips the export
  dir=${TC_DIR:-$RUN/tc}
  if [ -z "${TC_DIR:-}" ]; then
    rm -rf $dir
    python tests/gpu/check_fcm_kernels.py splits ${TC_CHOICES:---tensor-cores} $dir --models ${TC_MODELS:-$MODELS} \
      --batch ${BATCH:-32} --precision ${PRECISION:-fp16} --sub-chains --kinds ${TC_KINDS:-pw_dw} --jobs 16 \
      > $RUN/tc_export.log 2>&1
    status=$?; echo "export exit $status"; tail -1 $RUN/tc_export.log
    [ $status = 0 ] || { cp $RUN/tc_export.log "$OUT/tc_export.log"; exit $status; }  # no bench on a table without the sweep
  fi
  python tests/gpu/check_fcm_kernels.py run $dir --json "$OUT/sweep_tc.json" --jobs 16 > $RUN/tc_run.log 2>&1
  status=$?; echo "run exit $status"; tail -2 $RUN/tc_run.log; cp $RUN/tc_run.log "$OUT/sweep_tc.log"
  [ $status = 0 ] || exit $status
  EXTRA_SWEEPS="$OUT/sweep_tc.json" bench_on_table ;;
table_bench)  # TABLE's table (h200 unless named) rebuilt with EXTRA_SWEEPS, then bench_each of MODELS planned on it
  bench_on_table ;;
tc_graph)  # a sweep of this GPU's (SWEEP: tensor-core tiles, say) joins the H100 table, its best
  # tiles of MODELS' chains are re-timed inside a CUDA graph (FCMs only: the stock graph times
  # stand), the table is rebuilt with those, and bench_each plans graph builds on it
  export EXTRA_SWEEPS="${SWEEP:?SWEEP: a check_fcm_kernels.py run JSON measured on this GPU}"
  table_for h100 || exit
  FCM_TVM_MEASURED=/tmp/fcm-measured LAYERS_FLAGS="--sub-chains --graph-clock 10 --variants fcm" \
    bash "$0" layers
  EXTRA_LAYERS="$(layer_results)" table_for h100 || exit
  BENCH_TIMEOUT=${BENCH_TIMEOUT:-150} bench_measured ;;
tune)  # MetaSchedule on the stock graphs of the headline models (see tune_zoo.sh)
  hide_torch
  bash tests/gpu/tune_zoo.sh "$@" ;;
tune_bench)  # MODELS tuned at BATCH and PRECISION (tune_zoo.sh: TOTAL, START_FROM, or again to go
  # on), then bench_each on those records; the pruned databases come back in tune_zoo.tar.gz.
  # PAIRS=1 also tunes each model's fcm-tvm graph (the kernels around its FCMs, as a graph build
  # fuses them), with the same share of TOTAL, for fcm-tuned to use (records named _fcm)
  cases=(); for model in ${MODELS//,/ }; do
    cases+=("$model:${BATCH:-1}:${PRECISION:-fp32}")
    [ -n "${PAIRS:-}" ] && cases+=("$model:${BATCH:-1}:${PRECISION:-fp32}:auto")
  done
  bash "$0" tune "${cases[@]}" | grep -E "tuning for|exit|kernel time|done in"
  RECORDS=/tmp/fcm-tune/tuning/$(ls /tmp/fcm-tune/tuning | head -1) bash "$0" bench_each ;;
ncu)  # DRAM bytes and GPU time of every chain, fused and unfused (tuned too, given TUNING), one
  # process per model as the layers stage runs them; each model's workloads come back as
  # gpu_times_<model>_b<BATCH>.json (ncu_bytes), the planner table's GPU times (--gpu-times)
  models=${MODELS:-mobilenet_v2,efficientnet_b0}
  for model in ${models//,/ }; do
    dir=$RUN/ncu_${model}_b${BATCH:-1}; rm -rf $dir; mkdir -p $dir  # no stale results of an earlier call
    timeout ${MODEL_TIMEOUT:-280} ncu --cache-control none --clock-control ${CLOCK:-none} \
      --metrics dram__bytes_read.sum,dram__bytes_write.sum,lts__t_bytes.sum,gpu__time_duration.sum --csv \
      --page raw --log-file $dir/ncu.csv \
      python -m fcm_tvm.benchmarks.layers --models $model --batch ${BATCH:-1} --precision ${PRECISION:-fp32} \
      --profile-run --out $dir ${TUNING:+--tuning-records $TUNING} ${LAYERS_FLAGS:-} > $dir/run.log 2>&1
    echo "$model: exit $?"; tail -2 $dir/run.log
    python -m fcm_tvm.benchmarks.ncu_bytes $dir > $dir/summary.txt 2>&1 || tail -3 $dir/summary.txt
    cp $dir/dram_bytes.json "$OUT/gpu_times_${model}_b${BATCH:-1}.json" 2>/dev/null
  done ;;
profile)  # kernel GPU time per inference (at BATCH and PRECISION), stock-tuned and fcm-tuned each in
  # a process of its own (ncu), then why the FCM kernels of the first model take what they take
  # (ncu sections, one inference; DETAIL_S=0 skips that)
  models=${MODELS:-mobilenet_v2}
  for model in ${models//,/ }; do
    for fuse in none auto; do
      RUNS=2 TUNED=1 timeout ${MODEL_TIMEOUT:-240} ncu --metrics gpu__time_duration.sum --cache-control none \
        --clock-control none --csv --page raw --log-file $RUN/k_${model}_$fuse.csv \
        python tests/gpu/profile_model.py $model $fuse > $RUN/k_${model}_$fuse.log 2>&1
      echo "$model $fuse: exit $?"; python tests/gpu/kernel_summary.py 2 $RUN/k_${model}_$fuse.csv
    done
  done
  first=${models%%,*}
  if [ "${DETAIL_S:-200}" != 0 ]; then
    RUNS=1 TUNED=1 timeout ${DETAIL_S:-200} ncu --section SpeedOfLight --section Occupancy --section WarpStateStats \
      --section LaunchStats --section MemoryWorkloadAnalysis -k regex:fcm --csv --page details \
      --log-file $RUN/fcm_details.csv python tests/gpu/profile_model.py $first auto > $RUN/details.log 2>&1
    echo "details: exit $?"
  fi
  tar czf "$OUT/profile.tgz" -C $RUN $(cd $RUN && ls k_*.csv k_*.log fcm_details.csv details.log 2>/dev/null) ;;
esac
