"""Emitting a strip region: the `for ... in _gsr.strips(K, ...)` loop that runs the region's
statements on strip views, with the lines that run once under `if counter == 0:`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import libcst as cst

from gsr_rewrite.transform.emit import Renamer
from gsr_rewrite.transform.stripmine.chunks import PartWrapper
from gsr_rewrite.transform.stripmine.hoist import ReadReplacer, hoisted_name, is_placeholder
from gsr_rewrite.transform.stripmine.region import StripRegion


class StripRenamer(Renamer):
    """Inside a strip loop, the sliced variables are read through their strip views (keyword
    argument names stay)."""

    def leave_Arg(self, original: cst.Arg, updated: cst.Arg) -> cst.Arg:
        return updated.with_changes(keyword=original.keyword)


def wrap_region(r: StripRegion, originals: Sequence[cst.BaseStatement],
                body: Sequence[cst.BaseStatement], taken: set[str], runtime: str,
                flag: str = "") -> list[cst.BaseStatement]:
    """`for a_strip, b_strip in _gsr.strips(K, a, b): <body with a, b renamed>`; with `flag`
    (the run has lines that run once), `for flag, (a_strip, ...) in enumerate(...)`, and the
    `del` lines of r.after follow the loop. `originals[i]` is the source line of `body[i]`."""
    hoists = {v: fresh_name(hoisted_name(v[1:]), taken) for v in r.sliced if is_placeholder(v)}
    sliced = [hoists.get(v, v) for v in r.sliced]
    names = {v: fresh_name(f"{v}_strip", taken) for v in [*sliced, *(xs for xs, _ in r.items)]}
    renamer = StripRenamer(names)
    reads = ReadReplacer({v[1:]: name for v, name in hoists.items()})
    moved = [s for o, s in zip(originals, body, strict=True) if id(o) in r.after]
    kept = [(o, s) for o, s in zip(originals, body, strict=True) if id(o) not in r.after]
    renamed = [cast(cst.BaseStatement, cast(cst.BaseStatement, s.visit(reads)).visit(renamer))
               for _, s in kept]
    piece = fresh_name("strip_piece", taken) if r.chunks else ""
    if piece:  # foreach arguments that are not strip lists: cut to each chunk's positions
        wrapper = PartWrapper({names.get(v, v) for v in r.strip_values}, runtime, piece,
                              r.chunk_calls)
        renamed = [cast(cst.BaseStatement, s.visit(wrapper)) for s in renamed]
    inner = guard_once([o for o, _ in kept], renamed, dict.fromkeys(r.once, flag))
    lead = _take_leading_lines(inner)
    saved = {x: fresh_name(f"{x}_before_strips", taken) for x in sorted(r.restored)}
    inner = [*(cst.parse_statement(f"{x} = {v}\n") for x, v in saved.items()), *inner]
    # names a nested function reads: the strip in the run, the whole tensor again after it
    whole = {x: fresh_name(f"{x}_whole", taken) for x in sorted(r.rebound)}
    inner = [*(cst.parse_statement(f"{x} = {names[x]}\n") for x in whole), *inner]
    moved = [*(cst.parse_statement(f"{x} = {w}\n") for x, w in whole.items()), *moved]
    temps = ", ".join(sorted({p.alloc.op for p in r.temporaries}))
    args = [*sliced, *(f"{runtime}.at({xs}, {i})" for xs, i in r.items)]
    targets = [*names.values(), *([piece] if piece else [])]
    target = ", ".join(targets) if len(targets) > 1 else f"({targets[0]},)"
    strips = f"{runtime}.strips({r.strips}, {', '.join(args)}{', chunks=True' if piece else ''})"
    loop = f"for {flag}, ({target}) in enumerate({strips})" if flag else \
        f"for {target} in {strips}"
    header = cst.parse_statement(f"{loop}:\n    pass\n")
    assert isinstance(header, cst.For)
    how = "runs of whole tensors that fit the strip floor, or " if piece else ""
    comment = cst.EmptyLine(comment=cst.Comment(
        f"# gsr-rewrite: strip-mined; the {temps} temporaries are {how}1/{r.strips} of their "
        "tensors"))
    before = [cst.parse_statement(f"{name} = {v[1:]}\n") for v, name in hoists.items()]
    before += [cst.parse_statement(f"{v} = {x}\n") for x, v in {**saved, **whole}.items()]
    if before:  # the hoisted reads, under the run's comments
        before[0] = before[0].with_changes(leading_lines=[*lead, comment])
        return [*before, header.with_changes(body=cst.IndentedBlock(inner)), *moved]
    return [header.with_changes(body=cst.IndentedBlock(inner), leading_lines=[*lead, comment]),
            *moved]


def fresh_name(base: str, taken: set[str]) -> str:
    """base, or base2, base3, ...: the first not in `taken` (which then holds it)."""
    new, k = base, 1
    while new in taken:
        k += 1
        new = f"{base}{k}"
    taken.add(new)
    return new


def guard_once(originals: Sequence[cst.BaseStatement], body: Sequence[cst.BaseStatement],
               once: dict[int, str]) -> list[cst.BaseStatement]:
    """body with each run of consecutive lines whose original is in `once` (id -> the strip
    counter of its loop) under `if counter == 0:`."""
    out: list[cst.BaseStatement] = []
    group: list[cst.BaseStatement] = []
    flag = ""

    def flush() -> None:
        if group:
            lead = _take_leading_lines(group)
            test = cst.parse_expression(f"{flag} == 0")
            note = cst.EmptyLine(comment=cst.Comment(
                "# gsr-rewrite: host statements, once per step: in the first strip"))
            out.append(cst.If(test=test, body=cst.IndentedBlock(list(group)),
                              leading_lines=[*lead, note]))
            group.clear()

    for o, s in zip(originals, body, strict=True):
        f = once.get(id(o), "")
        if not f or f != flag:
            flush()
        if f:
            group.append(s)
            flag = f
        else:
            out.append(s)
    flush()
    return out


def _take_leading_lines(stmts: list[cst.BaseStatement]) -> Sequence[cst.EmptyLine]:
    """The first statement's leading blank lines and comments, removed from it."""
    first = stmts[0]
    if not isinstance(first, (cst.SimpleStatementLine, cst.If)):
        return ()
    stmts[0] = first.with_changes(leading_lines=[])
    return first.leading_lines
