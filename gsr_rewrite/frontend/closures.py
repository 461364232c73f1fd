"""Functions defined inside an analysed function (`def grad_step_(...)` inside `step`). Helper
functions that `__init__` stores on `self` (`self.update_fn = update_fn`) are found in
self_helpers.py, the names a scope binds and reads in scopes.py.

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

from gsr_rewrite.frontend.scopes import VariableNames, bound_names, loaded_names, param_list

__all__ = ["LOCALS", "Closures", "NestedFunction", "parent_of"]

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


class _Uses(VariableNames):
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
    if any(x.default is not None and not _constant(x.default) for x in param_list(d)):
        return f"nested function `{name}` has a default that is not a constant"
    if name in loaded_names(d.body):
        return f"nested function `{name}` refers to itself"
    uses = _Uses(parent, d, name)
    parent.visit(uses)
    if uses.bindings != 1 or name in {x.name.value for x in param_list(parent)}:
        return f"the name of nested function `{name}` is bound more than once"
    if uses.bad is not None:
        return (f"nested function `{name}` is used other than as the callee of a direct call "
                f"({where(uses.bad)}): it may run at any time")
    return ""
