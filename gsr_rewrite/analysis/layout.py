"""Does a step change any tensor's layout in place? (`layout_changes`)

An R step whose class is proved not to runs with a layout certificate (runtime/layout.py): the
shape, strides, dtype and device of every param, gradient and state tensor are read once, before
the step, and the guards inside it look them up. That is exact only while no code of the step
changes a tensor's layout in place: `set_`, `resize_`, `unsqueeze_`, `t_`, `as_strided_`,
`requires_grad_`, `.data = ...`, `torch.utils.swap_tensors`, ... The one such change the
certificate tolerates is an `out=` that resizes its target: the lookups compare shapes again.

Default-deny and syntactic: every function the analysis followed (the step, its helpers, nested
functions, methods from base classes) is read, and every call in it must name something known
not to change a layout: a torch function, a builtin or `math` function from a short list, a
function the catalog describes, a function or method the analysis followed (read in turn), the
step's own arguments (with any argument the original step runs: runtime.r_step), or a method
whose name is a tensor op of the catalog or a list, dict or str method. A call of anything else
(an object's own method, a computed callable, `super()`) may do anything, and is a reason.
What runs without a call expression is judged too: decorators, context managers (torch's only),
class bodies (none). Assumed, as the rest of the analysis assumes it: a method is judged by its
name (an object of the user's with a method named like a tensor op is taken for a tensor), and
reading an attribute runs no code that changes a tensor (no properties that do).
"""

from __future__ import annotations

import libcst as cst

from gsr_rewrite.analysis.interprocedural import ClassAnalysis, FunctionAnalysis
from gsr_rewrite.analysis.unknowns import HARMLESS_OPTIMIZER_METHODS, ForeignModules
from gsr_rewrite.frontend.calls import BUILTIN_CONTAINERS, EXCEPTIONS, HARMLESS_BUILTINS
from gsr_rewrite.frontend.catalog import OpCatalog
from gsr_rewrite.frontend.closures import LOCALS
from gsr_rewrite.frontend.locate import SourceModule
from gsr_rewrite.frontend.scopes import param_list, target_names
from gsr_rewrite.frontend.source import absolute_origin
from gsr_rewrite.frontend.syntax import dotted

#: names of ops and functions that change a tensor's shape, strides, dtype, device, storage or
#: requires_grad in place (a name, wherever it appears: a call, an attribute, a string)
LAYOUT_CHANGES = frozenset({
    "set_", "resize_", "resize_as_", "as_strided_", "squeeze_", "unsqueeze_", "t_", "transpose_",
    "swapdims_", "swapaxes_", "requires_grad_", "detach_", "share_memory_", "swap_tensors",
    "set_data", "vector_to_parameters", "sparse_resize_", "sparse_resize_and_clear_",
    "_coalesced_", "apply_", "map_", "map2_", "__setattr__", "setattr", "delattr",
    "_unsafe_set_version_counter"})
#: attributes whose assignment or deletion changes a tensor in place
LAYOUT_ATTRIBUTES = frozenset({"data", "requires_grad", "__class__", "__dict__"})
#: methods of lists, dicts, sets and strings (on any receiver but a self attribute)
CONTAINER_METHODS = frozenset({
    "append", "extend", "insert", "pop", "get", "setdefault", "items", "values", "keys",
    "update", "index", "count", "add", "clear", "remove", "discard", "copy", "format", "join",
    "startswith", "endswith", "lower", "upper", "strip", "split", "replace", "is_integer"})
#: builtins that call nothing they are given (`max(xs, key=f)` is checked for its key)
SAFE_BUILTINS = HARMLESS_BUILTINS | EXCEPTIONS | BUILTIN_CONTAINERS | {
    "max", "min", "sum", "next", "dict", "set", "frozenset", "divmod", "pow", "repr",
    "getattr", "isinstance", "issubclass", "callable", "slice", "complex", "Exception",
    "AssertionError", "KeyError", "IndexError", "AttributeError", "UserWarning",
    "DeprecationWarning", "FutureWarning"}
#: builtins that call a function they are given: only a lambda (read with the rest)
CALLING_BUILTINS = frozenset({"map", "filter"})


def layout_changes(analysis: ClassAnalysis, src: SourceModule, catalog: OpCatalog) -> str | None:
    """None when no function of the step may change a tensor's layout in place; else why."""
    foreign = ForeignModules(src, analysis.cls)
    for fa in analysis.functions.values():
        home = foreign.of(fa.func) or src
        scan = _Scan(analysis, home, catalog, fa, is_step=fa.name == "step", own=home is src)
        fa.func.body.visit(scan)
        for d in fa.func.decorators:
            d.visit(scan)
        if scan.reason:
            return f"{src.where(scan.where)}: {scan.reason}" if scan.where else scan.reason
    return None


