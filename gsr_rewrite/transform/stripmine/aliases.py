"""Which host names of a function may hold the same object: the conservative alias relation
`region_checks._run_once` uses to tell whether a line that runs once changes what a strip
line read."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import libcst as cst

from gsr_rewrite.frontend.catalog import OpCatalog
from gsr_rewrite.frontend.syntax import dotted, for_ins
from gsr_rewrite.transform.stripmine.checker import _flat_targets


def _host_aliases(func: cst.FunctionDef, cat: OpCatalog) -> Callable[[str], set[str]]:
    """May two names of `func` hold the same host object (or lists sharing items)? A
    flow-insensitive union over every binding: `a = b`, `a = [f(x) for x in b]`, `for a in b`
    join a and b; results that are always new objects (arithmetic other than `+`/`*`, torch
    ops that allocate, `float()`, out-of-place foreach) join nothing."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    def join(names: Iterable[str], sources: set[str]) -> None:
        for a in names:
            for b in sources:
                parent[find(a)] = find(b)

    class _V(cst.CSTVisitor):
        def visit_Assign(self, node: cst.Assign) -> None:
            names = [x for t in node.targets for x in _bound_names(t.target)]
            join(names, _alias_sources(node.value, cat) | set(names[:1]))  # `a = b = [..]`

        def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
            if node.value is not None:
                join(_bound_names(node.target), _alias_sources(node.value, cat))

        def visit_AugAssign(self, node: cst.AugAssign) -> None:
            join(_bound_names(node.target), _alias_sources(node.value, cat))

        def visit_For(self, node: cst.For) -> None:
            join(_bound_names(node.target), _alias_sources(node.iter, cat))

        def visit_NamedExpr(self, node: cst.NamedExpr) -> None:
            join(_bound_names(node.target), _alias_sources(node.value, cat))

    func.visit(_V())
    return lambda x: {y for y in [*parent, x] if find(y) == find(x)}


def _bound_names(t: cst.BaseExpression) -> list[str]:
    return [x.value for x in _flat_targets(t) if isinstance(x, cst.Name)]


_FRESH_BUILTINS = {"float", "int", "bool", "len", "isinstance", "str", "abs", "round", "range"}


def _alias_sources(e: cst.BaseExpression, cat: OpCatalog,
                   local: dict[str, set[str]] | None = None) -> set[str]:
    """Names whose objects the value of `e` (or its items) may be."""
    local = local or {}

    def each(es: Iterable[cst.BaseExpression]) -> set[str]:
        return set().union(*(_alias_sources(x, cat, local) for x in es))

    if isinstance(e, cst.Name):
        return local.get(e.value, {e.value})
    if isinstance(e, (cst.Attribute, cst.Subscript)):
        name = dotted(e) if isinstance(e, cst.Attribute) else None
        if name is not None and name.split(".")[0] in ("torch", "math"):
            return set()
        return _alias_sources(e.value, cat, local)
    if isinstance(e, cst.Call):
        name = dotted(e.func) or ""
        args = [a.value for a in e.args]
        fn = name[len("torch."):] if name.startswith("torch.") else None
        if fn is not None and (fn.startswith("_foreach_") or fn in cat.elementwise or
                               fn in cat.creation or fn == "tensor"):
            return set()  # a new tensor, a new list of new tensors, or None (in place)
        if name in _FRESH_BUILTINS:
            return set()
        if isinstance(e.func, cst.Attribute) and fn is None:
            m = e.func.attr.value
            if m in cat.elementwise or m in cat.creation or m in cat.reduce or \
                    m in cat.metadata:
                return set()
            return _alias_sources(e.func.value, cat, local) | each(args)
        known = cat.functions.get(name.rpartition(".")[2])
        if known is not None and known.effect in ("fresh", "metadata"):
            return set()
        if known is not None and known.effect == "alias" and known.arg < len(args):
            return _alias_sources(args[known.arg], cat, local)
        return each(args)
    if isinstance(e, cst.BinaryOperation):  # `+` and `*` of lists share their items
        return each([e.left, e.right]) if isinstance(e.operator, (cst.Add, cst.Multiply)) \
            else set()
    if isinstance(e, (cst.UnaryOperation, cst.Comparison, cst.SimpleString, cst.Integer,
                      cst.Float, cst.Imaginary, cst.FormattedString)):
        return set()
    if isinstance(e, (cst.ListComp, cst.GeneratorExp, cst.SetComp)):
        inner = dict(local)
        for f in for_ins(e.for_in):
            src = _alias_sources(f.iter, cat, inner)
            for x in _bound_names(f.target):
                inner[x] = src
        return _alias_sources(e.elt, cat, inner)
    return each(c for c in e.children if isinstance(c, cst.BaseExpression))
