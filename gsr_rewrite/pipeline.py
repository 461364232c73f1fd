"""The whole compiler in one place: locate -> analyse -> plan -> rewrite -> emit.

`rewrite_source` turns an optimizer module's source into the source of its R-variant module and a
report. Validation (numeric equivalence and measured memory) lives in `validate.py` and runs on
the emitted module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import libcst as cst

from gsr_rewrite import __version__
from gsr_rewrite.analysis.interprocedural import ClassAnalysis, analyse_class
from gsr_rewrite.errors import AnalysisLimit, RewriteError
from gsr_rewrite.frontend.catalog import OpCatalog, load_catalog
from gsr_rewrite.frontend.closures import LOCALS
from gsr_rewrite.frontend.locate import OptimizerClass, SourceModule, parse
from gsr_rewrite.transform.emit import RUNTIME, Renamer, guard_expression, rewrite_statement
from gsr_rewrite.transform.plan import FunctionPlan, Placement, plan_class
from gsr_rewrite.transform.stripmine import (
    StripRegion,
    fresh_name,
    guard_once,
    strip_mine,
    wrap_region,
)

CONTRACT = ("after step() the contents of p.grad are undefined: the gradient buffers hold "
            "scratch values")


@dataclass
class Temporary:
    function: str
    line: int
    code: str
    op: str
    placed: bool
    lives_in: str  # buffer it now lives in, or "" when it still allocates
    how: str  # in-place chain / host variable / why not
    is_list: bool  # a foreach list (one parameter-size in total) or one tensor
    strips: int = 0  # strip-mined: it is 1/strips of its tensors (not placed in a dead buffer)


@dataclass
class ClassOutcome:
    name: str
    status: str  # rewritten | unchanged | refused
    reason: str = ""
    validation: str = ""  # certification verdict (compile_source): proved and/or tested
    checks: list[Any] = field(default_factory=list)  # the stress matrix's CheckResults
    equivalence: str = "bitwise"  # bitwise: storage moved only; tolerance: a rule changed math
    rules: list[str] = field(default_factory=list)  # rules from rules/ the rewrite relies on
    temporaries: list[Temporary] = field(default_factory=list)
    predicted_before: dict[str, int] = field(default_factory=dict)  # {"lists": k, "tensors": k}
    predicted_after: dict[str, int] = field(default_factory=dict)
    analysis: ClassAnalysis | None = None
    plans: list[FunctionPlan] = field(default_factory=list)
    regions: dict[str, list[StripRegion]] = field(default_factory=dict)  # per function

    @property
    def r_name(self) -> str:
        return self.name + "R"


@dataclass
class RewriteResult:
    filename: str
    code: str | None  # None when no class was rewritten
    classes: list[ClassOutcome]


def rewrite_source(source: str, filename: str = "<string>",
                   package: str | None = None) -> RewriteResult:
    catalog = load_catalog()
    src = parse(source, filename)  # 1. locate (syntax errors raise here)
    if not src.classes:
        raise RewriteError(f"{filename}:1:1", "no optimizer class found (a class deriving from "
                           "torch.optim.Optimizer); nothing to rewrite")
    outcomes = [_reformulated(src, _rewrite_class(src, cls, catalog), catalog)
                for cls in src.classes]  # 4b. reorder with a proved rule where no order exists
    code = None
    if any(o.status == "rewritten" for o in outcomes):
        code = emit_module(src, outcomes, catalog, package)  # 5. emit
    return RewriteResult(filename, code, outcomes)


def compile_source(source: str, filename: str = "<string>",
                   package: str | None = None) -> RewriteResult:
    """rewrite_source, then 6. validate: no class without proof. A class is kept only when
    `validate.certify` accepts it (symbolic execution proved it or could not run, and the
    differential stress matrix passed); otherwise it is refused with the reason and the module
    is emitted without it."""
    import tempfile
    from pathlib import Path

    from gsr_rewrite.proof.validate import certify, load_module

    result = rewrite_source(source, filename, package)
    while result.code is not None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "gsr_candidate.py"
            path.write_text(result.code)
            module = load_module(path, f"gsr_candidate_{abs(hash(result.code))}")
            failed = False
            for c in result.classes:
                if c.status != "rewritten" or c.validation:
                    continue  # certified in an earlier round: the same class, the same code
                verdict = certify(getattr(module, c.name), getattr(module, c.r_name),
                                  "bitwise" if c.equivalence == "bitwise" else "tolerance")
                c.validation, c.checks = verdict.detail, verdict.results
                if not verdict.ok:
                    c.status, c.reason, failed = "refused", verdict.detail, True
        if not failed:
            break
        result.code = (emit_module(parse(source, filename), result.classes, load_catalog(),
                                   package)
                       if any(c.status == "rewritten" for c in result.classes) else None)
    return result


def _reformulated(src: SourceModule, out: ClassOutcome, catalog: OpCatalog) -> ClassOutcome:
    """Plan again after reordering with rules/ where a temporary found no dead buffer."""
    from gsr_rewrite.transform.reformulate import RULE, apply_reorders, block_owners, find_reorders

    if all(t.placed for t in out.temporaries):
        return out
    owners = block_owners(src.module)
    reorders = [r for fp in out.plans for r in find_reorders(fp, owners)]
    if not reorders:
        return out
    new_src = parse(apply_reorders(src.module, reorders).code, src.filename)
    cls = next(c for c in new_src.classes if c.name == out.name)
    again = _rewrite_class(new_src, cls, catalog)
    if sum(t.placed for t in again.temporaries) <= sum(t.placed for t in out.temporaries):
        return out
    again.equivalence, again.rules = "tolerance", [RULE]
    again.reason = (f"reordered with rule {RULE} (guarded by its condition and float32/float64 "
                    "tensors; lines refer to the reordered source)")
    return again


def _rewrite_class(src: SourceModule, cls: OptimizerClass, catalog: OpCatalog) -> ClassOutcome:
    if "step" not in cls.methods:
        return ClassOutcome(cls.name, "refused", f"{src.where(cls.node)}: no `step` method here "
                            "or in a base class in this module")
    try:
        analysis = analyse_class(src, cls, catalog)  # 2-3. lower to effects, points-to, liveness
    except AnalysisLimit as e:  # this class only: the others of the module go on
        return ClassOutcome(cls.name, "refused", f"{e.where}: {e.reason}")
    plans = plan_class(analysis, catalog)  # 4. place temporaries in dead buffers
    for fp in plans:
        _drop_unguardable(fp, src)
    out = ClassOutcome(cls.name, "unchanged", analysis=analysis, plans=plans)
    for fp in plans:  # 4c. bound what found no dead buffer by running it strip by strip
        regions = strip_mine(fp, catalog, src.line_of)
        if regions:
            out.regions[fp.name] = regions
        # a strip-mined temporary is strip-sized, and its name no longer holds it after its
        # run: outside the run nothing may be placed in its buffer
        inside = _statements_of(regions)
        stripped = {p.alloc.site for p in fp.placements if p.strips}
        for p in fp.placements:
            if p.placed and p.storage in stripped and id(p.node.line) not in inside:
                p.storage = None
                p.reason = "its host, a temporary, is strip-mined"
    for fp in plans:
        for p in fp.placements:
            if not p.placed and not p.strips and (p.reason == "kept as state" or
                                                  p.alloc.in_comprehension):
                continue
            out.temporaries.append(Temporary(
                fp.name, src.line_of(p.node.node or p.alloc.node), _code(p.alloc.node), p.alloc.op,
                p.placed, _describe_storage(p), p.reason, p.alloc.form == "foreach", p.strips))
    out.predicted_before, out.predicted_after = _predict(plans)
    grad_escapes = [f"{where}: gradient {why}" for b, why, where in analysis.escapes
                    if b == "grad"]
    if any(t.placed or t.strips for t in out.temporaries):
        out.status = "rewritten"
    elif grad_escapes and out.temporaries:
        out.status, out.reason = "refused", grad_escapes[0]
    elif not out.temporaries:
        out.reason = ("no parameter-sized temporary in step() or the same-module helpers it "
                      "calls by name") + (f" (not followed: {grad_escapes[0]})"
                                          if grad_escapes else "")
    else:
        out.reason = "no temporary could be placed in a dead buffer (see each temporary)"
    return out


def _statements_of(regions: Sequence[StripRegion]) -> set[int]:
    """ids of every statement inside the strip-mined runs."""
    found: set[int] = set()

    class _Statements(cst.CSTVisitor):
        def on_visit(self, node: cst.CSTNode) -> bool:
            found.add(id(node))
            return not isinstance(node, cst.BaseExpression)

    for r in regions:
        for stmt in r.block.body[r.start:r.end]:
            stmt.visit(_Statements())
    return found


def _code(node: cst.CSTNode) -> str:
    return cst.Module([]).code_for_node(node)


def _describe_storage(p: Placement) -> str:
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


def _is_pure(e: cst.BaseExpression) -> bool:
    if isinstance(e, cst.Name):
        return True
    if isinstance(e, cst.Attribute):
        return _is_pure(e.value)
    if isinstance(e, cst.Subscript):
        idx = [el.slice for el in e.slice]
        return _is_pure(e.value) and all(
            isinstance(i, cst.Index) and isinstance(i.value, (cst.Name, cst.Integer,
                                                              cst.SimpleString)) for i in idx)
    return False


def statement_leaves(placements: list[Placement]) -> list[tuple[str, bool, bool]] | None:
    """(code, is_host, is_list) of every tensor a rewritten statement writes or combines, or None
    when one of them is not a plain name/attribute/subscript (the guard cannot re-read it)."""
    leaves: list[tuple[str, bool, bool]] = []
    by_node = {id(p.alloc.node): p for p in placements}

    def inputs(p: Placement) -> list[cst.BaseExpression]:
        """Tensor inputs of p, looking through nested temporaries it consumes."""
        out: list[cst.BaseExpression] = []
        for k, op in enumerate(p.alloc.operands):
            inner = by_node.get(id(op))
            if inner is not None:
                out += inputs(inner)
            elif p.tensor_operands and p.tensor_operands[k]:
                out.append(op)
        return out

    for p in placements:
        if not p.placed:
            continue
        lists = p.alloc.form == "foreach"
        hosts = [p.host] if p.host is not None else []
        if p.chain is not None and not p.nested_operands[p.chain]:
            hosts.append(p.alloc.operands[p.chain])
        others = [op for op in inputs(p) if op not in hosts]
        for e, is_host in [*((h, True) for h in hosts), *((o, False) for o in others)]:
            if not _is_pure(e):
                return None
            item = (_code(e), is_host, lists)
            if item not in leaves:
                leaves.append(item)
    return leaves


def _drop_unguardable(fp: FunctionPlan, src: SourceModule) -> None:
    by_line: dict[int, list[Placement]] = {}
    for p in fp.placements:
        by_line.setdefault(id(p.node), []).append(p)
    for ps in by_line.values():
        if any(p.placed for p in ps) and not statement_leaves(ps):
            for p in ps:
                p.storage, p.reason = None, "an operand is not a plain name; it cannot be guarded"


def _predict(plans: list[FunctionPlan]) -> tuple[dict[str, int], dict[str, int]]:
    """Peak number of temporaries alive at once, before and after (lists and single tensors)."""
    before = {"lists": 0, "tensors": 0}
    after = {"lists": 0, "tensors": 0}
    for fp in plans:
        kinds = {p.alloc.site: ("lists" if p.alloc.form == "foreach" else "tensors", p)
                 for p in fp.placements if p.reason != "kept as state" and
                 not p.alloc.in_comprehension}
        for n in fp.analysis.flow.nodes:
            alive = {b for _, b in n.live_out if b in kinds} | \
                    {a.site for a in n.eff.allocs if a.site in kinds}
            for target, count_fresh in ((before, False), (after, True)):
                for kind in ("lists", "tensors"):
                    sites = [s for s in alive if kinds[s][0] == kind]
                    if count_fresh:
                        sites = [s for s in sites if not kinds[s][1].placed and
                                 not kinds[s][1].strips]
                    target[kind] = max(target[kind], len(sites))
    return before, after


# -- emission --------------------------------------------------------------------------------
def emit_module(src: SourceModule, outcomes: list[ClassOutcome], catalog: OpCatalog,
                package: str | None) -> str:
    module = src.module
    helpers: list[cst.BaseStatement] = []  # rewritten module-level helpers, callees first
    extra: list[cst.BaseStatement] = []
    emitted_helpers: dict[str, str] = {}  # new helper name -> code (shared between classes)
    for out in outcomes:
        if out.status != "rewritten" or out.analysis is None:
            continue
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
        methods: list[cst.BaseStatement] = []
        for fp in out.plans:
            if fp.name not in changed or fp.analysis.parent is not None:
                continue
            inner = [q for q in out.plans if q.name.startswith(fp.name + LOCALS)]
            regions = [r for q in [fp, *inner] for r in out.regions.get(q.name, [])]
            new = _rewrite_function(fp, catalog, renamer, inner, regions)
            if fp.analysis.is_method:
                new = _as_in_class(new, _defining_class(src.module, fp.analysis.func, out.name))
                if fp.name == "step":
                    bound = "".join(f", {a}={f}" for a, f in sorted(followed.items()))
                    new = new.with_changes(decorators=[
                        cst.Decorator(cst.parse_expression(
                            f"{RUNTIME}.r_step({out.name}{bound})")),
                        *new.decorators])
                methods.append(new.with_changes(leading_lines=[cst.EmptyLine(indent=False)]))
            else:
                new = new.with_changes(name=cst.Name(rename[fp.name]),
                                       leading_lines=[cst.EmptyLine(), cst.EmptyLine()])
                code = _code(new)
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
        extra.append(cst.ClassDef(
            name=cst.Name(out.r_name), bases=[cst.Arg(cst.Name(out.name))],
            body=cst.IndentedBlock([cst.SimpleStatementLine([cst.Expr(cst.parse_expression(doc))]),
                                    *methods]),
            leading_lines=[cst.EmptyLine(), cst.EmptyLine()]))
    body: list[Any] = list(module.body)
    if package is not None:
        body = [_absolute_imports(s, package) for s in body]
    last_import = max((i for i, s in enumerate(body) if isinstance(s, cst.SimpleStatementLine)
                       and isinstance(s.body[0], (cst.Import, cst.ImportFrom))), default=-1)
    body.insert(last_import + 1, cst.parse_statement(
        f"from gsr_rewrite import runtime as {RUNTIME}  # added by gsr-rewrite\n"))
    rewritten = ", ".join(o.r_name for o in outcomes if o.status == "rewritten")
    header = [
        f"# Generated by gsr-rewrite {__version__} from {src.filename}; do not edit, regenerate.",
        f"# Adds {rewritten}: the original classes with gradient space reutilization.",
        "# Contract: same results as the originals, but after step() the contents of p.grad",
        "# are undefined: the gradient buffers hold scratch values.",
        "# Set GSR_DEBUG_POISON=1 to fill reused gradients with NaN after each step.",
    ]
    lines = [cst.EmptyLine(comment=cst.Comment(h)) for h in header]
    new_module = module.with_changes(body=body + helpers + extra,
                                     header=[*lines, *module.header])
    return new_module.code


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
        leaves = statement_leaves(ps)
        if not placed or not leaves:
            continue
        tensor_ops = {id(p.alloc.node): p.tensor_operands for p in placed}
        note = "; ".join(f"{p.alloc.op} -> {_describe_storage(p)}" for p in placed)
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
    mod = ".".join([*base, *([_code(imp.module)] if imp.module is not None else [])])
    return stmt.with_changes(body=[imp.with_changes(relative=[], module=cst.parse_expression(mod))])
