"""Functions defined inside an analysed function (`def grad_step_(...)` inside `step`), and helper
functions that `__init__` stores on `self` (`self.update_fn = update_fn`).

A nested function is analysed like a same-module helper when it is only ever called directly by
its enclosing function: then its body runs exactly at those calls, and the variables of the
enclosing function it reads (its free variables) hold, at each call, what the caller's points-to
says they hold there (Python closures read the enclosing variables late, at call time). Each call
therefore binds the free variables like extra arguments: the caller reads them, the callee starts
from their values, may write their buffers and append to their lists.

Anything else is not followed, and the nested function captures its variables as before (every
buffer it mentions escapes), with the reason: it is decorated, async or a generator; declares
`nonlocal` / `global` (it could rebind the caller's variables); takes `*args` / `**kwargs` or a
default that is not a constant; its name is bound more than once; or its name is used other than
as the callee of a direct call in the enclosing function's own body (passed, stored, returned or
called from a lambda, a comprehension or another nested function: it could run at any time).

The free variables are over-approximated (a name read anywhere inside the nested function that
the enclosing functions bind, unless the nested function binds it itself): an extra free variable
only adds reads at the call, never hides one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import libcst as cst

from gsr_rewrite.frontend.locate import OptimizerClass, SourceModule

LOCALS = ".<locals>."


@dataclass(frozen=True)
class NestedFunction:
    key: str  # "step.<locals>.grad_step_": what the analysis calls it
    name: str
    node: cst.FunctionDef
    parent: str  # key of the enclosing function
    free: tuple[str, ...]  # variables of the enclosing functions it reads
    reason: str = ""  # why it is not analysed; "" when it is


@dataclass
class Closures:
    """Every nested function found so far, by the id of its `def` node and by its key."""

    by_node: dict[int, NestedFunction] = field(default_factory=dict)
    by_key: dict[str, NestedFunction] = field(default_factory=dict)

    def add(self, parent_key: str, func: cst.FunctionDef, enclosing: frozenset[str],
            where: Callable[[cst.CSTNode], str]) -> None:
        """Register the functions defined directly in `func` (whose key is parent_key);
        `enclosing`: the names bound by the functions around `func` (for their free variables)."""
        bound_here = bound_names(func)
        visible = enclosing | bound_here
        for d in _defs_in(func):
            key = f"{parent_key}{LOCALS}{d.name.value}"
            free = tuple(sorted((loaded_names(d) & visible) - bound_names(d)))
            nf = NestedFunction(key, d.name.value, d, parent_key, free,
                                _not_followed(func, d, where))
            self.by_node[id(d)] = nf
            if not nf.reason:
                self.by_key[key] = nf


def parent_of(key: str) -> str | None:
    return key.rsplit(LOCALS, 1)[0] if LOCALS in key else None


class _Defs(cst.CSTVisitor):
    """FunctionDefs directly in a function's scope (inside its if/for/with/try, not deeper)."""

    def __init__(self, root: cst.FunctionDef) -> None:
        self.root = root
        self.found: list[cst.FunctionDef] = []

    def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
        if node is self.root:
            return True
        self.found.append(node)
        return False

    def visit_ClassDef(self, node: cst.ClassDef) -> bool:
        return False

    def visit_Lambda(self, node: cst.Lambda) -> bool:
        return False


def _defs_in(func: cst.FunctionDef) -> list[cst.FunctionDef]:
    v = _Defs(func)
    func.visit(v)
    return v.found


def _param_list(func: cst.FunctionDef | cst.Lambda) -> list[cst.Param]:
    p = func.params
    star = [p.star_arg] if isinstance(p.star_arg, cst.Param) else []
    kwargs = [p.star_kwarg] if p.star_kwarg is not None else []
    return [*p.posonly_params, *p.params, *star, *p.kwonly_params, *kwargs]


