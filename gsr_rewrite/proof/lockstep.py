"""Running an original optimizer and its R-variant in lockstep, and what a check reports.

Each run steps on its OWN clones of the same grads (an R-variant may leave scratch in ``p.grad``)
from the same global RNG state; after every step `lockstep` compares the runs' snapshots
(`snapshot.snapshot`) and their RNG streams. A run that raises ends the comparison: with
``same_error_ok`` an original that raises and an R-variant that raises alike make the scenario
"not applicable" rather than failed. `state_dict_swap` carries a checkpoint across both ways
mid-run. Results are `CheckResult` s, made by `new_result` and filled in by `finish`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import Parameter
from torch.optim import Optimizer

from gsr_rewrite.proof.compare import Criteria, Mode, compare_values
from gsr_rewrite.proof.configs import OptimizerClass
from gsr_rewrite.proof.snapshot import snapshot


@dataclass
class CheckResult:
    """The verdict of one check run: what ran, how it compared, and what differed first."""

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
    case: str = ""  # stress_matrix: the scenario (`_STRESS_CASES` name, or "state_dict swap")
    not_applicable: bool = False  # passed only because the original raises here (and R alike)

    @property
    def summary(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        # the name says the case, configuration, path and (off the CPU) device
        text = f"{verdict} {self.name}: {self.steps} steps, {self.mode}, " \
            f"max|diff|={self.max_abs_diff:.3g}"
        return f"{text}: {self.message}" if self.message else text


def new_result(
    original_cls: OptimizerClass,
    rewritten_cls: OptimizerClass,
    what: str,
    kwargs: dict[str, Any],
    device: str,
    steps: int,
    crit: Criteria,
) -> CheckResult:
    """A failed result to fill in, named distinctly within one class's check: the case
    (``what``), the configuration and foreach path, and the device when it is not the CPU."""
    names = [getattr(c, "__name__", repr(c)) for c in (original_cls, rewritten_cls)]
    tol = crit.mode == "tolerance"
    on = "" if device == "cpu" else f" on {device}"
    return CheckResult(
        name=f"{names[0]}->{names[1]} {what} ({_config_label(kwargs)}){on}",
        config=dict(kwargs),
        device=device,
        steps=steps,
        mode=crit.mode,
        max_abs_diff=0.0,
        passed=False,
        rtol=crit.rtol if tol else None,
        atol=crit.atol if tol else None,
    )


def _config_label(kwargs: dict[str, Any]) -> str:
    path = {k: v for k, v in kwargs.items() if k == "foreach"}
    config = [f"{k}={v!r}" for k, v in kwargs.items() if k != "foreach"] or ["defaults"]
    return ", ".join(config + [f"{k}={v!r}" for k, v in path.items()])


def finish(result: CheckResult, outcome: Outcome) -> CheckResult:
    result.max_abs_diff, result.passed = outcome.worst, outcome.failure is None
    if outcome.failure is not None:
        result.message = outcome.failure
    elif outcome.not_applicable is not None:
        result.message = f"not applicable: {outcome.not_applicable}"
        result.not_applicable = True
    return result


def clone_params(params: Sequence[torch.Tensor]) -> list[Parameter]:
    # clone() keeps strides (preserve_format), so the non-contiguous param stays non-contiguous.
    return [Parameter(p.detach().clone(), requires_grad=p.requires_grad) for p in params]


class GradSchedule:
    """Seeded grads per step, same strides as the param; ``None`` on some steps for odd params
    and for the last param from the middle of the run on (a parameter frozen mid-run)."""

    def __init__(self, template: Sequence[torch.Tensor], seed: int, total_steps: int) -> None:
        self._template = list(template)
        self._gen = torch.Generator().manual_seed(seed + 1_000_003)  # independent of param init
        self._total_steps = total_steps

    def grads(self, step: int) -> list[torch.Tensor | None]:
        out: list[torch.Tensor | None] = []
        count = len(self._template)
        for i, p in enumerate(self._template):
            # Draw for every param every step so the stream does not depend on the None pattern.
            values = torch.randn(p.shape, generator=self._gen, dtype=p.dtype)
            g = torch.empty_strided(p.shape, p.stride(), dtype=p.dtype, device=p.device)
            none = grad_is_none(i, count, step, self._total_steps)
            out.append(None if none else g.copy_(values))
        return out


def grad_is_none(i: int, count: int, step: int, total_steps: int) -> bool:
    """No grad for param ``i`` of ``count`` at ``step``: odd params on 1 step in 5 (staggered), the
    last one from the middle of the run on (frozen)."""
    frozen = i == count - 1 and step >= total_steps // 2
    return frozen or (i % 2 == 1 and (3 * i + step) % 5 == 4)


@dataclass
class Run:
    """One optimizer of a lockstep run, with the params it steps."""

    label: str
    optimizer: Optimizer
    params: list[Parameter]


#: ``feed(step)`` prepares one step's gradients and returns what installs them into one run (its
#: own copies; or, for autograd accumulation, runs its zero_grad and backward passes).
Feed = Callable[[int], Callable[[Run], None]]
#: What a run raised, with the sentence that reports it; None: it did not raise.
_Raised = tuple[Exception, str] | None


def schedule_feed(schedule: GradSchedule) -> Feed:
    """The feed of a `GradSchedule`: each run gets its own clones of the step's grads."""

    def at(step: int) -> Callable[[Run], None]:
        grads = schedule.grads(step)

        def install(run: Run) -> None:
            for p, g in zip(run.params, grads, strict=True):
                p.grad = None if g is None else g.clone()  # own copy: a step may scribble on it

        return install

    return at


