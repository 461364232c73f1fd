"""Stage 5, assemble: what an R class's copied code took from the original modules and class,
named for `runtime/patches.py` to check before every R step (`r_step(..., watch=...)`)."""

from __future__ import annotations

import textwrap

import libcst as cst

from gsr_rewrite.frontend.locate import SourceModule
from gsr_rewrite.outcome import ClassOutcome
from gsr_rewrite.transform import RUNTIME
from gsr_rewrite.transform.namespace import Namespace


def watch_statement(out: ClassOutcome, ns: Namespace, src: SourceModule, changed: list[str],
                    moved: dict[str, str]) -> cst.SimpleStatementLine | None:
    """`_gsr_watch_<R> = _gsr.watch(...)`: the globals the R class's copied code reads, in the
    modules it was copied from (ns.reads; a copy of a module binds them as the module did when
    it was imported), the original helpers it calls rewritten, and the methods it holds
    rewritten; None when there is nothing to watch (modules without a name cannot be). The
    original step reads all of those when it runs: runtime/patches.py checks them before every
    R step."""
    assert out.analysis is not None
    cls = out.analysis.cls
    home = cls.origin.get("step", src)
    functions = out.analysis.functions
    defs = {n: fa.func.name.value for n, fa in functions.items()
            if not fa.is_method and fa.parent is None}
    modules = {m: {n: defs.get(n, "") if m == home.name else "" for n in names}
               for m, names in ns.reads.get(out.name, {}).items()}
    if home.name is not None:
        for n in changed:
            if n in defs:
                modules.setdefault(home.name, {})[n] = defs[n]
    methods = sorted(moved)
    if not modules and not methods:
        return None
    lines = [f"{_watch_name(out)} = {RUNTIME}.watch({{"]
    for m, names in sorted(modules.items()):
        lines.append(f"    {m!r}: {{")
        pairs = ", ".join(f"{n!r}:\0{d!r}" for n, d in sorted(names.items()))  # \0: no break
        lines += [line.replace("\0", " ") for line in textwrap.wrap(
            pairs, 96, initial_indent=" " * 8, subsequent_indent=" " * 8,
            break_long_words=False, break_on_hyphens=False)]
        lines[-1] += "},"
    lines.append("}" + (f", {out.name}, ({''.join(f'{m!r}, ' for m in methods)}))"
                        if methods else ")"))
    statement = cst.parse_statement("\n".join(lines) + "\n")
    assert isinstance(statement, cst.SimpleStatementLine)
    return statement.with_changes(leading_lines=[cst.EmptyLine(), cst.EmptyLine()])


def _watch_name(out: ClassOutcome) -> str:
    return f"_gsr_watch_{out.r_name}"


def with_watch(r_class: cst.ClassDef, watch: cst.SimpleStatementLine | None) -> cst.ClassDef:
    """The R class with `watch=` added to its step's `r_step(...)` decorator, when it has one."""
    if watch is None or not isinstance(r_class.body, cst.IndentedBlock):
        return r_class
    target = watch.body[0]
    assert isinstance(target, cst.Assign)
    arg = cst.Arg(target.targets[0].target, keyword=cst.Name("watch"),
                  equal=cst.AssignEqual(cst.SimpleWhitespace(""), cst.SimpleWhitespace("")))
    body = []
    for stmt in r_class.body.body:
        if isinstance(stmt, cst.FunctionDef) and stmt.name.value == "step" and stmt.decorators:
            first = stmt.decorators[0]
            assert isinstance(first.decorator, cst.Call)
            call = first.decorator.with_changes(args=[*first.decorator.args, arg])
            stmt = stmt.with_changes(decorators=[first.with_changes(decorator=call),
                                                 *stmt.decorators[1:]])
        body.append(stmt)
    return r_class.with_changes(body=r_class.body.with_changes(body=body))