def _target_names(t: cst.CSTNode) -> list[str]:
    if isinstance(t, cst.Name):
        return [t.value]
    if isinstance(t, (cst.Tuple, cst.List)):
        return [n for el in t.elements for n in _target_names(el.value)]
    if isinstance(t, cst.StarredElement):
        return _target_names(t.value)
    return []  # attributes and subscripts bind no name


class _Bound(cst.CSTVisitor):
    """Names a function binds in its own scope: parameters, assignment / for / with / except
    targets, imports, walrus targets, and the names of the functions and classes it defines
    (whose bodies are other scopes). Comprehension targets belong to the comprehension."""

    def __init__(self, root: cst.FunctionDef) -> None:
        self.root = root
        self.names: set[str] = {p.name.value for p in _param_list(root)}

    def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
        if node is self.root:
            return True
        self.names.add(node.name.value)
        return False

    def visit_ClassDef(self, node: cst.ClassDef) -> bool:
        self.names.add(node.name.value)
        return False

    def visit_Lambda(self, node: cst.Lambda) -> bool:
        return False

    def visit_AssignTarget(self, node: cst.AssignTarget) -> None:
        self.names.update(_target_names(node.target))

    def visit_AugAssign(self, node: cst.AugAssign) -> None:
        self.names.update(_target_names(node.target))

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        self.names.update(_target_names(node.target))

    def visit_For(self, node: cst.For) -> None:
        self.names.update(_target_names(node.target))

    def visit_AsName(self, node: cst.AsName) -> None:  # with ... as x, except E as x, imports
        self.names.update(_target_names(node.name))

    def visit_ImportAlias(self, node: cst.ImportAlias) -> None:
        if node.asname is None:
            n = node.name
            while isinstance(n, cst.Attribute):
                n = n.value  # type: ignore[assignment]
            if isinstance(n, cst.Name):
                self.names.add(n.value)

    def visit_NamedExpr(self, node: cst.NamedExpr) -> None:
        self.names.update(_target_names(node.target))

    def visit_Del(self, node: cst.Del) -> None:
        self.names.update(_target_names(node.target))


def bound_names(func: cst.FunctionDef) -> frozenset[str]:
    v = _Bound(func)
    func.visit(v)
    return frozenset(v.names)


class _VariableNames(cst.CSTVisitor):
    """Visits the names that are variables: not attribute names (`x.F`) or keywords (`f(F=1)`)."""

    def visit_Attribute(self, node: cst.Attribute) -> bool:
        node.value.visit(self)
        return False

    def visit_Arg(self, node: cst.Arg) -> bool:
        node.value.visit(self)
        return False


