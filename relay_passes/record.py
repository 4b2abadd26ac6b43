"""The ``fcm.spec`` attribute: what a fused PrimFunc computes, as JSON the compiler can report
(and ``fcm.excite``, the squeeze-excitation kernels' record, written by FuseSqueezeExcite).

The record holds the FcmSpec's constructor arguments (so :func:`spec_from_record` rebuilds it),
its kind, the tiles the kernel was made with (null: the schedule's defaults), why it was fused,
and how many call sites of the graph share the kernel.
"""

from __future__ import annotations

from dataclasses import asdict

from ..schedules.spec import Depthwise, FcmSpec, FcmTiles, Pointwise, Stage

SPEC_ATTR = "fcm.spec"
EXCITE_ATTR = "fcm.excite"


def spec_record(spec: FcmSpec, tiles: FcmTiles | None, reason: str, calls: int = 1) -> dict:
    return {
        "kind": spec.kind,
        "batch": spec.batch,
        "in_channels": spec.in_channels,
        "height": spec.height,
        "width": spec.width,
        "dtype": spec.dtype,
        "residual": spec.residual,
        "stages": [_stage_record(stage) for stage in spec.stages],
        "tiles": None if tiles is None else asdict(tiles),
        "reason": reason,
        "calls": calls,
    }


def spec_from_record(record: dict) -> FcmSpec:
    stages = tuple(_stage_from_record(stage) for stage in record["stages"])
    return FcmSpec(
        record["batch"],
        record["in_channels"],
        record["height"],
        record["width"],
        stages,
        residual=record["residual"],
        dtype=record["dtype"],
    )


def _stage_record(stage: Stage) -> dict:
    if isinstance(stage, Depthwise):
        return {
            "op": "dw",
            "kernel": stage.kernel,
            "stride": stage.stride,
            "padding": list(stage.pads),
            "activation": stage.activation,
        }
    return {"op": "pw", "out_channels": stage.out_channels, "activation": stage.activation}


def _stage_from_record(record: dict) -> Stage:
    if record["op"] == "pw":
        return Pointwise(record["out_channels"], record["activation"])
    stage = Depthwise(record["kernel"], record["stride"], activation=record["activation"])
    padding = tuple(record["padding"])
    return (
        stage if padding == stage.pads else Depthwise(stage.kernel, stage.stride, padding, stage.activation)
    )
