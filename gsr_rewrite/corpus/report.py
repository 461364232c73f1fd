"""The corpus run's outputs: a markdown table, a summary line and JSON beside the table."""

from __future__ import annotations

import collections
import platform
import time
from dataclasses import asdict
from typing import Any

import torch

from gsr_rewrite.corpus.rows import REUSE_FROM, REUSE_TO, TARGET, CorpusRow
from gsr_rewrite.proof.check import MEASURE_SHAPES
from gsr_rewrite.proof.memory import MEASURED_STEPS
from gsr_rewrite.proof.validate import plural
from gsr_rewrite.version import __version__


def _num(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


def _ratio(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}x"


def _cell(text: str, limit: int = 240) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _equivalence(r: CorpusRow) -> str:
    if r.equivalence in ("bitwise", "n/a"):
        return r.equivalence
    if r.max_abs_diff is None:
        return r.equivalence
    return f"{r.equivalence} (max abs diff {r.max_abs_diff:.3g})"


def _reason(r: CorpusRow) -> str:
    parts = [p for p in (r.reason, f"needs {r.needs}" if r.needs else "", r.detail) if p]
    return "; ".join(dict.fromkeys(parts))


def summary(rows: list[CorpusRow]) -> str:
    eligible = [r for r in rows if r.before_units is not None and r.before_units >= REUSE_FROM]
    good = [r for r in eligible
            if r.after_units is not None and r.after_units <= REUSE_TO and r.passes]
    share = len(good) / len(eligible) if eligible else 0.0
    count = collections.Counter(r.status for r in rows)
    counts = ", ".join([*(f"{count[s]} {s}" for s in ("rewritten", "unchanged", "refused")),
                        plural(count["error"], "error")])
    return (f"{plural(len(rows), 'class', 'classes')}: {counts}. Of the "
            f"{plural(len(eligible), 'class', 'classes')} whose original allocates >= "
            f"{REUSE_FROM} parameter-sizes in one step: {len(good)} ({share:.0%}) with <= "
            f"{REUSE_TO} after the rewrite and equivalence passed (target {TARGET:.0%}).")


def environment() -> dict[str, Any]:
    return {"tool": f"gsr-rewrite {__version__}", "torch": torch.__version__,
            "python": platform.python_version(), "device": "cpu",
            "date": time.strftime("%Y-%m-%d"),
            "shapes": f"{len(MEASURE_SHAPES)} x {'x'.join(map(str, MEASURE_SHAPES[0]))} fp32",
            "units": f"peak bytes allocated by the worst of {MEASURED_STEPS} step()s / bytes of "
                     "all params (CPU profiler)"}


def to_markdown(rows: list[CorpusRow], skipped: list[str], packages: list[str], steps: int,
                seconds: float) -> str:
    env = environment()
    lines = [
        f"# Corpus run: {', '.join(packages)}",
        "",
        f"{env['tool']}, torch {env['torch']}, Python {env['python']}, {env['device']}, "
        f"{env['date']}; {seconds:.0f} s in all.",
        "",
        f"Temporaries of one `step()` in units of the parameter size ({env['shapes']}); the "
        f"worst of {MEASURED_STEPS} steps after 2 warm-up steps, and of the for-loop and "
        "foreach paths where the constructor takes `foreach`; strip-mined runs measured in "
        "their finest strips (what they keep at any size). Time: the R-variant's step time "
        "over the original's on the same params (median of alternating steps, one CPU thread, "
        "the worst path) at the run-time strip floor, as a user's step runs (these params fit "
        "one strip; benchmarks/step_time.py times model-sized params). Equivalence: original "
        f"vs R-variant over {steps} steps on odd shapes, bitwise "
        "(max abs diff under the default tolerance when not bitwise).",
        "",
        "| class | module | status | before | after | time | equivalence | reason |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r.cls} | {r.module} | {r.status} | {_num(r.before_units)} | "
                     f"{_num(r.after_units)} | {_ratio(r.time_ratio)} | {_equivalence(r)} | "
                     f"{_cell(_reason(r))} |")
    lines += ["", f"**Summary.** {summary(rows)}", ""]
    if skipped:
        lines += ["Modules not imported (their classes, if any, are not in the table):", ""]
        lines += [f"- {_cell(s, 300)}" for s in skipped]
        lines.append("")
    return "\n".join(lines)


def to_json(rows: list[CorpusRow], skipped: list[str], packages: list[str], steps: int,
            seconds: float) -> dict[str, Any]:
    return {**environment(), "packages": packages, "steps": steps, "seconds": seconds,
            "summary": summary(rows), "skipped_modules": skipped,
            "rows": [asdict(r) for r in rows]}