class _Loaded(_VariableNames):
    """Every Name that may be read as a variable: not attribute names, keywords or parameters."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    def visit_Name(self, node: cst.Name) -> None:
        self.names.add(node.value)

    def visit_Param(self, node: cst.Param) -> bool:
        if node.default is not None:
            node.default.visit(self)
        return False


def loaded_names(node: cst.CSTNode) -> frozenset[str]:
    v = _Loaded()
    node.visit(v)
    return frozenset(v.names)


_CONSTANTS = (cst.Integer, cst.Float, cst.SimpleString, cst.Imaginary)


def _constant(e: cst.BaseExpression) -> bool:
    if isinstance(e, _CONSTANTS):
        return True
    if isinstance(e, cst.Name):
        return e.value in ("True", "False", "None")
    if isinstance(e, cst.UnaryOperation):
        return _constant(e.expression)
    if isinstance(e, cst.Tuple):
        return all(_constant(el.value) for el in e.elements)
    return False


class _Find(cst.CSTVisitor):
    def __init__(self, kinds: tuple[type, ...]) -> None:
        self.kinds, self.hit = kinds, False

    def on_visit(self, node: cst.CSTNode) -> bool:
        if isinstance(node, self.kinds):
            self.hit = True
        return not self.hit


def _contains(node: cst.CSTNode, *kinds: type) -> bool:
    v = _Find(kinds)
    node.visit(v)
    return v.hit


_INNER = (cst.Lambda, cst.ListComp, cst.SetComp, cst.DictComp, cst.GeneratorExp, cst.ClassDef)


class _Uses(_VariableNames):
    """How `name` is used in the enclosing function's own scope: direct calls only."""

    def __init__(self, root: cst.FunctionDef, target: cst.FunctionDef, name: str) -> None:
        self.root, self.target, self.name = root, target, name
        self.depth = 0  # inside a lambda, comprehension or another nested function
        self.bindings = 0
        self.bad: cst.CSTNode | None = None
        self.callees: set[int] = set()

    def on_visit(self, node: cst.CSTNode) -> bool:
        if isinstance(node, _INNER):
            self.depth += 1
        return super().on_visit(node)

    def on_leave(self, original_node: cst.CSTNode) -> None:
        super().on_leave(original_node)
        if isinstance(original_node, _INNER):
            self.depth -= 1

    def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
        if node is self.root:
            return True
        if node.name.value == self.name:
            self.bindings += 1
        for dec in node.decorators:
            dec.visit(self)
        node.params.visit(self)
        if node is self.target:
            return False  # its own body: recursion is found by `_not_followed`
        self.depth += 1
        node.body.visit(self)
        self.depth -= 1
        return False

    def visit_ClassDef(self, node: cst.ClassDef) -> bool:
        if node.name.value == self.name:
            self.bindings += 1
        return True

    def visit_Call(self, node: cst.Call) -> None:
        if isinstance(node.func, cst.Name) and node.func.value == self.name and self.depth == 0:
            self.callees.add(id(node.func))

    def visit_Name(self, node: cst.Name) -> None:
        if node.value == self.name and id(node) not in self.callees and self.bad is None:
            self.bad = node


def _not_followed(parent: cst.FunctionDef, d: cst.FunctionDef,
                  where: Callable[[cst.CSTNode], str]) -> str:
    name = d.name.value
    if d.decorators:
        return f"nested function `{name}` is decorated"
    if d.asynchronous is not None:
        return f"nested function `{name}` is async"
    if _contains(d.body, cst.Nonlocal, cst.Global):
        return f"nested function `{name}` declares nonlocal or global names"
    if _contains(d.body, cst.Yield, cst.Await):
        return f"nested function `{name}` is a generator or coroutine"
    p = d.params
    if isinstance(p.star_arg, cst.Param) or p.star_kwarg is not None:
        return f"nested function `{name}` takes *args or **kwargs"
    if any(x.default is not None and not _constant(x.default) for x in _param_list(d)):
        return f"nested function `{name}` has a default that is not a constant"
    if name in loaded_names(d.body):
        return f"nested function `{name}` refers to itself"
    uses = _Uses(parent, d, name)
    parent.visit(uses)
    if uses.bindings != 1 or name in {x.name.value for x in _param_list(parent)}:
        return f"the name of nested function `{name}` is bound more than once"
    if uses.bad is not None:
        return (f"nested function `{name}` is used other than as the callee of a direct call "
                f"({where(uses.bad)}): it may run at any time")
    return ""



