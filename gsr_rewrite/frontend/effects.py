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
uses). This module is their public face; the state keys that only hold scalars are found by
host_scalars.py.
"""

from __future__ import annotations

from gsr_rewrite.frontend.calls import Evaluator, store_in_state
from gsr_rewrite.frontend.host_scalars import scalar_state_keys
from gsr_rewrite.frontend.records import (
    LOCAL_DICT,
    OPAQUE,
    SHAPED,
    UNNAMED_STATE,
    Alloc,
    Effects,
    Unknowns,
)
from gsr_rewrite.frontend.syntax import dotted, names_in
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

__all__ = ["EMPTY", "LIST", "LOCAL_DICT", "OPAQUE", "SHAPED", "UNNAMED_STATE", "Alloc", "Buf",
           "Effects", "Evaluator", "Unknowns", "Value", "buffers", "dotted", "element", "flat",
           "is_buffer", "is_role", "item", "names_in", "scalar_state_keys", "store_in_state"]
