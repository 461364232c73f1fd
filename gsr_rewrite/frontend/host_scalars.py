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

from collections.abc import Iterable

import libcst as cst

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


class _Bindings(cst.CSTVisitor):
    """Every binding of a name in one function's own scope: (name, value) where the name is
    bound to a value this module can judge, `bad` where it is bound any other way."""

    def __init__(self, root: cst.FunctionDef) -> None:
        self.root = root
        self.values: list[tuple[str, cst.BaseExpression]] = []
        self.ranges: set[str] = set()  # `for i in range(...)`: an int
        self.groups: list[tuple[str, bool]] = []  # (name, bound to a param group)
        self.states: list[tuple[str, bool]] = []  # (name, bound to self.state[p])
        self.loops: set[str] = set()  # `for group in self.param_groups`
        self.elements: list[tuple[str, cst.BaseExpression]] = []  # `a, b = value`
        p = root.params
        star = [p.star_arg] if isinstance(p.star_arg, cst.Param) else []
        kwargs = [p.star_kwarg] if p.star_kwarg is not None else []
        self.bad: set[str] = {x.name.value for x in (*p.posonly_params, *p.params, *star,
                                                      *p.kwonly_params, *kwargs)}
        self._comprehension = 0

    def _bind(self, target: cst.BaseExpression, value: cst.BaseExpression | None) -> None:
        if isinstance(target, cst.Name):
            if value is None:
                self.bad.add(target.value)
            else:
                self.values.append((target.value, value))
                self.groups.append((target.value, _is_group(value)))
                self.states.append((target.value, _is_state(value)))
        elif isinstance(target, (cst.Tuple, cst.List)):
            els = target.elements
            if any(isinstance(el, cst.StarredElement) for el in els):
                self.bad.update(_names(target))
            elif isinstance(value, (cst.Tuple, cst.List)) and len(value.elements) == len(els) \
                    and not any(isinstance(x, cst.StarredElement) for x in value.elements):
                for el, x in zip(els, value.elements, strict=True):
                    self._bind(el.value, x.value)
            else:  # `beta1, beta2 = group["betas"]`: scalars when the whole is host data
                for el in els:
                    if isinstance(el.value, cst.Name) and value is not None:
                        self.elements.append((el.value.value, value))
                    else:
                        self.bad.update(_names(el.value))

    def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
        if node is self.root:
            return True
        self.bad.add(node.name.value)
        return False

    def visit_ClassDef(self, node: cst.ClassDef) -> bool:
        self.bad.add(node.name.value)
        return False

    def visit_Lambda(self, node: cst.Lambda) -> bool:
        return False

    def visit_CompFor(self, node: cst.CompFor) -> None:
        self._comprehension += 1

    def leave_CompFor(self, original_node: cst.CompFor) -> None:
        self._comprehension -= 1

    def visit_Assign(self, node: cst.Assign) -> None:
        for t in node.targets:
            self._bind(t.target, node.value)

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        if node.value is not None:
            self._bind(node.target, node.value)

    def visit_AugAssign(self, node: cst.AugAssign) -> None:
        if isinstance(node.target, cst.Name):  # `x += v`: a number when x and v are
            self.values.append((node.target.value, node.value))

    def visit_NamedExpr(self, node: cst.NamedExpr) -> None:
        if self._comprehension:  # its value may name the comprehension's own variables
            self.bad.update(_names(node.target))
        else:
            self._bind(node.target, node.value)

    def visit_For(self, node: cst.For) -> None:
        it = node.iter
        fn = dotted(it.func) if isinstance(it, cst.Call) else None
        target = node.target
        if fn == "range" and isinstance(target, cst.Name):
            self.ranges.add(target.value)
        elif fn == "enumerate" and isinstance(target, cst.Tuple) and \
                len(target.elements) == 2 and isinstance(target.elements[0].value, cst.Name):
            self.ranges.add(target.elements[0].value.value)
            self.bad.update(_names(target.elements[1].value))
        elif isinstance(target, cst.Name) and dotted(it) == "self.param_groups":
            self.loops.add(target.value)  # a param group: never a number itself
            self.groups.append((target.value, True))
        else:
            self.bad.update(_names(target))

    def visit_AsName(self, node: cst.AsName) -> None:  # with ... as x, except E as x, imports
        self.bad.update(_names(node.name))

    def visit_ImportAlias(self, node: cst.ImportAlias) -> None:
        self.bad.update(_names(node.name))

    def visit_Global(self, node: cst.Global) -> None:
        self.bad.update(n.name.value for n in node.names)

    def visit_Nonlocal(self, node: cst.Nonlocal) -> None:
        self.bad.update(n.name.value for n in node.names)

    def visit_MatchAs(self, node: cst.MatchAs) -> None:
        if node.name is not None:
            self.bad.add(node.name.value)

    def visit_MatchStar(self, node: cst.MatchStar) -> None:
        if node.name is not None:
            self.bad.add(node.name.value)

    def visit_MatchMapping(self, node: cst.MatchMapping) -> None:
        if node.rest is not None:
            self.bad.add(node.rest.value)


