"""Stage 7, report: what was rewritten, where each temporary now lives, and what was measured.

`to_text` is for people: one line per fact, the temporaries in a fixed-width table, long
reasons cut to one line (``verbose=True`` prints them whole). `to_json` keeps every text whole.
"""

from __future__ import annotations

import io
import math
import re
import tokenize
from dataclasses import asdict
from typing import Any

from gsr_rewrite.outcome import CONTRACT, ClassOutcome, RewriteResult, Temporary
from gsr_rewrite.proof.memory import MEASURED_STEPS, StepMemory, StepTimes
from gsr_rewrite.proof.validate import MEASURED_ON, ClassCheck, plural
from gsr_rewrite.version import __version__

#: widths of the temporaries table's fixed columns
WHERE_WIDTH, CODE_WIDTH, LIVES_WIDTH = 26, 36, 22
#: reasons and other prose are cut to this many characters unless verbose
TEXT_WIDTH = 100
#: the temporaries table's last column ("how") is cut to this many characters unless verbose
HOW_WIDTH = 72
ELLIPSIS = "…"
CUT_NOTE = (f"({ELLIPSIS} marks text cut short: --verbose prints it whole; "
            "--report PATH writes it all as JSON)")
GLOSSARY_NOTE = "terms: see README.md, Glossary"


def _units(d: dict[str, int]) -> str:
    lists, tensors = d.get("lists", 0), d.get("tensors", 0)
    if not lists and not tensors:
        return "none"
    return f"{plural(lists, 'list')} of all params + {plural(tensors, 'single tensor')}"


def one_line(code: str) -> str:
    """Source code on one line: comments dropped, runs of whitespace made one space."""
    lines = code.splitlines()
    try:
        for tok in tokenize.generate_tokens(io.StringIO(code).readline):
            if tok.type == tokenize.COMMENT:
                row, col = tok.start
                lines[row - 1] = lines[row - 1][:col]
    except (tokenize.TokenError, SyntaxError):  # a fragment: keep the comments found so far
        pass
    text = " ".join(" ".join(lines).split())
    # the layout of a call over several lines: "f( a, b, )" -> "f(a, b)"
    return re.sub(r"([(\[{]) |,? ([)\]}])", r"\1\2", text)


def truncate(text: str, width: int, words: bool = False) -> str:
    """``text`` cut to ``width`` characters, the last an ellipsis when anything was cut;
    ``words``: at the end of a word when one ends in the last quarter."""
    if len(text) <= width:
        return text
    cut = text[: width - 1]
    if words and cut.rfind(" ") > width * 3 // 4:
        cut = cut[: cut.rfind(" ")]
    return cut.rstrip(" ,;:") + ELLIPSIS


def _drop_asides(text: str) -> str:
    """``text`` without its parenthesised asides (a "(" after a space opens one) outside `code`;
    unchanged if they do not balance. "in `g` (the gradient buffer), dead here" -> "in `g`, dead
    here"; "statement(s)" stays."""
    kept: list[str] = []
    depth, in_code = 0, False
    for prev, ch in zip(" " + text, text, strict=False):
        if ch == "`" and depth == 0:
            in_code = not in_code
        elif ch == "(" and not in_code and (depth or prev == " "):
            depth += 1
            continue
        elif ch == ")" and not in_code and depth:
            depth -= 1
            continue
        if depth == 0:
            kept.append(ch)
    if depth or in_code:
        return text
    return re.sub(r" +([;,:.])", r"\1", " ".join("".join(kept).split()))


class _Lines:
    """The report's lines, and whether prose was shortened (then the report says so)."""

    def __init__(self, verbose: bool) -> None:
        self.verbose = verbose
        self.cut = False
        self.lines: list[str] = []

    def brief(self, text: str, width: int = TEXT_WIDTH) -> str:
        """``text`` on one line; unless verbose, within ``width``: asides dropped, then cut."""
        line = " ".join(text.split())
        if self.verbose or len(line) <= width:
            return line
        self.cut = True
        return truncate(_drop_asides(line), width, words=True)

    def add(self, line: str) -> None:
        self.lines.append(line)


def _cell(text: str, width: int) -> str:
    return truncate(text, width).ljust(width)


def _temporaries(out: _Lines, temporaries: list[Temporary]) -> None:
    out.add(f"    {_cell('where', WHERE_WIDTH)} {_cell('temporary', CODE_WIDTH)} "
            f"{_cell('lives in', LIVES_WIDTH)} how")
    for t in temporaries:
        code = one_line(t.code)
        lives = t.lives_in if t.placed or t.strips else "a new tensor (stays)"
        out.add(f"    {_cell(f'{t.function}:{t.line}', WHERE_WIDTH)} {_cell(code, CODE_WIDTH)} "
                f"{_cell(lives, LIVES_WIDTH)} {out.brief(t.how, HOW_WIDTH)}")
        if out.verbose and len(code) > CODE_WIDTH:
            out.add(f"    {'':{WHERE_WIDTH}} {code}")


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms"


def _time_line(r_name: str, mem: StepMemory, r_mem: StepMemory, t: StepTimes) -> str:
    """What the R step costs in time for the memory it saves, as in `time per step: original
    1.20 ms, AdamWR 3.40 ms (2.83x) for 0.970 parameter-sizes less`."""
    saved = mem.units - r_mem.units
    buys = (f"for {saved:.3f} parameter-sizes less" if saved > 0
            else f"for {-saved:.3f} parameter-sizes more" if saved < 0 else "saving no memory")
    return (f"time per step: original {_ms(t.original_s)}, {r_name} "
            f"{_ms(t.rewritten_s)} ({t.ratio:.3g}x) {buys}")


