"""Equivalence checks of an original optimizer against its R-variant (DESIGN.md sections 3 and 5).

The original is ground truth. Both run in lockstep on identical odd-shaped problems with identical
grads, each on its OWN grad clones (an R-variant may leave scratch in ``p.grad``), and after every
step every param, every state value and every param-group option is compared.
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch.nn import Parameter
from torch.optim import Optimizer

from gsr_rewrite.memory import StepMemory, measure_temporaries

__all__ = [
    "CheckResult",
    "check_state_dict_swap",
    "compare_trajectories",
    "make_problem",
    "measure_pair",
    "run_checks",
]

Mode = Literal["bitwise", "tolerance"]
OptimizerClass = Callable[..., Optimizer]

# Tolerance table (mode="tolerance" only; bitwise mode ignores it):
#   float32: rtol 1.3e-6, atol 1e-5 -- torch.testing.assert_close defaults for float32, i.e.
#   about 11 ulp relative; enough for a reassociated per-element formula over 7 steps, far below
#   the 1e-3 relative change a wrong rewrite produces. Callers may pass other bounds; results
#   record the bounds used.
DEFAULT_RTOL = 1.3e-6
DEFAULT_ATOL = 1e-5

# Equal-size shapes for measure_pair: 8 x 64x64 fp32 = 128 KiB, so 1 unit = one copy of all params.
MEASURE_SHAPES: tuple[tuple[int, ...], ...] = ((64, 64),) * 8


@dataclass(frozen=True)
class _Criteria:
    mode: Mode
    rtol: float
    atol: float


@dataclass
class CheckResult:
    name: str
    config: dict[str, Any]
    device: str
    steps: int
    mode: Mode
    max_abs_diff: float
    passed: bool
    message: str = ""
    rtol: float | None = None  # tolerance mode only
    atol: float | None = None

    @property
    def summary(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        text = (
            f"{verdict} {self.name} {self.config} on {self.device}, {self.steps} steps, "
            f"{self.mode}, max|diff|={self.max_abs_diff:.3g}"
        )
        return f"{text}: {self.message}" if self.message else text


def make_problem(seed: int, device: str, dtype: torch.dtype = torch.float32,
                 dense: bool = False) -> list[Parameter]:
    """Six params with odd shapes; the last one is the one frozen mid-run by the checks.

    dense=True makes every param contiguous: an R-variant's foreach guards check whole lists, so
    one non-contiguous param sends a foreach statement to its original fallback, and only a
    dense problem exercises the rewritten foreach path.
    """
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=gen, dtype=dtype)

    tensors = [
        randn(0, 3),  # 0-size
        randn(1),  # 1 element
        randn(5, 7) if dense else randn(7, 5).t(),  # non-contiguous: (5, 7), strides (1, 5)
        randn(3000),  # a few thousand elements, > 2048 (a common chunk/block size)
        randn(4, 6),
        randn(8, 3),
    ]
    return [Parameter(t.to(device)) for t in tensors]


def _clone_params(params: Sequence[torch.Tensor]) -> list[Parameter]:
    # clone() keeps strides (preserve_format), so the non-contiguous param stays non-contiguous.
    return [Parameter(p.detach().clone(), requires_grad=p.requires_grad) for p in params]


class _GradSchedule:
    """Seeded grads per step, same strides as the param; ``None`` on some steps for odd params
    and for the last param from the middle of the run on (a parameter frozen mid-run)."""

    def __init__(self, template: Sequence[torch.Tensor], seed: int, total_steps: int) -> None:
        self._template = list(template)
        self._gen = torch.Generator().manual_seed(seed + 1_000_003)  # independent of param init
        self._total_steps = total_steps

    def _is_none(self, i: int, step: int) -> bool:
        frozen = i == len(self._template) - 1 and step >= self._total_steps // 2
        return frozen or (i % 2 == 1 and (3 * i + step) % 5 == 4)

    def grads(self, step: int) -> list[torch.Tensor | None]:
        out: list[torch.Tensor | None] = []
        for i, p in enumerate(self._template):
            # Draw for every param every step so the stream does not depend on the None pattern.
            values = torch.randn(p.shape, generator=self._gen, dtype=p.dtype)
            g = torch.empty_strided(p.shape, p.stride(), dtype=p.dtype, device=p.device)
            out.append(None if self._is_none(i, step) else g.copy_(values))
        return out


def _label(i: int, p: torch.Tensor) -> str:
    layout = "" if p.is_contiguous() else ", non-contiguous"
    return f"param[{i}] (shape {tuple(p.shape)}{layout})"


def _max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.numel() == 0:
        return 0.0
    a64 = a.detach().to("cpu", torch.float64)
    b64 = b.detach().to("cpu", torch.float64)
    same = (a64 == b64) | (a64.isnan() & b64.isnan())  # equal infs and NaN-vs-NaN count as 0
    diff = torch.where(same, torch.zeros_like(a64), (a64 - b64).abs())
    return float(torch.nan_to_num(diff, nan=math.inf).max())


def _tensors_match(a: torch.Tensor, b: torch.Tensor, crit: _Criteria) -> bool:
    exact_only = not (a.is_floating_point() or a.is_complex())
    if crit.mode == "tolerance" and not exact_only:
        return torch.allclose(a, b, rtol=crit.rtol, atol=crit.atol, equal_nan=True)
    if torch.equal(a, b):
        return True
    # NaN-aware equality; note -0.0 == 0.0 here (values, not bit patterns, are compared).
    return not exact_only and bool(((a == b) | (a.isnan() & b.isnan())).all())


def _compare_values(a: Any, b: Any, what: str, crit: _Criteria) -> tuple[float, str | None]:
    """(max |diff|, None) when ``a`` matches ``b``, else (max |diff|, what differed)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return math.inf, f"{what} is {type(a).__name__} vs {type(b).__name__}"
        if a.dtype != b.dtype or a.shape != b.shape:
            return math.inf, (f"{what} is {a.dtype}{tuple(a.shape)} vs {b.dtype}{tuple(b.shape)}")
        diff = _max_abs_diff(a, b)
        ok = _tensors_match(a, b, crit)
        return diff, None if ok else f"{what} differs (max |diff| = {diff:.3g})"
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return (
                math.inf,
                f"{what or 'snapshot'} keys {sorted(map(str, a))} vs {sorted(map(str, b))}",
            )
        worst = 0.0
        for key in a:
            where = f"{what}[{key!r}]" if what else str(key)  # top level: a snapshot label
            diff, msg = _compare_values(a[key], b[key], where, crit)
            worst = max(worst, diff)
            if msg:
                return worst, msg
        return worst, None
    if isinstance(a, list | tuple) and type(a) is type(b):
        if len(a) != len(b):
            return math.inf, f"{what} has length {len(a)} vs {len(b)}"
        return _compare_values(dict(enumerate(a)), dict(enumerate(b)), what, crit)
    if isinstance(a, float) and isinstance(b, float):
        if (math.isnan(a) and math.isnan(b)) or a == b:
            return 0.0, None
        diff = abs(a - b)
        ok = crit.mode == "tolerance" and diff <= crit.atol + crit.rtol * abs(a)
        return diff, None if ok else f"{what} is {a!r} vs {b!r}"
    try:
        equal = bool(a == b)
    except Exception:  # e.g. an array-valued ==; treat as different, with the values shown
        equal = False
    return 0.0, None if equal else f"{what} is {a!r} vs {b!r}"


