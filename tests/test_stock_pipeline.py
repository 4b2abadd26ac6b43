"""The stock pipeline fcm-tvm compiles everything around the FCMs with: TVM's, made robust."""

from __future__ import annotations

import subprocess
import sys

import pytest
import tvm
import tvm_ffi

from fcm_tvm.frontend import graph_inputs, import_onnx
from fcm_tvm.models import build_model
from fcm_tvm.pipeline import replays_tensor_intrinsics, stock_pipeline
from fcm_tvm.records import shipped_records, unpacked
from fcm_tvm.target import resolve_target

H100 = resolve_target("h100").tvm_target


def imported(name: str, batch: int) -> tvm.IRModule:
    model = build_model(name, batch=batch)
    return import_onnx(model, graph_inputs(model, None))


@pytest.mark.slow
def test_where_dlight_works_the_kernels_are_exactly_tvms():
    module = imported("mobilenet_v2", 1)
    ours = stock_pipeline(H100)(module)
    tvms = tvm.relax.get_default_pipeline(H100)(module)
    assert tvm_ffi.structural_equal(ours, tvms)


@pytest.mark.slow
def test_where_a_dlight_rule_fails_the_next_rule_schedules_the_function():
    """EfficientNet-B0 at batch 32: dlight's Matmul rule raises on the squeeze-excitation gates."""
    module = imported("efficientnet_b0", 32)
    with pytest.raises(Exception, match="cache-write stage that are not properly inlined"):
        tvm.relax.get_default_pipeline(H100)(module)
    lowered = stock_pipeline(H100)(module)
    unscheduled = [
        gv.name_hint
        for gv, func in lowered.functions.items()
        if isinstance(func, tvm.tirx.PrimFunc) and "tirx.is_scheduled" not in (func.attrs or {})
    ]
    assert unscheduled == []


@pytest.mark.parametrize(("precision", "tensorizes"), [("fp32", False), ("fp16", True)])
def test_only_a_database_whose_traces_tensorize_needs_tvms_tensor_intrinsics(precision, tensorizes):
    records = unpacked(shipped_records("h100", "mobilenet_v2", 1, precision, "none"))
    assert replays_tensor_intrinsics(records) == tensorizes


def test_a_build_with_fp32_records_does_not_import_the_tensor_intrinsics():
    """Their import parses hundreds of TVMScript functions: 10 of the 17 s such a build took here."""
    records = str(shipped_records("h100", "mobilenet_v2", 1, "fp32", "none"))
    script = (
        "import sys, fcm_tvm; from fcm_tvm.models import build_model; "
        f"fcm_tvm.compile(build_model('mobilenet_v2'), 'h100', tuning_records={records!r}); "
        "print('tvm.s_tir.tensor_intrin' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.split()[-1] == "False"
