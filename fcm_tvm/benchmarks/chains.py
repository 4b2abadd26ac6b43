"""The DW/PW chains of zoo models as stand-alone workloads: fused (one FCM PrimFunc per chain)
and unfused (the chain's stock Relax ops, one Relax function per chain), for per-layer
benchmarks and for the planner's validation against measured DRAM traffic."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import cache

import numpy as np
import onnx
import tvm
from tvm import relax

from ..planner.planner import sub_chains
from ..schedules.layout import DTYPE_BYTES
from ..schedules.spec import Depthwise, FcmSpec, FcmTiles

ONNX_BATCHNORM_EPSILON = 1e-5  # BatchNormalization's default epsilon


@dataclass(frozen=True)
class LayerCase:
    """Which zoo model, batch size and precision the chains come from."""

    model: str
    batch: int
    precision: str

    @property
    def label(self) -> str:
        return f"{self.model}_b{self.batch}_{self.precision}"


def model_chains(
    case: LayerCase, resolution: int = 224, sub_chains: bool = False
) -> list[tuple[FcmSpec, int]]:
    """The distinct supported chains of the model with how often each occurs, in graph order.

    ``sub_chains``: each PW->DW->PW chain is followed by the shorter chains the rewrite pass
    tries in its place when the planner declines it (:func:`fallback_chains`).
    """
    from ..frontend import graph_inputs, import_onnx
    from ..relay_passes import find_chains

    proto = case_model(case, resolution)
    specs = find_chains(import_onnx(proto, graph_inputs(proto)))
    if sub_chains:
        specs = [part for spec in specs for part in (spec, *fallback_chains(spec))]
    counts = Counter(specs)
    return [(spec, counts[spec]) for spec in dict.fromkeys(specs)]


@cache
def case_model(case: LayerCase, resolution: int = 224) -> onnx.ModelProto:
    """The zoo model of ``case``, in its batch and precision."""
    from ..models import build_model
    from ..precision import with_precision

    return with_precision(build_model(case.model, batch=case.batch, resolution=resolution), case.precision)


def batchnorm_epsilon(model: onnx.ModelProto) -> float:
    """The epsilon of the model's BatchNormalizations (the first one's; ONNX's default without).

    Why: a stock chain is a tuned build only where its kernels are the whole-model database's
    workloads, and a BatchNorm kernel's workload holds its epsilon (EfficientNet-B0's 1e-3 did
    not match the chains' 1e-5, so no tuned BatchNorm applied to them)."""
    for node in model.graph.node:
        if node.op_type == "BatchNormalization":
            return next((a.f for a in node.attribute if a.name == "epsilon"), ONNX_BATCHNORM_EPSILON)
    return ONNX_BATCHNORM_EPSILON


def fallback_chains(spec: FcmSpec) -> list[FcmSpec]:
    """The two-stage chains inside a PW->DW->PW chain, in the order the rewrite pass falls back
    to them: DW->PW (the tail; a residual add stays a separate op, since an FCM's residual has
    the shape of its own input), then PW->DW (the head). Empty for other kinds."""
    return list(sub_chains(spec)) if spec.kind == "pw_dw_pw" else []


def fused_module(
    specs: list[FcmSpec], tiles: list[FcmTiles | None], target: tvm.target.Target
) -> tvm.IRModule:
    """One scheduled FCM PrimFunc per chain, named ``fcm_<i>``."""
    from ..schedules import fcm_primfunc

    functions = {}
    for index, (spec, tile) in enumerate(zip(specs, tiles)):
        functions[f"fcm_{index}"] = fcm_primfunc(spec, tile, target).with_attr(
            "global_symbol", f"fcm_{index}"
        )
    return tvm.IRModule(functions)


def unfused_module(
    specs: list[FcmSpec], batchnorm: bool = True, epsilon: float = ONNX_BATCHNORM_EPSILON
) -> tvm.IRModule:
    """One Relax function ``chain_<i>`` per chain, built from the same ops the ONNX importer emits.

    ``batchnorm``: each convolution is followed by a BatchNormalization, as in the zoo's models,
    where fcm-tvm leaves it unfolded unless it fuses the chain: what a declined chain costs inside
    a model. Every kernel is a workload of the whole-model tuning database, so that a tuned build
    replays the model's records (tests/test_chains.py): the ops are the importer's, down to its
    form of ReLU6 and SiLU, and the BatchNorm has the model's epsilon. Without ``batchnorm``, a
    bias add follows, as exporters that fold BatchNorm emit it (dlight then schedules a depthwise
    convolution with its bias and activation through a much slower fallback). The BatchNorm has
    unit scale and zero mean, its variance is one less ``epsilon`` (the model's, see
    :func:`batchnorm_epsilon`), its shift is the chain's bias: the same function.
    """
    builder = relax.BlockBuilder()
    for index, spec in enumerate(specs):
        _emit_chain(builder, f"chain_{index}", spec, batchnorm, epsilon)
    return builder.get()


