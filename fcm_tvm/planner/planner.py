"""FusePlanner's decisions: for each DW/PW chain, fuse or not, and with which tiles.

A chain is fused only when some tile fits the GPU and the best fused kernel (least predicted
time, then least DRAM traffic) beats the stock kernels on both counts: fewer DRAM bytes (the
paper's criterion, and what ncu can check) and less predicted time (so that recomputation, L2
load of redundant reads and a grid too small for the GPU can still veto it). Where the chain
was timed on the GPU (:mod:`.measured`; at its batch, or at the batches around it), the
measured times replace the predicted ones; on a GPU with measured chains, a chain that was not
measured is not fused (see ``UNMEASURED``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from ..gpus import GpuSpec, get_gpu
from ..schedules.spec import FcmSpec, FcmTiles
from ..schedules.tiles import default_tiles
from .cost_model import ChainEstimate, estimate_fused, estimate_unfused, fcm_grid_shape, fused_time_bound
from .measured import Measured, clocks, measured, measured_on, table_gpus, table_rows
from .tiles import fit_problems, tile_grid

MB = 1e6
US = 1e-6
L2_RESIDENT = 0.99  # an intermediate this much served by L2 is "L2-resident"
# Why a GPU with measured chains fuses only those: on the H100 the model's own picks for the
# chains it had not seen (MobileNetV3-Large's) made that model 0.60x as fast as stock TVM.
UNMEASURED = "the model alone fused MobileNetV3-Large's chains into a model 0.60x as fast as stock"


@dataclass(frozen=True)
class Decision:
    """What the planner decided for one chain, with the estimates behind it.

    ``tiles`` are the tiles to build the FCM with (None when not fused); ``fused`` is the best fused
    candidate's estimate, also when declined (None when no tile fits). ``fallback``: for a
    PW->DW->PW chain, the part the rewrite should fuse in its place if it is declined, "head"
    where the PW->DW head was measured to save more than the DW->PW tail (the pass otherwise
    tries the tail first); None to leave the pass its order. ``measured_on``: the GPU whose
    measured times decided (None where the cost model did); ``against``: the stock chain they
    were weighed against, "stock" or "tuned stock" (None where the cost model decided).
    """

    spec: FcmSpec
    gpu: GpuSpec
    fuse: bool
    tiles: FcmTiles | None
    reason: str
    unfused: ChainEstimate
    fused: ChainEstimate | None
    name: str = ""
    fallback: str | None = None
    measured_on: str | None = None
    against: str | None = None

    @property
    def planned(self) -> ChainEstimate:
        """The estimate of what will run: the FCM if fused, else the stock kernels."""
        return self.fused if self.fuse and self.fused is not None else self.unfused

    @property
    def dram_saving(self) -> float | None:
        """Share of the unfused DRAM traffic the best fused kernel saves (negative: it adds)."""
        if self.fused is None:
            return None
        return 1 - self.fused.dram.total / self.unfused.dram.total


@dataclass(frozen=True)
class Plan:
    """The decisions for a list of chains on one GPU, and their totals; ``tuned``: made for a build
    with tuning records."""

    gpu: GpuSpec
    decisions: tuple[Decision, ...]
    tuned: bool = False

    @property
    def against_untuned(self) -> int:
        """How many decisions of a tuned plan weighed measured times against *untuned* stock:
        their rows have no tuned stock time, so a chain may be fused that tuned stock beats."""
        return sum(d.against == "stock" for d in self.decisions) if self.tuned else 0

    @property
    def fused_count(self) -> int:
        return sum(d.fuse for d in self.decisions)

    @property
    def unfused_dram(self) -> float:
        return sum(d.unfused.dram.total for d in self.decisions)

    @property
    def planned_dram(self) -> float:
        return sum(d.planned.dram.total for d in self.decisions)

    @property
    def unfused_time_s(self) -> float:
        return sum(d.unfused.time_s for d in self.decisions)

    @property
    def planned_time_s(self) -> float:
        return sum(d.planned.time_s for d in self.decisions)


def plan_chain(
    spec: FcmSpec,
    gpu: GpuSpec | str,
    candidates: Iterable[FcmTiles] | None = None,
    name: str = "",
    tuned: bool = False,
    cuda_graph: bool = False,
) -> Decision:
    """Decide whether to fuse ``spec`` on ``gpu`` and with which tiles.

    ``candidates`` restricts the tiles considered (default: :func:`~.tiles.candidate_tiles`);
    those that do not fit the GPU are dropped. ``tuned``: the kernels around the FCMs will be
    MetaSchedule-tuned, so a measured chain must beat the tuned stock chain where that was timed.
    ``cuda_graph``: the build captures its launches in CUDA graphs, so measured chains compare
    times without the stock kernels' launches where they have them (:mod:`.measured`).
    """
    gpu = get_gpu(gpu) if isinstance(gpu, str) else gpu
    unfused = estimate_unfused(spec, gpu)
    known = measured(spec, gpu, cuda_graph, tuned) if candidates is None else None
    if known is not None:
        return measured_decision(spec, gpu, unfused, known, name, tuned, cuda_graph)
    tried = tile_grid(spec, gpu) if candidates is None else list(candidates)
    fused = best_fused(spec, tried, gpu)
    if fused is None:
        first = default_tiles(spec, gpu.smem_per_block) if candidates is None else (tried or [None])[0]
        problems = fit_problems(spec, first, gpu) if first else ["no candidate tiles"]
        reason = f"no tile fits {gpu.key}: {problems[0]}"
        return Decision(spec, gpu, False, None, reason, unfused, None, name)
    fuse, reason = judge(spec, unfused, fused)
    if fuse and candidates is None and table_rows(gpu.key):
        timed_on = " or ".join(table_gpus(gpu.key))
        fuse, reason = False, f"not measured on {timed_on}, which has measured chains: {UNMEASURED}"
    return Decision(spec, gpu, fuse, fused.tiles if fuse else None, reason, unfused, fused, name)


def measured_decision(
    spec: FcmSpec,
    gpu: GpuSpec,
    unfused: ChainEstimate,
    known: Measured,
    name: str,
    tuned: bool = False,
    cuda_graph: bool = False,
) -> Decision:
    """Decide from the times measured on ``gpu`` (:mod:`.measured`); traffic is still modelled."""
    fused = replace(estimate_fused(spec, known.tiles, gpu), measured_s=known.fcm_s)
    against, baseline_s = known.baseline(tuned)
    if baseline_s is not None:
        unfused = replace(unfused, measured_s=baseline_s)
    fuse, reason = judge(spec, unfused, fused)
    weighed = weigh_fallback(spec, gpu, tuned, clocks(cuda_graph), known.clock)
    options = weighed[1] if weighed else {}
    if fuse and options and weighed[0] >= min(options.values()):
        fuse = False
        reason = (
            f"its fallback (a fused sub-chain, the other stage stock) is faster: "
            f"{min(options.values()) / US:.1f} against {weighed[0] / US:.1f} us"
        )
    fallback = better_part(options)
    if not fuse and fallback == "head":
        reason += "; the rewrite fuses its PW->DW head in its place, which saves more than its DW->PW tail"
    tiles = known.tiles if fuse else None
    reason = f"measured against {against}{clock_text(known)}{batches_text(known)}: {reason}"
    measured_on = known.gpu or None
    return Decision(spec, gpu, fuse, tiles, reason, unfused, fused, name, fallback, measured_on, against)


def clock_text(known: Measured) -> str:
    """The clock a decision's times are on (empty for wall clock), and whether the FCM's is scaled."""
    clock = {"gpu": "GPU time", "graph": "in a CUDA graph"}.get(known.clock)
    if clock and known.scaled:
        clock += ", the FCM's scaled from another kernel's there by their wall-clock times"
    return f" ({clock})" if clock else ""


def batches_text(known: Measured) -> str:
    """How a decision's times stand in from other batches (empty where timed at its own)."""
    if len(known.batches) == 2:
        return f" at batches {known.batches[0]} and {known.batches[1]}, interpolated"
    if known.batches:
        return f" at batch {known.batches[0]}, scaled"
    return ""


