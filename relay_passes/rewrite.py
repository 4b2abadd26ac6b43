"""Replace the values of chosen bindings in a Relax function, then drop what became dead.

Both passes decide first (on the original function) and rewrite second: each chosen variable
keeps its name and type but gets a new value, built by a callback that may emit helper bindings
(e.g. the folded conv2d) just before it. Bindings only the old values read are removed afterwards.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Mapping

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from ..schedules.primfunc import OP_PATTERN_ATTR, OPAQUE

ValueBuilder = Callable[[relax.BlockBuilder], relax.Expr]


@mutator
class _BindingReplacer(PyExprMutator):
    def __init__(self, mod: tvm.IRModule, new_values: Mapping[relax.Var, ValueBuilder]):
        super().__init__(mod)
        self.new_values = new_values

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        build = self.new_values.get(binding.var)
        if build is None:
            super().visit_var_binding_(binding)
            return
        value = self.builder_.normalize(build(self.builder_))
        tvm.ir.assert_structural_equal(value.ty, binding.var.ty)  # same variable, same type
        self.builder_.emit_normalized(relax.VarBinding(binding.var, value))


def replace_bindings(
    mod: tvm.IRModule, func: relax.Function, new_values: Mapping[relax.Var, ValueBuilder]
) -> relax.Function:
    """``func`` with each variable in ``new_values`` bound to its new value, dead bindings removed."""
    if not new_values:
        return func
    rewritten = _BindingReplacer(mod, new_values).visit_expr(func)
    return relax.analysis.remove_all_unused(rewritten)


def call_value(kernel: tvm.ir.GlobalVar, args: list[relax.Expr], ty) -> ValueBuilder:
    """A new value that calls PrimFunc ``kernel`` on ``args``, returning a tensor of type ``ty``."""

    def build(_builder: relax.BlockBuilder) -> relax.Expr:
        return relax.call_tir(kernel, args, out_ty=ty)

    return build


def fresh_name(builder: relax.BlockBuilder, prefix: str) -> str:
    """``<prefix>_<n>`` with the smallest ``n`` no global of the builder's module has taken."""
    taken = {gvar.name_hint for gvar in builder.get().get_global_vars()}
    number = 0
    while f"{prefix}_{number}" in taken:
        number += 1
    return f"{prefix}_{number}"


class KernelRewrite:
    """A rewrite that adds PrimFunc kernels, one per distinct key, and replaces bindings with calls
    of them: the kernels, how many calls each gets, and the new values, applied by :meth:`finish`."""

    def __init__(self, mod: tvm.IRModule):
        self.mod = mod
        self.builder = relax.BlockBuilder(mod)
        self.kernels: dict[Hashable, tvm.ir.GlobalVar] = {}
        self.calls: dict[Hashable, int] = {}
        self.new_values: dict[tvm.ir.GlobalVar, dict[relax.Var, ValueBuilder]] = {}

    def kernel(self, key: Hashable, prefix: str, make: Callable[[], tvm.tirx.PrimFunc]) -> tvm.ir.GlobalVar:
        """The kernel for ``key``, added as ``<prefix>_<n>`` from ``make()`` the first time (it may
        raise; nothing is added then); FuseOps is told to leave it alone."""
        if key not in self.kernels:
            name = fresh_name(self.builder, prefix)
            func = make().with_attrs({"global_symbol": name, OP_PATTERN_ATTR: OPAQUE})
            self.kernels[key] = self.builder.add_func(func, name)
        return self.kernels[key]

    def replace(self, gvar: tvm.ir.GlobalVar, var: relax.Var, build: ValueBuilder, keys: tuple) -> None:
        """Bind ``var`` of function ``gvar`` to ``build``'s value, which calls the kernels of ``keys``."""
        self.new_values.setdefault(gvar, {})[var] = build
        for key in keys:
            self.calls[key] = self.calls.get(key, 0) + 1

    def finish(self, attr: str, record: Callable[[Hashable], dict]) -> tvm.IRModule:
        """The module with every kernel's ``record`` (and its calls) as JSON attribute ``attr``, and
        every replaced binding rewritten; the module unchanged if nothing was replaced."""
        if not self.new_values:
            return self.mod
        for key, kernel in self.kernels.items():
            text = json.dumps({**record(key), "calls": self.calls.get(key, 0)}, sort_keys=True)
            self.builder.update_func(kernel, self.builder.get()[kernel].with_attr(attr, text))
        with_kernels = self.builder.get()
        for gvar, values in self.new_values.items():
            self.builder.update_func(gvar, replace_bindings(with_kernels, self.mod[gvar], values))
        return self.builder.get()
