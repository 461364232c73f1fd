"""Attributes of `self` that hold data only as far as the R step's start can check
(`self.base_lrs = [group["lr"] for group in self.param_groups]`: floats, unless a user passed a
tensor learning rate). The analysis takes them for constants (no buffer is in them) when

- only `__init__` binds them (no other method, no `setattr`/`delattr` with a computed name);
- the module's code outside `__init__` only reads them, where reading cannot change them or
  hand them to code the analysis does not follow: iterated (`for`, a comprehension, `zip`,
  `enumerate`, `len`, ...) or indexed (`self.base_lrs[i]`, never as an assignment target);
- no call in the module is handed `self` itself (an unknown function could rebind them);

and the R step checks, each time it starts, that each of them holds plain data (numbers,
strings, None, and lists and tuples of them: `runtime.step.plain_data`); where one does not, the
original step runs (`runtime.r_step`). Elements of plain data are immutable: reading one reads
no tensor, whatever the step does with it."""

from __future__ import annotations

import libcst as cst

from gsr_rewrite.frontend.effects import dotted
from gsr_rewrite.frontend.locate import OptimizerClass
from gsr_rewrite.frontend.self_helpers import self_attr_targets

#: calls that only iterate over or measure their arguments (builtins; a module that binds one of
#: these names itself is not trusted: see `_shadowed`)
_READING_CALLS = frozenset({"zip", "enumerate", "len", "list", "tuple", "iter", "reversed",
                            "sorted", "min", "max", "sum", "any", "all"})
#: attributes of torch.optim.Optimizer the analysis models itself
_MODELLED = frozenset({"param_groups", "state", "defaults"})


def checked_data_attrs(cls: OptimizerClass, combined: cst.Module,
                       constants: frozenset[str]) -> frozenset[str]:
    """The attributes of `self` described above (besides the `constants` the analysis proved)."""
    bindings = {(m, a) for m, f in cls.methods.items() for a, _ in self_attr_targets(f)}
    if any(a == "*" for _, a in bindings):
        return frozenset()
    elsewhere = {a for m, a in bindings if m != "__init__"}
    seen = _Uses()
    combined.visit(seen)
    if seen.self_passed or seen.shadowed & _READING_CALLS:
        return frozenset()
    candidates = seen.all_uses.keys() - seen.unsafe - elsewhere - constants - _MODELLED - \
        set(cls.methods)
    return frozenset(a for a in candidates if seen.all_uses[a] == seen.safe_uses.get(a, 0)
                     and not (a.startswith("__") and a.endswith("__")))  # self.__dict__: no data


class _Uses(cst.CSTVisitor):
    """Every `self.ATTR` outside `__init__`, and those in a reading place (parents are visited
    before their children, so a place is marked before the attribute in it is seen)."""

    def __init__(self) -> None:
        self.all_uses: dict[str, int] = {}
        self.safe_uses: dict[str, int] = {}
        self.unsafe: set[str] = set()
        self.self_passed = False
        self.shadowed: set[str] = set()  # names the module binds (a `zip` of its own)
        self._safe: set[int] = set()
        self._targets: set[int] = set()

    def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
        self.shadowed.add(node.name.value)
        return node.name.value != "__init__"

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        self.shadowed.add(node.name.value)

    def visit_Name(self, node: cst.Name) -> None:
        if id(node) in self._targets:
            self.shadowed.add(node.value)

    def visit_ImportAlias(self, node: cst.ImportAlias) -> None:
        bound = node.asname.name if node.asname is not None else node.name
        self.shadowed.add((dotted(bound) or "").split(".")[0])

    def _mark_targets(self, t: cst.BaseExpression) -> None:
        self._targets.add(id(t))
        if isinstance(t, (cst.Tuple, cst.List)):
            for el in t.elements:
                self._mark_targets(el.value)
        elif isinstance(t, cst.StarredElement):
            self._mark_targets(t.value)

    def visit_Assign(self, node: cst.Assign) -> None:
        for t in node.targets:
            self._mark_targets(t.target)

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        self._mark_targets(node.target)

    def visit_AugAssign(self, node: cst.AugAssign) -> None:
        self._mark_targets(node.target)

    def visit_Del(self, node: cst.Del) -> None:
        self._mark_targets(node.target)

    def visit_For(self, node: cst.For) -> None:
        self._mark_targets(node.target)
        self._safe.add(id(node.iter))

    def visit_CompFor(self, node: cst.CompFor) -> None:
        self._mark_targets(node.target)
        self._safe.add(id(node.iter))

    def visit_Call(self, node: cst.Call) -> None:
        name = dotted(node.func)
        for a in node.args:
            if isinstance(a.value, cst.Name) and a.value.value == "self":
                self.self_passed |= name != "super"  # super(Cls, self) runs nothing itself
            elif name in _READING_CALLS and not a.keyword:
                self._safe.add(id(a.value))

    def visit_Subscript(self, node: cst.Subscript) -> None:
        if id(node) not in self._targets:
            self._safe.add(id(node.value))

    def visit_Attribute(self, node: cst.Attribute) -> None:
        if not (isinstance(node.value, cst.Name) and node.value.value == "self"):
            return
        a = node.attr.value
        self.all_uses[a] = self.all_uses.get(a, 0) + 1
        if id(node) in self._safe:
            self.safe_uses[a] = self.safe_uses.get(a, 0) + 1
        if id(node) in self._targets:
            self.unsafe.add(a)
