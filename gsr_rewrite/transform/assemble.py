"""Stage 5, assemble: the R-variant module — the original module with, after each rewritten class,
its `<Name>R` subclass holding the rewritten methods (and helpers copied beside them)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import libcst as cst

from gsr_rewrite.errors import RewriteError
from gsr_rewrite.frontend.catalog import OpCatalog
from gsr_rewrite.frontend.closures import LOCALS
from gsr_rewrite.frontend.locate import SourceModule
from gsr_rewrite.frontend.source import same_module
from gsr_rewrite.outcome import ClassOutcome
from gsr_rewrite.transform import RUNTIME
from gsr_rewrite.transform.emit import Renamer, guard_expression, rewrite_statement
from gsr_rewrite.transform.guard_leaves import code_of, statement_leaves
from gsr_rewrite.transform.namespace import Namespace
from gsr_rewrite.transform.plan import FunctionPlan, Placement
from gsr_rewrite.transform.stripmine import (
    StripRegion,
    fresh_name,
    guard_once,
    wrap_region,
)
from gsr_rewrite.transform.watch import watch_statement, with_watch
from gsr_rewrite.version import __version__


def describe_storage(p: Placement) -> str:
    if p.strips:
        return f"1/{p.strips} strips"
    if not p.placed:
        return ""
    s = p.storage or ""
    if s == "grad":
        return "gradient"
    if s.startswith("state:"):
        return f"state '{s[6:]}'"
    return f"temporary at {s[4:]}" if s.startswith("tmp@") else s


# -- emission --------------------------------------------------------------------------------
def emit_module(src: SourceModule, outcomes: list[ClassOutcome], catalog: OpCatalog,
                package: str | None) -> str:
    module = src.module
    helpers: list[cst.BaseStatement] = []  # rewritten module-level helpers, callees first
    extra: list[cst.ClassDef] = []  # the R classes
    #: what each R class came from, its functions copied rewritten and its moved methods
    r_outs: list[tuple[ClassOutcome, list[str], dict[str, str]]] = []
    emitted_helpers: dict[str, str] = {}  # new helper name -> code (shared between classes)
    copied: list[tuple[cst.CSTNode, SourceModule, str]] = []  # code, its module, its class
    for out in outcomes:
        if out.status != "rewritten" or out.analysis is None:
            continue
        cls = out.analysis.cls
        home = cls.origin.get("step", src)  # the module of step and of the helpers it calls
        changed = _functions_to_copy(out)
        rename: dict[str, str] = {}
        for name in changed:
            fa = out.analysis.functions[name]
            if not fa.is_method and fa.parent is None:  # nested ones are copied with their parent
                rename[name] = f"{name}_gsr"
        # self.ATTR(...) that __init__ binds to a module function F: the analysis followed F, so
        # the R step runs only while self.ATTR is F (r_step checks), and calls F's R-variant
        followed = {a: f for a, f in out.analysis.self_helpers.items()
                    if f in out.analysis.functions}
        renamer = Renamer(rename, {a: rename[f] for a, f in followed.items() if f in rename})
        moved = _moved_methods(out, changed)
        methods: list[cst.BaseStatement] = []
        for fp in out.plans:
            if fp.name not in changed or fp.analysis.parent is not None:
                continue
            inner = [q for q in out.plans if q.name.startswith(fp.name + LOCALS)]
            regions = [r for q in [fp, *inner] for r in out.regions.get(q.name, [])]
            key = fp.name.removeprefix("self.")
            owner = cls.origin.get(key, src) if fp.analysis.is_method else \
                out.analysis.imported.get(fp.name, home)
            # code from another module names that module's globals: none is a helper renamed here
            own = renamer if same_module(owner, home) else Renamer({}, renamer.attrs)
            new = _rewrite_function(fp, catalog, own, inner, regions)
            if fp.analysis.is_method:
                new = _as_in_class(new, _defining_class(src.module, fp.analysis.func, out.name)
                                   if same_module(owner, src) else
                                   cls.defined_by.get(key, out.name))
                new = _call_moved(new, moved)
                if _private(key, cls.defined_by.get(key, out.name)) in moved:
                    new = new.with_changes(name=cst.Name(
                        moved[_private(key, cls.defined_by.get(key, out.name))]))
                copied.append((new, owner, out.name))
                if fp.name == "step":
                    copied += [(cst.Name(f), home, out.name) for f in followed.values()]
                    bound = "".join(f", {a}={f}" for a, f in sorted(followed.items()))
                    if out.fixed_layout and "fixed_layout" not in followed:
                        bound = ", fixed_layout=True" + bound
                    # what the analysis took for data, checked at the step's start
                    bound = "".join(f", {a!r}" for a in sorted(out.analysis.checked_data)) + \
                        bound
                    new = new.with_changes(decorators=[
                        cst.Decorator(cst.parse_expression(
                            f"{RUNTIME}.r_step({out.name}{bound})")),
                        *new.decorators])
                methods.append(new.with_changes(leading_lines=[cst.EmptyLine(indent=False)]))
            else:
                new = new.with_changes(name=cst.Name(rename[fp.name]),
                                       leading_lines=[cst.EmptyLine(), cst.EmptyLine()])
                copied.append((new, owner, out.name))
                code = code_of(new)
                if emitted_helpers.get(rename[fp.name], code) != code:
                    raise RewriteError(src.where(fp.analysis.func), "helper rewritten two "
                                       "different ways for two classes; split the module")
                if rename[fp.name] not in emitted_helpers:
                    emitted_helpers[rename[fp.name]] = code
                    # callees are found after their callers; a decorator may name a callee
                    # at import time (`@wrap(single_tensor_fn=_single_gsr)`): emit them first
                    helpers.insert(0, new)
        doc = (f'"""{out.name} with gradient space reutilization (generated by gsr-rewrite).\n\n'
               f"    Same constructor, state and results as {out.name}; but after step() the\n"
               "    contents of p.grad are undefined: the gradient buffers hold scratch values.\n"
               '    """')
        r_outs.append((out, changed, moved))
        extra.append(cst.ClassDef(
            name=cst.Name(out.r_name), bases=[cst.Arg(cst.Name(out.name))],
            body=cst.IndentedBlock([cst.SimpleStatementLine([cst.Expr(cst.parse_expression(doc))]),
                                    *methods]),
            leading_lines=[cst.EmptyLine(), cst.EmptyLine()]))
    rewritten = [o for o in outcomes if o.status == "rewritten"]
    foreign = any(not same_module(owner, src) for _, owner, _ in copied)
    inherits = any(not same_module(m, src) for o in rewritten if o.analysis is not None
                   for m in o.analysis.cls.origin.values())  # methods from other modules
    runtime = cst.parse_statement(
        f"from gsr_rewrite import runtime as {RUNTIME}  # added by gsr-rewrite\n")
    ns = Namespace(emitted={RUNTIME, *emitted_helpers})
    importing = (foreign or inherits) and src.name is not None
    if importing:  # import the originals, copy nothing
        ns.here = {o.name: f"{src.name}.{o.name}" for o in rewritten}
        for node, owner, name in copied:
            ns.need(node, owner, f"{owner.filename}: {name}", name)
        originals = ", ".join(sorted(o.name for o in rewritten))
        body: list[Any] = [cst.parse_statement(f"from {src.name} import {originals}  # the "
                                               "original classes\n"), *ns.statements(), runtime]
        module = module.with_changes(header=[])
    else:
        if foreign:  # a copy of the module, and what the code copied from other modules reads
            ns.copy_of(src)
        for node, owner, name in copied:  # (the copy's own globals: watched in src's module)
            if not same_module(owner, src):
                ns.need(node, owner, f"{owner.filename}: {name}", name)
            else:
                ns.note(node, owner, name)
        body = list(module.body)
        if package is not None:
            body = [_absolute_imports(s, package) for s in body]
        relative = next((s for s in body if isinstance(s, cst.SimpleStatementLine) and any(
            isinstance(i, cst.ImportFrom) and i.relative for i in s.body)), None)
        if relative is not None:  # the copy would not import
            raise RewriteError(src.where(relative), "relative import in a module whose package "
                               "is not known: give gsr-rewrite its dotted module name, or put "
                               "its package's root folder on the import path (PYTHONPATH)")
        last_import = max((i for i, s in enumerate(body) if isinstance(s, cst.SimpleStatementLine)
                           and isinstance(s.body[0], (cst.Import, cst.ImportFrom))), default=-1)
        body[last_import + 1:last_import + 1] = [*ns.statements(), runtime]
    names = ", ".join(o.r_name for o in rewritten)
    header = [
        f"# Generated by gsr-rewrite {__version__} from {src.filename}; do not edit, regenerate.",
        f"# Adds {names}: the original classes with gradient space reutilization.",
        "# Contract: same results as the originals, but after step() the contents of p.grad",
        "# are undefined: the gradient buffers hold scratch values.",
        "# Set GSR_DEBUG_POISON=1 to fill reused gradients with NaN after each step.",
    ]
    lines = [cst.EmptyLine(comment=cst.Comment(h)) for h in header]
    watches = [watch_statement(o, ns, src, changed, moved) for o, changed, moved in r_outs]
    watched = [with_watch(c, w) for c, w in zip(extra, watches, strict=True)]
    new_module = module.with_changes(body=body + helpers + [w for w in watches if w] + watched,
                                     header=[*lines, *module.header])
    return new_module.code


