"""The corpus run's command line: `python -m gsr_rewrite.corpus PACKAGE... [--out PATH.md]`
(also `gsr-rewrite corpus ...`).

    python -m gsr_rewrite.corpus torch.optim lion_pytorch --out benchmarks/results/corpus.md

Without ``--out`` the table and its JSON go into a new directory ``./gsr-corpus-<time>/``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from gsr_rewrite.bench.output import new_results_dir, note, wrote
from gsr_rewrite.corpus.report import _num, summary, to_json, to_markdown
from gsr_rewrite.corpus.rows import CorpusRow
from gsr_rewrite.corpus.runner import run_corpus


def main(argv: list[str] | None = None) -> int:
    """`python -m gsr_rewrite.corpus PACKAGE... [--out PATH.md]`: table + JSON beside it, by
    default in a new directory; progress on stderr (on a terminal), the results on stdout."""
    ap = argparse.ArgumentParser(prog="python -m gsr_rewrite.corpus",
                                 description="Rewrite and check every optimizer class of the "
                                 "named installed packages.")
    ap.add_argument("packages", nargs="+", metavar="PACKAGE")
    ap.add_argument("--out", type=Path, default=None,
                    help="markdown table; the JSON is written beside it (.json). Default: "
                    "corpus.md in a new directory ./gsr-corpus-YYYYmmdd-HHMMSS")
    ap.add_argument("--steps", type=int, default=7)
    ap.add_argument("--quick", action="store_true",
                    help="default constructor path only (no foreach=False/True split)")
    ap.add_argument("--classes", help="comma-separated class names to keep")
    ap.add_argument("--time-limit", type=float, default=180.0, help="seconds per class")
    args = ap.parse_args(argv)
    classes = set(args.classes.split(",")) if args.classes else None
    skipped: list[str] = []
    start = time.perf_counter()

    def done(r: CorpusRow) -> None:
        note(f"{r.module}.{r.cls}: {r.status} {_num(r.before_units)} -> "
             f"{_num(r.after_units)} {r.equivalence} ({r.seconds:.1f} s)")

    rows = run_corpus(args.packages, steps=args.steps, quick=args.quick, classes=classes,
                      time_limit=args.time_limit, progress=done, skipped=skipped)
    seconds = time.perf_counter() - start
    out: Path = args.out or new_results_dir("gsr-corpus") / "corpus.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(to_markdown(rows, skipped, args.packages, args.steps, seconds))
    data = to_json(rows, skipped, args.packages, args.steps, seconds)
    out.with_suffix(".json").write_text(json.dumps(data, indent=2))
    print(summary(rows))
    print(f"{wrote([out, out.with_suffix('.json')])} ({seconds:.0f} s)")
    return 0

