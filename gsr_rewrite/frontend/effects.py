"""What one statement or expression does to tensor buffers: the abstract semantics of the analysis.

Values are sets of abstract buffers. Element roles name one parameter's buffers: "param", "grad",
"state:KEY"; every allocating tensor op is its own buffer "tmp@LINE:COL". Values that are not
tensors but lead to them carry a "%" marker: "%self", "%statedict", "%pstate" (self.state[p]),
"%groups", "%group". Scalars are the empty set. Tuples and grouped tensor lists keep their
positions (values.py), so `for (ps, gs), _ in grouped.values()` binds `gs` to the gradients only.

Reads are recorded as (variable, buffer) pairs: the variable through which the buffer's *contents*
are read. Root accesses such as `p.grad` or `state["exp_avg"]` read through the pseudo-variables
"@grad", "@state:exp_avg".

The evaluator is built in layers, one module each: the records it fills (records.py), expressions
(expressions.py), tensor ops (tensor_ops.py) and calls (calls.py, the `Evaluator` the analysis
uses). This module is their public face, and finds the state keys that only hold scalars.
"""

from __future__ import annotations

import libcst as cst

from gsr_rewrite.frontend.calls import Evaluator, store_in_state
from gsr_rewrite.frontend.records import OPAQUE, SHAPED, Alloc, Effects, Unknowns
from gsr_rewrite.frontend.syntax import const_key, dotted, names_in
from gsr_rewrite.frontend.values import (
    EMPTY,
    LIST,
    Buf,
    Value,
    buffers,
    element,
    flat,
    is_buffer,
    is_role,
    item,
)

__all__ = ["EMPTY", "LIST", "OPAQUE", "SHAPED", "Alloc", "Buf", "Effects", "Evaluator", "Unknowns",
           "Value", "buffers", "dotted", "element", "flat", "is_buffer", "is_role",
           "item", "names_in", "scalar_state_keys", "store_in_state"]

_SCALAR_MAKERS = {"torch.tensor", "torch.zeros", "torch.ones", "torch.full", "torch.as_tensor"}


def scalar_state_keys(module: cst.Module) -> frozenset[str]:
    """State keys that every assignment in the module gives a scalar (`0`, `torch.tensor(0.)`).

    A key assigned anything else even once (`zeros_like(p)`, `grad.clone()`) is a tensor buffer.
    """
    scalar: set[str] = set()
    tensor: set[str] = set()

    def is_scalar(v: cst.BaseExpression) -> bool:
        if isinstance(v, (cst.Integer, cst.Float)):
            return True
        if isinstance(v, cst.UnaryOperation):
            return is_scalar(v.expression)
        if isinstance(v, cst.IfExp):  # `torch.zeros(()) if capturable else torch.tensor(0.0)`
            return is_scalar(v.body) and is_scalar(v.orelse)
        if isinstance(v, cst.Call) and dotted(v.func) == "torch.tensor":
            return True  # `torch.tensor(step_val)`: a copy of data, aliasing no buffer
        if isinstance(v, cst.Call) and isinstance(v.func, cst.Attribute) and \
                v.func.attr.value in ("clone", "detach", "to"):
            inner = v.func.value  # `torch.as_tensor(lr).clone()`: a fresh copy of a maker's tensor
            return is_scalar(inner) or (v.func.attr.value == "clone" and isinstance(
                inner, cst.Call) and dotted(inner.func) in _SCALAR_MAKERS)
        if isinstance(v, cst.Call) and dotted(v.func) in _SCALAR_MAKERS:
            first = v.args[0].value if v.args else None
            return first is None or isinstance(first, (cst.Integer, cst.Float, cst.Tuple,
                                                       cst.List, cst.UnaryOperation))
        return False

    class _V(cst.CSTVisitor):
        def visit_Assign(self, node: cst.Assign) -> None:
            for t in node.targets:
                if isinstance(t.target, cst.Subscript):
                    key = const_key(t.target)
                    if key is not None:
                        (scalar if is_scalar(node.value) else tensor).add(key)

    module.visit(_V())
    return frozenset(scalar - tensor)
