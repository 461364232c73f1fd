"""What the analysis of one class assumes of what it does not see (DESIGN.md section 3): which
`self.ATTR` are constants, which module globals are opaque, which calls name the class, and which
analysed methods come from a base class's module (their globals are that module's)."""

from __future__ import annotations

import libcst as cst

from gsr_rewrite.analysis.checked_data import checked_data_attrs
from gsr_rewrite.frontend.effects import UNNAMED_STATE, Unknowns, dotted
from gsr_rewrite.frontend.locate import OptimizerClass, SourceModule
from gsr_rewrite.frontend.self_helpers import (
    first_handing_self_away,
    self_attr_targets,
    stores_self,
)

#: methods of torch.optim.Optimizer that a step may call and that touch no tensor of it
HARMLESS_OPTIMIZER_METHODS = frozenset({"_cuda_graph_capture_health_check",
                                        "_accelerator_graph_capture_health_check"})


def param_names(func: cst.FunctionDef, is_method: bool) -> tuple[list[str], list[str]]:
    pos = [p.name.value for p in (*func.params.posonly_params, *func.params.params)]
    static = any(dotted(d.decorator) == "staticmethod" for d in func.decorators)
    if is_method and pos and not static:  # self (or cls): not an argument of the call
        pos = pos[1:]
    return pos, [p.name.value for p in func.params.kwonly_params]


class ForeignModules:
    """Which analysed functions come from another module than `src`: methods of bases
    (locate.class_view) and imported functions (frontend/imported.py)."""

    def __init__(self, src: SourceModule, cls: OptimizerClass) -> None:
        self.by_func = {id(cls.methods[m]): owner for m, owner in cls.origin.items()
                        if owner.module is not src.module and m in cls.methods}
        self.by_func.update({id(f): owner for f, owner in src.imported.values()})

    def of(self, func: cst.FunctionDef) -> SourceModule | None:
        return self.by_func.get(id(func))


def _data_updates(func: cst.FunctionDef) -> dict[str, int]:
    """How many `self.ATTR op= <literal data>` the function has, per ATTR."""
    found: dict[str, int] = {}

    class _V(cst.CSTVisitor):
        def visit_AugAssign(self, node: cst.AugAssign) -> None:
            t = node.target
            if isinstance(t, cst.Attribute) and dotted(t.value) == "self" and \
                    _is_data(node.value, set()):
                found[t.attr.value] = found.get(t.attr.value, 0) + 1

    func.visit(_V())
    return found


def _is_data(e: cst.BaseExpression | None, names: set[str]) -> bool:
    """A constant expression of `names` (constructor arguments): numbers, strings, tuples, and
    arithmetic and float()/int()/bool() of them: no tensor of the optimizer can be in it."""
    if e is None:
        return False
    if isinstance(e, (cst.Integer, cst.Float, cst.SimpleString, cst.ConcatenatedString)):
        return True
    if isinstance(e, cst.Name):
        return e.value in names or e.value in ("True", "False", "None")
    if isinstance(e, (cst.Tuple, cst.List)):
        return all(_is_data(el.value, names) for el in e.elements)
    if isinstance(e, cst.UnaryOperation):
        return _is_data(e.expression, names)
    if isinstance(e, cst.BinaryOperation):
        return _is_data(e.left, names) and _is_data(e.right, names)
    if isinstance(e, cst.IfExp):
        return all(_is_data(x, names) for x in (e.test, e.body, e.orelse))
    if isinstance(e, cst.Comparison):
        return _is_data(e.left, names) and all(_is_data(c.comparator, names)
                                               for c in e.comparisons)
    if isinstance(e, cst.Call) and dotted(e.func) in ("float", "int", "bool", "str", "tuple"):
        return all(_is_data(a.value, names) for a in e.args)
    return False


def opaque_globals(src: SourceModule) -> frozenset[str]:
    """Module globals bound to something that is not a constant (a tensor may be in them)."""
    opaque_globals: set[str] = set()
    for stmt in src.module.body:
        if isinstance(stmt, cst.SimpleStatementLine):
            for small in stmt.body:
                if isinstance(small, (cst.Assign, cst.AnnAssign)) and \
                        not _is_data(small.value, set()):
                    targets = [t.target for t in small.targets] \
                        if isinstance(small, cst.Assign) else [small.target]
                    opaque_globals |= {t.value for t in targets if isinstance(t, cst.Name)}
    return frozenset(opaque_globals) - set(src.functions)


def class_unknowns(src: SourceModule, cls: OptimizerClass, scalar_keys: frozenset[str],
                   combined: cst.Module) -> Unknowns:
    """What an object the analysis does not model may be, for this class (see Unknowns)."""
    keys: set[str] = set()

    class _Keys(cst.CSTVisitor):
        def visit_SubscriptElement(self, node: cst.SubscriptElement) -> None:
            if isinstance(node.slice, cst.Index) and \
                    isinstance(node.slice.value, cst.SimpleString):
                keys.add(str(node.slice.value.evaluated_value))

    combined.visit(_Keys())
    roles = frozenset({"grad", "param", UNNAMED_STATE} |
                      {f"state:{k}" for k in keys - scalar_keys})
    init = cls.methods.get("__init__")
    args = set()
    if init is not None:
        pos, kw = param_names(init, True)
        args = set(pos[1:]) | set(kw)  # pos[0] is the params
    bound: dict[str, list[bool]] = {}  # per binding of self.ATTR: is it a number or string?
    for name, f in cls.methods.items():
        counters = _data_updates(f)  # `self.n += 1` keeps a number a number
        for attr, value in self_attr_targets(f):
            if value is None and counters.get(attr, 0) > 0:
                counters[attr] -= 1
                bound.setdefault(attr, []).append(True)
                continue
            bound.setdefault(attr, []).append(_is_data(value, args if name == "__init__"
                                                       else set()))
    constants = frozenset(a for a, ok in bound.items() if a != "*" and all(ok)
                          and "*" not in bound)
    callables = frozenset(m for m, f in cls.methods.items() if any(
        dotted(d.decorator) in ("staticmethod", "classmethod") for d in f.decorators))
    names = frozenset({cls.name, *cls.bases}) & {c.name for c in src.classes} | {cls.name}
    if cls.node not in src.positions:  # `step` is a base's, in another module: there `Cls` is
        names = frozenset()  # not this class (`Cls.m(...)` is then an unknown call)
    checked = checked_data_attrs(cls, combined, constants)  # data where the R step checks it
    # a constant is data as the class's own code binds it; but a constructor argument may be
    # any object (`self.model = model`), and code outside the class may bind the attribute
    # later (`opt.flat_grad = buffer` over `self.flat_grad = None`): the R step checks them too
    handed = any(first_handing_self_away(f) is not None or stores_self(f)
                 for f in cls.methods.values())
    return Unknowns(roles, constants | checked, opaque_globals(src),
                    HARMLESS_OPTIMIZER_METHODS, class_names=names, class_callables=callables,
                    checked_data=constants | checked, self_handed_away=handed)
