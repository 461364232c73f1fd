"""What the long commands (`gsr-rewrite corpus`, `python -m gsr_rewrite.bench memory`) share: a
fresh results directory, and a progress bar on stderr that is drawn only on a terminal."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

__all__ = ["new_results_dir", "note", "progress_bar", "wrote"]


def new_results_dir(prefix: str) -> Path:
    """Create ``./PREFIX-YYYYmmdd-HHMMSS`` (``-2``, ``-3``... when that exists) and return it;
    never an existing path, so no earlier results are overwritten."""
    stamp = f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = Path(stamp), 1
    while True:
        try:
            path.mkdir()
            return path
        except FileExistsError:
            n += 1
            path = Path(f"{stamp}-{n}")


def progress_bar(total: int, unit: str) -> tqdm[Any]:
    """A bar on stderr; disabled (silent) when stderr is not a terminal."""
    return tqdm(total=total, unit=unit, disable=None, dynamic_ncols=True)


def note(text: str) -> None:
    """A line above the bars (a finished step), shown only when they are: on a terminal."""
    if sys.stderr.isatty():
        tqdm.write(text, file=sys.stderr)


def wrote(paths: list[Path]) -> str:
    """The results line: ``wrote A, B and C``."""
    names = [str(p) for p in paths]
    return "wrote " + (", ".join(names[:-1]) + " and " if len(names) > 1 else "") + names[-1]