def _names(t: cst.CSTNode) -> list[str]:
    if isinstance(t, cst.Name):
        return [t.value]
    if isinstance(t, (cst.Tuple, cst.List)):
        return [n for el in t.elements for n in _names(el.value)]
    if isinstance(t, cst.StarredElement):
        return _names(t.value)
    if isinstance(t, cst.Attribute):  # `import a.b` binds a
        return _names(t.value)
    return []


def _is_group(v: cst.BaseExpression) -> bool:
    return isinstance(v, cst.Subscript) and dotted(v.value) == "self.param_groups"


def _is_state(v: cst.BaseExpression) -> bool:
    """`self.state[p]`, `self.state.get(p, ...)`: a parameter's state dict."""
    return (isinstance(v, cst.Subscript) and dotted(v.value) == "self.state") or (
        isinstance(v, cst.Call) and dotted(v.func) == "self.state.get")


class _Function:
    """What one function's own names are: host data, scalar numbers, param groups, parameters'
    state dicts. Host data (`data`) is a number, a tuple of them, a param group's option or a
    host-scalar state entry; a scalar (`scalar`) is one number and nothing else."""

    def __init__(self, func: cst.FunctionDef | None, host: _Host) -> None:
        self.host = host
        b = _Bindings(func) if func is not None else None
        if b is not None and func is not None:
            func.visit(b)
        self.b = b
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
                self.names[level] = frozenset(names)
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
        if isinstance(v, cst.Call) and dotted(v.func) in _SCALAR_MAKERS:
            pos = [a.value for a in v.args if a.keyword is None]
            if any(a.star for a in v.args):
                return False
            if dotted(v.func) in ("torch.tensor", "torch.as_tensor"):
                return bool(pos) and (self.data(pos[0], NUMBER) or self._one(pos[0]))
            return not pos or (isinstance(pos[0], (cst.Tuple, cst.List))  # the shape `()`
                               and not pos[0].elements)
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
        if (isinstance(base, cst.Name) and base.value in self.groups) or _is_group(base) or \
                dotted(base) == "self.defaults":
            return key != "params" and level < NUMBER
        if (isinstance(base, cst.Name) and base.value in self.states) or _is_state(base):
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
                        self.top_level.update(n for t in targets for n in _names(t))
            else:  # a compound statement at the top level may bind anything
                self.top_level.update(names_in(stmt))  # (every name it mentions)
        self.imports = imports
        self.math = {k for k, v in imports.items() if v == "math"} - self.top_level
        self.math_functions = {k for k, v in imports.items() if v.startswith("math.")} - \
            self.top_level

    def is_math(self, name: str, shadowed: Iterable[str]) -> bool:
        first, _, rest = name.partition(".")
        if first in shadowed:
            return False
        return (first in self.math and bool(rest) and "." not in rest) or \
            (not rest and first in self.math_functions)


def scalar_state_keys(module: cst.Module) -> frozenset[str]:
    """State keys every write of which in the module is a host scalar (see the module doc):
    `d[k] = v`, `d[k] += v`, `d.setdefault(k, v)`, `d.update(k=v)`, `dict(k=v)`, `{k: v}`."""
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
