"""Which names of a function hold lists of its own (`Unknowns.local_lists`), and which it
declares `global` or `nonlocal`: facts of one function's scope the evaluator is given."""

from __future__ import annotations

import libcst as cst

from gsr_rewrite.analysis.transfer import target_names
from gsr_rewrite.frontend.syntax import dotted


def local_lists(func: cst.FunctionDef, free: tuple[str, ...]) -> frozenset[str]:
    """Unknowns.local_lists of `func`: every binding of the name in its body (nested functions
    aside) is a list display, a list comprehension or `list(...)`; or it is a parameter, or a
    variable of the enclosing function that a nested one reads (`free`: its caller's list)."""
    ok: set[str] = set()
    bad: set[str] = set()

    def is_list(v: cst.BaseExpression | None, name: str) -> bool:
        """A new list, or the name's own list again (`xs = xs if c else _foreach_neg(xs)`)."""
        if isinstance(v, cst.IfExp):
            return is_list(v.body, name) and is_list(v.orelse, name)
        if isinstance(v, cst.Name):
            return v.value == name
        fn = dotted(v.func) if isinstance(v, cst.Call) else None
        return isinstance(v, (cst.List, cst.ListComp)) or fn == "list" or (
            fn is not None and fn.startswith("torch._foreach_") and not fn.endswith("_"))

    def bind(target: cst.BaseExpression, value: cst.BaseExpression | None) -> None:
        if isinstance(target, cst.Name):
            (ok if is_list(value, target.value) else bad).add(target.value)
        elif isinstance(target, (cst.Tuple, cst.List)) and \
                isinstance(value, (cst.Tuple, cst.List)) and \
                len(target.elements) == len(value.elements) and not any(
                    isinstance(el, cst.StarredElement) for el in (*target.elements,
                                                                  *value.elements)):
            for t, v in zip(target.elements, value.elements, strict=True):  # `a, b = [], []`
                bind(t.value, v.value)
        else:
            bad.update(target_names(target))

    class _Bindings(cst.CSTVisitor):
        def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
            return node is func  # nested functions bind their own names

        def visit_Lambda(self, node: cst.Lambda) -> bool:
            return False

        def visit_Assign(self, node: cst.Assign) -> None:
            for t in node.targets:
                bind(t.target, node.value)

        def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
            if isinstance(node.target, cst.Name) and node.value is not None:
                bind(node.target, node.value)

        def visit_AugAssign(self, node: cst.AugAssign) -> None:
            bad.update(target_names(node.target))

        def visit_For(self, node: cst.For) -> None:
            bad.update(target_names(node.target))

        def visit_NamedExpr(self, node: cst.NamedExpr) -> None:
            bad.update(target_names(node.target))

        def visit_WithItem(self, node: cst.WithItem) -> None:
            if node.asname is not None:
                bad.update(target_names(node.asname.name))

    func.visit(_Bindings())
    params = {p.name.value for p in (*func.params.posonly_params, *func.params.params,
                                     *func.params.kwonly_params)}
    return frozenset((ok - bad) | (params - bad) | (set(free) - bad))


def declared_outer(func: cst.FunctionDef) -> frozenset[str]:
    """Names `func` declares `global` or `nonlocal` (anywhere in its own body)."""
    found: set[str] = set()

    class _Declarations(cst.CSTVisitor):
        def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
            return node is func

        def visit_Global(self, node: cst.Global) -> None:
            found.update(n.name.value for n in node.names)

        def visit_Nonlocal(self, node: cst.Nonlocal) -> None:
            found.update(n.name.value for n in node.names)

    func.visit(_Declarations())
    return frozenset(found)
