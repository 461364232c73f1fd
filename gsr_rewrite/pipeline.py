"""The whole compiler in one place: locate -> analyse -> plan -> rewrite -> emit -> validate.

`rewrite_source` turns an optimizer module's source into the source of its R-variant module and a
report; `compile_source` also validates it and keeps only the classes that were proved. The
stages, in order, and where each lives (ARCHITECTURE.md has the map):

    1.   locate      frontend/locate.py        optimizer classes, their `step`, its helpers
    2-3. analyse     analysis/                 effects of each statement (frontend/effects.py),
                                               points-to, escapes and liveness over every helper
    4.   plan        transform/plan.py         each temporary into a dead buffer, or why not
    4b.  reformulate transform/reformulate.py  reorder with a proved rule (rulebook/, rules/)
    4c.  strip-mine  transform/stripmine/      bound what found no dead buffer
    5.   emit        transform/emit.py, assemble.py   guarded in-place statements, the module
    6.   validate    proof/validate.py         symbolic proof and the stress matrix, per class
    7.   report      cli/report.py             (outside this module: the command line's)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import libcst as cst

from gsr_rewrite.analysis.interprocedural import analyse_class
from gsr_rewrite.analysis.layout import layout_changes
from gsr_rewrite.errors import AnalysisLimit, RewriteError
from gsr_rewrite.frontend.catalog import OpCatalog, load_catalog
from gsr_rewrite.frontend.imported import with_imported_functions
from gsr_rewrite.frontend.locate import OptimizerClass, SourceModule, class_view, parse
from gsr_rewrite.outcome import ClassOutcome, RewriteResult, Temporary
from gsr_rewrite.transform.assemble import describe_storage, emit_module
from gsr_rewrite.transform.guard_leaves import code_of, statement_leaves
from gsr_rewrite.transform.plan import FunctionPlan, Placement, plan_class
from gsr_rewrite.transform.stripmine import (
    StripRegion,
    per_element_helpers,
    position_wise,
    strip_mine,
)


def rewrite_source(source: str, filename: str = "<string>", package: str | None = None,
                   module: str | None = None, import_originals: bool = False) -> RewriteResult:
    """`package` resolves the source's relative imports; `module` is its importable dotted name:
    given, R-variants of classes that inherit from other modules import the original classes,
    and with `import_originals` (the CLI) every R module does, instead of copying the module."""
    catalog = load_catalog()
    src = parse(source, filename, package, module)  # 1. locate (syntax errors raise here)
    if not src.classes:
        unresolved = "".join(f"; the bases of `{c}` could not be resolved: `{b}`: {why}"
                             for c, b, why in src.unresolved)
        raise RewriteError(f"{filename}:1:1", "no optimizer class found (a class deriving from "
                           f"torch.optim.Optimizer){unresolved}; nothing to rewrite")
    # 4b. reorder with a proved rule where no order exists; 4d. specialize runs to options off
    outcomes = [_specialized(src, _reformulated(src, _rewrite_class(src, cls, catalog), catalog),
                             catalog) for cls in src.classes]
    defs = {s.name.value: s for s in src.module.body if isinstance(s, cst.ClassDef)}
    outcomes += [ClassOutcome(c, "refused", f"{src.where(defs[c])}: `{c}` may be an optimizer, "
                              f"but `{b}` cannot be resolved: {why}")
                 for c, b, why in src.unresolved if c in defs]
    code = None
    if any(o.status == "rewritten" for o in outcomes):
        code = emit_module(src, outcomes, catalog, package, import_originals)  # 5. emit
    return RewriteResult(filename, code, outcomes)


def compile_source(source: str, filename: str = "<string>", package: str | None = None,
                   module: str | None = None, import_originals: bool = False) -> RewriteResult:
    """rewrite_source, then 6. validate: no class without proof. A class is kept only when
    `validate.certify` accepts it (symbolic execution proved it or could not run, and the
    differential stress matrix passed); otherwise it is refused with the reason and the module
    is emitted without it."""
    import tempfile
    from pathlib import Path

    from gsr_rewrite.proof.validate import certify, load_module

    result = rewrite_source(source, filename, package, module, import_originals)
    while result.code is not None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "gsr_candidate.py"
            path.write_text(result.code)
            try:
                loaded = load_module(path, f"gsr_candidate_{abs(hash(result.code))}")
            except ImportError as e:  # what the module imports is not on the import path
                raise RewriteError(f"{filename}:1:1", f"its R module does not import "
                                   f"({type(e).__name__}: {e}), so nothing could be checked; "
                                   "put the folders it imports from on the import path "
                                   "(PYTHONPATH), or name it as an importable module") from e
            failed = False
            for c in result.classes:
                if c.status != "rewritten" or c.validation:
                    continue  # certified in an earlier round: the same class, the same code
                verdict = certify(getattr(loaded, c.name), getattr(loaded, c.r_name),
                                  "bitwise" if c.equivalence == "bitwise" else "tolerance")
                c.validation, c.checks = verdict.detail, verdict.results
                if not verdict.ok:
                    c.status, c.reason, failed = "refused", verdict.detail, True
        if not failed:
            break
        result.code = (emit_module(parse(source, filename, package, module), result.classes,
                                   load_catalog(), package, import_originals)
                       if any(c.status == "rewritten" for c in result.classes) else None)
    return result


def _reformulated(src: SourceModule, out: ClassOutcome, catalog: OpCatalog) -> ClassOutcome:
    """Plan again after reordering with rules/ where a temporary found no dead buffer."""
    from gsr_rewrite.transform.reformulate import RULE, apply_reorders, block_owners, find_reorders

    if all(t.placed for t in out.temporaries) or out.analysis is None or \
            class_view(src, out.analysis.cls) is not src:  # (methods from other modules: no)
        return out
    owners = block_owners(src.module)
    reorders = [r for fp in out.plans for r in find_reorders(fp, owners)]
    if not reorders:
        return out
    new_src = parse(apply_reorders(src.module, reorders).code, src.filename, src.package,
                    src.name)
    cls = next(c for c in new_src.classes if c.name == out.name)
    again = _rewrite_class(new_src, cls, catalog)
    if sum(t.placed for t in again.temporaries) <= sum(t.placed for t in out.temporaries):
        return out
    again.equivalence, again.rules = "tolerance", [RULE]
    again.reason = (f"reordered with rule {RULE} (guarded by its condition and float32/float64 "
                    "tensors; lines refer to the reordered source)")
    return again


def _specialized(src: SourceModule, out: ClassOutcome, catalog: OpCatalog) -> ClassOutcome:
    """Plan again with the runs that could not be strip-mined for an option's branch duplicated
    under the test that the option is off (transform/specialize.py); kept when fewer
    temporaries stay whole where the options are off."""
    from gsr_rewrite.transform.specialize import (
        SPECIALIZED,
        apply_specializations,
        find_specializations,
        option_branches,
        options_on_paths,
    )

    if out.rules or out.analysis is None or class_view(src, out.analysis.cls) is not src:
        return out  # (a reordered source, or methods from other modules: no)
    specs = [s for fp in out.plans for s in find_specializations(fp)]
    if not specs:
        return out
    conditions = {s.condition for s in specs}
    new_src = parse(apply_specializations(src.module, specs).code, src.filename, src.package,
                    src.name)
    cls = next(c for c in new_src.classes if c.name == out.name)
    again = _rewrite_class(new_src, cls, catalog)
    # what stays whole where the options are off (their own branches do not run there)
    if _whole(again, options_on_paths(new_src.module, conditions)) >= \
            _whole(out, option_branches(specs)):
        return out
    again.reason = (f"{SPECIALIZED}: {len(specs)} run(s) also written without their option "
                    "branches, taken when the options are off (lines refer to that source)")
    return again


def _whole(out: ClassOutcome, skipped: set[int]) -> int:
    """Temporaries that stay whole (no buffer, no strips), but for those in `skipped` nodes."""
    return sum(1 for fp in out.plans for p in fp.placements
               if not p.placed and not p.strips and p.reason != "kept as state"
               and id(p.node.line if p.node.line is not None else p.node.node) not in skipped)


def _rewrite_class(module: SourceModule, cls: OptimizerClass,
                   catalog: OpCatalog) -> ClassOutcome:
    try:
        return _rewrite_one(module, cls, catalog)
    except AnalysisLimit as e:  # this class only: the others of the module go on
        return ClassOutcome(cls.name, "refused", f"{e.where}: {e.reason}")


def _rewrite_one(module: SourceModule, cls: OptimizerClass,
                 catalog: OpCatalog) -> ClassOutcome:
    if cls.unresolved:
        return ClassOutcome(cls.name, "refused", f"{module.where(cls.node)}: {cls.unresolved}")
    if "step" not in cls.methods:
        return ClassOutcome(cls.name, "refused", f"{module.where(cls.node)}: no `step` method "
                            "in the class or the bases it inherits from")
    src = class_view(module, cls)  # the module of `step`, knowing where inherited methods are
    src = with_imported_functions(src, catalog)  # ... and the functions it imports
    analysis = analyse_class(src, cls, catalog)  # 2-3. lower to effects, points-to, liveness
    plans = plan_class(analysis, catalog)  # 4. place temporaries in dead buffers
    for fp in plans:
        _drop_unguardable(fp, catalog)
    out = ClassOutcome(cls.name, "unchanged", analysis=analysis, plans=plans)
    changes = layout_changes(analysis, src, catalog)  # guards by lookup, or tensor by tensor
    out.fixed_layout, out.layout_reason = changes is None, changes or ""
    per_strip = per_element_helpers(analysis.functions, catalog)  # helpers a run may call
    chunked = position_wise(analysis.functions, per_strip)  # ... over chunks of whole tensors
    returned: dict[str, list[Placement]] = {}  # what they keep whole (a caller's run may cut)
    # 4c. bound what found no dead buffer by running it strip by strip (helpers first)
    for fp in sorted(plans, key=lambda fp: fp.name not in per_strip):
        regions = strip_mine(fp, catalog, src.line_of, per_strip, returned, chunked)
        if regions:
            out.regions[fp.name] = regions
        if fp.name in per_strip:
            returned[fp.name] = [p for p in fp.placements if not p.placed and not p.strips
                                 and p.reason != "kept as state"]
        # a strip-mined temporary is strip-sized, and its name no longer holds it after its
        # run: outside the run nothing may be placed in its buffer
        inside = _statements_of(regions)
        stripped = {p.alloc.site for p in fp.placements if p.strips}
        for p in fp.placements:
            if p.placed and p.storage in stripped and id(p.node.line) not in inside:
                p.storage = None
                p.reason = "its host, a temporary, is strip-mined"
    _whole_where_called_outside_runs(plans, out.regions, returned, src.line_of)
    for fp in plans:
        for p in fp.placements:
            if not p.placed and not p.strips and (p.reason == "kept as state" or
                                                  p.alloc.in_comprehension):
                continue
            out.temporaries.append(Temporary(
                fp.name, src.line_of(p.node.node or p.alloc.node), code_of(p.alloc.node),
                p.alloc.op, p.placed, describe_storage(p), p.reason, p.alloc.form == "foreach",
                p.strips))
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


def _whole_where_called_outside_runs(plans: list[FunctionPlan],
                                     regions: dict[str, list[StripRegion]],
                                     returned: dict[str, list[Placement]],
                                     line_of: Callable[[cst.CSTNode], int]) -> None:
    """A helper's temporary is strip-sized only where a run calls the helper: reported so only
    when every statement that calls the helper is in a strip-mined run."""
    for fp in plans:
        inside = _statements_of(regions.get(fp.name, []))
        for n in fp.analysis.flow.nodes:
            line = n.line if n.line is not None else n.node
            if line is None or id(line) in inside:
                continue
            for key in {c[0] for c in n.eff.calls if c[0] in returned}:
                for p in returned[key]:
                    if p.strips:
                        p.strips = 0
                        p.reason = (f"cannot be strip-mined: {fp.name} calls {key} outside a "
                                    f"strip-mined run too (line {line_of(line)}); {p.reason}")


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


def _drop_unguardable(fp: FunctionPlan, catalog: OpCatalog) -> None:
    by_line: dict[int, list[Placement]] = {}
    for p in fp.placements:
        by_line.setdefault(id(p.node), []).append(p)
    for ps in by_line.values():
        if any(p.placed for p in ps) and not statement_leaves(ps, catalog):
            for p in ps:
                p.storage, p.reason = None, ("an operand is not a plain name, an in-place op on "
                                             "one or a view of one; it cannot be guarded")


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