def _tensor_methods(cat: OpCatalog) -> frozenset[str]:
    names = set(cat.metadata | cat.constructor | cat.view | cat.reduce | cat.inplace_kill)
    names |= set(cat.creation) | set(cat.elementwise)
    names |= {op.inplace for op in cat.elementwise.values() if op.inplace}
    names |= {n + "_" for n in cat.elementwise}
    return frozenset(names)


def _bindings(func: cst.FunctionDef) -> dict[str, list[cst.BaseExpression | None]]:
    """Every name the function binds, with the values of its plain assignments (None for any
    other binding: parameters, unpacking, loop, with, except, walrus and comprehension targets,
    nested definitions, imports)."""
    found: dict[str, list[cst.BaseExpression | None]] = {}

    def bind(t: cst.CSTNode, value: cst.BaseExpression | None = None) -> None:
        for name in target_names(t):  # a value only for `name = value`, not for unpacking
            found.setdefault(name, []).append(value if isinstance(t, cst.Name) else None)

    class _Targets(cst.CSTVisitor):
        def visit_Assign(self, n: cst.Assign) -> None:
            for t in n.targets:
                bind(t.target, n.value)

        def visit_AnnAssign(self, n: cst.AnnAssign) -> None:
            bind(n.target, n.value)

        def visit_AugAssign(self, n: cst.AugAssign) -> None:
            bind(n.target)

        def visit_For(self, n: cst.For) -> None:
            bind(n.target)

        def visit_CompFor(self, n: cst.CompFor) -> None:
            bind(n.target)

        def visit_NamedExpr(self, n: cst.NamedExpr) -> None:
            bind(n.target)

        def visit_AsName(self, n: cst.AsName) -> None:
            bind(n.name)

        def visit_Param(self, n: cst.Param) -> None:  # its lambdas' and nested functions'
            bind(n.name)

        def visit_FunctionDef(self, n: cst.FunctionDef) -> None:
            bind(n.name)

        def visit_ImportAlias(self, n: cst.ImportAlias) -> None:
            found.setdefault((dotted(n.asname.name if n.asname else n.name) or "").split(".")[0],
                             []).append(None)

    for p in param_list(func):
        bind(p.name)
    func.body.visit(_Targets())
    return found


