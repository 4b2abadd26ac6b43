"""Replace the values of chosen bindings in a Relax function, then drop what became dead.

Both passes decide first (on the original function) and rewrite second: each chosen variable
keeps its name and type but gets a new value, built by a callback that may emit helper bindings
(e.g. the folded conv2d) just before it. Bindings only the old values read are removed afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

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


def fresh_name(builder: relax.BlockBuilder, prefix: str) -> str:
    """``<prefix>_<n>`` with the smallest ``n`` no global of the builder's module has taken."""
    taken = {gvar.name_hint for gvar in builder.get().get_global_vars()}
    number = 0
    while f"{prefix}_{number}" in taken:
        number += 1
    return f"{prefix}_{number}"
