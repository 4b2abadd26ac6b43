"""Guard the phases of a kernel that use fewer threads than it launches.

An FCM kernel runs several phases (stage a patch, compute the depthwise tile, stage weights, sum
the pointwise outputs), each spread over ``threadIdx.x`` with as many lanes as it has work, which
is often fewer than the kernel's threads. TVM binds every such loop to the same thread index but
launches the largest extent and adds no ``threadIdx.x < extent`` guard: the surplus threads would
run the phase with out-of-range indices, reading past the weights and writing past the shared
buffers. The schedule primitives cannot widen the loops themselves (a padded loop makes TVM size
every region computed at an enclosing loop for the padded range, and a bound loop can no longer
be split), so this rewrite runs last: each narrow thread loop gets the kernel's extent and the
blocks under it the predicate ``lane < old extent``.
"""

from __future__ import annotations

from tvm import tirx
from tvm.ir import Range
from tvm.s_tir.stmt import SBlock, SBlockRealize

THREAD_TAG = "threadIdx.x"


def guard_thread_lanes(func: tirx.PrimFunc, threads: int) -> tirx.PrimFunc:
    """``func`` with every ``threadIdx.x`` loop spanning ``threads`` lanes and the surplus predicated."""
    return func.with_body(_rewrite(func.body, threads, None))


def _rewrite(stmt: tirx.Stmt, threads: int, guard: tirx.PrimExpr | None) -> tirx.Stmt:
    if isinstance(stmt, tirx.For):
        return _rewrite_loop(stmt, threads, guard)
    if isinstance(stmt, tirx.SeqStmt):
        return tirx.SeqStmt([_rewrite(s, threads, guard) for s in stmt.seq])
    if isinstance(stmt, SBlockRealize):
        return _rewrite_block(stmt, threads, guard)
    return stmt


def _rewrite_loop(loop: tirx.For, threads: int, guard: tirx.PrimExpr | None) -> tirx.For:
    binding, extent = loop.thread_binding, int(loop.extent)
    if binding is not None and binding.thread_tag == THREAD_TAG and extent != threads:
        if extent > threads:
            raise ValueError(f"a phase spreads over {extent} lanes, more than the kernel's {threads}")
        narrow = loop.loop_var < extent
        guard = narrow if guard is None else tirx.And(guard, narrow)
        binding = tirx.IterVar(Range(0, threads), binding.var, binding.iter_type, binding.thread_tag)
        extent = threads
    body = _rewrite(loop.body, threads, guard)
    return tirx.For(loop.loop_var, loop.min, extent, loop.kind, body, binding, loop.annotations)


def _rewrite_block(realize: SBlockRealize, threads: int, guard: tirx.PrimExpr | None) -> SBlockRealize:
    block = realize.block
    if block.name_hint == "root":  # the only block with loops (and other blocks) inside
        block = SBlock(
            block.iter_vars,
            block.reads,
            block.writes,
            block.name_hint,
            _rewrite(block.body, threads, guard),
            block.init,
            block.alloc_buffers,
            block.match_buffers,
            block.annotations,
        )
        return SBlockRealize(realize.iter_values, realize.predicate, block)
    if guard is None:
        return realize
    return SBlockRealize(realize.iter_values, tirx.And(realize.predicate, guard), block)
