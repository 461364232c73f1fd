"""Helper functions that `__init__` stores on `self` (`self.update_fn = update_fn`): which
`self.ATTR(...)` calls the analysis follows into a module function, and which it does not, why."""

from __future__ import annotations

import libcst as cst

from gsr_rewrite.frontend.locate import OptimizerClass, SourceModule
from gsr_rewrite.frontend.scopes import bound_names


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
    """Method names that some method (an overridden one of a base too) also binds on the
    instance (`self.m = ...`): a call `self.m(...)` may then run something else than the
    method."""
    every = [*cls.methods.values(), *cls.overridden]
    bound = {a for f in every for a, _ in self_attr_targets(f)}
    return set(cls.methods) if "*" in bound else bound & set(cls.methods)


def checkable_rebound_methods(src: SourceModule, cls: OptimizerClass) -> set[str]:
    """Of `self_bound_methods`, those that the step cannot rebind while it runs: every method
    binding them is named by no other code of the class, of `src` or of the functions it
    imports (not called, not got by `getattr(self, "name")`), is not `__init__` (every object
    would shadow them) nor `step`, and no such code hands `self` to other code or looks a
    method up by a computed name. pytorch_optimizer's `_compile_foreach`, which its factory
    calls before training, binds `self._step_foreach`. The analysis follows these as the
    class's methods; the R step checks when it starts that the object does not shadow them
    (`runtime.r_step(..., followed=...)`)."""
    every = [*cls.methods.values(), *cls.overridden]
    binders: dict[str, set[str]] = {}  # method -> the names of the functions binding it
    for f in every:
        for a, _ in self_attr_targets(f):
            binders.setdefault(a, set()).add(f.name.value)
    candidates = {m for m in set(binders) & set(cls.methods)  # (`self_bound_methods`)
                  if "__init__" not in binders[m] and "step" not in binders[m]}
    if "*" in binders or not candidates:  # (most classes: no module-wide scan)
        return set()
    named: dict[str, set[int]] = {}  # identifier or string -> the functions naming it
    for f in [*every, *src.functions.values(), *(g for g, _ in src.imported.values())]:
        for word in _words(f):
            named.setdefault(word, set()).add(id(f))
    if "*" in named:
        return set()
    return {m for m in candidates if not any(
        named.get(b, set()) - {id(f) for f in every if f.name.value == b} for b in binders[m])}


#: builtins given `self` that bind nothing on it
_GIVEN_SELF_HARMLESS = frozenset({"str", "repr", "id", "type", "isinstance", "hasattr", "getattr",
                                  "super", "len", "hash"})


def hands_self_away(call: cst.Call) -> bool:
    """The call gives the object itself (`fn(self)`, `fn(opt=self)`) to code other than a few
    builtins: that code may bind any attribute on it, methods included (`opt.m = wrapper`)."""
    callee = call.func.value if isinstance(call.func, cst.Name) else ""
    return callee not in _GIVEN_SELF_HARMLESS and any(
        isinstance(a.value, cst.Name) and a.value.value == "self" for a in call.args)


def first_handing_self_away(func: cst.FunctionDef) -> cst.Call | None:
    """The first call in func (nested functions included) that `hands_self_away`."""
    found: list[cst.Call] = []

    class _V(cst.CSTVisitor):
        def visit_Call(self, node: cst.Call) -> None:
            if not found and hands_self_away(node):
                found.append(node)

    func.body.visit(_V())
    return found[0] if found else None


def stores_self(func: cst.FunctionDef) -> bool:
    """func keeps the object somewhere other code can reach (`type(self)._inst = self`,
    `REGISTRY[k] = self`): any later call may reach the optimizer through it."""
    found: list[cst.CSTNode] = []

    class _V(cst.CSTVisitor):
        def visit_Assign(self, node: cst.Assign) -> None:
            if isinstance(node.value, cst.Name) and node.value.value == "self" and \
                    any(not isinstance(t.target, cst.Name) for t in node.targets):
                found.append(node)

    func.body.visit(_V())
    return bool(found)


#: methods Python calls on an object without naming them (`with self`, `if self`, `self + x`,
#: `len(self)`, `f"{self}"`, ...); the attribute hooks (runtime.step.ATTRIBUTE_HOOKS) run on
#: every `self.x`
IMPLICIT_DUNDERS = frozenset({
    "__enter__", "__exit__", "__bool__", "__len__", "__iter__", "__next__", "__reversed__",
    "__getitem__", "__setitem__", "__delitem__", "__contains__", "__missing__", "__call__",
    "__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__", "__hash__", "__format__",
    "__str__", "__repr__", "__bytes__", "__index__", "__int__", "__float__", "__complex__",
    "__round__", "__neg__", "__pos__", "__abs__", "__invert__", "__class_getitem__",
    "__instancecheck__", "__subclasscheck__",
    *(f"__{p}{op}__" for op in ("add", "sub", "mul", "matmul", "truediv", "floordiv", "mod",
                                 "divmod", "pow", "lshift", "rshift", "and", "xor", "or")
      for p in ("", "r", "i")),
})


def implicit_self_use(func: cst.FunctionDef) -> cst.CSTNode | None:
    """The first place in func (nested functions included) that uses `self` as a value other
    than by naming an attribute of it: where Python may call a dunder method of it implicitly
    (`with self:`, `if self:`, `self + 1`, `f"{self}"`, `for x in self`, `self[k]`, `len(self)`,
    `type(self)[k]`). Not in a `raise` statement (pytorch_optimizer's every step raises
    `NoSparseGradientError(str(self))` where its class defines `__str__`)."""
    found: list[cst.CSTNode] = []

    class _V(cst.CSTVisitor):
        def visit_Attribute(self, node: cst.Attribute) -> bool:  # `self.x`: not visited further
            return not (isinstance(node.value, cst.Name) and node.value.value == "self")

        def visit_Param(self, node: cst.Param) -> bool:
            return False

        def visit_Raise(self, node: cst.Raise) -> bool:
            # `raise E(str(self))`: the step ends there, raising; what a step that raises leaves
            # may differ from the original's anyway (README, the contract)
            return False

        def visit_Name(self, node: cst.Name) -> None:
            if not found and node.value == "self":
                found.append(node)

    func.body.visit(_V())
    return found[0] if found else None


def _words(func: cst.FunctionDef) -> set[str]:
    """The names, attribute names and string constants in func, its own name excepted; "*"
    where it may reach any method by a computed name, or hands `self` to other code."""
    found: set[str] = set()

    class _V(cst.CSTVisitor):
        def visit_Name(self, node: cst.Name) -> None:
            found.add(node.value)

        def visit_SimpleString(self, node: cst.SimpleString) -> None:
            value = node.evaluated_value
            found.add(value if isinstance(value, str) else "")

        def visit_Call(self, node: cst.Call) -> None:
            callee = node.func.value if isinstance(node.func, cst.Name) else ""
            if callee == "getattr" and not (  # getattr(self, name): any method at all
                    len(node.args) > 1 and isinstance(node.args[1].value, cst.SimpleString)):
                found.add("*")
            if func.name.value != "__init__" and hands_self_away(node):
                found.add("*")  # `fn(self)`: code the analysis may not see can bind methods

    func.body.visit(_V())
    for d in func.decorators:
        d.visit(_V())
    return found
