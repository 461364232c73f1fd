"""Helpers a strip-mined run may call once per strip (timm's `_add_scaled_(param, update, s)`).

Called on strips of its tensors, a helper computes what it computes on the whole tensors when
everything it does is per element. It is checked as a run is, its parameters taken for strips
wherever some call passes them a buffer (its entry points-to joins every call; a host value
taken for a strip only refuses more: `if s > 0` of a tensor reads its contents).

What it returns is a strip when an argument is (it can reach no other tensor), made per strip.
Refused: loops, raises and asserts (one after a write would raise with only the first strip
written), nested functions, `global` or `nonlocal` names, calls (of helpers or unknown
functions), escapes other than its return, appends, state kept, other parameters
reached, objects the analysis does not model (a global tensor would be whole, not a strip), host
objects changed (that would happen once per strip), `xs[i]` items, and a parameter default that
is not a literal.

A nested function (torch's RAdam: `def _compute_adaptive_lr(): exp_avg_sq.sqrt() ...` inside the
param loop) is checked the same way, its free variables taken like parameters (the analysis
binds them at each call: frontend/closures.py). It reads them late, by name, so a run that calls
it binds each tensor it reads to the strip for the duration of the run (emission.py); the run
must not assign those names itself (region_checks.py).
"""

from __future__ import annotations

from collections.abc import Mapping

import libcst as cst

from gsr_rewrite.analysis.interprocedural import FunctionAnalysis
from gsr_rewrite.analysis.local_lists import declared_outer
from gsr_rewrite.analysis.transfer import RETURNED
from gsr_rewrite.frontend.catalog import OpCatalog
from gsr_rewrite.frontend.closures import LOCALS
from gsr_rewrite.frontend.scopes import param_list
from gsr_rewrite.transform.stripmine.checker import _Checker
from gsr_rewrite.transform.stripmine.chunks import chunk_blocker
from gsr_rewrite.transform.stripmine.region import _parents, _Refuse
from gsr_rewrite.transform.stripmine.region_checks import reads_unmodelled

#: helpers a run may call once per strip, by the name the analysis calls them (`f`, `self.m`,
#: `step.<locals>.g`), with the caller's variables each reads (its free variables; () but for
#: nested functions)
PerStrip = Mapping[str, tuple[str, ...]]


def per_element_helpers(functions: Mapping[str, FunctionAnalysis], cat: OpCatalog) -> PerStrip:
    """The helpers a run may call per strip, with the free variables of each."""
    return {name: fa.free for name, fa in functions.items()
            if name != "step" and _per_element(fa, cat)}


def position_wise(functions: Mapping[str, FunctionAnalysis], helpers: PerStrip) -> frozenset[str]:
    """The per-strip helpers that use their tensor-list parameters only position by position
    (in torch foreach calls, what they return included: timm's `_foreach_lerp(xs, ys, w)`), so a
    run over chunks of whole tensors may call them with sub-lists (chunks.py)."""
    out = set()
    for name in helpers:
        fa = functions[name]
        if LOCALS in name or isinstance(fa.func.params.star_arg, cst.Param) or \
                fa.func.params.star_kwarg is not None:
            continue
        entry = next((n for n in fa.flow.nodes if n.kind == "entry"), None)
        pt = entry.pt_out() if entry is not None else {}
        lists = [p.name.value for p in param_list(fa.func) if "%list" in pt.get(p.name.value, ())]
        if lists and chunk_blocker(fa.flow.nodes, lists, False)[0] is None:
            out.add(name)
    return frozenset(out)


def _per_element(fa: FunctionAnalysis, cat: OpCatalog) -> bool:
    if fa.compiled or declared_outer(fa.func):
        return False  # `global n; n += 1` would count strips
    params = fa.func.params
    if isinstance(params.star_arg, cst.Param) or params.star_kwarg is not None or \
            not all(p.default is None or _literal(p.default) for p in param_list(fa.func)):
        return False
    parents = _parents(fa.func)
    strips: set[str] = set()  # (a parameter is a strip when a call passes it a buffer)
    for n in fa.flow.nodes:
        if n.kind in ("raise", "jump", "def", "with", "for") or isinstance(n.node, cst.Assert) \
                or (n.kind == "test" and not isinstance(parents.get(id(n.node)), cst.If)):
            return False
        e = n.eff
        # what it returns is made per strip, strip-sized: the caller's run holds it
        escapes = [x for x in e.escapes if not (n.kind == "return" and x[1] == RETURNED)]
        if e.calls or escapes or e.weak or e.persistent:
            return False
        if reads_unmodelled(n):
            return False
    while True:  # names bound to strips grow until every node is checked with all of them
        before = len(strips)
        for n in fa.flow.nodes:
            if n.kind in ("entry", "exit"):  # (their node is the def itself)
                continue
            checker = _Checker(n.pt_in, cat, strips)
            try:
                if isinstance(n.node, cst.Return):
                    if n.node.value is not None:
                        checker.expr(n.node.value)
                else:
                    checker.statement(n)
            except _Refuse:
                return False
            if checker.mutated or checker.deleted or checker.items:
                return False
        if len(strips) == before:
            return True


def _literal(e: cst.BaseExpression) -> bool:
    if isinstance(e, cst.UnaryOperation):
        return _literal(e.expression)
    if isinstance(e, cst.Name):
        return e.value in ("None", "True", "False")
    return isinstance(e, (cst.Integer, cst.Float, cst.SimpleString))
