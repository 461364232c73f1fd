"""The evaluator's second layer: tensor methods and torch functions as the op catalog describes
them (views, reductions, in-place and allocating ops), and the default-deny answer for a call the
analysis does not know."""

from __future__ import annotations

import libcst as cst

from gsr_rewrite.frontend.expressions import ExpressionEvaluator
from gsr_rewrite.frontend.records import OPAQUE, PARTIAL, SHAPED
from gsr_rewrite.frontend.syntax import dotted
from gsr_rewrite.frontend.values import EMPTY, Value, buffers, flat

#: torch namespaces of functions of tensor data only (no `.grad`, no module state)
DATA_NAMESPACES = ("linalg.", "special.", "fft.", "_C._linalg.", "ops.aten.")
#: catalog views that always share all of their receiver's elements; the others (`narrow`,
#: `select`, `expand`, and `reshape`, `flatten`, `contiguous` and the conversions, which may
#: copy) may not: writing every element of their result is no kill of the receiver
_WHOLE_VIEW_METHODS = frozenset({"view", "view_as", "squeeze", "unsqueeze", "unflatten", "t",
                                 "transpose", "permute", "detach", "data", "view_as_real",
                                 "view_as_complex"})


#: torch functions that make a tensor from sizes or data (`torch.full(p.shape, 0.1)`): of
#: dimensions unless given none (`_made`); never a host scalar then, which decides neither a
#: product's shape nor its dtype (a float64 `torch.ones(1, dtype=float64)` does)
_MAKERS = frozenset({"zeros", "ones", "full", "empty", "rand", "randn", "randint", "randperm",
                     "arange", "linspace", "logspace", "eye", "empty_strided", "tensor",
                     "as_tensor", "asarray", "from_numpy", "atleast_1d", "atleast_2d",
                     "atleast_3d", "broadcast_to", "stack", "cat", "concat", "concatenate"})
#: views that may give a 0-d tensor dimensions (of a host scalar: `.view(1)`)
_ADDS_DIMENSIONS = frozenset({"view", "reshape", "unsqueeze", "expand", "flatten", "ravel",
                              "unflatten", "view_as", "reshape_as", "expand_as", "broadcast_to"})
#: `torch.linalg` functions that reduce (the others make matrices or views: `diagonal`)
_LINALG_REDUCTIONS = frozenset({"linalg.norm", "linalg.vector_norm", "linalg.matrix_norm",
                                "linalg.det", "linalg.cond", "linalg.matrix_rank"})
#: operators that compare element by element, as the op catalog names them
_COMPARISONS: dict[type, str] = {cst.GreaterThan: "gt", cst.LessThan: "lt",
                                 cst.GreaterThanEqual: "ge", cst.LessThanEqual: "le",
                                 cst.Equal: "eq", cst.NotEqual: "ne"}