class _Scan(cst.CSTVisitor):
    def __init__(self, analysis: ClassAnalysis, home: SourceModule, catalog: OpCatalog,
                 fa: FunctionAnalysis, is_step: bool, own: bool) -> None:
        self.analysis, self.home, self.cat = analysis, home, catalog
        # the analysis follows plain-name calls of step's module only (in code from another
        # module, `f(...)` is that module's f, whatever the step's module binds to `f`)
        self.followed = analysis.functions if own else {}
        self.methods = _tensor_methods(catalog)
        func = fa.func
        bound = _bindings(func)
        self.local = set(bound)
        self.arguments = {p.name.value for p in param_list(func)} if is_step else set()
        # `func = _multi if foreach else torch._fused_adam_`: every binding a choice of known
        # functions; `def _rect(): ...` (bound by its definition only) a nested one followed
        self.calls_of = {n for n, values in bound.items()
                         if all(v is not None and self._chosen(v) for v in values)}
        self.calls_of |= {n for n, values in bound.items() if values == [None] and
                          f"{fa.name}{LOCALS}{n}" in analysis.functions}
        self.reason = ""
        self.where: cst.CSTNode | None = None

    def deny(self, node: cst.CSTNode, why: str) -> None:
        if not self.reason:
            self.reason, self.where = why, node

    # -- names that change layouts, wherever they appear ----------------------------------------
    def visit_Name(self, node: cst.Name) -> None:
        if node.value in LAYOUT_CHANGES:
            self.deny(node, f"`{node.value}` may change a tensor's layout in place")

    def visit_Attribute(self, node: cst.Attribute) -> None:
        if node.attr.value in LAYOUT_CHANGES:
            self.deny(node, f"`.{node.attr.value}` may change a tensor's layout in place")

    def visit_SimpleString(self, node: cst.SimpleString) -> None:
        value = node.evaluated_value
        if isinstance(value, str) and value in LAYOUT_CHANGES:  # getattr(t, "set_")
            self.deny(node, f"the string {node.value} names an op that changes a layout")

    def _target(self, t: cst.BaseExpression) -> None:
        if isinstance(t, cst.Attribute) and t.attr.value in LAYOUT_ATTRIBUTES:
            self.deny(t, f"`.{t.attr.value}` is assigned or deleted")
        elif isinstance(t, (cst.Tuple, cst.List)):
            for el in t.elements:
                self._target(el.value)

    def visit_AssignTarget(self, node: cst.AssignTarget) -> None:
        self._target(node.target)

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        self._target(node.target)

    def visit_AugAssign(self, node: cst.AugAssign) -> None:
        self._target(node.target)

    def visit_Del(self, node: cst.Del) -> None:
        self._target(node.target)

    # -- code that runs without a call expression ----------------------------------------------
    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        self.deny(node, "a class is defined inside the step")

    def visit_Decorator(self, node: cst.Decorator) -> None:
        d = node.decorator
        if not isinstance(d, cst.Call) and not self._module_function(d):
            self.deny(node, f"decorator `{dotted(d) or '...'}` is not known")

    def visit_WithItem(self, node: cst.WithItem) -> None:  # __enter__ and __exit__ run
        item = node.item
        name = dotted(item.func) if isinstance(item, cst.Call) else None
        if name is None or not self._qualified(name).startswith("torch."):
            self.deny(node, "a context manager that is not torch's")

    # -- calls --------------------------------------------------------------------------------
    def visit_Call(self, node: cst.Call) -> None:
        func = node.func
        name = dotted(func)
        last = func.attr.value if isinstance(func, cst.Attribute) else \
            func.value if isinstance(func, cst.Name) else ""
        if last in LAYOUT_CHANGES or "resize" in last:
            self.deny(node, f"`{last}` may change a tensor's layout in place")
            return
        if name is None:
            if isinstance(func, cst.Attribute):
                if not self._method_ok(last):  # `state["x"].mul_(...)`, `(a + b).sqrt()`: ok
                    self.deny(node, f"method `.{last}(...)` is not known")
                return
            self.deny(node, "a call of a computed callable")
            return
        root = name.split(".")[0]
        if root == "self":
            self._self_call(node, name)
            return
        if "." in name and (root in self.local or root not in self.home.imports):
            if not self._method_ok(name.rsplit(".", 1)[1]):  # a method of a value (a local, a
                self.deny(node, f"`{name}(...)` is not known")  # closure's or a global one)
            return
        if root in self.local:
            if root in self.arguments or root in self.calls_of:
                return  # the step's closure (r_step: the original runs it), `func = _a if ...`
            self.deny(node, f"`{name}(...)` is not known")
            return
        if name in SAFE_BUILTINS and root not in self.home.imports:
            self._key_argument(node)
            return
        if name in CALLING_BUILTINS and root not in self.home.imports:
            if not node.args or not isinstance(node.args[0].value, cst.Lambda):
                self.deny(node, f"`{name}` of a function that is not a lambda")
            return
        if self._module_function(func):
            return
        self.deny(node, f"`{name}(...)` is not known")

    def _self_call(self, node: cst.Call, name: str) -> None:
        parts = name.split(".")
        followed = self.analysis.functions
        if len(parts) == 2 and (name in followed or parts[1] in HARMLESS_OPTIMIZER_METHODS or
                                self.analysis.self_helpers.get(parts[1]) in followed):
            return  # followed (r_step checks that self.ATTR is the helper it was analysed as)
        if len(parts) == 3 and parts[1] in ("state", "param_groups", "defaults") and \
                parts[2] in CONTAINER_METHODS:
            return
        self.deny(node, f"`{name}(...)` is not followed")

    def _key_argument(self, node: cst.Call) -> None:
        for a in node.args:
            if a.keyword is not None and a.keyword.value == "key" and \
                    not isinstance(a.value, cst.Lambda):
                self.deny(a, "a `key=` function that is not a lambda")

    def _method_ok(self, method: str) -> bool:
        return method in self.methods or method in CONTAINER_METHODS

    def _qualified(self, name: str) -> str:
        """`F.sqrt` -> `torch.nn.functional.sqrt`; a relative import against the package."""
        root, _, rest = name.partition(".")
        origin = self.home.imports.get(root)
        if origin is None:
            return name
        origin = absolute_origin(origin, self.home.package)  # (left relative: not known)
        return f"{origin}.{rest}" if rest else origin

    def _chosen(self, e: cst.BaseExpression) -> bool:
        if isinstance(e, cst.IfExp):
            return self._chosen(e.body) and self._chosen(e.orelse)
        return self._module_function(e)

    def _module_function(self, func: cst.BaseExpression) -> bool:
        """A torch or math function, one the catalog describes, or one the analysis followed."""
        name = dotted(func)
        if name is None or name.split(".")[0] in self.local:
            return False
        if name in self.followed:
            return True
        qualified = self._qualified(name)
        if qualified.startswith(("torch.ops.", "torch._C.")):  # raw operators: any of them
            return False
        if qualified.startswith(("torch.", "math.")) or qualified in ("torch", "math",
                                                                       "warnings.warn"):
            return True
        if name in ("staticmethod", "classmethod"):
            return True
        return self.cat.function(qualified) is not None


