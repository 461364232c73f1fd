"""The corpus run's command line and its outputs: a markdown table and JSON beside it."""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from gsr_rewrite import __version__
from gsr_rewrite.check import MEASURE_SHAPES
from gsr_rewrite.corpus import REUSE_FROM, REUSE_TO, TARGET, CorpusRow, run_corpus


def _num(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


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
    counts = ", ".join(f"{sum(r.status == s for r in rows)} {s}"
                       for s in ("rewritten", "unchanged", "refused", "error"))
    return (f"{len(rows)} classes: {counts}. Of the {len(eligible)} classes whose original "
            f"allocates >= {REUSE_FROM} parameter-sizes in one step, {len(good)} "
            f"({share:.0%}) come out with <= {REUSE_TO} and pass equivalence "
            f"(target {TARGET:.0%}).")


def environment() -> dict[str, Any]:
    return {"tool": f"gsr-rewrite {__version__}", "torch": torch.__version__,
            "python": platform.python_version(), "device": "cpu",
            "date": time.strftime("%Y-%m-%d"),
            "shapes": f"{len(MEASURE_SHAPES)} x {'x'.join(map(str, MEASURE_SHAPES[0]))} fp32",
            "units": "peak bytes allocated by one step() / bytes of all params (CPU profiler)"}


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
        "worst of the for-loop and foreach paths where the constructor takes `foreach`. "
        f"Equivalence: original vs R-variant over {steps} steps on odd shapes, bitwise "
        "(max abs diff under the default tolerance when not bitwise).",
        "",
        "| class | module | status | before | after | equivalence | reason |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r.cls} | {r.module} | {r.status} | {_num(r.before_units)} | "
                     f"{_num(r.after_units)} | {_equivalence(r)} | {_cell(_reason(r))} |")
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gsr_rewrite.corpus",
                                 description="Rewrite and check every optimizer class of the "
                                 "named installed packages.")
    ap.add_argument("packages", nargs="+", metavar="PACKAGE")
    ap.add_argument("--out", default="benchmarks/results/corpus.md",
                    help="markdown table (JSON is written beside it, .json)")
    ap.add_argument("--steps", type=int, default=7)
    ap.add_argument("--quick", action="store_true",
                    help="default constructor path only (no foreach=False/True split)")
    ap.add_argument("--classes", help="comma-separated class names to keep")
    ap.add_argument("--time-limit", type=float, default=180.0, help="seconds per class")
    args = ap.parse_args(argv)
    classes = set(args.classes.split(",")) if args.classes else None
    skipped: list[str] = []
    start = time.perf_counter()

    def progress(r: CorpusRow) -> None:
        print(f"{r.module}.{r.cls}: {r.status} {_num(r.before_units)} -> "
              f"{_num(r.after_units)} {r.equivalence} ({r.seconds:.1f} s)", file=sys.stderr)

    rows = run_corpus(args.packages, steps=args.steps, quick=args.quick, classes=classes,
                      time_limit=args.time_limit, progress=progress, skipped=skipped)
    seconds = time.perf_counter() - start
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(to_markdown(rows, skipped, args.packages, args.steps, seconds))
    data = to_json(rows, skipped, args.packages, args.steps, seconds)
    out.with_suffix(".json").write_text(json.dumps(data, indent=2))
    print(summary(rows), file=sys.stderr)
    print(f"wrote {out} and {out.with_suffix('.json')} ({seconds:.0f} s)", file=sys.stderr)
    return 0