def _emit_chain(
    builder: relax.BlockBuilder, name: str, spec: FcmSpec, batchnorm: bool, epsilon: float
) -> None:
    params = [
        relax.Var(f"p{i}", relax.TensorType(shape, spec.dtype)) for i, shape in enumerate(spec.param_shapes())
    ]
    with builder.function(name, params):
        with builder.dataflow():
            output = builder.emit_output(_chain_ops(builder, spec, params, batchnorm, epsilon))
        builder.emit_func_output(output)


def _chain_ops(
    builder: relax.BlockBuilder,
    spec: FcmSpec,
    params: list[relax.Expr],
    batchnorm: bool,
    epsilon: float,
    guards: Guards | None = None,
) -> relax.Expr:
    """The chain's stock ops on ``params`` (input, weight and bias per stage, residual); ``guards``:
    see :func:`_importer_clip`."""
    value, cursor = params[0], 1
    for stage in spec.stages:
        weight, bias = params[cursor], params[cursor + 1]
        cursor += 2
        value = builder.emit(_conv(value, weight, stage))
        value = _batchnorm(builder, value, bias, epsilon) if batchnorm else _bias_add(builder, value, bias)
        value = _activation(builder, value, stage.activation, guards)
    if spec.residual:
        value = builder.emit(relax.op.add(value, params[cursor]))
    return value


def graph_timed_module(
    specs: list[FcmSpec],
    tiles: list[FcmTiles | None],
    target: tvm.target.Target,
    repeats: int,
    stock: bool = True,
    epsilon: float = ONNX_BATCHNORM_EPSILON,
) -> tvm.IRModule:
    """Per chain, Relax functions ``fcm_<i>`` and (``stock``) ``chain_<i>`` that run the FCM and
    the stock chain ``repeats`` times on distinct inputs (weights shared), for timing inside a
    CUDA graph.

    Why: what a chain costs in a graph-captured model is neither one VM call (every stock kernel
    pays its launch) nor ncu's time of each kernel alone (short kernels overstated). Built with
    ``relax.backend.use_cuda_graph``, all repeats are captured in one graph; their outputs feed
    one opaque probe kernel (one element of each), which keeps them alive without fusing into
    the chain's last kernel, and whose single launch both variants pay alike.
    """
    from ..schedules import fcm_primfunc

    builder = relax.BlockBuilder()
    for index, (spec, tile) in enumerate(zip(specs, tiles)):
        primfunc = fcm_primfunc(spec, tile, target).with_attr("global_symbol", f"fcm_kernel_{index}")
        kernel = builder.add_func(primfunc, f"fcm_kernel_{index}")
        output = relax.TensorType(spec.output.as_tuple(), spec.dtype)

        def fused(bb, inputs, weights, kernel=kernel, output=output):
            return bb.emit(relax.call_tir(kernel, [inputs, *weights], out_ty=output))

        guards: Guards = {}  # the Clip guards of this chain's function

        def unfused(bb, inputs, weights, spec=spec, guards=guards):
            return _chain_ops(bb, spec, [inputs, *weights], batchnorm=True, epsilon=epsilon, guards=guards)

        _emit_repeated(builder, f"fcm_{index}", spec, repeats, fused)
        if stock:
            _emit_repeated(builder, f"chain_{index}", spec, repeats, unfused)
    return builder.get()


def _emit_repeated(builder: relax.BlockBuilder, name: str, spec: FcmSpec, repeats: int, body) -> None:
    shapes = spec.param_shapes()
    inputs = [relax.Var(f"x{k}", relax.TensorType(shapes[0], spec.dtype)) for k in range(repeats)]
    weights = [
        relax.Var(f"p{i}", relax.TensorType(shape, spec.dtype)) for i, shape in enumerate(shapes[1:], 1)
    ]
    probe = builder.add_func(
        _probe(spec, repeats).with_attr("global_symbol", f"probe_{name}"), f"probe_{name}"
    )
    with builder.function(name, [*inputs, *weights], {"num_input": 0}):  # all static: one graph
        with builder.dataflow():
            outputs = [body(builder, x, weights) for x in inputs]
            sinfo = relax.TensorType((repeats,), spec.dtype)
            result = builder.emit_output(relax.call_tir(probe, outputs, out_ty=sinfo))
        builder.emit_func_output(result)


def _probe(spec: FcmSpec, repeats: int) -> tvm.tirx.PrimFunc:
    """out[k] = outputs[k][0, 0, 0, 0]: marked opaque, so that FuseOps leaves it alone."""
    from tvm import te

    outputs = [te.placeholder(spec.output.as_tuple(), spec.dtype, f"y{k}") for k in range(repeats)]

    def first_of(k):
        value = tvm.tirx.const(0, spec.dtype)
        for index, tensor in enumerate(outputs):
            value = tvm.tirx.Select(k == index, tensor[0, 0, 0, 0], value)
        return value

    probe = te.compute((repeats,), first_of, name="probe")
    return te.create_prim_func([*outputs, probe]).with_attr("op_pattern", OPAQUE)


