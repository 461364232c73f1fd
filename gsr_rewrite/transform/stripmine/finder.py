"""Finding the strip regions of a function (the entry point of stage 4c): each unplaced
temporary's live range as a run of statements, shortest first, joined with the regions already
accepted that it overlaps or encloses, kept when the union passes the checks of
`region_checks`; each temporary refused gets the reason.

A helper's temporary that no run of its own can hold (it is returned: torch RAdam's
`_compute_adaptive_lr` makes `exp_avg_sq.sqrt()` and returns it divided) is strip-sized where the
helper is called once per strip: each statement that calls it is a candidate run too."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import libcst as cst

from gsr_rewrite.analysis.dataflow import Node
from gsr_rewrite.frontend.catalog import OpCatalog
from gsr_rewrite.frontend.closures import LOCALS
from gsr_rewrite.runtime import STRIP_FRACTION
from gsr_rewrite.transform.plan import FunctionPlan, Placement
from gsr_rewrite.transform.stripmine.helpers import PerStrip
from gsr_rewrite.transform.stripmine.region import (
    StripRegion,
    _anchor,
    _chain,
    _contains,
    _parents,
    _Refuse,
    _region_nodes,
    run_of,
)
from gsr_rewrite.transform.stripmine.region_checks import _check_region

#: each temporary of a run is at most 1/64 of its tensors (+ alignment), or the run's temporaries
#: fit under the run-time floor (runtime.strips)
STRIPS_PER_TEMPORARY = STRIP_FRACTION
MAX_STRIPS = 512


def strip_mine(fp: FunctionPlan, cat: OpCatalog, line_of: Callable[[cst.CSTNode], int],
               helpers: PerStrip | None = None,
               returned: Mapping[str, Sequence[Placement]] | None = None,
               chunked: frozenset[str] = frozenset()) -> list[StripRegion]:
    """Regions for fp's unplaced temporaries; each refused temporary gets the reason appended.
    A run may call `helpers` (helpers.per_element_helpers) once per strip; `returned`: the
    temporaries each of them keeps whole, which a run that calls it makes strip-sized;
    `chunked`: those of them a run over chunks of whole tensors may call (position_wise).

    Shortest live ranges first: a range that overlaps or encloses accepted regions is accepted
    only if the union of them all passes the checks; otherwise its temporary stays, and the
    smaller regions keep theirs."""
    fa = fp.analysis
    if fa.compiled:  # its placements say why (plan.COMPILED)
        return []
    parents = _parents(fa.func)
    candidates: dict[tuple[int, int, int], StripRegion] = {}
    for p in fp.placements:
        if p.placed or p.reason == "kept as state":
            continue
        try:
            block, start, end = run_of(p, fp, parents)
        except _Refuse as e:
            p.reason = _join(p.reason, f"cannot be strip-mined: {e}")
            continue
        r = candidates.setdefault((id(block), start, end),
                                  StripRegion(fp.name, block, start, end, [], 0))
        r.temporaries.append(p)
    returned = returned or {}
    for helper, block, i in _helper_calls(fp, returned, parents):
        r = candidates.setdefault((id(block), i, i + 1), StripRegion(fp.name, block, i, i + 1,
                                                                     [], 0))
        r.temporaries += [p for p in returned[helper]
                          if all(p is not q for q in r.temporaries)]
    closures = local_helpers(helpers or {}, fp.name)
    accepted: list[StripRegion] = []
    pending = sorted(candidates.values(), key=lambda r: r.end - r.start)
    refused: dict[int, str] = {}
    progress = True
    while progress:  # a range refused alone may pass joined with one accepted later
        progress = False
        for c in list(pending):
            outer = next((a for a in accepted if _encloses(a, c)), None)
            if outer is not None:
                outer.temporaries += c.temporaries
                pending.remove(c)
                continue
            joined = [a for a in accepted if _encloses(c, a) or (
                a.block is c.block and a.start < c.end and c.start < a.end)]
            same = [a for a in joined if a.block is c.block]
            union = StripRegion(fp.name, c.block, min([c.start, *(a.start for a in same)]),
                                max([c.end, *(a.end for a in same)]), [],
                                0, [*c.temporaries, *(p for a in joined for p in a.temporaries)])
            try:
                union.sliced = _check_region(union, fp, cat, parents, helpers or {}, closures,
                                             chunked)
            except _Refuse as e:
                refused[id(c)] = str(e)
                grown = _grown(c, e.read_at, parents)
                if grown is not None:  # `xs = list(xs)` in the run, `xs` read just after it
                    key = (id(grown.block), grown.start, grown.end)
                    if key not in candidates:
                        candidates[key] = grown
                        pending.append(grown)
                        progress = True
                continue
            accepted = [a for a in accepted if a not in joined] + [union]
            pending.remove(c)
            progress = True
    for c in pending:
        for p in c.temporaries:
            where = f" where {fp.name} calls it" if p.function != fp.name else ""
            p.reason = _join(p.reason, f"cannot be strip-mined{where}: {refused[id(c)]}")
    calling: dict[int, tuple[Placement, str, list[StripRegion]]] = {}
    for r in accepted:
        sites = {a.site for n in _region_nodes(r, fa.flow.nodes, parents) for a in n.eff.allocs}
        fresh = [p for p in fp.placements if p.alloc.site in sites and not p.placed]
        called = [p for p in r.temporaries if p.function != fp.name]  # in helpers it calls
        r.strips = min(MAX_STRIPS, STRIPS_PER_TEMPORARY * max(1, len(fresh) + len(called)))
        r.lines = (line_of(r.block.body[r.start]), line_of(r.block.body[r.end - 1]))
        r.temporaries = list({id(p): p for p in [*r.temporaries, *fresh]}.values())
        for p in r.temporaries:
            if p.function != fp.name:  # a helper's, strip-sized in each run that calls it
                calling.setdefault(id(p), (p, p.reason, []))[2].append(r)
                continue
            p.strips = r.strips
            p.reason = (f"strip-mined: the {r.end - r.start} statement(s) from line {r.lines[0]} "
                        f"run on 1/{r.strips} of the elements at a time"
                        + (f" (no dead buffer: {p.reason})" if p.reason else ""))
    for p, why, runs in calling.values():
        p.strips = min(r.strips for r in runs)
        lines = ", ".join(str(r.lines[0]) for r in runs)
        p.reason = (f"strip-mined where {fp.name} calls it: in the runs from line(s) {lines}, "
                    f"on at most 1/{p.strips} of the elements at a time (no dead buffer: {why})")
    return accepted


def local_helpers(helpers: PerStrip, function: str) -> dict[str, tuple[str, ...]]:
    """The nested functions `function` defines that a run may call per strip, by the name its
    body calls them, with their free variables."""
    prefix = f"{function}{LOCALS}"
    return {key[len(prefix):]: free for key, free in helpers.items()
            if key.startswith(prefix) and LOCALS not in key[len(prefix):]}


def _helper_calls(fp: FunctionPlan, returned: Mapping[str, Sequence[Placement]],
                  parents: dict[int, cst.CSTNode]) -> list[tuple[str, cst.IndentedBlock, int]]:
    """(helper, block, index) of each statement of fp that calls a helper in `returned`."""
    out = []
    for n in fp.analysis.flow.nodes:
        keys = sorted({c[0] for c in n.eff.calls if returned.get(c[0])})
        anchor = _anchor(n) if keys else None
        chain = _chain(anchor, parents) if anchor is not None else []
        if chain and isinstance(chain[-1][0], cst.IndentedBlock):
            out += [(key, chain[-1][0], chain[-1][1]) for key in keys]
    return out


def _grown(r: StripRegion, read_at: Node | None, parents: dict[int, cst.CSTNode]
           ) -> StripRegion | None:
    """r extended, in its block, to the statement that holds `read_at` (None if elsewhere)."""
    anchor = _anchor(read_at) if read_at is not None else None
    if anchor is None:
        return None
    for block, i in _chain(anchor, parents):
        if block is r.block and i >= r.end:
            return StripRegion(r.function, r.block, r.start, i + 1, [], 0, list(r.temporaries))
    return None


def _encloses(a: StripRegion, b: StripRegion) -> bool:
    """b's statements are among a's, or inside one of them."""
    if a.block is b.block:
        return a.start <= b.start and b.end <= a.end
    return any(_contains(s, b.block) for s in a.block.body[a.start:a.end])


def _join(a: str, b: str) -> str:
    return f"{a}; {b}" if a else b
