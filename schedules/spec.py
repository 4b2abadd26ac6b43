"""What a Fused Convolutional Module computes: the contract between planner, pass and kernels.

An :class:`FcmSpec` is a chain of depthwise (DW) and pointwise (PW) convolution stages, NCHW,
with a per-stage bias and activation and an optional residual add after the last stage. The
relax pass builds one from a matched graph, FusePlanner prices it, and ``schedules`` turns it
into a PrimFunc whose parameters are, in order::

    x, (weight, bias) for each stage in order, [residual], out

Weights keep ONNX layouts (DW ``(C, 1, K, K)``, PW ``(Cout, Cin, 1, 1)``) so the pass passes
graph constants straight through; BatchNorm is folded into weight and bias before matching.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ACTIVATIONS = ("none", "relu", "relu6", "hardswish", "sigmoid", "silu")
DTYPES = ("float32", "float16")
DW_KERNELS = (3, 5, 7)
DW_STRIDES = (1, 2)


@dataclass(frozen=True)
class Depthwise:
    """A KxK depthwise convolution (groups == channels, multiplier 1), then bias and activation."""

    kernel: int
    stride: int = 1
    padding: tuple[int, int, int, int] | None = None  # top, left, bottom, right; None: "same"
    activation: str = "none"

    @property
    def pads(self) -> tuple[int, int, int, int]:
        if self.padding is not None:
            return self.padding
        half = self.kernel // 2
        return (half, half, half, half)

    def output_hw(self, height: int, width: int) -> tuple[int, int]:
        top, left, bottom, right = self.pads
        out_h = (height + top + bottom - self.kernel) // self.stride + 1
        out_w = (width + left + right - self.kernel) // self.stride + 1
        return out_h, out_w


@dataclass(frozen=True)
class Pointwise:
    """A 1x1 convolution (groups 1, stride 1, no padding), then bias and activation."""

    out_channels: int
    activation: str = "none"

    def output_hw(self, height: int, width: int) -> tuple[int, int]:
        return height, width


Stage = Depthwise | Pointwise

KIND_OF_STAGES = {
    ("dw", "pw"): "dw_pw",
    ("pw", "dw"): "pw_dw",
    ("pw", "dw", "pw"): "pw_dw_pw",
}


@dataclass(frozen=True)
class TensorShape:
    """NCHW shape of an activation tensor."""

    n: int
    c: int
    h: int
    w: int

    @property
    def numel(self) -> int:
        return self.n * self.c * self.h * self.w

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.n, self.c, self.h, self.w)


@dataclass(frozen=True)
class FcmSpec:
    """A DW/PW chain to run as one kernel; validated on construction."""

    batch: int
    in_channels: int
    height: int
    width: int
    stages: tuple[Stage, ...]
    residual: bool = False
    dtype: str = "float32"
    shapes: tuple[TensorShape, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "shapes", self._stage_shapes())
        problems = self.problems()
        if problems:
            raise ValueError(f"unsupported FCM {self.kind_name}: " + "; ".join(problems))

    @property
    def kind_name(self) -> str:
        tags = tuple("dw" if isinstance(s, Depthwise) else "pw" for s in self.stages)
        return KIND_OF_STAGES.get(tags, "+".join(tags))

    @property
    def kind(self) -> str:
        """``dw_pw``, ``pw_dw`` or ``pw_dw_pw``."""
        return self.kind_name

    @property
    def key(self) -> str:
        """Canonical text of the computation, padding spelt out: the key of measured tables."""
        stages = " ".join(
            f"dw{s.kernel}s{s.stride}p{''.join(map(str, s.pads))}:{s.activation}"
            if isinstance(s, Depthwise)
            else f"pw{s.out_channels}:{s.activation}"
            for s in self.stages
        )
        n, c, h, w = self.input.as_tuple()
        return f"{n}x{c}x{h}x{w} {stages}{' +res' if self.residual else ''} {self.dtype}"

    @property
    def input(self) -> TensorShape:
        return self.shapes[0]

    @property
    def output(self) -> TensorShape:
        return self.shapes[-1]

    @property
    def intermediates(self) -> tuple[TensorShape, ...]:
        """Tensors between stages: what an unfused execution writes to and reads from DRAM."""
        return self.shapes[1:-1]

    def weight_shapes(self) -> list[tuple[int, ...]]:
        """ONNX-layout weight shape of each stage, in stage order."""
        result = []
        for stage, before in zip(self.stages, self.shapes[:-1]):
            if isinstance(stage, Depthwise):
                result.append((before.c, 1, stage.kernel, stage.kernel))
            else:
                result.append((stage.out_channels, before.c, 1, 1))
        return result

    def param_shapes(self) -> list[tuple[int, ...]]:
        """Shapes of the PrimFunc's inputs in order: x, (weight, bias) per stage, [residual]."""
        shapes: list[tuple[int, ...]] = [self.input.as_tuple()]
        for weight, after in zip(self.weight_shapes(), self.shapes[1:]):
            shapes += [weight, (after.c,)]
        if self.residual:
            shapes.append(self.output.as_tuple())
        return shapes

    def problems(self) -> list[str]:
        """Why this chain cannot be one FCM (empty when it can)."""
        found = []
        if self.kind_name not in KIND_OF_STAGES.values():
            found.append(f"stage order {self.kind_name} (supported: {', '.join(KIND_OF_STAGES.values())})")
        if self.dtype not in DTYPES:
            found.append(f"dtype {self.dtype}")
        if min(self.batch, self.in_channels, self.height, self.width) < 1:
            found.append("empty input")
        for stage in self.stages:
            if stage.activation not in ACTIVATIONS:
                found.append(f"activation {stage.activation}")
            if isinstance(stage, Depthwise):
                if stage.kernel not in DW_KERNELS:
                    found.append(f"depthwise kernel {stage.kernel}x{stage.kernel}")
                if stage.stride not in DW_STRIDES:
                    found.append(f"depthwise stride {stage.stride}")
                if any(p < 0 or p >= stage.kernel for p in stage.pads):
                    found.append(f"depthwise padding {stage.pads}")
        if any(s.h < 1 or s.w < 1 for s in self.shapes):
            found.append("empty output")
        if self.residual and self.output.as_tuple() != self.input.as_tuple():
            found.append("residual add needs output shape == input shape")
        return found

    def _stage_shapes(self) -> tuple[TensorShape, ...]:
        shape = TensorShape(self.batch, self.in_channels, self.height, self.width)
        shapes = [shape]
        for stage in self.stages:
            h, w = stage.output_hw(shape.h, shape.w)
            c = stage.out_channels if isinstance(stage, Pointwise) else shape.c
            shape = TensorShape(self.batch, c, h, w)
            shapes.append(shape)
        return tuple(shapes)


