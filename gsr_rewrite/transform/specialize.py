"""Stage 4d, specialize a run to its options off.

A temporary that found no dead buffer is strip-mined when every statement of its live range works
element by element. An option's branch (an `if` of an option, without `else`) often does not
(timm's Adan: `if caution:` scales the update by the mean of a mask, a reduction), although the
option is off by default. Such a run is duplicated under the test that every such option is off:

    if (type(caution) in (bool, int, float, str, type(None)) and not caution):
        <the run without `if caution: ...`>
    else:
        <the run as written>

Exact: an option is a parameter the function never binds again (options.py) whose value, of an
immutable type, cannot change its truth, so where the first branch runs, the dropped `if` would
not be entered. The class is planned again on that source and kept only when fewer temporaries
stay whole on the options-off path; its proof and stress matrix check it like any rewrite.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import libcst as cst

from gsr_rewrite.frontend.syntax import subtree_ids
from gsr_rewrite.transform.options import known, plain_truth, stable_ifs
from gsr_rewrite.transform.plan import FunctionPlan
from gsr_rewrite.transform.stripmine.region import _contains, _parents, _Refuse, run_of

SPECIALIZED = "specialized to options off"


@dataclass
class Specialization:
    block: cst.IndentedBlock
    start: int
    end: int
    dropped: dict[int, str]  # id of each option `if` of the run -> code true when not entered

    @property
    def condition(self) -> str:
        return " and ".join(dict.fromkeys(self.dropped.values()))


def find_specializations(fp: FunctionPlan) -> list[Specialization]:
    """The runs of fp's temporaries that could not be strip-mined and hold an option's `if`."""
    fa = fp.analysis
    if fa.compiled:
        return []
    stable, ifs = stable_ifs(fa.func)
    skip = {id(node): code for node in ifs.values() if node.orelse is None and  # (no `else`:
            (code := known(node.test, False, stable, plain_truth)) is not None}  # both run)
    if not skip:
        return []
    parents = _parents(fa.func)
    found: list[Specialization] = []
    for p in fp.placements:
        if p.placed or p.strips or "cannot be strip-mined" not in p.reason:
            continue
        try:
            block, start, end = run_of(p, fp, parents)
        except _Refuse:
            continue
        dropped = {id(s): skip[id(s)] for s in block.body[start:end] if id(s) in skip}
        if dropped:
            found.append(Specialization(block, start, end, dropped))
    return _outermost(_merged(found))


def _merged(specs: list[Specialization]) -> list[Specialization]:
    """Overlapping runs of one block as one."""
    out: list[Specialization] = []
    for s in sorted(specs, key=lambda s: (id(s.block), s.start)):
        last = out[-1] if out else None
        if last is not None and last.block is s.block and s.start < last.end:
            last.end = max(last.end, s.end)
            last.dropped.update(s.dropped)
        else:
            out.append(Specialization(s.block, s.start, s.end, dict(s.dropped)))
    return out


def _outermost(specs: list[Specialization]) -> list[Specialization]:
    """Without the runs inside another's statements (that one's copy holds them)."""
    return [s for s in specs if not any(
        o is not s and any(_contains(stmt, s.block) for stmt in o.block.body[o.start:o.end])
        for o in specs)]


def option_branches(specs: Sequence[Specialization]) -> set[int]:
    """ids of every node in the bodies of the `if`s the specializations drop (code that runs
    only with an option on)."""
    return {i for s in specs for stmt in s.block.body[s.start:s.end] if id(stmt) in s.dropped
            for i in subtree_ids(cast(cst.If, stmt).body)}


def apply_specializations(module: cst.Module, specs: Sequence[Specialization]) -> cst.Module:
    """Each run as `if <its options are off>: <the run without their ifs> else: <the run>`."""
    by_block: dict[int, list[Specialization]] = {}
    for s in specs:
        by_block.setdefault(id(s.block), []).append(s)

    class _T(cst.CSTTransformer):
        def leave_IndentedBlock(self, original: cst.IndentedBlock,
                                updated: cst.IndentedBlock) -> cst.IndentedBlock:
            body = list(updated.body)
            for s in sorted(by_block.get(id(original), []), key=lambda s: -s.start):
                body[s.start:s.end] = [_split(s, original.body[s.start:s.end],
                                              body[s.start:s.end])]
            return updated.with_changes(body=body)

    return module.visit(_T())


def _split(s: Specialization, originals: Sequence[cst.BaseStatement],
           run: Sequence[cst.BaseStatement]) -> cst.If:
    first = run[0]
    lead = list(getattr(first, "leading_lines", ()))  # the run's comments go above the `if`
    rest = [first.with_changes(leading_lines=[]) if lead else first, *run[1:]]
    pruned = [stmt for o, stmt in zip(originals, rest, strict=True) if id(o) not in s.dropped]
    note = cst.EmptyLine(comment=cst.Comment(f"# gsr-rewrite: {SPECIALIZED}"))
    return cst.If(test=cst.parse_expression(s.condition),
                  body=cst.IndentedBlock(pruned or [cst.SimpleStatementLine([cst.Pass()])]),
                  orelse=cst.Else(body=cst.IndentedBlock(rest)), leading_lines=[*lead, note])


def options_on_paths(module: cst.Module, conditions: set[str]) -> set[int]:
    """ids of every node in the `else:` copies of the specialized runs of `module` (the code
    that runs with an option on)."""
    found: set[int] = set()
    code = cst.Module([]).code_for_node

    class _V(cst.CSTVisitor):
        def visit_If(self, node: cst.If) -> None:
            if node.orelse is not None and code(node.test) in conditions:
                found.update(subtree_ids(node.orelse))

    module.visit(_V())
    return found