@dataclass
class Outcome:
    """How a lockstep run ended: the worst difference seen, and what failed or made it moot."""

    worst: float = 0.0
    failure: str | None = None
    not_applicable: str | None = None  # the original raised; every other run raised alike


def _judge(where: str, labels: Sequence[str], raised: Sequence[_Raised],
           same_error_ok: bool) -> Outcome:
    """Some run raised. With ``same_error_ok``, the original (first) raising and every other run
    raising the same exception type means the scenario is not applicable; anything else fails."""
    first = raised[0]
    if same_error_ok and first is not None:
        for label, other in zip(labels[1:], raised[1:], strict=True):
            if other is None or type(other[0]) is not type(first[0]):
                got = other[1] if other else f"{label} did not raise"
                return Outcome(failure=f"{where}: {first[1]} but {got}")
        return Outcome(not_applicable=f"{where}: {first[1]}, the R-variant alike")
    text = next(r[1] for r in raised if r is not None)
    return Outcome(failure=f"{where}: {text}")


def _rng_state() -> tuple[torch.Tensor, list[torch.Tensor]]:
    initialized = torch.cuda.is_initialized()  # type: ignore[no-untyped-call]
    cuda = torch.cuda.get_rng_state_all() if initialized else []
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple[torch.Tensor, list[torch.Tensor]]) -> None:
    torch.set_rng_state(state[0])
    if state[1]:
        torch.cuda.set_rng_state_all(state[1])


def _same_rng_state(a: tuple[torch.Tensor, list[torch.Tensor]],
                    b: tuple[torch.Tensor, list[torch.Tensor]]) -> bool:
    return all(torch.equal(x, y) for x, y in zip((a[0], *a[1]), (b[0], *b[1]), strict=True))


def lockstep(
    runs: Sequence[Run],
    pairs: Sequence[tuple[int, int]],
    feed: Feed,
    steps: range,
    crit: Criteria,
    *,
    same_error_ok: bool = False,
    attributes: bool = True,
) -> Outcome:
    """Step all runs on the same grads (each its own clones) from the same global RNG state and
    compare runs[j] to runs[i] (`snapshot`); a run that raises ends the comparison (`_judge`)."""
    out = Outcome()
    labels = [run.label for run in runs]
    for step in steps:
        install = feed(step)
        start = _rng_state()
        raised: list[_Raised] = []
        ends: list[Any] = []
        returned: list[Any] = []
        for run in runs:
            _set_rng_state(start)  # stochastic optimizers draw the same numbers in every run
            try:
                install(run)
            except Exception as exc:
                raised.append((exc, f"{run.label} raised {exc!r} while its grads were set"))
                continue
            try:
                returned.append(run.optimizer.step())
            except Exception as exc:  # reported, never a crash of the checker
                raised.append((exc, f"{run.label}.step() raised {exc!r}"))
                continue
            raised.append(None)
            ends.append(_rng_state())
        if any(r is not None for r in raised):
            verdict = _judge(f"step {step + 1}", labels, raised, same_error_ok)
            verdict.worst = out.worst
            return verdict
        _set_rng_state(ends[0])  # the stream goes on as it would for the original alone
        for i, j in pairs:
            diff, msg = compare_values(
                snapshot(runs[i].optimizer, attributes),
                snapshot(runs[j].optimizer, attributes),
                "",
                crit,
            )
            if msg is None and _comparable(returned[i]) and _comparable(returned[j]):
                ret_diff, msg = compare_values(returned[i], returned[j], "what step() returned",
                                               crit)
                diff = max(diff, ret_diff)
            if msg is None and not _same_rng_state(ends[i], ends[j]):
                msg = "the global random number generator was advanced differently"
            out.worst = max(out.worst, diff)
            if msg:
                out.failure = f"step {step + 1}: {runs[j].label} vs {runs[i].label}: {msg}"
                return out
    return out


