"""Dicts a function makes and keeps to itself, whose contents the analysis can follow.

`groups = {}; groups.setdefault(key, []).append(i); for idx in groups.values(): ...` (timm's
clipping and trust-ratio helpers group indices by device this way). A dict is only followed when
no other name, function or container can reach it: then everything put into it goes through its
own name (`d[k] = v`, `d.setdefault(k, v)`, `d.update(...)`), and what comes out (`d[k]`,
`d.get`, `d.values()`, iterating) is exactly what was put in. Any other use of the name (passed
to a call, assigned to another name, returned, read by a nested function, class or lambda,
declared global) and the dict is not followed: what comes out of it is opaque (see values.element).
"""

from __future__ import annotations

from collections.abc import Mapping

import libcst as cst

from gsr_rewrite.frontend.syntax import dotted

#: the methods of a followed dict (what each does: calls.Evaluator._local_dict_method)
DICT_METHODS = frozenset({"get", "setdefault", "pop", "values", "items", "keys", "update",
                          "clear"})


def local_dicts(func: cst.FunctionDef, imports: Mapping[str, str]) -> frozenset[str]:
    """The names of `func` bound only to a new dict (`{...}`, `dict(k=v)`,
    `collections.defaultdict(list)`), one name per dict, and used only as a dict: subscripted,
    called a method of DICT_METHODS on, iterated, tested (`k in d`, `len(d)`, `if d`)."""
    made: set[str] = set()
    explained: set[int] = set()  # ids of the Name nodes in one of those positions
    names: dict[str, list[cst.Name]] = {}
    nested: set[str] = set()  # names a nested function or lambda mentions

    def dict_maker(v: cst.BaseExpression | None) -> bool:
        if isinstance(v, cst.Dict):
            return True
        if not isinstance(v, cst.Call):
            return False
        fn = dotted(v.func)
        if fn is None:
            return False
        head, _, rest = fn.partition(".")
        origin = imports.get(head)
        full = fn if origin is None else f"{origin}.{rest}" if rest else origin
        if full == "dict":
            return all(a.keyword is not None for a in v.args)
        return full == "collections.defaultdict" and len(v.args) == 1 and \
            dotted(v.args[0].value) == "list" and "list" not in imports

    def explain(e: cst.BaseExpression | None) -> None:
        if isinstance(e, cst.Name):
            explained.add(id(e))

    class _Uses(cst.CSTVisitor):
        def __init__(self) -> None:
            self.depth = 0  # inside a nested function or lambda

        def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
            self.depth += node is not func

        def leave_FunctionDef(self, node: cst.FunctionDef) -> None:
            self.depth -= node is not func

        def visit_ClassDef(self, node: cst.ClassDef) -> None:
            self.depth += 1  # a class body the analysis does not go through

        def leave_ClassDef(self, node: cst.ClassDef) -> None:
            self.depth -= 1

        def visit_Lambda(self, node: cst.Lambda) -> None:
            self.depth += 1

        def leave_Lambda(self, node: cst.Lambda) -> None:
            self.depth -= 1

        def visit_Name(self, node: cst.Name) -> None:
            names.setdefault(node.value, []).append(node)
            if self.depth:
                nested.add(node.value)

        def visit_Attribute(self, node: cst.Attribute) -> None:
            explain(node.attr)  # `x.d` names an attribute, not the variable d

        def visit_Arg(self, node: cst.Arg) -> None:
            explain(node.keyword)

        def visit_Assign(self, node: cst.Assign) -> None:
            (t,) = node.targets if len(node.targets) == 1 else (None,)  # `a = b = {}`: aliases
            if t is not None and isinstance(t.target, cst.Name) and dict_maker(node.value):
                made.add(t.target.value)
                explain(t.target)

        def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
            if isinstance(node.target, cst.Name) and (node.value is None
                                                       or dict_maker(node.value)):
                if node.value is not None:
                    made.add(node.target.value)
                explain(node.target)

        def visit_Subscript(self, node: cst.Subscript) -> None:
            explain(node.value)

        def visit_Call(self, node: cst.Call) -> None:
            f = node.func
            if isinstance(f, cst.Attribute) and f.attr.value in DICT_METHODS:
                explain(f.value)
            if isinstance(f, cst.Name) and f.value == "len" and len(node.args) == 1:
                explain(node.args[0].value)

        def visit_ComparisonTarget(self, node: cst.ComparisonTarget) -> None:
            if isinstance(node.operator, (cst.In, cst.NotIn)):
                explain(node.comparator)

        def visit_For(self, node: cst.For) -> None:
            explain(node.iter)

        def visit_CompFor(self, node: cst.CompFor) -> None:
            explain(node.iter)

        def visit_If(self, node: cst.If) -> None:
            explain(node.test)

        def visit_While(self, node: cst.While) -> None:
            explain(node.test)

        def visit_UnaryOperation(self, node: cst.UnaryOperation) -> None:
            if isinstance(node.operator, cst.Not):
                explain(node.expression)

    func.body.visit(_Uses())
    ps = func.params
    star = [p for p in (ps.star_arg, ps.star_kwarg) if isinstance(p, cst.Param)]
    params = {p.name.value for p in (*ps.posonly_params, *ps.params, *ps.kwonly_params, *star)}
    return frozenset(n for n in made - nested - params
                     if all(id(x) in explained for x in names.get(n, [])))
