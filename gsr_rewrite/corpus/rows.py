"""One row of the corpus table: what happened to one optimizer class, and the target it
counts for."""

from __future__ import annotations

from dataclasses import dataclass, field

REUSE_FROM = 0.2  # originals allocating at least this many parameter-sizes count for the target
REUSE_TO = 0.05  # ... and succeed when their R-variant allocates at most this many
TARGET = 0.85  # the goal: this fraction of those succeed


@dataclass
class CorpusRow:
    cls: str
    module: str
    status: str  # rewritten | unchanged | refused | error
    reason: str = ""
    needs: str = ""  # "closure", "special construction: ...", or ""
    before_units: float | None = None  # worst over the measured paths
    after_units: float | None = None
    units: dict[str, list[float | None]] = field(default_factory=dict)  # path -> [before, after]
    time_ratio: float | None = None  # R step time / original's, worst over the measured paths
    time_ratios: dict[str, float] = field(default_factory=dict)  # path -> that ratio
    equivalence: str = "n/a"  # bitwise | tolerance | FAIL | n/a
    max_abs_diff: float | None = None
    detail: str = ""  # first failing comparison, or the error while measuring
    seconds: float = 0.0

    @property
    def passes(self) -> bool:
        return self.equivalence in ("bitwise", "tolerance")