def sub_chains(spec: FcmSpec) -> tuple[FcmSpec, FcmSpec]:
    """The DW->PW tail and the PW->DW head of a PW->DW->PW chain: what the rewrite pass fuses
    in its place when the whole chain is declined (the residual add then stays a stock op)."""
    mid = spec.shapes[1]
    tail = FcmSpec(spec.batch, mid.c, mid.h, mid.w, spec.stages[1:], False, spec.dtype)
    return tail, replace(spec, stages=spec.stages[:2], residual=False)


def weigh_fallback(
    spec: FcmSpec, gpu: GpuSpec, tuned: bool, order: tuple[str, ...], clock: str
) -> tuple[float, dict[str, float]] | None:
    """(whole FCM seconds, :func:`fallback_options`) of a PW->DW->PW chain on the first clock of
    ``order``, from ``clock`` (the decision's) on, where the whole chain and a part were measured;
    None where none has both. All on one clock: wall-clock times include each stock kernel's
    launch, the others do not."""
    for each in order[order.index(clock) :]:
        whole, options = measured_on(spec, gpu, each, tuned), fallback_options(spec, gpu, tuned, each)
        if whole is not None and options:
            return whole.fcm_s, options
    return None


def fallback_options(
    spec: FcmSpec, gpu: GpuSpec, tuned: bool = False, clock: str = "wall"
) -> dict[str, float]:
    """Measured seconds, on ``clock``, of what runs when a PW->DW->PW chain is not fused whole, by
    part ("tail", "head"): that part fused where its FCM was faster, and the remaining PW stock
    (the stock chain's time less the stock part's). Empty for other kinds, or where the chain or
    both parts were not measured on that clock. A part counts only where it was timed on the
    same GPU as the whole chain: an H100 plans on the H200's rows where it has none, and the
    H200's stock times are not the H100's.

    Why: the alternative to the whole FCM is this fallback, not the all-stock chain. On the H100
    MnasNet's 192x7x7 blocks fused whole (62.8 us, against 75.7 us stock) made the model 0.72x
    as fast as with their DW->PW tails fused (12.0 us) and the first PW left stock.
    """
    if spec.kind != "pw_dw_pw" or (whole := measured_on(spec, gpu, clock, tuned)) is None:
        return {}
    if (whole_s := whole.baseline(tuned)[1]) is None:
        return {}
    options = {}
    for name, part in zip(("tail", "head"), sub_chains(spec)):
        known = measured_on(part, gpu, clock, tuned)
        part_s = known.baseline(tuned)[1] if known and known.gpu == whole.gpu else None
        if part_s is not None:
            options[name] = min(known.fcm_s, part_s) + max(whole_s - part_s, 0.0)
    return options


