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
# On the GPU: bash tests/gpu/run_pending.sh kernels (then bench; see there; STREAM=.gpu/stream_b1.tar.xz
# and BATCH=1 for the batch-1 export)
# Usage (the project's venv active): bash tests/gpu/export_pending.sh   (about 6 minutes on 2 cores)
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
name=stream batch=32 precisions=fp16,fp32 choices="--stream" kinds="--sub-chains --kinds pw_dw,dw_pw"
[ -n "${B1:-}" ] && name=stream_b1 batch=1 precisions=fp16
[ -n "${IMAGE:-}" ] && name=image precisions=fp32 choices="--image" kinds="--kinds pw_dw_pw"
rm -rf /tmp/$name .gpu/$name.tar.xz
python tests/gpu/check_fcm_kernels.py splits $choices /tmp/$name \
  --models mobilenet_v2,efficientnet_b0,mobilenet_v3_large,mnasnet1_0 \
  --batch $batch --precision $precisions $kinds --jobs ${JOBS:-2} | tail -1
mkdir -p .gpu && tar cJf .gpu/$name.tar.xz -C /tmp $name
du -sh .gpu/$name.tar.xz