class TensorOpEvaluator(ExpressionEvaluator):
    """`x.op(...)` and `torch.op(...)`, and calls nothing in the analysis knows."""

    def _comparison(self, node: cst.Comparison) -> Value:
        """`a > b` of a tensor is a new bool tensor of the operands' broadcast shape: the op
        `gt` allocating, as `torch.gt(a, b)` does (no dead buffer takes it: op_catalog.toml);
        a chain `a < b < c` is a tensor of unknown shape (SHAPED) where a link holds one. `is`
        (no contents read), `in` (`x in t` compares with t's elements) and comparisons of
        numbers make a bool."""
        operands = [node.left, *(c.comparator for c in node.comparisons)]
        if all(isinstance(c.operator, (cst.Is, cst.IsNot)) for c in node.comparisons):
            for e in operands:
                self.peek(e)
            return EMPTY
        inputs = frozenset().union(*map(self.read, operands))
        if any(isinstance(c.operator, (cst.In, cst.NotIn)) for c in node.comparisons):
            return EMPTY
        op = _COMPARISONS.get(type(node.comparisons[0].operator))
        if len(node.comparisons) == 1 and op is not None:
            return self._alloc(node, op, "operator", operands, inputs)
        return flat(inputs) & {OPAQUE, SHAPED} | ({SHAPED} if buffers(inputs) else EMPTY)

    def _method(self, node: cst.Call, func: cst.Attribute, recv: Value) -> Value:
        m = func.attr.value
        cat = self.cat
        if m in cat.metadata or m in cat.constructor:  # x.new_zeros(n): only metadata of x
            given = frozenset().union(*(self.read(a.value) for a in node.args))
            return _made(node, m, given) if m in cat.constructor else EMPTY
        if m in cat.view:
            got = self._note_read(func.value, recv) if m == "contiguous" else recv
            if not buffers(got) and m in _ADDS_DIMENSIONS:  # `torch.tensor(0.1).view(1)`
                return got | {SHAPED}
            return got if m in _WHOLE_VIEW_METHODS or not buffers(got) else got | {PARTIAL}
        if m in cat.reduce:
            self._note_read(func.value, recv)
            for a in node.args:
                self.read(a.value)
            if m in ("max", "min") and len(node.args) == 1 and not _is_int(node.args[0].value) \
                    and node.args[0].keyword is None:  # `x.max(y)`: elementwise
                return self._alloc(node, m + "imum", "method", [func.value, node.args[0].value],
                                   recv | self.value(node.args[0].value))
            return _reduced(node, 0)
        if m in cat.inplace_kill:
            for a in node.args:
                self.read(a.value)
            self._overwrite(func.value, recv)
            return recv
        if m in cat.creation:  # x.clone()
            self._note_read(func.value, recv)
            return self._alloc(node, m, "method", [func.value], recv)
        if m in cat.elementwise:
            operands = [func.value, *[a.value for a in node.args if a.keyword is None]]
            v = self._note_read(func.value, recv)
            for a in node.args:
                v |= self.read(a.value)
            return self._alloc(node, m, "method", operands, v)
        if m.endswith("_") and (cat.inplace_base(m) or m[:-1] in cat.elementwise):
            self._note_read(func.value, recv)
            for a in node.args:
                self.read(a.value)
            var = func.value.value if isinstance(func.value, cst.Name) else "@expr"
            for b in self.touched(recv):
                self.eff.writes.append((var, b))
            return recv
        self._note_read(func.value, recv)
        args = [(a, self.read(a.value)) for a in node.args]
        for b in buffers(recv):
            self.eff.escapes.append((b, f"method `.{m}()` is not in the op catalog", node))
        return self._unknown_call(node, f"method `.{m}()`, which is not in the op catalog,",
                                  recv, args)

    def _torch(self, node: cst.Call, fn: str) -> Value:
        cat = self.cat
        pos = [a.value for a in node.args if a.keyword is None]
        out_arg = next((a.value for a in node.args if a.keyword and a.keyword.value == "out"), None)
        if fn.startswith("_foreach_"):
            base = fn[len("_foreach_"):]
            if base in cat.inplace_kill or fn in cat.inplace_kill:  # _foreach_copy_, _foreach_zero_
                for a in pos[1:]:
                    self.read(a)
                self._overwrite(pos[0], self.peek(pos[0]))
                return EMPTY
            if base.endswith("_"):
                target = self.read(pos[0])
                for arg in node.args[1:]:
                    self.read(arg.value)
                var = pos[0].value if isinstance(pos[0], cst.Name) else "@expr"
                for b in self.touched(target):
                    self.eff.writes.append((var, b))
                return EMPTY
            v = EMPTY
            for arg in node.args:
                v |= self.read(arg.value)
            if base in cat.elementwise:
                return self._alloc(node, base, "foreach", pos, v)
            return EMPTY  # _foreach_norm and friends: not parameter-sized
        args_v = EMPTY
        for arg in node.args:
            if out_arg is None or arg.value is not out_arg:
                args_v |= self.read(arg.value)
        if out_arg is not None:
            target = self.peek(out_arg)
            var = out_arg.value if isinstance(out_arg, cst.Name) else "@expr"
            for b in self.touched(target):
                self.eff.writes.append((var, b))
            return target
        if fn in cat.creation:
            return self._alloc(node, fn, "creation", pos[:1], args_v)
        if fn in cat.elementwise:
            return self._alloc(node, fn, "function", pos, args_v)
        if fn in ("max", "min") and len(pos) == 2 and not _is_int(pos[1]):
            # `torch.max(a, b)`: the elementwise maximum (torch.maximum), parameter-sized
            return self._alloc(node, fn + "imum", "function", pos, args_v)
        if fn in cat.reduce or fn in _LINALG_REDUCTIONS:
            return _reduced(node, 1)  # a reduction: 0-d without dims, else of unknown shape
        if fn in cat.metadata or fn.startswith("is_"):
            return EMPTY  # not a tensor of the step: a bool (`torch.is_complex(p)`), a shape
        if fn in _MAKERS:  # a new tensor of a given shape, made from numbers
            return args_v | _made(node, fn, args_v)
        if fn.endswith("_"):  # unknown in-place torch function (`torch._fused_adam_`)
            for b in buffers(flat(args_v)):  # (the tensors of lists it is given too)
                self.eff.writes.append(("@expr", b))
        if "." in fn and not fn.startswith(DATA_NAMESPACES) and flat(args_v) & {
                "param", OPAQUE, "%self", "%group", "%groups", "%statedict", "%pstate"}:
            # `torch.nn.utils.clip_grad_norm_(params)` reads and writes the params' .grad (the
            # ops of `torch.` itself see the data of the tensors they are given, never .grad)
            self._touch_all(node, f"`torch.{fn}` is given params and may use their gradients")
        return args_v  # unknown torch function: its result may alias its arguments

    def _overwrite(self, target: cst.BaseExpression, v: Value) -> None:
        bufs = self.touched(v)
        if len(bufs) == 1 and OPAQUE not in v and PARTIAL not in flat(v):
            self.eff.kills |= bufs
        var = target.value if isinstance(target, cst.Name) else "@expr"
        for b in bufs:
            self.eff.writes.append((var, b))

    def _unknown_call(self, node: cst.Call, what: str, recv: Value,
                      args: list[tuple[cst.Arg, Value]], given_self: bool = False) -> Value:
        """Default-deny: what it is given escapes; when it can reach the optimizer's buffers
        (through its arguments, the items of lists it is given, or `self` a method is given)
        it may read and write all of them and keep the gradients; its result may be anything
        it was given, or anything at all."""
        given = flat(recv.union(*(v for _, v in args)))  # `f(*[group])`: the list's items too
        # a class whose methods hand the object to other code (`registry.add(self)` in
        # __init__): any function may reach it through what that code kept
        given_self = given_self or self.unknowns.self_handed_away
        reach = given | ({"%self"} if given_self else EMPTY)
        for a, v in args:
            for b in buffers(v):
                self.eff.escapes.append((b, f"passed to {what}", a))
        if reach & {"%self", "%group", "%groups", "%statedict", "%pstate", OPAQUE, "param",
                    "grad"} or any(b.startswith("state:") for b in reach):
            self._touch_all(node, f"{what} can reach every gradient")
        return self._opaque() | given

    def code_run_here(self, node: cst.CSTNode, why: str) -> None:
        self._touch_all(node, f"{why} can reach every gradient")

    def _touch_all(self, node: cst.CSTNode, why: str) -> None:
        """Code the analysis cannot see, run here with access to the optimizer: it may read and
        write every param, gradient and state tensor, and keep the gradients."""
        for b in self.unknowns.roles:
            self.eff.reads.append(("@expr", b, node))
            self.eff.writes.append(("@expr", b))
        self.eff.escapes.append(("grad", why, node))
        self.eff.foreign = 2