def _check(out: _Lines, c: ClassOutcome, chk: ClassCheck) -> None:
    ok = sum(r.passed for r in chk.results)
    out.add(f"  check: {ok}/{plural(len(chk.results), 'run')} passed ({chk.mode})"
            + (f"; ERROR {out.brief(chk.error)}" if chk.error else ""))
    for r in chk.results:
        if not r.passed:
            detail = f"max|diff|={r.max_abs_diff:.3g}" + (f"; {r.message}" if r.message else "")
            out.add(f"    FAIL {r.name}: {out.brief(detail)}")
    if not chk.memory:
        return
    timed = ""
    if chk.times:
        lo, hi = min(t.steps for t in chk.times.values()), max(t.steps for t in chk.times.values())
        count = plural(lo, "step") if lo == hi else f"{lo}-{hi} steps"
        timed = f"; time: median of {count}, 1 thread"
    out.add(f"  measured on {MEASURED_ON}; temporaries of the worst of {MEASURED_STEPS} steps in "
            f"parameter-sizes{timed}:")
    width = max(map(len, chk.memory))
    for key, (mem, r_mem) in chk.memory.items():
        out.add(f"    {key:{width}}  temporaries: original {mem.units:.3f}, {c.r_name} "
                f"{r_mem.units:.3f} ({mem.peak_bytes} -> {r_mem.peak_bytes} bytes)")
        if key in chk.times:
            out.add(f"    {key:{width}}  {_time_line(c.r_name, mem, r_mem, chk.times[key])}")
    if any(t.strips for t in c.temporaries):
        from gsr_rewrite.runtime.strip_runs import strip_floor_bytes

        out.add(f"  at run time: strip-mined runs keep their temporaries within the strip floor, "
                f"{strip_floor_bytes() / 2**20:g} MiB (GSR_STRIP_FLOOR_MB), in chunks of whole "
                "tensors or fewer strips")


def _head(out: _Lines, c: ClassOutcome) -> str:
    head = f"{c.name}: {c.status}"
    if c.status == "rewritten":
        head += (f" as {c.r_name} (storage moved only: bitwise)" if c.equivalence == "bitwise"
                 else f" as {c.r_name} (arithmetic changed by "
                 f"{'rule' if len(c.rules) == 1 else 'rules'} {', '.join(c.rules)}: tolerance)")
    return head + (f" -- {out.brief(c.reason)}" if c.reason else "")


def to_text(result: RewriteResult, checks: dict[str, ClassCheck], out: str | None,
            verbose: bool = False) -> str:
    """The report for a terminal; ``verbose`` prints reasons and code whole."""
    lines = _Lines(verbose)
    lines.add(f"gsr-rewrite {__version__}: {result.filename} -> {out or '(not written)'}")
    for c in result.classes:
        lines.add(_head(lines, c))
        if c.validation:
            lines.add(f"  evidence: {lines.brief(c.validation)}")
        if c.status == "rewritten":
            lines.add("  guards: " + ("looked up in a layout certificate read once per step (the "
                                      "step changes no tensor's layout in place)"
                                      if c.fixed_layout else "read tensor by tensor -- " +
                                      lines.brief(c.layout_reason)))
        if c.temporaries:
            lines.add("  predicted temporaries alive at once: "
                      f"before {_units(c.predicted_before)}; after {_units(c.predicted_after)}")
            _temporaries(lines, c.temporaries)
        chk = checks.get(c.name)
        if chk is not None:
            _check(lines, c, chk)
    if any(c.status == "rewritten" for c in result.classes):
        lines.add(f"Contract of the R-variants: {CONTRACT}.")
    if lines.cut:
        lines.add(CUT_NOTE)
    lines.add(GLOSSARY_NOTE)
    return "\n".join(lines.lines)


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def to_json(result: RewriteResult, checks: dict[str, ClassCheck], out: str | None
            ) -> dict[str, Any]:
    classes = []
    for c in result.classes:
        entry: dict[str, Any] = {
            "name": c.name, "r_name": c.r_name if c.status == "rewritten" else None,
            "status": c.status, "reason": c.reason, "validation": c.validation,
            "equivalence": c.equivalence if c.status == "rewritten" else None,
            "rules": c.rules,
            "guards": None if c.status != "rewritten" else
            "per step" if c.fixed_layout else f"per tensor: {c.layout_reason}",
            "temporaries": [asdict(t) for t in c.temporaries],
            "predicted": {"before": c.predicted_before, "after": c.predicted_after,
                          "unit": "peak temporaries alive at once: a list = 1 parameter-size, "
                                  "a single tensor = one parameter's size"},
        }
        chk = checks.get(c.name)
        if chk is not None:
            entry["check"] = {
                "passed": chk.passed, "mode": chk.mode, "error": chk.error,
                "runs": [{"name": r.name, "config": r.config, "device": r.device,
                          "steps": r.steps, "passed": r.passed, "max_abs_diff": r.max_abs_diff,
                          "message": r.message} for r in chk.results],
                "measured_on": MEASURED_ON,
                "measured_units": {k: {"original": a.units, "rewritten": b.units,
                                       "original_bytes": a.peak_bytes,
                                       "rewritten_bytes": b.peak_bytes,
                                       "param_bytes": a.param_bytes}
                                   for k, (a, b) in chk.memory.items()},
                "step_time": {k: {"original_s": t.original_s, "rewritten_s": t.rewritten_s,
                                  "ratio": _finite(t.ratio), "steps": t.steps}
                              for k, t in chk.times.items()},
            }
        classes.append(entry)
    return {"tool": f"gsr-rewrite {__version__}", "source": result.filename, "output": out,
            "contract": CONTRACT, "classes": classes}
