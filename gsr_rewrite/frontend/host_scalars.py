"""Which optimizer-state entries only ever hold host scalars (`scalar_state_keys`): every
assignment anywhere in the analysed modules gives a Python number (`state["rho_t"] = rho_inf - 2 *
step * beta2 ** step / (1 - beta2 ** step)`, `state["step"] += 1`) or a 0-dim tensor made from one
(`torch.tensor(0.)`, torch.optim's step). The evaluator reads such an entry as a scalar: arithmetic
on it is no parameter-sized temporary.

Default-deny: one write that could be a tensor of another shape (`zeros_like(p)`, an unknown call,
a function parameter, a name bound in a way not modelled here) makes the key a tensor buffer.
Numbers are recognised in the function that computes them: constants, arithmetic, comparisons,
conditionals, `math.*`, `float()`, `int()`, `len()`, `.item()`, param-group options (host scalars
to the whole analysis), host-scalar state entries (a greatest fixpoint: every write keeps the
entry a number, and state starts empty), and names every binding of which is one of these.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import libcst as cst

from gsr_rewrite.frontend.bindings import (
    Bindings,
    bound_arguments,
    bound_by,
    is_group,
    is_state,
    returns_of,
)
from gsr_rewrite.frontend.scopes import is_generator
from gsr_rewrite.frontend.source import module_imports
from gsr_rewrite.frontend.syntax import const_key, dotted, names_in

_SCALAR_MAKERS = {"torch.tensor", "torch.zeros", "torch.ones", "torch.full", "torch.as_tensor"}
#: builtins whose result is a Python number whatever they are given (or they raise)
#: levels of host data: DATA may be a tuple of numbers or None (`group["betas"]`); SCALAR is one
#: number or 0-dim tensor (an option, which the analysis treats as a host scalar everywhere, or an
#: element of one); NUMBER is made from constants and state entries only (`torch.tensor(x)` of
#: it is 0-dim)
DATA, SCALAR, NUMBER = 0, 1, 2
_TO_NUMBER = {"float", "int", "bool", "len"}
#: builtins whose result is a number when every argument is one
_OF_NUMBERS = {"min", "max", "abs", "round", "pow"}


class _Function:
    """What one function's own names are: host data, scalar numbers, param groups, parameters'
    state dicts. Host data (`data`) is a number, a tuple of them, a param group's option or a
    host-scalar state entry; a scalar (`scalar`) is one number and nothing else."""

    def __init__(self, func: cst.FunctionDef | None, host: _Host,
                 seeds: dict[int, frozenset[str]] | None = None) -> None:
        self.host = host
        b = Bindings(func, params_bad=seeds is None) if func is not None else None
        if b is not None and func is not None:
            func.visit(b)
        self.b = b
        #: a helper judged at one call (Host.returns_scalar): its parameters, never bound again
        #: in its body, are at each level what the call gives them
        self.seeds = seeds or {}
        if b is not None and seeds is not None:
            rebound = {n for n, _ in [*b.values, *b.elements]} | b.ranges | b.bad
            kept = set().union(*seeds.values()) - rebound  # (a parameter bound again may
            b.bad |= b.params - kept  # still hold what the call gave it on some path: bad)
            self.seeds = {k: v & kept for k, v in seeds.items()}
        self.groups = _only(b.groups, b.bad) if b else frozenset()
        self.states = _only(b.states, b.bad) if b else frozenset()
        self.shadowed = (b.bad | b.loops | {n for n, _ in [*b.values, *b.elements]} | b.ranges) \
            if b else frozenset()
        self.names: dict[int, frozenset[str]] = {DATA: frozenset(), SCALAR: frozenset(),
                                                 NUMBER: frozenset()}
        self.keys: frozenset[str] = frozenset()

    def solve(self, keys: frozenset[str]) -> None:
        """For both judgments, the greatest set of names every binding of which is one."""
        b = self.b
        self.keys = keys
        if b is None:
            return
        for level in (DATA, SCALAR, NUMBER):
            names = ({n for n, _ in [*b.values, *b.elements]} | b.ranges) - b.bad - b.loops
            while True:
                self.names[level] = frozenset(names) | self.seeds.get(level, frozenset())
                bad = {n for n, v in b.values if n in names and not self.data(v, level)}
                # an element of host data (a param group's option): a scalar, never a number
                bad |= {n for n, v in b.elements if n in names and
                        (level == NUMBER or not self.data(v, DATA))}
                if not bad:
                    break
                names -= bad

    def made_scalar(self, v: cst.BaseExpression) -> bool:
        """A 0-dim tensor made from a number (`torch.tensor(0.)`, `torch.zeros(())`,
        `torch.zeros((), device=d) if capturable else torch.tensor(0.0)`), or host data."""
        if isinstance(v, cst.IfExp):
            return self.made_scalar(v.body) and self.made_scalar(v.orelse)
        if isinstance(v, cst.Call) and isinstance(v.func, cst.Attribute) and \
                v.func.attr.value in ("clone", "detach", "to"):
            return self.made_scalar(v.func.value)  # `torch.as_tensor(lr).clone()`: a copy
        if isinstance(v, cst.Call) and isinstance(v.func, cst.Name) and \
                v.func.value not in self.shadowed and v.func.value in self.host.functions:
            return self.host.returns_scalar(v.func.value, v, self)
        if isinstance(v, cst.Call) and dotted(v.func) in _SCALAR_MAKERS:
            pos = [a.value for a in v.args if a.keyword is None]
            if any(a.star for a in v.args):
                return False
            if dotted(v.func) in ("torch.tensor", "torch.as_tensor"):
                return bool(pos) and (self.data(pos[0], NUMBER) or self._one(pos[0]))
            size = pos[0] if pos else next((a.value for a in v.args if a.keyword is not None
                                            and a.keyword.value == "size"), None)
            return size is None or (isinstance(size, (cst.Tuple, cst.List))  # the shape `()`
                                    and not size.elements)  # (`size=p.shape`: no scalar)
        return self.data(v, SCALAR)

    def _one(self, e: cst.BaseExpression) -> bool:
        """torch.optim's `_to_scalar(group["lr"])`: a number, or a 1-element tensor option made
        0-dim (its contract)."""
        if not isinstance(e, cst.Call) or len(e.args) != 1 or e.args[0].star or \
                not isinstance(e.func, cst.Name) or e.func.value in self.shadowed:
            return False
        origin = self.host.imports.get(e.func.value, "")
        owner, _, name = origin.rpartition(".")
        torch_one = name == "_to_scalar" and (owner == "torch.optim.optimizer" or (
            owner.startswith(".") and "torch.optim.optimizer".endswith(owner.lstrip("."))))
        x = e.args[0].value  # an option of a group (step's own, or a helper's parameter)
        option = isinstance(x, cst.Subscript) and const_key(x) not in (None, "params") and \
            isinstance(x.value, cst.Name) and x.value.value not in self.states
        return torch_one and (option or self.data(x))

    def data(self, e: cst.BaseExpression, level: int = DATA) -> bool:
        """Host data the analysis may treat as a scalar, at `level` (see DATA, SCALAR, NUMBER)."""
        if isinstance(e, (cst.Integer, cst.Float, cst.Imaginary)):
            return True
        if isinstance(e, cst.Name):
            return e.value in self.names[level] or (
                e.value in ("True", "False") + (("None",) if level == DATA else ())
                and e.value not in self.shadowed)
        if isinstance(e, cst.UnaryOperation):
            return self.data(e.expression, level)
        if isinstance(e, (cst.BinaryOperation, cst.BooleanOperation)):
            return self.data(e.left, level) and self.data(e.right, level)
        if isinstance(e, cst.IfExp):
            return self.data(e.body, level) and self.data(e.orelse, level)
        if isinstance(e, cst.Comparison):
            return self.data(e.left, level) and all(self.data(c.comparator, level)
                                                     for c in e.comparisons)
        if isinstance(e, cst.Tuple):  # (a list may be given tensors later)
            return level == DATA and all(not isinstance(el, cst.StarredElement) and
                                      self.data(el.value) for el in e.elements)
        if isinstance(e, cst.Subscript):
            return self._option(e, level)
        if isinstance(e, cst.Call):
            return self._call(e, level)
        return False

    def _call(self, e: cst.Call, level: int) -> bool:
        name = dotted(e.func)
        if name is not None and self.host.is_math(name, self.shadowed):
            return True  # a Python number (or it raises)
        if isinstance(e.func, cst.Name) and name not in self.shadowed and \
                name not in self.host.top_level:
            if name in _TO_NUMBER:
                return True
            if name in _OF_NUMBERS:
                return bool(e.args) and all(a.keyword is None and not a.star and
                                            self.data(a.value, max(level, SCALAR))
                                            for a in e.args)
        f = e.func
        if isinstance(f, cst.Attribute) and f.attr.value == "item" and not e.args:
            return True  # a Python number, whatever tensor it is called on
        if isinstance(f, cst.Attribute) and f.attr.value == "get" and \
                1 <= len(e.args) <= 2 and all(a.keyword is None and not a.star for a in e.args):
            key = cst.Subscript(f.value, [cst.SubscriptElement(cst.Index(e.args[0].value))])
            return self._option(key, level) and (len(e.args) == 1 or
                                                 self.data(e.args[1].value, level))
        return False

    def _option(self, e: cst.Subscript, level: int = DATA) -> bool:
        """`group["lr"]`, `self.defaults["lr"]` (host data), `state["step"]` of a host-scalar
        entry (a scalar)."""
        key = const_key(e)
        base = e.value
        if key is None:
            return False
        if (isinstance(base, cst.Name) and base.value in self.groups) or is_group(base) or \
                dotted(base) == "self.defaults":
            return key != "params" and level < NUMBER
        if (isinstance(base, cst.Name) and base.value in self.states) or is_state(base):
            return key in self.keys
        return False


def _only(pairs: list[tuple[str, bool]], bad: set[str]) -> frozenset[str]:
    """Names every binding of which is of the kind."""
    return frozenset({n for n, ok in pairs if ok} - {n for n, ok in pairs if not ok} - bad)


class _Host:
    """The module's names of `math` and of its functions, and its top-level bindings."""

    def __init__(self, module: cst.Module) -> None:
        imports = module_imports(module)
        self.top_level: set[str] = set()
        for stmt in module.body:
            if isinstance(stmt, (cst.FunctionDef, cst.ClassDef)):
                self.top_level.add(stmt.name.value)
            elif isinstance(stmt, cst.SimpleStatementLine):
                for s in stmt.body:
                    if isinstance(s, (cst.Assign, cst.AnnAssign, cst.AugAssign)):
                        targets = [t.target for t in s.targets] if isinstance(s, cst.Assign) \
                            else [s.target]
                        self.top_level.update(n for t in targets for n in bound_by(t))
            else:  # a compound statement at the top level may bind anything
                self.top_level.update(names_in(stmt))  # (every name it mentions)
        self.imports = imports
        defs: dict[str, list[cst.FunctionDef]] = {}
        for stmt in module.body:
            if isinstance(stmt, cst.FunctionDef):
                defs.setdefault(stmt.name.value, []).append(stmt)
        #: module functions by name (a name two modules define: neither, it is ambiguous)
        self.functions = {k: fs[0] for k, fs in defs.items() if len(fs) == 1}
        self._judging: set[str] = set()  # (a helper that calls itself: not judged again)
        self.math = {k for k, v in imports.items() if v == "math"} - self.top_level
        self.math_functions = {k for k, v in imports.items() if v.startswith("math.")} - \
            self.top_level

    def returns_scalar(self, name: str, call: cst.Call, caller: _Function) -> bool:
        """Does the module function `name`, called so from `caller`, return a 0-dim tensor or
        a number on every path (timm's `_init_scalar(value=0., device=None)`: `value` itself
        when it is a tensor, else `torch.tensor(value, ...)`)? Each parameter is what the call
        gives it (or its default, a constant); every `return` must be `made_scalar`, and the
        body must end in one (falling off the end returns None)."""
        func = self.functions[name]
        body = func.body.body if isinstance(func.body, cst.IndentedBlock) else ()
        bound = bound_arguments(func, call)
        if name in self._judging or bound is None or not body or \
                not isinstance(body[-1], cst.SimpleStatementLine) or \
                not isinstance(body[-1].body[-1], cst.Return) or is_generator(func):
            return False
        constants = _Function(None, self)
        judges: dict[int, Callable[[cst.BaseExpression], bool]] = {
            DATA: caller.data, SCALAR: caller.made_scalar,
            NUMBER: lambda e: caller.data(e, NUMBER)}
        seeds = {level: frozenset(p for p, (arg, default) in bound.items()
                                  if (judge(arg) if arg is not None else
                                      default is not None and constants.data(default, level)))
                 for level, judge in judges.items()}
        self._judging.add(name)
        try:
            helper = _Function(func, self, seeds)
            helper.solve(caller.keys)
            return all(r.value is not None and helper.made_scalar(r.value)
                       for r in returns_of(func))
        finally:
            self._judging.discard(name)

    def is_math(self, name: str, shadowed: Iterable[str]) -> bool:
        first, _, rest = name.partition(".")
        if first in shadowed:
            return False
        return (first in self.math and bool(rest) and "." not in rest) or \
            (not rest and first in self.math_functions)


