"""Memory benchmark: peak memory of a whole training step, original optimizer vs its R-variant.

``python -m gsr_rewrite.bench memory --help`` for the command line (``bench/__main__.py``). Every
(model, checkpointing, optimizer) configuration runs in a fresh ``python -m
gsr_rewrite.bench.measure`` process; its JSON result becomes half of a table row. An
out-of-memory configuration is a "did not fit" row, an optimizer that does not import an
"unavailable" row, any other failure an "error" row: the benchmark itself does not crash.

Optimizers are named by import path (``module:Class``) and resolved in the child, so pairs whose
classes do not exist yet (``gsr_rewrite.optim`` is being written) only fail their own rows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gsr_rewrite.bench.measure import RESULT_PREFIX, RunConfig
from gsr_rewrite.bench.output import note, progress_bar

__all__ = [
    "DEFAULT_PAIRS",
    "OptimizerPair",
    "OptimizerSpec",
    "Plan",
    "Row",
    "optimizer_is_peak",
    "parse_pair",
    "run_benchmark",
    "run_in_subprocess",
]

Result = dict[str, Any]
Runner = Callable[[RunConfig, float], Result]
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the directory that holds gsr_rewrite/


@dataclass(frozen=True)
class OptimizerSpec:
    """An optimizer class by import path and the keyword arguments it is built with."""

    target: str  # "module:Class"
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """``AdamW[foreach]``: the class name and the flags set to True."""
        flags = [k for k, v in self.kwargs.items() if v is True]
        return self.target.rpartition(":")[2] + (f"[{','.join(flags)}]" if flags else "")


@dataclass(frozen=True)
class OptimizerPair:
    """An original optimizer and the variant measured against it (an R-variant or a reference)."""

    name: str
    original: OptimizerSpec
    variant: OptimizerSpec
    reference: bool = False  # a torch baseline, not an R-variant

    @property
    def label(self) -> str:
        suffix = " (reference)" if self.reference else ""
        return f"{self.original.label} → {self.variant.label}{suffix}"


_FOREACH = {"foreach": True}
DEFAULT_PAIRS: dict[str, OptimizerPair] = {
    name: OptimizerPair(
        name,
        OptimizerSpec(f"gsr_rewrite.optim:{cls}", _FOREACH),
        OptimizerSpec(f"gsr_rewrite.optim:{cls}R", _FOREACH),
    )
    for name, cls in (("adamw", "AdamW"), ("adan", "Adan"), ("lion", "Lion"))
}
# fused AdamW has no param-sized temporaries: what an R-variant must match on AdamW.
DEFAULT_PAIRS["adamw_fused"] = OptimizerPair(
    "adamw_fused",
    OptimizerSpec("torch.optim:AdamW", _FOREACH),
    OptimizerSpec("torch.optim:AdamW", {"fused": True}),
    reference=True,
)


def parse_pair(text: str) -> OptimizerPair:
    """``name=module:Orig,module:R`` -> a pair; both sides get ``foreach=True`` until overridden."""
    name, sep, targets = text.partition("=")
    parts = [t.strip() for t in targets.split(",")]
    if not sep or len(parts) != 2 or not all(":" in t for t in parts) or not name.strip():
        raise ValueError(f"--pair must look like name=module:Orig,module:R, got {text!r}")
    orig, variant = (OptimizerSpec(t, dict(_FOREACH)) for t in parts)
    return OptimizerPair(name.strip(), orig, variant)


@dataclass(frozen=True)
class Row:
    """One table row: a model, a checkpointing setting, a pair, and both measurements."""

    model: str
    checkpointing: bool
    pair: OptimizerPair
    original: Result
    variant: Result

    @property
    def ok(self) -> bool:
        return self.original.get("status") == "ok" and self.variant.get("status") == "ok"

    @property
    def params(self) -> int | None:
        for result in (self.original, self.variant):
            if "params" in result:
                return int(result["params"])
        return None

    @property
    def savings_pct(self) -> float | None:
        if not self.ok or not self.original["peak_allocated"]:
            return None
        orig, var = float(self.original["peak_allocated"]), float(self.variant["peak_allocated"])
        return 100.0 * (orig - var) / orig

    @property
    def did_not_fit(self) -> bool:
        return "oom" in (self.original.get("status"), self.variant.get("status"))


def optimizer_is_peak(result: Result) -> bool | None:
    """True when the optimizer step reaches higher than forward+backward (None: not measured)."""
    if result.get("status") != "ok":
        return None
    return bool(result["opt_allocated"] > result["fb_allocated"])


def run_in_subprocess(config: RunConfig, timeout_s: float) -> Result:
    """Measure ``config`` in a fresh interpreter; a crash or timeout becomes a status."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PACKAGE_ROOT), env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-m", "gsr_rewrite.bench.measure", json.dumps(config.to_json())]
    base: Result = {"config": config.to_json()}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        return base | {"status": "timeout", "error": f"no result within {timeout_s:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            result: Result = json.loads(line[len(RESULT_PREFIX) :])
            return result
    tail = " | ".join(proc.stderr.strip().splitlines()[-3:])[-400:]
    if proc.returncode in (-9, 137):  # SIGKILL: most often the host's out-of-memory killer
        return base | {"status": "oom", "error": f"killed by SIGKILL (host out of memory?) {tail}"}
    return base | {"status": "error", "error": f"exit code {proc.returncode}: {tail}"}


@dataclass(frozen=True)
class Plan:
    """What to measure: every model x checkpointing setting x pair, both sides of each pair."""

    models: Sequence[str]
    checkpointing: Sequence[bool]
    pairs: Sequence[OptimizerPair]
    device: str = "cpu"
    iters: int = 5
    timeline: bool = False  # record allocation timelines (for --plot)

    def configs(self, row: tuple[str, bool, OptimizerPair]) -> tuple[RunConfig, RunConfig]:
        model, ckpt, pair = row
        # Timelines for the first model and setting only (~100 kB of JSON per configuration).
        timeline = self.timeline and (model, ckpt) == (self.models[0], self.checkpointing[0])

        def make(spec: OptimizerSpec) -> RunConfig:
            kwargs = dict(spec.kwargs)
            return RunConfig(model, ckpt, spec.target, kwargs, self.device, self.iters, timeline)

        return make(pair.original), make(pair.variant)


def run_benchmark(
    plan: Plan, runner: Runner = run_in_subprocess, timeout_s: float = 1800.0
) -> list[Row]:
    """Measure every configuration of ``plan`` once (shared optimizers are not re-run); a bar on
    stderr counts the runs (on a terminal)."""
    keys = [(m, c, p) for m in plan.models for c in plan.checkpointing for p in plan.pairs]
    configs = {config.key(): config for key in keys for config in plan.configs(key)}
    results: dict[str, Result] = {}
    with progress_bar(len(configs), "run") as bar:
        for config in configs.values():
            name = (
                f"{config.model} ckpt={'on' if config.checkpointing else 'off'} "
                f"{OptimizerSpec(config.target, config.kwargs).label}"
            )
            bar.set_postfix_str(name)
            result = results[config.key()] = runner(config, timeout_s)
            peak = result.get("peak_allocated")
            shown = f"{peak / 2**20:.1f} MB" if peak is not None else result.get("error", "")
            note(f"{name}: {result.get('status', '?')} {shown}")
            bar.update()
    rows = []
    for model, ckpt, pair in keys:
        original, variant = (results[c.key()] for c in plan.configs((model, ckpt, pair)))
        rows.append(Row(model, ckpt, pair, original, variant))
    return rows