@dataclass(frozen=True)
class FcmTiles:
    """How an FCM kernel tiles its output: the knobs the planner picks and tuning searches.

    A thread block computes ``channel_tile`` output channels of a ``tile_h x tile_w`` output
    patch of one image with ``threads`` threads; the intermediate tile lives in shared memory.

    ``split`` blocks share one output tile, each summing its slice of the last stage's reduction
    (the mid channels of PW->DW->PW, the input channels of DW->PW) into a float32 workspace
    that a second, small kernel sums, adding bias, activation and residual. At batch 1 a deep
    layer has only a few output tiles, and without a split a few blocks loop over hundreds of
    channels while most SMs idle. PW->DW has no such reduction: its split is 1.

    ``patch_rows`` is the register tile of the 1x1 stage that feeds the depthwise one (PW->DW,
    PW->DW->PW): each thread sums that many rows of its pixel column at once, so every weight it
    loads feeds ``patch_rows`` multiply-adds. Deep layers (hundreds of input channels) are bound
    by those loads with one row per thread. ``patch_unroll`` unrolls that stage's sum over the
    input channels (by the largest divisor of their count up to it), so that the loads of several
    channels are in flight at once. DW->PW has no such patch: both are 1 there.

    ``output_rows`` is the least number of output rows each thread keeps in registers for the
    last stage. With 1, threads go to pixels first and a thread's register tile is all channels,
    so each multiply-add of a last PW stage reads a weight from shared memory and every pixel's
    input once per channel: about one shared load per multiply-add, and ncu finds the batch-32
    kernels bound by shared-memory loads. With ``r`` rows a thread's ``reg_c`` weights feed ``r``
    pixels each (measured: up to 1.2x per chain; the 1x1 patch's own loads remain).

    ``weight_lanes`` (1, 2 or 4) makes the last PW stage load its weights that many at a time:
    the stage's shared weights are stored transposed (mid channels outer), so that a thread's
    ``reg_c`` weights for one reduction step are contiguous, and each step copies them to
    registers with vector loads. With 1 a thread issues one shared load per weight (``reg_c + 1``
    loads per ``reg_c`` multiply-adds of a one-pixel register tile); with 4, ``reg_c / 4 + 1``.
    PW->DW has no last PW stage: 1 there. ``patch_lanes`` does the same for the weights of the
    1x1 patch (PW->DW, PW->DW->PW), whose threads own ``reg_c`` mid channels of a pixel column
    each: ``reg_c / lanes`` vector loads per input channel instead of ``reg_c`` loads.

    ``depthwise_cols`` is how many adjacent output columns each thread computes at a time in the
    depthwise stage that feeds a last PW (DW->PW, PW->DW->PW): its weights and the overlapping
    inputs of neighbouring columns are then loaded once for all of them. It must divide the
    tile's width; PW->DW computes its depthwise stage in the output layout: 1 there.

    ``output_cols`` (1, 2 or 4) is the least number of adjacent output columns each thread keeps
    in registers for the last PW stage (DW->PW, PW->DW->PW; 1 for PW->DW), and each reduction
    step loads the thread's depthwise results of a row as one vector of that many: with
    ``weight_lanes`` too, a step of a ``reg_c x 1 x 4`` register tile issues ``reg_c / 4 + 1``
    shared loads for ``4 reg_c`` multiply-adds instead of ``reg_c / 4 + 4``.

    ``tensor_cores = 1`` builds a different kernel (:mod:`.tensor_cores`, float16 DW->PW and
    PW->DW): the PW is a GEMM on WMMA fragments; ``channel_tile``, ``tile_h x tile_w`` and ``threads``
    (whole warps) keep their meaning and the other knobs stay at their defaults, but for
    ``patch_reuse`` of PW->DW: a block computes that many channel tiles in turn from one input
    patch staged whole in shared memory (with 1, each block stages its tile's patch a chunk of
    input channels at a time, and every channel tile of an image tile stages it again).

    ``stream = c`` builds the kernels streamed through registers and warp shuffles
    (:mod:`.stream`, DW->PW and PW->DW): ``c`` channels a thread, a warp per ``c`` channels of the
    tile, ``output_cols`` columns a lane, and ``lane_rows`` (1 or 2) rows of the tile a warp
    covers at once, each in a segment of ``32 / lane_rows`` lanes (for narrow outputs); each
    thread walks ``tile_h / lane_rows`` rows.

    ``register_pw = 1`` builds the PW->DW kernel for few input channels (:mod:`.cuda_pw_dw_regs`):
    threads keep their channels' PW weights in registers over a float32 input patch staged once
    per block; ``channel_tile``, the tile, ``threads`` and ``patch_reuse`` keep their meaning,
    ``patch_rows`` is the pixels each thread sums at a time, the other knobs stay at 1.

    ``image = r`` builds the PW->DW->PW or PW->DW kernel over whole images (:mod:`.cuda_image`):
    the tile is the whole output (``channel_tile`` all its channels), each of ``split`` blocks per
    image takes a slice of the mid channels, a thread expands ``r`` mid channels and projects its
    share of the output channels over ``output_cols`` adjacent pixels; ``depthwise_cols`` is 1 (a
    thread's DW a pixel at a time) or ``output_cols`` (a run of pixels); the other knobs stay at 1.
    """

    channel_tile: int = 32
    tile_h: int = 8
    tile_w: int = 8
    threads: int = 256
    split: int = 1
    patch_rows: int = 1
    patch_unroll: int = 1
    output_rows: int = 1
    weight_lanes: int = 1
    patch_lanes: int = 1
    depthwise_cols: int = 1
    output_cols: int = 1
    patch_reuse: int = 1
    tensor_cores: int = 0
    register_pw: int = 0
    stream: int = 0
    lane_rows: int = 1
    image: int = 0

    @property
    def label(self) -> str:
        """``c24 8x8 t256 s4`` (``... p4 u4 o2 v4 x2`` with 4 patch rows, unrolled by 4, 2 output
        rows per thread, weights loaded 4 at a time, 2 output columns per thread): how reports and
        result files spell tiles."""
        label = f"c{self.channel_tile} {self.tile_h}x{self.tile_w} t{self.threads} s{self.split}"
        optional = {
            "p": self.patch_rows,
            "u": self.patch_unroll,
            "o": self.output_rows,
            "v": self.weight_lanes,
            "pv": self.patch_lanes,
            "d": self.depthwise_cols,
            "x": self.output_cols,
            "r": self.patch_reuse,
            "lr": self.lane_rows,
        }
        label += "".join(f" {tag}{n}" for tag, n in optional.items() if n > 1)
        label += f" st{self.stream}" if self.stream else ""
        label += f" im{self.image}" if self.image else ""
        return label + " tc" * self.tensor_cores + " rw" * self.register_pw