def better_part(options: dict[str, float]) -> str | None:
    """Which part the rewrite should fuse: "head" where both parts were measured and fusing the
    head is the faster fallback, else None. The rewrite tries the tail first (it ends where the
    whole chain does), so it must be told.

    Why: at batch 32 in fp16 MnasNet's first PW->DW->PW block (16x112x112) was declined for its
    head fused (113 us against 121 us whole), and the rewrite then fused its tail (182 us)."""
    if {"head", "tail"} <= options.keys() and options["head"] < options["tail"]:
        return "head"
    return None


def best_fused(spec: FcmSpec, candidates: Sequence[FcmTiles], gpu: GpuSpec) -> ChainEstimate | None:
    """The fitting candidate with the least predicted time (then DRAM traffic); None if none fits.

    Best-first: candidates are visited by :func:`~.cost_model.fused_time_bound`, and the search
    stops once that lower bound exceeds the best estimate so far, so that the (slow) shared-memory
    check runs for a few candidates only. The result is the same as pricing every candidate.
    """
    ranked = sorted((fused_time_bound(spec, tiles, gpu), i, tiles) for i, tiles in enumerate(candidates))
    best: ChainEstimate | None = None
    for bound, _, tiles in ranked:
        if best is not None and bound > best.time_s:
            break
        if fit_problems(spec, tiles, gpu):
            continue
        estimate = estimate_fused(spec, tiles, gpu)
        if best is None or (estimate.time_s, estimate.dram.total) < (best.time_s, best.dram.total):
            best = estimate
    return best