# -- helpers stored on self ----------------------------------------------------------------------
def self_attr_targets(func: cst.FunctionDef) -> list[tuple[str, cst.BaseExpression | None]]:
    """(ATTR, value) for every `self.ATTR = value` in func (value None: not a plain binding, such
    as `self.ATTR += x`, a tuple target or `setattr(self, ...)` with an unknown name)."""
    found: list[tuple[str, cst.BaseExpression | None]] = []

    def attr(t: cst.BaseExpression) -> str | None:
        if isinstance(t, cst.Attribute) and isinstance(t.value, cst.Name) and \
                t.value.value == "self":
            return t.attr.value
        return None

    def targets(t: cst.BaseExpression, value: cst.BaseExpression | None) -> None:
        a = attr(t)
        if a is not None:
            found.append((a, value))
        elif isinstance(t, (cst.Tuple, cst.List)):
            for el in t.elements:
                targets(el.value, None)
        elif isinstance(t, cst.StarredElement):
            targets(t.value, None)

    class _V(cst.CSTVisitor):
        def visit_Assign(self, node: cst.Assign) -> None:
            for t in node.targets:
                targets(t.target, node.value)

        def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
            targets(node.target, node.value)

        def visit_AugAssign(self, node: cst.AugAssign) -> None:
            targets(node.target, None)

        def visit_For(self, node: cst.For) -> None:
            targets(node.target, None)

        def visit_AsName(self, node: cst.AsName) -> None:
            if isinstance(node.name, cst.BaseExpression):
                targets(node.name, None)

        def visit_Call(self, node: cst.Call) -> None:
            if isinstance(node.func, cst.Name) and node.func.value in ("setattr", "delattr"):
                key = node.args[1].value if len(node.args) > 1 else None
                name = key.evaluated_value if isinstance(key, cst.SimpleString) else None
                found.append((str(name) if name is not None else "*", None))

        def visit_Del(self, node: cst.Del) -> None:
            targets(node.target, None)

    func.visit(_V())
    return found


def bound_self_helpers(src: SourceModule, cls: OptimizerClass
                       ) -> tuple[dict[str, str], dict[str, str]]:
    """`self.ATTR(...)` -> the module function F when `__init__` binds `self.ATTR = F` and no
    other method of the class binds `self.ATTR` (nor setattr/delattr with a computed name).

    `__init__` may bind ATTR to other things too (`if use_triton: self.update_fn = kernel`): the
    R-variant's step checks `self.ATTR is F` when it starts, and runs the original step when it
    is not (`runtime.r_step`), so the rewrite only ever runs where its analysis holds.
    """
    init = cls.methods.get("__init__")
    if init is None:
        return {}, {}
    local = bound_names(init)
    in_init = self_attr_targets(init)
    elsewhere = {a: m for m, f in cls.methods.items() if m != "__init__"
                 for a, _ in self_attr_targets(f)}
    def function(v: cst.BaseExpression | None) -> str:
        fn = v.value if isinstance(v, cst.Name) else ""
        return fn if fn in src.functions and fn not in local else ""

    found: dict[str, set[str]] = {}
    for a, v in in_init:
        if function(v):
            found.setdefault(a, set()).add(function(v))
    # the binding every instance starts from: the last one among __init__'s own statements
    last: dict[str, str] = {}
    body = init.body.body if isinstance(init.body, cst.IndentedBlock) else []
    for stmt in body:
        if isinstance(stmt, cst.SimpleStatementLine):
            for a, v in self_attr_targets(cst.FunctionDef(init.name, init.params,
                                                             cst.IndentedBlock([stmt]))):
                last[a] = function(v)
    follow: dict[str, str] = {}
    why: dict[str, str] = {}
    for a, fs in found.items():
        other = elsewhere.get(a) or elsewhere.get("*") or \
            ("__init__" if any(x == "*" for x, _ in in_init) else None)
        if other is not None:
            why[a] = f"`{other}` may rebind `self.{a}`, which `__init__` binds to a function"
        elif len(fs) > 1 and not last.get(a):
            why[a] = (f"`__init__` binds `self.{a}` to one of {', '.join(sorted(fs))}, none "
                      "of them unconditionally")
        elif len(fs) > 1:
            follow[a] = last[a]  # the others take the original step (r_step checks)
        elif a in cls.methods:
            why[a] = f"`self.{a}` is both a method and bound in `__init__`"
        else:
            follow[a] = next(iter(fs))
    return follow, why


def self_bound_methods(cls: OptimizerClass) -> set[str]:
    """Method names that some method also binds on the instance (`self.m = ...`): a call
    `self.m(...)` may then run something else than the method."""
    bound = {a for f in cls.methods.values() for a, _ in self_attr_targets(f)}
    return set(cls.methods) if "*" in bound else bound & set(cls.methods)
