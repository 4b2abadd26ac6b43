#!/usr/bin/env bash
# The planner's table of measured chains on the H100 (fcm_tvm/data/measured/h100.json), rebuilt
# from every result in docs/results that feeds it (docs/planner.md, "Measured chains"). On the
# GPU host, between two calls: EXTRA_LAYERS names layer results of this session still under /tmp
# (EXTRA_SWEEPS likewise, kernel sweeps), and OUTPUT a table for $FCM_TVM_MEASURED, so that the
# next call plans on it.
#
#   bash tests/gpu/h100_table.sh                                  # here: the shipped table
#   EXTRA_LAYERS="/tmp/fcm-run/layers_*/layers.json" OUTPUT=/tmp/fcm-measured/h100.json \
#       bash tests/gpu/h100_table.sh                              # GPU host
set -eu
export LC_ALL=C  # globs in byte order: later profiles of a chain replace earlier ones, so the order must not depend on the host's locale
R=docs/results
python -m fcm_tvm.benchmarks.measured_table --gpu h100 \
  --sweep $R/sweep_b1_pw_staged.json $R/sweep_b1_dw_pw_sub.json $R/sweep_b1_fp16_mbv2.json \
          $R/sweep_b32_pw_staged.json $R/sweep_b32_dw_pw_sub.json $R/sweep_b1_broad.json \
          $R/sweep_b32_broad.json $R/sweep_patch_rows.json $R/sweep_patch_unroll.json \
          $R/sweep_output_rows.json $R/sweep_zoo_b1.json \
          $R/sweep_vector_loads_b1.json $R/sweep_vector_loads_b32.json \
          $R/sweep_depthwise_cols_b32.json $R/sweep_output_cols_b32.json \
          $R/sweep_fp16_fp32tiles_0.json $R/sweep_fp16_fp32tiles_1.json $R/sweep_fp16_fp32tiles_2.json \
          $R/sweep_fp16_b32_0.json $R/sweep_fp16_b32_1.json $R/sweep_fp16_zoo_b1.json \
          $R/sweep_fp16_mobilevit_b1.json $R/sweep_tc_pw_dw_b1_fp16_h100.json \
          $R/sweep_tc_pw_dw_b1_fp16_h100_mbv2_mnasnet.json \
          $R/sweep_stream_b32_fp32_h100.json $R/sweep_stream_b1_fp16_h100.json \
          $R/sweep_image_b32_fp32_h100.json $R/sweep_image_runs_b32_fp32_h100.json ${EXTRA_SWEEPS:-} \
  --layers $R/layers_b1_sub.json $R/layers_b1_fp16_mbv2.json $R/layers_b32_sub.json \
           $R/layers_b1_tuned_mobilenet_v2.json $R/layers_b1_tuned_efficientnet_b0.json \
           $R/layers_b1_tuned_mobilenet_v3_large.json $R/layers_b1_tuned_mnasnet1_0.json \
           $R/layers_b1_mobilenet_v1.json $R/layers_b1_mobilenet_v3_small.json \
           $R/layers_b1_proxylessnas_gpu.json $R/layers_b1_mobilevit_xxs.json \
           $R/layers_b1_mobilevit_xs.json $R/layers_b1_mobilevit_s.json \
           $R/layers_b1_graph_mobilenet_v3_small.json $R/layers_b1_graph_mobilenet_v3_large.json \
           $R/layers_b1_graph_mobilenet_v2.json $R/layers_b1_graph_efficientnet_b0.json \
           $R/layers_b1_graph_mnasnet1_0.json \
           $R/layers_b1_fp16_graph_efficientnet_b0.json $R/layers_b1_fp16_graph_mobilenet_v3_large.json \
           $R/layers_b1_fp16_graph_mnasnet1_0.json $R/layers_b1_fp16_graph_proxylessnas_gpu.json \
           $R/layers_b1_fp16_graph2_efficientnet_b0.json $R/layers_b1_fp16_graph2_mobilenet_v3_large.json \
           $R/layers_b1_fp16_graph2_mnasnet1_0.json $R/layers_b1_fp16_graph2_proxylessnas_gpu.json \
           $R/layers_b1_fp16_graph2_mobilenet_v2.json \
           $R/layers_b32_fp16_mobilenet_v2.json $R/layers_b32_fp16_mnasnet1_0.json \
           $R/layers_b1_graph2_mobilenet_v2.json $R/layers_b1_graph2_efficientnet_b0.json \
           $R/layers_b1_graph2_mobilenet_v3_large.json $R/layers_b1_graph2_mnasnet1_0.json \
           $R/layers_b1_fp16_graph_mobilenet_v1.json $R/layers_b1_fp16_graph_mobilenet_v3_small.json \
           $R/layers_b1_fp16_graph_mobilevit_xxs.json $R/layers_b1_fp16_graph_mobilevit_xs.json \
           $R/layers_b1_fp16_graph_tc_efficientnet_b0.json $R/layers_b1_fp16_graph_tc_mobilenet_v3_large.json \
           $R/layers_b1_fp16_graph_tc_mobilenet_v2.json $R/layers_b1_fp16_graph_tc_mnasnet1_0.json \
           $R/layers_b1_fp16_graph_h100tuned_efficientnet_b0.json $R/layers_b1_fp16_graph_h100tuned_mnasnet1_0.json \
           $R/layers_b1_fp16_graph_h100tuned_mobilenet_v3_large.json $R/layers_b1_fp16_graph_h100tuned_mobilenet_v2.json \
           $R/layers_b1_fp16_graph_stream_mobilenet_v2.json $R/layers_b1_fp16_graph_stream_mnasnet1_0.json \
           ${EXTRA_LAYERS:-} \
  --old-sweep $R/splits_h100.json $R/splits_h100_mbv3_mnasnet.json \
  --old-layers $R/layers.json $R/layers_b32.json $R/layers_mbv3_mnasnet_b1.json \
               $R/layers_mbv3_mnasnet_b32.json \
  --gpu-times $R/gpu_times_*.json \
  --changed-kinds pw_dw,pw_dw_pw -o "${OUTPUT:-fcm_tvm/data/measured/h100.json}"