def _snapshot(opt: Optimizer) -> dict[str, Any]:
    """Everything compared, in order: params, then each param's state, then group options."""
    params = [p for g in opt.param_groups for p in g["params"]]
    snap: dict[str, Any] = {_label(i, p): p.data for i, p in enumerate(params)}
    for i, p in enumerate(params):
        # .get: optimizer.state is a defaultdict; indexing would create entries.
        snap[f"state of {_label(i, p)}"] = opt.state.get(p, {})
    for k, g in enumerate(opt.param_groups):
        snap[f"param_groups[{k}]"] = {key: v for key, v in g.items() if key != "params"}
    return snap


@dataclass
class _Run:
    label: str
    optimizer: Optimizer
    params: list[Parameter]


def _lockstep(
    runs: Sequence[_Run],
    pairs: Sequence[tuple[int, int]],
    schedule: _GradSchedule,
    steps: range,
    crit: _Criteria,
) -> tuple[float, str | None]:
    """Step all runs on the same grads (each its own clones) and compare runs[j] to runs[i]."""
    worst = 0.0
    for step in steps:
        grads = schedule.grads(step)
        for run in runs:
            for p, g in zip(run.params, grads, strict=True):
                p.grad = None if g is None else g.clone()  # own copy: a step may scribble on it
            try:
                run.optimizer.step()
            except Exception as exc:  # reported, never a crash of the checker
                return worst, f"step {step + 1}: {run.label}.step() raised {exc!r}"
        for i, j in pairs:
            diff, msg = _compare_values(
                _snapshot(runs[i].optimizer), _snapshot(runs[j].optimizer), "", crit
            )
            worst = max(worst, diff)
            if msg:
                return worst, f"step {step + 1}: {runs[j].label} vs {runs[i].label}: {msg}"
    return worst, None