def _private(method: str, cls: str) -> str:
    """The attribute name of `method` as class `cls` defines it (`__m` is `_cls__m`)."""
    if method.startswith("__") and not method.endswith("__"):
        return f"_{cls.lstrip('_')}{method}"
    return method


def _moved_methods(out: ClassOutcome, changed: list[str]) -> dict[str, str]:
    """The helper methods the R class holds rewritten, each under a new name (`m` ->
    `m_gsr`): the original step, which `r_step` runs where the R step would not be exact,
    calls `self.m` and must reach the original `m`, never the rewritten one."""
    assert out.analysis is not None
    cls = out.analysis.cls
    moved: dict[str, str] = {}
    for name in changed:
        fa = out.analysis.functions[name]
        if fa.is_method and name != "step" and fa.parent is None:
            key = _private(name.removeprefix("self."),
                           cls.defined_by.get(name.removeprefix("self."), out.name))
            new = f"{key}_gsr"
            while new in cls.methods or new in moved.values():
                new += "_"
            moved[key] = new
    return moved


class _MovedCalls(cst.CSTTransformer):
    """`self.m`, `type(self).m` and `self.__class__.m` -> `.m_gsr` for the moved methods
    (`Cls.m` stays: the original class has no `m_gsr`; the original `m` it runs is exact)."""

    def __init__(self, moved: dict[str, str], receiver: str) -> None:
        self.moved, self.receiver = moved, receiver

    def leave_Attribute(self, original: cst.Attribute, updated: cst.Attribute
                        ) -> cst.Attribute:
        if updated.attr.value in self.moved and self._is_receiver(updated.value):
            return updated.with_changes(attr=cst.Name(self.moved[updated.attr.value]))
        return updated

    def _is_receiver(self, e: cst.BaseExpression) -> bool:
        if isinstance(e, cst.Name):
            return e.value == self.receiver
        if isinstance(e, cst.Call):
            return isinstance(e.func, cst.Name) and e.func.value == "type" and \
                len(e.args) == 1 and self._is_receiver(e.args[0].value)
        return isinstance(e, cst.Attribute) and e.attr.value == "__class__" and \
            self._is_receiver(e.value)