def _is_int(e: cst.BaseExpression) -> bool:
    return isinstance(e, cst.Integer) or (isinstance(e, cst.UnaryOperation)
                                          and isinstance(e.expression, cst.Integer))


def _made(node: cst.Call, maker: str, given: Value) -> Value:
    """What `torch.zeros(...)`, `x.new_full(...)`, `torch.tensor(...)` make: 0-d (a host
    scalar) when made from a number (`torch.tensor(-lr)`) or an empty size (`x.new_zeros(())`),
    else a tensor of dimensions that aliases nothing (SHAPED)."""
    first = next((a.value for a in node.args if a.keyword is None or a.keyword.value in
                  ("size", "data")), None)
    if maker in _FROM_DATA and first is not None and _a_number(first) and \
            not buffers(given) and not flat(given) & {OPAQUE, SHAPED}:
        return EMPTY  # (`given`: what its arguments hold; `torch.tensor(-g)` is g's shape)
    if maker in _FROM_SIZE and isinstance(first, (cst.Tuple, cst.List)) and not first.elements:
        return EMPTY
    return frozenset({SHAPED})


def _a_number(e: cst.BaseExpression) -> bool:
    """`e` gives a number if anything, given host values: a literal, `-x`, `x / y` (on a list
    they raise: `torch.tensor(-lr)`), `float(x)`, `math.f(x)`, `x.item()`. Not a name (it may
    hold a list: `torch.tensor(vals)`), nor `x + y`, `x * y` (`[x] * 2` is a list)."""
    if isinstance(e, (cst.Integer, cst.Float)):
        return True
    if isinstance(e, cst.UnaryOperation):
        return isinstance(e.operator, (cst.Minus, cst.Plus))
    if isinstance(e, cst.BinaryOperation):
        return not isinstance(e.operator, (cst.Add, cst.Multiply))
    if isinstance(e, cst.Call):
        name = dotted(e.func) or ""
        return name in ("float", "int") or name.startswith("math.") or \
            isinstance(e.func, cst.Attribute) and e.func.attr.value == "item"
    return False


_FROM_DATA = frozenset({"tensor", "as_tensor", "asarray", "new_tensor"})
_FROM_SIZE = frozenset({"zeros", "ones", "full", "empty", "rand", "randn", "new_zeros",
                        "new_ones", "new_empty", "new_full"})


def _reduced(node: cst.Call, first: int) -> Value:
    """A reduction's result: a 0-d tensor (a host scalar to the analysis, it broadcasts like
    one) when it is given no dimension and does not keep them, else SHAPED (`keepdim=True`: a
    tensor of dimensions, which decides a product's dtype as a 0-d one does not)."""
    dims = [a for a in node.args[first:] if a.keyword is None or a.keyword.value in
            ("dim", "axis", "keepdim", "keepdims", "other")]
    return frozenset({SHAPED}) if dims else EMPTY