def _comparable(v: Any, depth: int = 0) -> bool:
    """A value step() returned that compare_values compares by contents: tensors, numbers,
    strings, None, and lists, tuples and dicts of them (not a function or another object)."""
    if v is None or isinstance(v, (torch.Tensor, int, float, bool, str)):
        return True
    if isinstance(v, (list, tuple)) and depth < 4:
        return all(_comparable(x, depth + 1) for x in v)
    if isinstance(v, dict) and depth < 4:
        return all(_comparable(x, depth + 1) for x in v.values())
    return False


def build_pair(
    build: Callable[[OptimizerClass, str, dict[str, Any]], Run],
    original_cls: OptimizerClass,
    rewritten_cls: OptimizerClass,
    options: Sequence[dict[str, Any]],
    same_error_ok: bool,
) -> tuple[list[Run], Outcome | None]:
    """The original's and the R-variant's run, or the outcome when a constructor raised. The
    original settles which of ``options`` (passed on to ``build``) both use: the first it takes."""
    runs: list[Run] = []
    raised: list[_Raised] = []
    for label, cls in (("original", original_cls), ("R-variant", rewritten_cls)):
        error: _Raised = None
        for option in options:
            try:
                runs.append(build(cls, label, option))
            except Exception as exc:
                error = (exc, f"{label} raised {exc!r}")
                continue
            error, options = None, [option]
            break
        else:
            options = [options[-1]]  # the R-variant gets the option the original raised on last
        raised.append(error)
    if any(r is not None for r in raised):
        return runs, _judge("constructor", ["original", "R-variant"], raised, same_error_ok)
    return runs, None


def state_dict_swap(
    original_cls: OptimizerClass,
    rewritten_cls: OptimizerClass,
    kwargs: dict[str, Any],
    steps_before: int,
    steps_after: int,
    new_params: Callable[[], list[Parameter]],
    seed: int,
    crit: Criteria,
    *,
    same_error_ok: bool = False,
    what: str = "state_dict swap",
) -> CheckResult:
    """`check_state_dict_swap` on the params ``new_params()`` makes (equal ones at every call);
    ``what`` names the run."""
    total = steps_before + steps_after
    device = str(new_params()[0].device)
    result = new_result(original_cls, rewritten_cls, what, kwargs, device, total, crit)

    def build(cls: OptimizerClass, label: str, options: dict[str, Any]) -> Run:
        params = new_params()
        return Run(label, cls(params, **kwargs), params)

    runs, outcome = build_pair(build, original_cls, rewritten_cls, [{}], same_error_ok)
    if outcome is not None:
        return finish(result, outcome)
    orig, rvar = runs
    feed = schedule_feed(GradSchedule(orig.params, seed, total))
    try:
        outcome = lockstep(runs, [(0, 1)], feed, range(steps_before), crit,
                           same_error_ok=same_error_ok)
        if outcome.failure is None and outcome.not_applicable is None:
            # deepcopy = a saved checkpoint: load_state_dict may keep the very tensors it is given.
            sd_o = copy.deepcopy(orig.optimizer.state_dict())
            sd_r = copy.deepcopy(rvar.optimizer.state_dict())
            diff, msg = compare_values(sd_o, sd_r, "state_dict()", crit)
            outcome.worst = max(outcome.worst, diff)
            if msg is not None:
                outcome.failure = f"after step {steps_before}: R-variant vs original: {msg}"
        if outcome.failure is None and outcome.not_applicable is None:
            # the reference is the original loaded from its own checkpoint: load_state_dict
            # itself changes some state (a deque loses its maxlen), for both classes alike
            to_ref = clone_params(orig.params)
            to_r = clone_params(orig.params)
            to_o = clone_params(rvar.params)
            runs = [
                Run("original loaded from original", original_cls(to_ref, **kwargs), to_ref),
                Run("R-variant loaded from original", rewritten_cls(to_r, **kwargs), to_r),
                Run("original loaded from R-variant", original_cls(to_o, **kwargs), to_o),
            ]
            runs[0].optimizer.load_state_dict(copy.deepcopy(sd_o))
            runs[1].optimizer.load_state_dict(sd_o)
            runs[2].optimizer.load_state_dict(sd_r)
            # attributes on self: not in a checkpoint, so a loaded original lacks them as well
            after = lockstep(runs, [(0, 1), (0, 2)], feed, range(steps_before, total), crit,
                             same_error_ok=same_error_ok, attributes=False)
            after.worst = max(outcome.worst, after.worst)
            outcome = after
    except Exception as exc:  # load_state_dict, state_dict
        outcome = Outcome(math.inf, f"raised {exc!r}")
    return finish(result, outcome)
