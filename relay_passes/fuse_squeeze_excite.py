"""FuseSqueezeExcite: rewrite squeeze-excitation, from the channel means on, into one ``call_tir``.

The block is matched from its product back to the channel means::

    means = mean(x, axis=[2, 3], keepdims=True)
    hidden = act(conv2d(means, W1) + b1)       # act: ReLU or SiLU (MobileNetV3, EfficientNet)
    scale = gate(conv2d(hidden, W2) + b2)      # gate: sigmoid or HardSigmoid
    y = x * scale

and becomes ``y = call_tir(fcm_se_<n>, [x, W1, b1, W2, b2])`` (:mod:`..schedules.squeeze_excite`):
the means, fc1, fc2, the gate and the product in two kernels of one call (three where the hidden
vector gets a kernel of its own), which replace stock's slow ``mean``, its fc1 launch and its fc2
kernel's slowly tuned broadcast product. The rewrite never moves more memory than the graph it
replaces (it reads ``x`` twice and writes ``y`` once, as stock's mean and product do), so it is
done wherever it matches, without the planner; every call's kernel carries an ``fcm.excite``
record.

Only 1x1 convolutions on the 1x1 means are taken (dense, stride 1, no padding), with the block's
intermediates, the means included, read by nothing else; everything else stays as it was.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import tvm
from tvm import relax

from ..errors import FcmError
from ..schedules.spec import Pointwise
from ..schedules.squeeze_excite import ACTIVATIONS, GATES, SqueezeExcite, default_tiles, excite_primfunc
from .chain import Unsupported, bias_vector, conv_info, stage_of
from .matcher import FunctionIndex, StageMatch, calls_op, match_stage, read_only_inside, static_shape
from .record import EXCITE_ATTR
from .rewrite import KernelRewrite, call_value

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExciteMatch:
    """A matched squeeze-excitation: the scaled tensor, its means, the two stages and the product."""

    x: relax.Expr
    means: relax.Expr
    fc1: StageMatch
    fc2: StageMatch
    root: relax.Var

    @property
    def intermediates(self) -> tuple[relax.Var, ...]:
        means = (self.means,) if isinstance(self.means, relax.Var) else ()
        return (*means, *self.fc1.path_vars, *self.fc2.path_vars)


def find_excites(index: FunctionIndex) -> list[ExciteMatch]:
    """Every excite step of the function whose intermediates nothing else reads."""
    found = []
    for binding in index.bindings:
        match = match_excite(index, binding.var)
        if match is not None and read_only_inside(
            index, match.intermediates, (*match.intermediates, match.root)
        ):
            found.append(match)
    return found


def supported_excites(index: FunctionIndex) -> Iterator[tuple[ExciteMatch, SqueezeExcite]]:
    """The function's excite steps that the kernel computes, each with what it computes."""
    for match in find_excites(index):
        try:
            yield match, excite_spec(match)
        except Unsupported as reason:
            log.debug("squeeze-excitation at %s left to stock: %s", match.root, reason)


def excite_steps(mod: tvm.IRModule) -> list[SqueezeExcite]:
    """What FuseSqueezeExcite would rewrite in ``mod``'s Relax functions, step by step."""
    return [
        se
        for _, func in mod.functions_items()
        if isinstance(func, relax.Function)
        for _, se in supported_excites(FunctionIndex(mod, func))
    ]


def match_excite(index: FunctionIndex, root: relax.Var) -> ExciteMatch | None:
    """The excite step whose product ``root`` is, if it is one (structure only, see excite_spec)."""
    value = index.context.var2val.get(root)
    if not (isinstance(value, relax.Call) and calls_op(value, "relax.multiply")):
        return None
    for x, scale in (value.args, value.args[::-1]):
        fc2 = match_stage(index, scale)
        if fc2 is None or fc2.activation not in GATES:
            continue
        fc1 = match_stage(index, fc2.data)
        if fc1 is None or fc1.activation not in ACTIVATIONS:
            continue
        if _is_mean_of(index, fc1.data, x):
            return ExciteMatch(x, fc1.data, fc1, fc2, root)
    return None