def _new_result(
    original_cls: OptimizerClass,
    rewritten_cls: OptimizerClass,
    what: str,
    kwargs: dict[str, Any],
    device: str,
    steps: int,
    crit: _Criteria,
) -> CheckResult:
    names = [getattr(c, "__name__", repr(c)) for c in (original_cls, rewritten_cls)]
    tol = crit.mode == "tolerance"
    return CheckResult(
        name=f"{names[0]}->{names[1]} {what}",
        config=dict(kwargs),
        device=device,
        steps=steps,
        mode=crit.mode,
        max_abs_diff=0.0,
        passed=False,
        rtol=crit.rtol if tol else None,
        atol=crit.atol if tol else None,
    )


def compare_trajectories(
    original_cls: OptimizerClass,
    rewritten_cls: OptimizerClass,
    kwargs: dict[str, Any],
    *,
    steps: int = 7,
    seed: int = 0,
    device: str = "cpu",
    mode: Mode = "bitwise",
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    dtype: torch.dtype = torch.float32,
    dense: bool = False,
) -> CheckResult:
    """Run original and R-variant side by side for ``steps`` steps; compare after every step."""
    crit = _Criteria(mode, rtol, atol)
    result = _new_result(original_cls, rewritten_cls, "trajectory", kwargs, device, steps, crit)
    params_o = make_problem(seed, device, dtype, dense)
    params_r = _clone_params(params_o)
    try:
        runs = [
            _Run("original", original_cls(params_o, **kwargs), params_o),
            _Run("R-variant", rewritten_cls(params_r, **kwargs), params_r),
        ]
    except Exception as exc:
        result.message = f"constructor raised {exc!r}"
        return result
    schedule = _GradSchedule(params_o, seed, steps)
    diff, msg = _lockstep(runs, [(0, 1)], schedule, range(steps), crit)
    result.max_abs_diff, result.passed, result.message = diff, msg is None, msg or ""
    return result


