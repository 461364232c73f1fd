"""The names a function binds in its own scope and the names code reads as variables: what the
analysis needs of Python's scoping to find a nested function's free variables and a helper's
local names."""

from __future__ import annotations

import libcst as cst


def param_list(func: cst.FunctionDef | cst.Lambda) -> list[cst.Param]:
    p = func.params
    star = [p.star_arg] if isinstance(p.star_arg, cst.Param) else []
    kwargs = [p.star_kwarg] if p.star_kwarg is not None else []
    return [*p.posonly_params, *p.params, *star, *p.kwonly_params, *kwargs]


def target_names(t: cst.CSTNode) -> list[str]:
    """The variables an assignment target binds (`a, (b, *c)`); attributes and items bind none."""
    if isinstance(t, cst.Name):
        return [t.value]
    if isinstance(t, (cst.Tuple, cst.List)):
        return [n for el in t.elements for n in target_names(el.value)]
    if isinstance(t, cst.StarredElement):
        return target_names(t.value)
    return []  # attributes and subscripts bind no name


class _Bound(cst.CSTVisitor):
    """Names a function binds in its own scope: parameters, assignment / for / with / except
    targets, imports, walrus targets, and the names of the functions and classes it defines
    (whose bodies are other scopes). Comprehension targets belong to the comprehension."""

    def __init__(self, root: cst.CSTNode, imports: bool = True) -> None:
        self.root, self.imports = root, imports
        self.names: set[str] = {p.name.value for p in param_list(root)} \
            if isinstance(root, cst.FunctionDef) else set()

    def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
        if node is self.root:
            return True
        self.names.add(node.name.value)
        return False

    def visit_ClassDef(self, node: cst.ClassDef) -> bool:
        self.names.add(node.name.value)
        return node is self.root

    def visit_Lambda(self, node: cst.Lambda) -> bool:
        return False

    def visit_AssignTarget(self, node: cst.AssignTarget) -> None:
        self.names.update(target_names(node.target))

    def visit_AugAssign(self, node: cst.AugAssign) -> None:
        self.names.update(target_names(node.target))

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        self.names.update(target_names(node.target))

    def visit_For(self, node: cst.For) -> None:
        self.names.update(target_names(node.target))

    def visit_AsName(self, node: cst.AsName) -> None:  # with ... as x, except E as x, imports
        self.names.update(target_names(node.name))

    def visit_ImportAlias(self, node: cst.ImportAlias) -> bool:
        if not self.imports:
            return False
        if node.asname is None:
            n = node.name
            while isinstance(n, cst.Attribute):
                n = n.value  # type: ignore[assignment]
            if isinstance(n, cst.Name):
                self.names.add(n.value)
        return True

    def visit_NamedExpr(self, node: cst.NamedExpr) -> None:
        self.names.update(target_names(node.target))

    def visit_Del(self, node: cst.Del) -> None:
        self.names.update(target_names(node.target))


def bound_names(node: cst.CSTNode, imports: bool = True) -> frozenset[str]:
    """What a function binds in its own scope; for any other statement, what it binds in the
    scope it runs in (the bodies of the functions and classes it defines are their own).
    `imports=False`: what it binds other than by import statements."""
    v = _Bound(node, imports)
    node.visit(v)
    return frozenset(v.names)


class VariableNames(cst.CSTVisitor):
    """Visits the names that are variables: not attribute names (`x.F`) or keywords (`f(F=1)`)."""

    def visit_Attribute(self, node: cst.Attribute) -> bool:
        node.value.visit(self)
        return False

    def visit_Arg(self, node: cst.Arg) -> bool:
        node.value.visit(self)
        return False


class _Loaded(VariableNames):
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



def is_generator(func: cst.FunctionDef) -> bool:
    """The function's own body has `yield`: calling it runs none of it (it runs when iterated)."""
    found = False

    class _V(cst.CSTVisitor):
        def visit_Yield(self, node: cst.Yield) -> None:
            nonlocal found
            found = True

        def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
            return node is func

        def visit_Lambda(self, node: cst.Lambda) -> bool:
            return False

        def visit_ClassDef(self, node: cst.ClassDef) -> bool:
            return False

    func.visit(_V())
    return found


def why_not_followed(func: cst.FunctionDef) -> str | None:
    """Why every call of this function is taken for an unknown call rather than followed: a
    generator runs its body when iterated (maybe after buffers were reused). (A function with
    `*args` or `**kwargs` is followed where a call puts nothing into them: `fills_star_params`.)"""
    if is_generator(func):
        return "a generator function: its body runs when it is iterated"
    return None


STAR_FILLED = "it takes **kwargs or *args, and this call may pass arguments into them"


def star_params(func: cst.FunctionDef) -> list[str]:
    """The names of the function's `*args` and `**kwargs` parameters (none: empty)."""
    p = func.params
    return [s.name.value for s in (p.star_arg, p.star_kwarg) if isinstance(s, cst.Param)]


def fills_star_params(call: cst.Call, room: int, by_keyword: frozenset[str],
                      star_args: bool) -> bool:
    """The call may put something into the `**kwargs` of a function with `room` named
    positional parameters (self not counted), `by_keyword` parameters a keyword can name and
    (`star_args`) a `*args`: another keyword, a spread `*xs` / `**kw` (which parameter gets
    what is unknown), or a positional argument past them where it has no `*args`. Through those
    the analysis does not track what the function returns or keeps. Positional arguments past
    the named ones are its `*args`, a tuple of them (interprocedural._bind); a call that fills
    neither leaves them an empty tuple and dict."""
    if any(a.star for a in call.args):
        return True
    return (sum(a.keyword is None for a in call.args) > room and not star_args) or \
        any(a.keyword is not None and a.keyword.value not in by_keyword for a in call.args)
