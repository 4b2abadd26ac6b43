"""FuseGatedPointwise: a squeeze-excitation and the 1x1 convolution that reads its product, as two
calls that never write the product::

    y = x * gate(W2 . act(W1 . mean(x) + b1) + b2)        # FuseSqueezeExcite's block
    z = act(conv2d(y, W) + b) [+ residual]                  # the project PW, BatchNorm folded here

becomes::

    g = call_tir(fcm_se_<n>, [x, W1, b1, W2, b2])          # the (N, C) float32 gate alone
    z = call_tir(fcm_gated_pw_<n>, [x, g, W, b, residual])  # scales x as it stages it

(:mod:`..schedules.squeeze_excite` with ``scales=False``, :mod:`..schedules.gated_pw_tc`). Stock
TVM writes ``y``, reads it back in its own conv kernel and runs the BatchNorm (and the residual
add) as one more kernel; here ``y`` stays on chip, and BatchNorm is folded into exactly the convs
taken (the rest stay stock's own, as FoldAndFuse keeps them). Float16 models only: the PW runs on
tensor cores. It runs before FuseSqueezeExcite, which takes the blocks left.

Experimental: correct on a GPU, but at batch 32 its kernel is slower than the stock conv it
replaces, so the default pipeline runs it on batches up to ``pipeline.GATED_PW_MAX_BATCH`` (none
yet; ``FCM_TVM_GATED_PW=1`` runs it at every batch; :func:`fcm_tvm.pipeline.fusion_passes`;
docs/kernels.md, "Not done yet").
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, replace

import tvm
from tvm import relax

from ..errors import FcmError
from ..schedules.gated_pw_tc import GatedPointwise, GatedPwTiles, gated_pw_primfunc
from ..schedules.gated_pw_tc import default_tiles as gated_pw_tiles
from ..schedules.spec import Pointwise
from ..schedules.squeeze_excite import SqueezeExcite
from .chain import Unsupported, bias_vector, conv_info, stage_of
from .fold_batchnorm import FoldBatchNorm, conv2d_calls
from .fuse_squeeze_excite import ExciteMatch, FuseSqueezeExcite, excite_args, supported_excites
from .matcher import FunctionIndex, StageMatch, calls_op, match_stage, read_only_inside, residual_splits
from .record import EXCITE_ATTR
from .rewrite import KernelRewrite, ValueBuilder

log = logging.getLogger(__name__)

DTYPE = "float16"
MAX_HOPS = 4  # bindings from the conv to the block's output: bias, activation, residual add


@dataclass(frozen=True)
class GatedMatch:
    """A squeeze-excitation, the PW stage that reads its product, and the residual it adds."""

    excite: ExciteMatch
    gate: SqueezeExcite  # the block's, returning the gate alone
    stage: StageMatch
    root: relax.Var  # the stage's output, or the residual add
    residual: relax.Expr | None

    @property
    def intermediates(self) -> tuple[relax.Var, ...]:
        inner = (*self.excite.intermediates, self.excite.root, *self.stage.path_vars)
        return tuple(var for var in inner if not var.same_as(self.root))


def project_conv(index: FunctionIndex, excite: ExciteMatch) -> relax.Call | None:
    """The conv2d that alone reads the block's product, if one does."""
    users = index.users.get(excite.root, [])
    value = index.context.var2val.get(users[0]) if len(users) == 1 and users[0] is not None else None
    if (
        isinstance(value, relax.Call)
        and calls_op(value, "relax.nn.conv2d")
        and value.args[0].same_as(excite.root)
    ):
        return value
    return None


def gateable(se: SqueezeExcite, max_batch: int | None) -> bool:
    """Whether a block's project PW may take its gate: float16, and at most ``max_batch`` images
    (``None``: any batch)."""
    return se.dtype == DTYPE and (max_batch is None or se.batch <= max_batch)


def project_conv_indices(mod: tvm.IRModule, max_batch: int | None = None) -> frozenset[int]:
    """The project convs of the blocks :func:`gateable` passes, in :func:`conv2d_calls` order over
    the module (what ``FoldBatchNorm(only=...)`` takes)."""
    found, offset = set(), 0
    for _, func in mod.functions_items():
        if not isinstance(func, relax.Function):
            continue
        calls = conv2d_calls(func)
        index = FunctionIndex(mod, func)
        for excite, se in supported_excites(index):
            conv = project_conv(index, excite) if gateable(se, max_batch) else None
            found |= {offset + i for i, call in enumerate(calls) if conv is not None and call.same_as(conv)}
        offset += len(calls)
    return frozenset(found)


def find_gated(index: FunctionIndex, max_batch: int | None = None) -> Iterator[GatedMatch]:
    """The :func:`gateable` blocks whose product one PW stage reads, with the residual the stage's
    output gets where one is added, whose intermediates nothing else reads."""
    for excite, se in supported_excites(index):
        conv = project_conv(index, excite) if gateable(se, max_batch) else None
        if conv is None:
            continue
        for root in _downstream(index, index.var_for(conv)):
            match = _match_at(index, excite, se, root)
            if match is not None:
                yield match
                break