def check_state_dict_swap(
    original_cls: OptimizerClass,
    rewritten_cls: OptimizerClass,
    kwargs: dict[str, Any],
    *,
    steps_before: int = 4,
    steps_after: int = 4,
    seed: int = 0,
    device: str = "cpu",
    mode: Mode = "bitwise",
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    dtype: torch.dtype = torch.float32,
    dense: bool = False,
) -> CheckResult:
    """Checkpoints move both ways: original -> R-variant and R-variant -> original.

    Original and R-variant run ``steps_before`` steps in lockstep; their ``state_dict()`` must
    match. Then a fresh R-variant loads the original's checkpoint and a fresh original loads the
    R-variant's; both continue ``steps_after`` steps next to the original and must match it.
    """
    total = steps_before + steps_after
    crit = _Criteria(mode, rtol, atol)
    result = _new_result(
        original_cls, rewritten_cls, "state_dict swap", kwargs, device, total, crit
    )
    params_o = make_problem(seed, device, dtype, dense)
    params_r = _clone_params(params_o)
    schedule = _GradSchedule(params_o, seed, total)
    try:
        orig = _Run("original", original_cls(params_o, **kwargs), params_o)
        rvar = _Run("R-variant", rewritten_cls(params_r, **kwargs), params_r)
        worst, msg = _lockstep([orig, rvar], [(0, 1)], schedule, range(steps_before), crit)
        if msg is None:
            # deepcopy = a saved checkpoint: load_state_dict may keep the very tensors it is given.
            sd_o = copy.deepcopy(orig.optimizer.state_dict())
            sd_r = copy.deepcopy(rvar.optimizer.state_dict())
            diff, msg = _compare_values(sd_o, sd_r, "state_dict()", crit)
            worst = max(worst, diff)
            if msg is not None:
                msg = f"after step {steps_before}: R-variant vs original: {msg}"
        if msg is None:
            to_r = _clone_params(params_o)
            to_o = _clone_params(params_r)
            runs = [
                orig,
                _Run("R-variant loaded from original", rewritten_cls(to_r, **kwargs), to_r),
                _Run("original loaded from R-variant", original_cls(to_o, **kwargs), to_o),
            ]
            runs[1].optimizer.load_state_dict(sd_o)
            runs[2].optimizer.load_state_dict(sd_r)
            after = range(steps_before, total)
            diff, msg = _lockstep(runs, [(0, 1), (0, 2)], schedule, after, crit)
            worst = max(worst, diff)
    except Exception as exc:
        worst, msg = math.inf, f"raised {exc!r}"
    result.max_abs_diff, result.passed, result.message = worst, msg is None, msg or ""
    return result


def _accepts(cls: OptimizerClass, name: str) -> bool:
    try:
        return name in inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False


def run_checks(
    original_cls: OptimizerClass,
    rewritten_cls: OptimizerClass,
    configs: list[dict[str, Any]],
    *,
    steps: int = 7,
    device: str = "cpu",
    mode: Mode = "bitwise",
) -> list[CheckResult]:
    """Trajectory + state-dict swap per config, on foreach=False and foreach=True when the
    constructor takes ``foreach`` and the config does not pin it."""
    results: list[CheckResult] = []
    for config in configs:
        variants = [config]
        if "foreach" not in config and _accepts(original_cls, "foreach"):
            variants = [{**config, "foreach": False}, {**config, "foreach": True}]
        for kw in variants:
            for dense in (False, True):  # dense: the only problem where foreach reuse runs
                results.append(
                    compare_trajectories(
                        original_cls, rewritten_cls, kw, steps=steps, device=device, mode=mode,
                        dense=dense,
                    )
                )
            results.append(
                check_state_dict_swap(original_cls, rewritten_cls, kw, device=device, mode=mode)
            )
    return results


def measure_pair(
    original_cls: OptimizerClass,
    rewritten_cls: OptimizerClass,
    kwargs: dict[str, Any],
    *,
    device: str = "cpu",
) -> tuple[StepMemory, StepMemory]:
    """Temporaries of one step of each, on 8 equal 64x64 params (units = x param size)."""

    def measure(cls: OptimizerClass) -> StepMemory:
        return measure_temporaries(lambda ps: cls(ps, **kwargs), MEASURE_SHAPES, device=device)

    return measure(original_cls), measure(rewritten_cls)