def excite_spec(match: ExciteMatch) -> SqueezeExcite:
    """What the step computes; :class:`Unsupported` with the reason when the kernel cannot."""
    fc1, fc2 = conv_info(match.fc1.conv), conv_info(match.fc2.conv)
    for stage, info in ((match.fc1, fc1), (match.fc2, fc2)):
        if not isinstance(stage_of(stage, info), Pointwise) or info.in_shape[2:] != (1, 1):
            raise Unsupported("squeeze-excitation with a convolution that is not 1x1 on the means")
    n, c, h, w = static_shape(match.x) or (0, 0, 0, 0)
    squeeze = fc1.out_shape[1]
    dtypes = {fc1.dtype, fc2.dtype, str(match.x.ty.dtype), str(match.root.ty.dtype)}
    if len(dtypes) != 1:
        raise Unsupported(f"mixed dtypes {sorted(dtypes)}")
    if fc1.in_shape != (n, c, 1, 1) or fc2.out_shape != (n, c, 1, 1) or fc2.in_shape[1] != squeeze:
        raise Unsupported(f"squeeze-excitation shapes {fc1.in_shape} -> {fc2.out_shape} for x {(n, c, h, w)}")
    try:
        return SqueezeExcite(n, c, h, w, squeeze, match.fc1.activation, match.fc2.activation, dtypes.pop())
    except ValueError as error:
        raise Unsupported(str(error)) from None


def excite_args(match: ExciteMatch, se: SqueezeExcite, index: FunctionIndex) -> list[relax.Expr]:
    """The kernel's inputs: x, W1, b1, W2, b2 (biases as ``(C,)`` vectors)."""
    var2val = index.context.var2val
    return [
        match.x,
        match.fc1.weight,
        bias_vector(match.fc1, se.squeeze, se.dtype, var2val),
        match.fc2.weight,
        bias_vector(match.fc2, se.channels, se.dtype, var2val),
    ]


def _is_mean_of(index: FunctionIndex, means: relax.Expr, x: relax.Expr) -> bool:
    value = index.context.var2val.get(means, means) if isinstance(means, relax.Var) else means
    if not (isinstance(value, relax.Call) and calls_op(value, "relax.mean") and value.args[0].same_as(x)):
        return False
    axes = sorted(int(a) % 4 for a in (value.attrs.axis or []))
    return axes == [2, 3] and bool(value.attrs.keepdims) and len(static_shape(x) or ()) == 4


@tvm.transform.module_pass(opt_level=0, name="FuseSqueezeExcite")
class FuseSqueezeExcite:
    """Rewrite every supported squeeze-excitation step into one kernel for ``target``."""

    def __init__(self, target: tvm.target.Target | str | dict, sm_count: int | None = None):
        self.target = target if isinstance(target, tvm.target.Target) else tvm.target.Target(target)
        self.sm_count = sm_count  # the GPU's, which the kernel's tiles weigh (None: the default GPU's)

    def transform_module(self, mod: tvm.IRModule, _context: tvm.transform.PassContext) -> tvm.IRModule:
        rewrite = KernelRewrite(mod)
        for gvar, func in mod.functions_items():
            if not isinstance(func, relax.Function):
                continue
            index = FunctionIndex(mod, func)
            for match, se in supported_excites(index):
                try:
                    args = excite_args(match, se, index)
                    kernel = rewrite.kernel(se, "fcm_se", lambda se=se: self.primfunc(se))
                except (Unsupported, FcmError) as reason:
                    log.debug("squeeze-excitation at %s left to stock: %s", match.root, reason)
                    continue
                rewrite.replace(gvar, match.root, call_value(kernel, args, match.root.ty), (se,))
        return rewrite.finish(EXCITE_ATTR, lambda se: {"kind": "se", **asdict(se)})

    def primfunc(self, se: SqueezeExcite) -> tvm.tirx.PrimFunc:
        """The block's kernel with the default tiles for this GPU (FuseGatedPointwise's too)."""
        return excite_primfunc(se, default_tiles(se, self.sm_count), self.target)