def _downstream(index: FunctionIndex, var: relax.Var | None) -> list[relax.Var]:
    """``var`` and the variables that each alone read the one before, farthest first."""
    chain = []
    while var is not None and len(chain) < MAX_HOPS:
        chain.append(var)
        users = index.users.get(var, [])
        var = users[0] if len(users) == 1 else None
    return chain[::-1]


def _match_at(
    index: FunctionIndex, excite: ExciteMatch, se: SqueezeExcite, root: relax.Var
) -> GatedMatch | None:
    value = index.context.var2val.get(root)
    if not isinstance(value, relax.Call):
        return None
    for output, residual in residual_splits(value):
        stage = match_stage(index, output)
        if stage is None or not stage.data.same_as(excite.root):
            continue
        match = GatedMatch(excite, replace(se, scales=False), stage, root, residual)
        closed = residual is None or not any(residual.same_as(var) for var in (*match.intermediates, root))
        if closed and read_only_inside(index, match.intermediates, (*match.intermediates, root)):
            return match
    return None


def gated_spec(match: GatedMatch) -> GatedPointwise:
    """What the PW computes; :class:`Unsupported` with the reason when the kernel cannot."""
    info = conv_info(match.stage.conv)
    if not isinstance(stage_of(match.stage, info), Pointwise):
        raise Unsupported("the convolution after the squeeze-excitation is not a dense 1x1")
    n, c, h, w = info.in_shape
    if info.dtype != DTYPE:
        raise Unsupported(f"gated pointwise kernels are {DTYPE} only, not {info.dtype}")
    try:
        return GatedPointwise(
            n, c, info.out_shape[1], h, w, match.stage.activation, match.residual is not None
        )
    except ValueError as error:
        raise Unsupported(str(error)) from None


@tvm.transform.module_pass(opt_level=0, name="FuseGatedPointwise")
class FuseGatedPointwise:
    """Rewrite every float16 squeeze-excitation whose product a PW alone reads (see the module
    doc), on batches up to ``max_batch`` (``None``: any); a PW whose key ``measured_tiles`` holds
    gets those tiles, the rest :func:`~..schedules.gated_pw_tc.default_tiles`."""

    def __init__(
        self,
        target: tvm.target.Target | str | dict,
        sm_count: int | None = None,
        max_batch: int | None = None,
        measured_tiles: Mapping[str, GatedPwTiles] | None = None,
    ):
        self.target = target if isinstance(target, tvm.target.Target) else tvm.target.Target(target)
        self.sm_count = sm_count
        self.max_batch = max_batch
        self.measured_tiles = measured_tiles or {}  # by kernel key, over the default tiles
        self.excite = FuseSqueezeExcite(self.target, sm_count)  # builds the gate's kernel

    def transform_module(self, mod: tvm.IRModule, _context: tvm.transform.PassContext) -> tvm.IRModule:
        convs = project_conv_indices(mod, self.max_batch)
        if not convs:
            return mod
        mod = FoldBatchNorm(only=convs)(mod)
        rewrite = KernelRewrite(mod)
        for gvar, func in mod.functions_items():
            if not isinstance(func, relax.Function):
                continue
            index = FunctionIndex(mod, func)
            for match in find_gated(index, self.max_batch):
                try:
                    spec = gated_spec(match)
                    bias = bias_vector(match.stage, spec.out_channels, DTYPE, index.context.var2val)
                    pw = rewrite.kernel(spec, "fcm_gated_pw", lambda spec=spec: self._pw_primfunc(spec))
                    se = match.gate
                    gate = rewrite.kernel(se, "fcm_se", lambda se=se: self.excite.primfunc(se))
                except (Unsupported, FcmError) as reason:
                    log.debug("squeeze-excitation at %s: its PW left to stock: %s", match.excite.root, reason)
                    continue
                pw_args = [
                    match.stage.weight,
                    bias,
                    *([match.residual] if match.residual is not None else []),
                ]
                build = _calls(gate, excite_args(match.excite, match.gate, index), pw, pw_args, match)
                rewrite.replace(gvar, match.root, build, (match.gate, spec))
        if (taken := sum(map(len, rewrite.new_values.values()))) < len(convs):
            log.warning("%d project convs had BatchNorm folded but were not fused", len(convs) - taken)
        return rewrite.finish(EXCITE_ATTR, _record)

    def _pw_primfunc(self, spec: GatedPointwise) -> tvm.tirx.PrimFunc:
        tiles = self.measured_tiles.get(spec.key) or gated_pw_tiles(spec, self.sm_count)
        return gated_pw_primfunc(spec, tiles, self.target)


def _record(key: SqueezeExcite | GatedPointwise) -> dict:
    return {"kind": "se" if isinstance(key, SqueezeExcite) else "gated_pw", **asdict(key)}


def _calls(gate_kernel, gate_args, pw_kernel, pw_args, match: GatedMatch) -> ValueBuilder:
    """The gate call, bound first, then the gated PW's call on ``x`` and the gate."""
    n, c = match.gate.batch, match.gate.channels

    def build(builder: relax.BlockBuilder) -> relax.Expr:
        gate = builder.emit(
            relax.call_tir(gate_kernel, gate_args, out_ty=relax.TensorType((n, c), "float32"))
        )
        x = gate_args[0]
        return relax.call_tir(pw_kernel, [x, gate, *pw_args], out_ty=match.root.ty)

    return build
