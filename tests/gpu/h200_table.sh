#!/usr/bin/env bash
# The planner's table of chains measured on the H200 (fcm_tvm/data/measured/h200.json), rebuilt
# from the results in docs/results that feed it. Its rows win over the H100's row by row; every
# chain it lacks is planned with the H100's row (docs/planner.md, "Measured chains"). EXTRA_LAYERS
# and OUTPUT as in h100_table.sh (EXTRA_SWEEPS likewise, for kernel sweeps), for a table that the
# next call on the GPU host plans with.
set -eu
export LC_ALL=C  # globs in byte order: later profiles of a chain replace earlier ones, so the order must not depend on the host's locale
R=docs/results
python -m fcm_tvm.benchmarks.measured_table --gpu h200 \
  --sweep $R/sweep_tc_b32_fp16_split.json $R/sweep_tc_pw_dw_b32_fp16.json \
          $R/sweep_tc_pw_dw_reuse_b32_fp16_h100.json $R/sweep_pw_dw_regs_b32_fp16_h100.json \
          $R/sweep_stream_b32_fp16_h100.json $R/sweep_image_heads_b32_fp16_h100.json \
          ${EXTRA_SWEEPS:-} \
  --layers $R/layers_h200_b32_fp16_mobilenet_v2.json $R/layers_h200_b32_fp16_mnasnet1_0.json \
           $R/layers_h200_b32_fp16_efficientnet_b0.json $R/layers_h200_b32_fp16_mobilenet_v3_large.json \
           $R/layers_h200_b32_fp16_tuned_efficientnet_b0.json $R/layers_h200_b32_fp16_tuned_mobilenet_v2.json \
           $R/layers_h200_b32_fp16_tuned_mnasnet1_0.json $R/layers_h200_b32_fp16_tuned_mobilenet_v3_large.json \
           ${EXTRA_LAYERS:-} \
  -o "${OUTPUT:-fcm_tvm/data/measured/h200.json}"