def _call_moved(method: cst.FunctionDef, moved: dict[str, str]) -> cst.FunctionDef:
    params = [*method.params.posonly_params, *method.params.params]
    static = any(isinstance(d.decorator, cst.Name) and d.decorator.value == "staticmethod"
                 for d in method.decorators)
    if not moved or not params or static:
        return method
    result = method.visit(_MovedCalls(moved, params[0].name.value))
    assert isinstance(result, cst.FunctionDef)
    return result


class _AsInClass(cst.CSTTransformer):
    """A method copied from class C into CR must mean what it meant in C: zero-argument
    `super()` becomes `super(C, self)` (in CR it would reach C itself), and `self.__x` is
    written mangled as in C (`self._C__x`; in CR it would mangle to `_CR__x`)."""

    def __init__(self, cls: str, first: str) -> None:
        self.cls, self.first = cls, first

    def leave_Call(self, original: cst.Call, updated: cst.Call) -> cst.Call:
        if isinstance(updated.func, cst.Name) and updated.func.value == "super" and \
                not updated.args:
            return updated.with_changes(args=[cst.Arg(cst.Name(self.cls)),
                                              cst.Arg(cst.Name(self.first))])
        return updated

    def leave_Attribute(self, original: cst.Attribute, updated: cst.Attribute
                        ) -> cst.Attribute:
        name = updated.attr.value
        if name.startswith("__") and not name.endswith("__"):
            return updated.with_changes(attr=cst.Name(f"_{self.cls.lstrip('_')}{name}"))
        return updated


def _defining_class(module: cst.Module, method: cst.FunctionDef, default: str) -> str:
    """The module-level class whose body defines `method` (a base class for inherited ones)."""
    for stmt in module.body:
        if isinstance(stmt, cst.ClassDef) and isinstance(stmt.body, cst.IndentedBlock) and \
                any(m is method for m in stmt.body.body):
            return stmt.name.value
    return default