#: in-place ops that give a tensor another shape: a 0-d entry unsqueezed in the step that made
#: it is no host scalar, and the R step's check when it starts saw no entry yet
_RESHAPE_IN_PLACE = frozenset({"unsqueeze_", "squeeze_", "resize_", "resize_as_", "set_",
                               "as_strided_", "t_", "transpose_", "swapdims_", "swapaxes_",
                               "swap_tensors", "set_data"})


def scalar_state_keys(module: cst.Module) -> frozenset[str]:
    """State keys every write of which in the module is a host scalar (see the module doc):
    `d[k] = v`, `d[k] += v`, `d.setdefault(k, v)`, `d.update(k=v)`, `dict(k=v)`, `{k: v}`.
    None where the module reshapes a tensor in place (`x.unsqueeze_(0)`, `x.data = y`)."""
    if any(isinstance(n, cst.Attribute) and n.attr.value in _RESHAPE_IN_PLACE or
           isinstance(n, (cst.AssignTarget, cst.AugAssign)) and isinstance(
               n.target, cst.Attribute) and n.target.attr.value == "data"
           for n in _walk(module)):
        return frozenset()
    host = _Host(module)
    writes: list[tuple[_Function, str, cst.BaseExpression]] = []
    functions: list[_Function] = []
    outer = _Function(None, host)

    class _V(cst.CSTVisitor):
        def __init__(self) -> None:
            self.stack = [outer]

        def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
            self.stack.append(_Function(node, host))
            functions.append(self.stack[-1])

        def leave_FunctionDef(self, original_node: cst.FunctionDef) -> None:
            self.stack.pop()

        def _write(self, key: str | None, value: cst.BaseExpression) -> None:
            if key is not None:
                writes.append((self.stack[-1], key, value))

        def visit_Assign(self, node: cst.Assign) -> None:
            for t in node.targets:
                if isinstance(t.target, cst.Subscript):
                    self._write(const_key(t.target), node.value)

        def visit_AugAssign(self, node: cst.AugAssign) -> None:
            if isinstance(node.target, cst.Subscript):  # `state["step"] += 1`
                self._write(const_key(node.target), node.value)

        def visit_DictElement(self, node: cst.DictElement) -> None:
            if isinstance(node.key, cst.SimpleString):
                self._write(str(node.key.evaluated_value), node.value)

        def visit_Call(self, node: cst.Call) -> None:
            f = node.func
            if isinstance(f, cst.Attribute) and f.attr.value == "setdefault" and \
                    len(node.args) == 2 and isinstance(node.args[0].value, cst.SimpleString):
                self._write(str(node.args[0].value.evaluated_value), node.args[1].value)
            if dotted(f) == "dict" or (isinstance(f, cst.Attribute) and f.attr.value == "update"):
                for a in node.args:
                    if a.keyword is not None:
                        self._write(a.keyword.value, a.value)

    module.visit(_V())
    keys = frozenset(k for _, k, _ in writes)
    while True:  # from every key written down to those every write keeps host scalars
        for f in [outer, *functions]:
            f.solve(keys)
        new = keys - {k for f, k, v in writes if not f.made_scalar(v)}
        if new == keys:
            return keys
        keys = new


def _walk(node: cst.CSTNode) -> Iterable[cst.CSTNode]:
    yield node
    for child in node.children:
        yield from _walk(child)
