"""What the compiler returns for a module: per class its outcome (rewritten, unchanged or refused,
why), each temporary and where it now lives; the contract every R-variant states."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gsr_rewrite.analysis.interprocedural import ClassAnalysis
from gsr_rewrite.transform.plan import FunctionPlan
from gsr_rewrite.transform.stripmine import (
    StripRegion,
)

CONTRACT = ("after step() the contents of p.grad are undefined: the gradient buffers hold "
            "scratch values")


@dataclass
class Temporary:
    function: str
    line: int
    code: str
    op: str
    placed: bool
    lives_in: str  # buffer it now lives in, or "" when it still allocates
    how: str  # in-place chain / host variable / why not
    is_list: bool  # a foreach list (one parameter-size in total) or one tensor
    strips: int = 0  # strip-mined: it is 1/strips of its tensors (not placed in a dead buffer)


@dataclass
class ClassOutcome:
    name: str
    status: str  # rewritten | unchanged | refused
    reason: str = ""
    validation: str = ""  # certification verdict (compile_source): proved and/or tested
    checks: list[Any] = field(default_factory=list)  # the stress matrix's CheckResults
    equivalence: str = "bitwise"  # bitwise: storage moved only; tolerance: a rule changed math
    rules: list[str] = field(default_factory=list)  # rules from rules/ the rewrite relies on
    temporaries: list[Temporary] = field(default_factory=list)
    predicted_before: dict[str, int] = field(default_factory=dict)  # {"lists": k, "tensors": k}
    predicted_after: dict[str, int] = field(default_factory=dict)
    analysis: ClassAnalysis | None = field(default=None, repr=False)  # a graph: its repr is huge
    plans: list[FunctionPlan] = field(default_factory=list, repr=False)
    regions: dict[str, list[StripRegion]] = field(default_factory=dict)  # per function
    # guards look tensors up in a per-step layout certificate (runtime/layout.py) when the step
    # was proved to change no tensor's layout in place (analysis/layout.py); else why not
    fixed_layout: bool = False
    layout_reason: str = ""

    @property
    def r_name(self) -> str:
        return self.name + "R"


@dataclass
class RewriteResult:
    filename: str
    code: str | None  # None when no class was rewritten
    classes: list[ClassOutcome]
