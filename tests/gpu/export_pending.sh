#!/usr/bin/env bash
# The kernels that wait for a GPU since the thirty-third session (docs/results.md), exported here
# (CPU, nvcc) into .gpu/ for a runtime-only call (carry them with .gpu/rt) or a full one:
#   .gpu/stream.tar.xz  the four headline models' DW->PW and PW->DW chains at batch 32 in fp16 and
#                       fp32 (fp16 first: its run and bench come first), tiles of the
#                       kernels streamed through registers (check_fcm_kernels.py splits --stream,
#                       each chain's H200-table tile beside them; 962 kernels of 82 chains, ~2.2 MB packed:
#                       its CUDA source compresses 100x, so it travels packed)
#   B1=1: .gpu/stream_b1.tar.xz instead, the same chains at batch 1 in fp16 (the H100 table's
#                       tiles beside the streamed ones; 210 kernels of 41 chains, 1 minute)
#   IMAGE=1: .gpu/image.tar.xz instead, the PW->DW->PW chains at batch 32 in fp32, tiles of the
#                       kernel over whole images (splits --image; 267 kernels of 21 chains, 1 minute)
#   IMAGE_RUNS=1: .gpu/image_runs.tar.xz instead, those chains and the PW->DW chains and sub-chains
#                       of images up to 28x28 (the squeeze-excitation blocks' heads among them),
#                       tiles over whole images with the DW by runs of pixels and, for PW->DW,
#                       without (splits --image-dw-runs; 645 kernels of 48 chains when swept in
#                       the thirty-seventh session, 2.5 minutes on 2 cores; the table's tiles
#                       beside them are that sweep's best since, so a new export differs in those)
#   IMAGE_HEADS_FP16=1: .gpu/image_heads_fp16.tar.xz instead, those PW->DW chains in fp16, both ways
#                       (528 kernels, swept in the thirty-eighth session; in tests/gpu/h200_table.sh)
#   IMAGE_FP16=1: .gpu/image_fp16.tar.xz instead, the PW->DW->PW chains at batch 32 in fp16 over whole
#                       images, the DW a pixel and a run at a time (splits --image-dw-runs; 164
#                       kernels of 21 chains, 1 minute on one core)
#   ZOO_B1=1: .gpu/zoo_b1.tar.xz instead, the other zoo models' DW->PW and PW->DW chains at batch 1
#                       in fp32 (MobileNetV1, ProxylessNAS, MobileNetV3-Small, the MobileViTs), tiles
#                       of the streamed kernels, each chain's table tile beside them (292 kernels of
#                       49 chains, 2 minutes on one core; their bench: BASELINE=stock VARIANTS=fcm until
#                       they have tuning records)
# On the GPU: bash tests/gpu/run_pending.sh kernels (then bench; see there; STREAM=.gpu/stream_b1.tar.xz
# and BATCH=1 for the batch-1 export)
# Usage (the project's venv active): bash tests/gpu/export_pending.sh   (about 6 minutes on 2 cores)
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
name=stream batch=32 precisions=fp16,fp32 choices="--stream" kinds="--sub-chains --kinds pw_dw,dw_pw"
[ -n "${B1:-}" ] && name=stream_b1 batch=1 precisions=fp16
[ -n "${IMAGE:-}" ] && name=image precisions=fp32 choices="--image" kinds="--kinds pw_dw_pw"
[ -n "${IMAGE_RUNS:-}" ] && name=image_runs precisions=fp32 choices="--image-dw-runs" kinds="--sub-chains --kinds pw_dw_pw,pw_dw"
[ -n "${IMAGE_HEADS_FP16:-}" ] && name=image_heads_fp16 precisions=fp16 choices="--image-dw-runs" kinds="--sub-chains --kinds pw_dw"
[ -n "${IMAGE_FP16:-}" ] && name=image_fp16 precisions=fp16 choices="--image-dw-runs" kinds="--kinds pw_dw_pw"
models=mobilenet_v2,efficientnet_b0,mobilenet_v3_large,mnasnet1_0
[ -n "${ZOO_B1:-}" ] && name=zoo_b1 batch=1 precisions=fp32 \
  models=mobilenet_v1,proxylessnas_gpu,mobilenet_v3_small,mobilevit_xxs,mobilevit_xs,mobilevit_s
rm -rf /tmp/$name .gpu/$name.tar.xz
python tests/gpu/check_fcm_kernels.py splits $choices /tmp/$name \
  --models $models \
  --batch $batch --precision $precisions $kinds --jobs ${JOBS:-2} | tail -1
mkdir -p .gpu && tar cJf .gpu/$name.tar.xz -C /tmp $name
du -sh .gpu/$name.tar.xz
