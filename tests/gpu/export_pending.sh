#!/usr/bin/env bash
# The kernels that wait for a GPU since the thirtieth session (docs/results.md), exported here
# (CPU, nvcc) into .gpu/ for a runtime-only call (carry them with .gpu/rt) or a full one:
#   .gpu/ab_old, .gpu/ab_new  EfficientNet-B0's tensor-core chains at batch 1 and 32 in fp16 on the
#                             table's tiles, before and after the fast sigmoid (ade7203)
#   .gpu/tc_reuse             the four headline models' PW->DW chains at batch 32 in fp16, the H200
#                             table's tensor-core tile with 1-8 channel tiles a block (patch_reuse,
#                             104 kernels)
#   .gpu/prof_tc              six slow tensor-core PW->DW kernels for ncu (profile_kernels.py)
# On the GPU: bash tests/gpu/run_pending.sh kernels (then bench; see there)
# Usage (the project's venv active): bash tests/gpu/export_pending.sh   (about 3 minutes on 2 cores)
set -eu
cd "$(git rev-parse --show-toplevel)"
check="python tests/gpu/check_fcm_kernels.py splits"
effnet="--models efficientnet_b0 --batch 1,32 --precision fp16 --sub-chains --kinds pw_dw,dw_pw --jobs 2"
rm -rf .gpu/ab_old .gpu/ab_new .gpu/tc_reuse .gpu/prof_tc /tmp/fcm-before-fast-sigmoid

git worktree add -q --detach /tmp/fcm-before-fast-sigmoid ade7203^
(cd /tmp/fcm-before-fast-sigmoid && PYTHONPATH=$PWD $check --table-tensor-cores "$OLDPWD/.gpu/ab_old" $effnet)
git worktree remove --force /tmp/fcm-before-fast-sigmoid
$check --table-tensor-cores .gpu/ab_new $effnet
$check --patch-reuse .gpu/tc_reuse --models mobilenet_v2,efficientnet_b0,mobilenet_v3_large,mnasnet1_0 \
  --batch 32 --precision fp16 --sub-chains --kinds pw_dw --jobs 2
python tests/gpu/profile_kernels.py export .gpu/prof_tc --precision fp16 --gpu h200 \
  "32x16x112x112 pw96:silu dw3s2p1111:silu float16" "32x192x7x7 pw1152:relu dw5s1p2222:relu float16" \
  "32x80x14x14 pw480:relu dw3s1p1111:relu float16" "32x64x14x14 pw384:relu6 dw3s1p1111:relu6 float16" \
  "32x40x28x28 pw240:silu dw5s1p2222:silu float16" "32x112x14x14 pw672:silu dw5s2p2222:silu float16"
du -sh .gpu/ab_old .gpu/ab_new .gpu/tc_reuse .gpu/prof_tc