OPAQUE = 8  # relax's OpPatternKind kOpaque


def _bias_add(builder: relax.BlockBuilder, value: relax.Expr, bias: relax.Expr) -> relax.Expr:
    return builder.emit(relax.op.add(value, relax.op.reshape(bias, (1, -1, 1, 1))))


def _batchnorm(
    builder: relax.BlockBuilder, value: relax.Expr, bias: relax.Expr, epsilon: float
) -> relax.Expr:
    """An inference BatchNormalization whose only effect is adding ``bias`` (see unfused_module)."""
    channels, dtype = int(bias.ty.shape.values[0]), _dtype(value)

    def constant(fill: float) -> relax.Constant:
        return relax.const(np.full((channels,), fill, dtype=dtype))

    normed = builder.emit(
        relax.op.nn.batch_norm(
            value,
            constant(1.0),
            bias,
            constant(0.0),
            constant(1.0 - epsilon),
            axis=1,
            epsilon=epsilon,
            training=False,
        )
    )
    result = builder.emit(relax.TupleGetItem(normed, 0))
    # TVM lowers a float16 batch_norm to float32 arithmetic; the importer path casts back the same way
    return builder.emit(relax.op.astype(result, dtype)) if dtype != "float32" else result


def _conv(value: relax.Expr, weight: relax.Expr, stage) -> relax.Expr:
    if isinstance(stage, Depthwise):
        groups = int(weight.ty.shape.values[0])
        return relax.op.nn.conv2d(
            value, weight, strides=stage.stride, padding=list(stage.pads), groups=groups
        )
    return relax.op.nn.conv2d(value, weight)


def _activation(
    builder: relax.BlockBuilder, value: relax.Expr, activation: str, guards: Guards | None = None
) -> relax.Expr:
    if activation == "none":
        return value
    if activation == "relu":
        return builder.emit(relax.op.nn.relu(value))
    if activation == "relu6":
        return _importer_clip(builder, value, 0.0, 6.0, guards)
    if activation == "sigmoid":
        return builder.emit(relax.op.sigmoid(value))
    if activation == "silu":
        return builder.emit(relax.op.multiply(value, builder.emit(relax.op.sigmoid(value))))
    if activation == "hardswish":
        shifted = builder.emit(relax.op.clip(relax.op.add(value, relax.const(3.0, _dtype(value))), 0.0, 6.0))
        scaled = builder.emit(relax.op.divide(shifted, relax.const(6.0, _dtype(value))))
        return builder.emit(relax.op.multiply(value, scaled))
    raise ValueError(f"unknown activation {activation}")


Guards = dict[tuple[float, str], relax.Var]  # a Clip bound, NaN-guarded, by (bound, dtype)


def _importer_clip(
    builder: relax.BlockBuilder, value: relax.Expr, low: float, high: float, guards: Guards | None = None
) -> relax.Expr:
    """ONNX's Clip with ``min`` and ``max`` inputs as TVM's importer writes it: each bound guarded
    against NaN at run time, then maximum and minimum. The bounds stay arguments of the fused
    kernel, so ``relax.op.clip``, which bakes them in, is another workload than the model's.

    ``guards``: the guards already emitted in this function, reused. FoldConstant builds and runs
    two CPU kernels per guard, which for a guard per repeat of every chain took 40 of the 65 s
    a graph-timed module of MobileNetV2's sub-chains needed to build; the folded kernels are the same."""
    dtype, guards = _dtype(value), {} if guards is None else guards
    for bound, op, unbounded in ((low, relax.op.maximum, "-inf"), (high, relax.op.minimum, "inf")):
        if (bound, dtype) not in guards:
            constant = relax.const(bound, dtype)
            is_nan = builder.emit(relax.op.isnan(constant))
            guards[bound, dtype] = builder.emit(
                relax.op.where(is_nan, relax.const(float(unbounded), dtype), constant)
            )
        value = builder.emit(op(value, guards[bound, dtype]))
    return value


def _dtype(value: relax.Expr) -> str:
    return str(value.ty.dtype)


def traffic_floor_bytes(spec: FcmSpec) -> int:
    """Bytes a chain must move at least: input, weights, biases, output (and residual) once each."""
    elements = sum(_numel(shape) for shape in spec.param_shapes()) + spec.output.numel
    return elements * DTYPE_BYTES[spec.dtype]


def intermediate_bytes(spec: FcmSpec) -> int:
    """The largest tensor between the chain's stages: what an unfused run sends through DRAM
    when it does not fit in L2 (issue 3's DRAM target is about those chains)."""
    return max(shape.numel for shape in spec.intermediates) * DTYPE_BYTES[spec.dtype]


def _numel(shape: tuple[int, ...]) -> int:
    total = 1
    for dim in shape:
        total *= dim
    return total
