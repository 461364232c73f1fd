"""Stage 6, validate: run each emitted R-variant against its original, measure its memory, time.

Configurations come from the constructor's own signature: the defaults, then each boolean
flag flipped (amsgrad, maximize, nesterov, ...), then a non-zero weight decay where there is one.
Each runs on the for-loop and foreach paths, on CPU and (when present) CUDA.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from gsr_rewrite.proof.check import MEASURE_SHAPES, measure_pair
from gsr_rewrite.proof.compare import Mode
from gsr_rewrite.proof.lockstep import CheckResult
from gsr_rewrite.proof.memory import StepMemory, StepTimes, time_step_pair

#: the params `measure_pair` and `time_pair` measure on, in words
MEASURED_ON = (f"{len(MEASURE_SHAPES)} params of {'x'.join(map(str, MEASURE_SHAPES[0]))} fp32, "
               "strip-mined runs in their strips")


@dataclass
class ClassCheck:
    name: str
    mode: Mode
    results: list[CheckResult] = field(default_factory=list)
    #: per device and foreach path ("cpu foreach=False"; "cpu" when there is no foreach flag)
    memory: dict[str, tuple[StepMemory, StepMemory]] = field(default_factory=dict)
    times: dict[str, StepTimes] = field(default_factory=dict)  # the same keys as `memory`
    error: str = ""

    @property
    def passed(self) -> bool:
        return not self.error and all(r.passed for r in self.results)


def plural(count: int, noun: str, plural_form: str = "") -> str:
    """`1 run`, `2 runs`, `0 runs` (``plural_form`` for irregular nouns)."""
    return f"{count} {noun if count == 1 else plural_form or noun + 's'}"


def load_module(path: Path, name: str = "gsr_generated") -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def default_configs(cls: type) -> list[dict[str, Any]]:
    configs: list[dict[str, Any]] = [{}]
    for name, p in inspect.signature(cls.__init__).parameters.items():  # type: ignore[misc]
        if name in ("foreach", "fused", "differentiable", "capturable") or p.default is p.empty:
            continue
        if isinstance(p.default, bool):
            configs.append({name: not p.default})
        elif name == "weight_decay" and p.default == 0:
            configs.append({name: 0.05})
    return configs


def devices() -> list[str]:
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def check_class(original: type, rewritten: type, mode: Mode = "bitwise",
                results: list[CheckResult] | None = None) -> ClassCheck:
    """`--check`: the stress matrix (stress.stress_matrix; `results` when certify already ran
    it), and the temporaries and the time of one step of each (`time_pair`), on every device,
    on each foreach path when the constructor takes ``foreach``."""
    # through check, read at call time: tests patch check.stress_matrix
    from gsr_rewrite.proof.check import foreach_paths, stress_matrix

    out = ClassCheck(original.__name__, mode)
    try:
        for device in devices():
            if results is not None and device == "cpu":
                out.results += results
            else:
                out.results += stress_matrix(original, rewritten, mode=mode, device=device)
            for kw in foreach_paths(original):
                key = " ".join([device, *(f"{k}={v}" for k, v in kw.items())])
                out.memory[key] = measure_pair(original, rewritten, kw, device=device)
                out.times[key] = time_pair(original, rewritten, kw, device=device)
    except Exception as e:  # a crash of the R-variant is a failed check, reported, not raised
        out.error = f"{type(e).__name__}: {e}"
    return out


def time_pair(original: type, rewritten: type, kwargs: dict[str, Any], *,
              device: str = "cpu") -> StepTimes:
    """Median time of one step of each on the params `measure_pair` measures (8 x 64x64 fp32),
    stepped in turn: what the R-variant's memory costs in time (strip-mining's per-strip calls,
    the run-time checks). At most 0.75 s of timed steps (`time_step_pair`'s budget)."""
    return time_step_pair(lambda ps: original(ps, **kwargs), lambda ps: rewritten(ps, **kwargs),
                          MEASURE_SHAPES, device=device)


@dataclass
class Proof:
    """Translation validation of one class: symbolic execution of original and R-variant."""

    proved: bool | None  # None: could not run (e.g. the constructor needs arguments)
    detail: str


#: symbolic validation: steps per configuration (the state after step 1 is re-symbolized, so
#: steps 2 and 3 start from an arbitrary state)
PROOF_STEPS = 3
#: seconds of symbolic execution per class (GSR_PROOF_BUDGET_S); past it the proof "could not
#: run" and the stress matrix alone decides, as for any class symbolic execution cannot take.
#: The slowest class of the corpora proves in under 10 s; timm's Lamb ran for minutes.
PROOF_BUDGET_S = float(os.environ.get("GSR_PROOF_BUDGET_S", "20"))


def prove_class(original: type, rewritten: type) -> Proof:
    """Per-element symbolic execution of both steps: every configuration of
    `configs.stress_configs` (each boolean flipped, each numeric option that is off by default
    turned on, alone and together), both foreach paths, PROOF_STEPS steps, params of ranks 1-3
    in two param groups, and everything the optimizer keeps on `self` compared
    (translation.PROOF_SHAPES)."""
    from gsr_rewrite import runtime
    from gsr_rewrite.proof.configs import stress_configs
    from gsr_rewrite.proof.symbolic import time_budget
    from gsr_rewrite.proof.translation import PROOF_SHAPES, validate_rewrite

    configs = stress_configs(original) or [{}]
    hits = runtime.GUARD_HITS[0]
    # `@torch.compile`d helpers run their Python body on symbols (Dynamo cannot trace them)
    with time_budget(PROOF_BUDGET_S), torch.compiler.set_stance("force_eager"):
        for config in configs:
            try:
                with runtime.fine_strips():
                    res = validate_rewrite(original, rewritten, config, steps=PROOF_STEPS,
                                           shapes=PROOF_SHAPES, groups=2)
            except Exception as e:  # needs arguments, data-dependent control flow, budget, ...
                return Proof(None, f"symbolic validation could not run ({type(e).__name__}: {e})")
            if not res.equal:
                first = next(iter(res.residuals.items()), ("?", "?"))
                return Proof(False, f"translation validation failed for {config or 'defaults'}: "
                                    f"{first[0]} differs by {first[1]}")
    if runtime.GUARD_HITS[0] == hits:  # every guard said no: only the fallback was compared
        return Proof(None, "symbolic validation never reached a rewritten statement")
    scope = f"{plural(len(configs), 'configuration')}, {plural(PROOF_STEPS, 'step')}"
    return Proof(True, f"proved equal by symbolic execution ({scope}, both paths, params of "
                       "ranks 1-3 in two groups, attributes on self)")


@dataclass
class Certificate:
    """Whether an emitted R-variant may be kept, and on what evidence (the report says which)."""

    ok: bool
    detail: str
    proved: bool  # symbolic execution proved it (else it was only tested on the stress matrix)
    results: list[CheckResult] = field(default_factory=list)  # the stress matrix's runs


def certify(original: type, rewritten: type, mode: Mode = "bitwise") -> Certificate:
    """No class without proof: symbolic validation must prove the rewrite or be unable to run,
    and the differential stress matrix (stress.stress_matrix: two groups, duplicated params,
    overlapping and bucket-view grads, accumulation through backward, a 0-d tensor lr, bf16,
    both paths, 8 steps, everything on `self`) must pass in either case. Symbolic execution is
    real arithmetic; the stress matrix is what checks the bits."""
    from gsr_rewrite.proof.check import stress_matrix  # through check, as in check_class

    proof = prove_class(original, rewritten)
    if proof.proved is False:
        return Certificate(False, proof.detail, False)
    try:
        results = stress_matrix(original, rewritten, mode=mode)
    except Exception as e:  # a checker that cannot run proves nothing
        return Certificate(False, f"the stress matrix could not run ({type(e).__name__}: {e})",
                           False)
    failed = [r for r in results if not r.passed]
    if failed:
        return Certificate(False, f"failed the stress matrix ({len(failed)} of "
                           f"{plural(len(results), 'run')}): {failed[0].summary}", False, results)
    tested = f"passed the stress matrix ({plural(len(results), 'run')}, {mode})"
    if proof.proved:
        return Certificate(True, f"{proof.detail}; {tested}", True, results)
    return Certificate(True, f"tested, not proved: {tested}; {proof.detail}", False, results)