def _as_in_class(method: cst.FunctionDef, cls: str) -> cst.FunctionDef:
    params = [*method.params.posonly_params, *method.params.params]
    if not params:
        return method
    result = method.visit(_AsInClass(cls, params[0].name.value))
    assert isinstance(result, cst.FunctionDef)
    return result


def _functions_to_copy(out: ClassOutcome) -> list[str]:
    assert out.analysis is not None
    changed = {fp.name for fp in out.plans if any(p.placed for p in fp.placements)} | \
        set(out.regions)
    grew = True
    while grew:
        grew = False
        for name, fa in out.analysis.functions.items():
            calls = {c for n in fa.flow.nodes for c, *_ in n.eff.calls}
            if name not in changed and calls & changed:
                changed.add(name)
                grew = True
    return [name for name in out.analysis.functions if name in changed]


class _StatementSwap(Renamer):
    def __init__(self, new: dict[int, cst.BaseStatement], renamer: Renamer,
                 regions: Sequence[StripRegion] = (), taken: set[str] | None = None) -> None:
        super().__init__(renamer.names, renamer.attrs)
        self.new = new
        self.regions: dict[int, list[StripRegion]] = {}
        self.taken = taken or set()
        self.once: dict[int, str] = {}  # line -> the strip counter of its loop (stripmine)
        self.flags: dict[int, str] = {}
        for r in regions:
            self.regions.setdefault(id(r.block), []).append(r)
            if r.once:
                self.flags[id(r)] = fresh_name("strip_index", self.taken)
                self.once.update(dict.fromkeys(r.once, self.flags[id(r)]))

    def leave_SimpleStatementLine(self, original: cst.SimpleStatementLine,
                                  updated: cst.SimpleStatementLine) -> cst.BaseStatement:
        return self.new.get(id(original), updated)

    def leave_IndentedBlock(self, original: cst.IndentedBlock, updated: cst.IndentedBlock
                            ) -> cst.IndentedBlock:
        body = list(updated.body)  # statement i of updated is statement i of original, rewritten
        regions = self.regions.get(id(original), [])
        if not regions:  # lines inside a strip-mined run that run in its first strip only
            return updated.with_changes(body=guard_once(original.body, body, self.once))
        for r in sorted(regions, key=lambda r: -r.start):
            body[r.start:r.end] = wrap_region(r, original.body[r.start:r.end],
                                              body[r.start:r.end], self.taken, RUNTIME,
                                              self.flags.get(id(r), ""))
        return updated.with_changes(body=body)


def _rewrite_function(fp: FunctionPlan, catalog: OpCatalog, renamer: Renamer,
                      inner: Sequence[FunctionPlan] = (),
                      regions: Sequence[StripRegion] = ()) -> cst.FunctionDef:
    """fp's function with its rewritten statements and strip-mined runs, and those of the
    functions defined inside it (`inner`: they are part of its body)."""
    by_line: dict[int, list[Placement]] = {}
    lines: dict[int, cst.SimpleStatementLine] = {}
    for p in [p for q in [fp, *inner] for p in q.placements]:
        if p.node.line is not None:
            by_line.setdefault(id(p.node.line), []).append(p)
            lines[id(p.node.line)] = p.node.line
    new: dict[int, cst.BaseStatement] = {}
    for key, ps in by_line.items():
        placed = [p for p in ps if p.placed]
        leaves = statement_leaves(ps, catalog)
        if not placed or not leaves:
            continue
        tensor_ops = {id(p.alloc.node): p.tensor_operands for p in placed}
        note = "; ".join(f"{p.alloc.op} -> {describe_storage(p)}" for p in placed)
        new[key] = rewrite_statement(lines[key], placed, catalog, tensor_ops,
                                     guard_expression(placed, leaves), renamer, note)
    from gsr_rewrite.frontend.effects import names_in

    result = fp.analysis.func.visit(_StatementSwap(new, renamer, regions,
                                                   names_in(fp.analysis.func)))
    assert isinstance(result, cst.FunctionDef)
    return result


def _absolute_imports(stmt: cst.BaseStatement, package: str) -> cst.BaseStatement:
    if not (isinstance(stmt, cst.SimpleStatementLine) and isinstance(stmt.body[0], cst.ImportFrom)):
        return stmt
    imp = stmt.body[0]
    if not imp.relative:
        return stmt
    parts = package.split(".")
    level = len(imp.relative)
    base = parts[: len(parts) - (level - 1)] if level > 1 else parts
    mod = ".".join([*base, *([code_of(imp.module)] if imp.module is not None else [])])
    return stmt.with_changes(body=[imp.with_changes(relative=[], module=cst.parse_expression(mod))])
