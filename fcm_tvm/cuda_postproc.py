"""A repair of TVM 0.27's CUDA source: 8-lane vectors built with constructors of 4 lanes.

TVM's CUDA code generator stores a vector of eight 16-bit or 32-bit lanes in a 4-lane CUDA type
and builds it with that type's constructor, one argument per lane: an 8-lane float16 gather
(MetaSchedule's cooperative fetch of a transposed weight into shared memory) as
``make_uint4(h0, ..., h7)``, and an 8-lane int32 index vector as ``make_longlong4(i0, ..., i7)``.
Those constructors take four arguments, so nvcc stops with "too many arguments in function call",
and 10-15% of the fp16 candidates of a tuning task never built (H100, 2026-12-06). The intended
value is the lanes in order, low lane first, as TVM reads them back (``((int2*)&v.x)->x`` is lane
0). :func:`repair` packs the lanes pairwise: halves with TVM's own ``__pack_half2``, int32s into
a 64-bit word. It rewrites only such calls (halves only where every argument reads a ``half``
buffer) and leaves all other code as it is.

TVM applies a global function ``tvm_callback_cuda_postproc(code, target)`` to every CUDA module it
generates; :func:`install` registers :func:`repair` there, after any callback already registered.
"""

from __future__ import annotations

import re
from functools import cache

import tvm

CALLBACK = "tvm_callback_cuda_postproc"
WORDS = {"make_uint2": 2, "make_uint4": 4, "make_longlong4": 4}  # arguments each constructor takes
_CALL = re.compile(rf"\b({'|'.join(WORDS)})\(")
_HALF_POINTER = re.compile(r"\bhalf\s*\*\s*(?:__restrict__\s+)?(\w+)")
_HALF_ARRAY = re.compile(r"\bhalf\s+(\w+)\s*\[")
_READ = re.compile(r"\s*\(?\s*(\w+)\s*\[")


def repair(code: str) -> str:
    """``code`` with every constructor of :data:`WORDS` given twice its arguments packed pairwise
    (``make_uint*``: ``half`` reads; ``make_longlong4``: int32 lanes); unchanged where there is none."""
    halves = set(_HALF_POINTER.findall(code)) | set(_HALF_ARRAY.findall(code))
    pieces, start = [], 0
    for match in _CALL.finditer(code):
        if match.start() < start:
            continue  # inside a call already rewritten
        constructor = match.group(1)
        arguments, end = _arguments(code, match.end())
        if len(arguments) != 2 * WORDS[constructor]:
            continue
        if constructor == "make_longlong4":
            pack = "(long long)(((unsigned long long)(unsigned int)({1}) << 32) | (unsigned int)({0}))"
        elif "__pack_half2" in code and all(_reads_half(argument, halves) for argument in arguments):
            pack = "__pack_half2({0}, {1})"
        else:
            continue
        words = [pack.format(low, high) for low, high in zip(arguments[::2], arguments[1::2])]
        pieces += [code[start : match.start()], f"{constructor}({', '.join(words)})"]
        start = end
    return "".join(pieces) + code[start:]


def _arguments(code: str, opened: int) -> tuple[list[str], int]:
    """The top-level arguments of the call whose "(" ends at ``opened``, and the index after its ")"."""
    depth, arguments, begin = 0, [], opened
    for index in range(opened, len(code)):
        char = code[index]
        if char in "([{":
            depth += 1
        elif char in ")]}" and depth:
            depth -= 1
        elif char == ")":
            arguments.append(code[begin:index].strip())
            return arguments, index + 1
        elif char == "," and not depth:
            arguments.append(code[begin:index].strip())
            begin = index + 1
    return [], len(code)  # unbalanced: not a call to rewrite


def _reads_half(argument: str, halves: set[str]) -> bool:
    read = _READ.match(argument)
    return read is not None and read.group(1) in halves


@cache
def install() -> None:
    """Register :func:`repair` as TVM's CUDA post-processing callback, once per process; a callback
    registered before still runs, first."""
    earlier = tvm.get_global_func(CALLBACK, allow_missing=True)

    def postproc(code: str, target) -> str:
        return repair(str(earlier(code, target)) if earlier is not None else code)

    tvm.register_global_func(CALLBACK, postproc, override=True)