def plan_chains(
    specs: Sequence[FcmSpec],
    gpu: GpuSpec | str,
    names: Sequence[str] | None = None,
    tuned: bool = False,
    cuda_graph: bool = False,
) -> Plan:
    """:func:`plan_chain` for every chain; ``names`` label them in reports."""
    gpu = get_gpu(gpu) if isinstance(gpu, str) else gpu
    labels = list(names) if names is not None else [str(i + 1) for i in range(len(specs))]
    decisions = (
        plan_chain(spec, gpu, name=label, tuned=tuned, cuda_graph=cuda_graph)
        for spec, label in zip(specs, labels)
    )
    return Plan(gpu, tuple(decisions))


def size_text(nbytes: float) -> str:
    return f"{nbytes / MB:.2f} MB" if nbytes >= 0.1 * MB else f"{nbytes / 1e3:.1f} KB"


def judge(spec: FcmSpec, unfused: ChainEstimate, fused: ChainEstimate) -> tuple[bool, str]:
    """Fuse when the fused kernel moves fewer DRAM bytes and takes less time; say why in a line."""
    before, after = unfused.dram.total, fused.dram.total
    moved = f"{size_text(before)} -> {size_text(after)}"
    times = f"{unfused.time_s / US:.1f} -> {fused.time_s / US:.1f} us"
    if after >= before:
        return False, f"fusing moves more DRAM data ({moved}): {more_traffic(spec, fused)}"
    if fused.time_s >= unfused.time_s:
        return False, f"fused kernel is slower ({times}): {why_slower(spec, unfused, fused)}"
    return True, f"saves {1 - after / before:.0%} of DRAM traffic ({moved}), {times}"


def more_traffic(spec: FcmSpec, fused: ChainEstimate) -> str:
    kernel, tiles = fused.kernels[0], fused.tiles
    assert tiles is not None
    channel_blocks = fcm_grid_shape(spec, tiles)[1]
    if channel_blocks > 1 and kernel.reread_l2_hit < 1:
        return (
            f"the input is read by {channel_blocks} channel blocks and L2 keeps only "
            f"{kernel.reread_l2_hit:.0%} of it between them"
        )
    return (
        f"the fused kernel's weights and halo reads ({kernel.requested.total / MB:.2f} MB requested) miss L2"
    )


def why_slower(spec: FcmSpec, unfused: ChainEstimate, fused: ChainEstimate) -> str:
    kernel = fused.kernels[0]
    causes = []
    consumers = unfused.kernels[1:]
    if all(k.reread_l2_hit >= L2_RESIDENT for k in consumers):
        size = size_text(unfused.dram.intermediate_write)
        causes.append(f"the intermediate ({size}) stays in L2 between the stock kernels")
    if kernel.bound == "compute":
        causes.append(f"it recomputes ({fused.flops / unfused.flops:.1f}x the chain's FLOPs)")
    elif kernel.bound == "l2":
        causes.append(
            f"its redundant reads load L2 ({kernel.requested.input / unfused.dram.input:.1f}x the input)"
        )
    if kernel.efficiency < 0.5:
        causes.append(f"its {kernel.blocks} blocks keep {kernel.efficiency:.0%} of the GPU busy")
    return "; ".join(causes) or f"it is {kernel.bound}-bound"
