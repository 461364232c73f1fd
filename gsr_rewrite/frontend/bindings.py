"""The names one function binds, and how (host_scalars.py judges them): every binding of a
name in its own scope (`Bindings`), the parameters a call binds (`bound_arguments`), and its own
`return` statements (`returns_of`)."""

from __future__ import annotations

import libcst as cst

from gsr_rewrite.frontend.syntax import dotted


class Bindings(cst.CSTVisitor):
    """Every binding of a name in one function's own scope: (name, value) where the name is
    bound to a value host_scalars.py can judge, `bad` where it is bound any other way. The
    parameters are `bad` too, unless `params_bad` is off (a helper judged at one call: what
    the call gives them is judged by the caller)."""

    def __init__(self, root: cst.FunctionDef, params_bad: bool = True) -> None:
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
        self.params = {x.name.value for x in (*p.posonly_params, *p.params, *star,
                                              *p.kwonly_params, *kwargs)}
        self.bad: set[str] = set(self.params) if params_bad else set()
        self._comprehension = 0

    def _bind(self, target: cst.BaseExpression, value: cst.BaseExpression | None) -> None:
        if isinstance(target, cst.Name):
            if value is None:
                self.bad.add(target.value)
            else:
                self.values.append((target.value, value))
                self.groups.append((target.value, is_group(value)))
                self.states.append((target.value, is_state(value)))
        elif isinstance(target, (cst.Tuple, cst.List)):
            els = target.elements
            if any(isinstance(el, cst.StarredElement) for el in els):
                self.bad.update(bound_by(target))
            elif isinstance(value, (cst.Tuple, cst.List)) and len(value.elements) == len(els) \
                    and not any(isinstance(x, cst.StarredElement) for x in value.elements):
                for el, x in zip(els, value.elements, strict=True):
                    self._bind(el.value, x.value)
            else:  # `beta1, beta2 = group["betas"]`: scalars when the whole is host data
                for el in els:
                    if isinstance(el.value, cst.Name) and value is not None:
                        self.elements.append((el.value.value, value))
                    else:
                        self.bad.update(bound_by(el.value))

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
            self.bad.update(bound_by(node.target))
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
            self.bad.update(bound_by(target.elements[1].value))
        elif isinstance(target, cst.Name) and dotted(it) == "self.param_groups":
            self.loops.add(target.value)  # a param group: never a number itself
            self.groups.append((target.value, True))
        else:
            self.bad.update(bound_by(target))

    def visit_AsName(self, node: cst.AsName) -> None:  # with ... as x, except E as x, imports
        self.bad.update(bound_by(node.name))

    def visit_ImportAlias(self, node: cst.ImportAlias) -> None:
        self.bad.update(bound_by(node.name))

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


def bound_by(t: cst.CSTNode) -> list[str]:
    if isinstance(t, cst.Name):
        return [t.value]
    if isinstance(t, (cst.Tuple, cst.List)):
        return [n for el in t.elements for n in bound_by(el.value)]
    if isinstance(t, cst.StarredElement):
        return bound_by(t.value)
    if isinstance(t, cst.Attribute):  # `import a.b` binds a
        return bound_by(t.value)
    return []


def is_group(v: cst.BaseExpression) -> bool:
    return isinstance(v, cst.Subscript) and dotted(v.value) == "self.param_groups"


def is_state(v: cst.BaseExpression) -> bool:
    """`self.state[p]`, `self.state.get(p, ...)`: a parameter's state dict."""
    return (isinstance(v, cst.Subscript) and dotted(v.value) == "self.state") or (
        isinstance(v, cst.Call) and dotted(v.func) == "self.state.get")


def bound_arguments(func: cst.FunctionDef, call: cst.Call
                     ) -> dict[str, tuple[cst.BaseExpression | None,
                                          cst.BaseExpression | None]] | None:
    """Each parameter of `func` (a module function) -> (the argument `call` gives it, its
    default); None where the binding is not plain (a spread, `*args`, `**kwargs`, an unknown
    keyword, a parameter given nothing)."""
    p = func.params
    if any(a.star for a in call.args) or isinstance(p.star_arg, cst.Param) or \
            p.star_kwarg is not None:
        return None
    positional = [*p.posonly_params, *p.params]
    named = {x.name.value: x for x in [*p.params, *p.kwonly_params]}
    pos = [a.value for a in call.args if a.keyword is None]
    kw = {a.keyword.value: a.value for a in call.args if a.keyword is not None}
    if len(pos) > len(positional) or any(k not in named for k in kw):
        return None
    out: dict[str, tuple[cst.BaseExpression | None, cst.BaseExpression | None]] = {}
    for k, x in enumerate([*positional, *p.kwonly_params]):
        arg = pos[k] if k < len(pos) else kw.get(x.name.value)
        if arg is None and x.default is None:
            return None
        out[x.name.value] = (arg, x.default)
    return out


def returns_of(func: cst.FunctionDef) -> list[cst.Return]:
    """The `return` statements of func's own body (not of functions or lambdas in it)."""
    found: list[cst.Return] = []

    class _V(cst.CSTVisitor):
        def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
            return node is func

        def visit_Lambda(self, node: cst.Lambda) -> bool:
            return False

        def visit_Return(self, node: cst.Return) -> None:
            found.append(node)

    func.visit(_V())
    return found
