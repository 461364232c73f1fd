"""The differential stress matrix: the gate an R-variant passes before it is emitted.

`stress_matrix` runs every configuration of `configs.stress_configs` on both foreach paths, each
in nine scenarios (`_STRESS_CASES`: two param groups on odd and on dense shapes, a duplicated
param, overlapping grads, bucket-view grads, autograd accumulation, a tensor lr, bf16, strip-mined
runs cut small), plus one
checkpoint swap per path, each in lockstep with the original (`lockstep.lockstep`).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch.nn import Parameter

from gsr_rewrite.proof.compare import (
    BF16_ATOL,
    BF16_RTOL,
    DEFAULT_ATOL,
    DEFAULT_RTOL,
    Criteria,
    Mode,
)
from gsr_rewrite.proof.configs import (
    OptimizerClass,
    default_lr,
    foreach_paths,
    is_number,
    second_group_options,
    stress_configs,
)
from gsr_rewrite.proof.lockstep import (
    CheckResult,
    Feed,
    GradSchedule,
    Outcome,
    Run,
    build_pair,
    finish,
    grad_is_none,
    lockstep,
    new_result,
    schedule_feed,
    state_dict_swap,
)
from gsr_rewrite.runtime.strip_runs import strip_floor


@dataclass(frozen=True)
class _Case:
    """One scenario of the stress matrix."""

    name: str
    dense: bool = True  # every param contiguous: only then do foreach reuse guards pass
    two_groups: bool = False
    duplicate: bool = False  # one param listed twice in its group
    grads: Literal["own", "overlap", "bucket", "autograd"] = "own"
    tensor_lr: bool = False
    dtype: torch.dtype = torch.float32
    strip_floor: int | None = None  # run under this strip floor (bytes; None: the default)


#: A strip floor that cuts the stress params' runs: a temporary's budget is 256 B x 64 / K for a
#: run of K strips, so runs of small params go in chunks of a few whole tensors and the 201-element
#: param is cut into strips (checks `runtime.strips`' chunks and strips against the original)
STRESS_STRIP_FLOOR = 256

_STRESS_CASES = (
    _Case("two groups, odd shapes", dense=False, two_groups=True),
    _Case("two groups, dense", two_groups=True),
    _Case("duplicate param", duplicate=True),
    _Case("overlapping grads", grads="overlap"),
    _Case("bucket-view grads", grads="bucket"),
    _Case("autograd accumulation", grads="autograd"),
    _Case("tensor lr", tensor_lr=True),
    _Case("bf16", dtype=torch.bfloat16),
    _Case("cut by a small strip floor", strip_floor=STRESS_STRIP_FLOOR),
)


@dataclass(frozen=True)
class _Problem:
    """The params of a stress case. The last one is frozen from the middle of the run on (no
    grad; with autograd, requires_grad=False)."""

    shapes: tuple[tuple[int, ...], ...]
    noncontiguous: int  # a 2-D param built transposed unless the case is dense
    duplicate: int  # listed a second time (last) in the duplicate case
    split: int  # two groups: params[:split] and params[split:]


# Ranks 0 to 4, a 0-size and a 1-element param, one non-contiguous (odd problem only), and one of
# 201 elements: more than 3 strips of runtime.STRIP_ALIGN (64). 9 params, 297 elements: the cost
# of a step is the per-tensor overhead, whatever the optimizer.
_ALL_SHAPES = _Problem(((), (3,), (4, 5), (3, 67), (0, 3), (1,), (5, 7), (2, 3, 4), (2, 1, 3, 2)),
                       noncontiguous=6, duplicate=2, split=5)
# Where the original raises on that mix (Adafactor on the 0-size param; Muon takes 2-D params
# only), the case runs again on non-empty 2-D params: a case is not applicable only if both raise.
_2D_SHAPES = _Problem(((4, 5), (3, 67), (5, 7), (2, 12)), noncontiguous=2, duplicate=0, split=2)


def _stress_params(problem: _Problem, case: _Case, seed: int, device: str) -> list[Parameter]:
    gen = torch.Generator().manual_seed(seed)
    params = []
    for i, shape in enumerate(problem.shapes):
        if i == problem.noncontiguous and not case.dense:
            t = torch.randn(shape[::-1], generator=gen).t()
        else:
            t = torch.randn(shape, generator=gen)
        params.append(Parameter(t.to(device=device, dtype=case.dtype)))  # keeps strides
    return params


def _param_groups(problem: _Problem, case: _Case, params: list[Parameter],
                  second: dict[str, Any]) -> list[Any]:
    if case.two_groups:
        return [{"params": params[:problem.split]}, {"params": params[problem.split:], **second}]
    if case.duplicate:
        return [*params, params[problem.duplicate]]
    return list(params)


def _flat_feed(template: list[Parameter], seed: int, steps: int, overlap: bool) -> Feed:
    """All grads are views of one flat buffer, a new one per run and step with equal values.
    Bucket: back to back in reverse param order (DDP fills its buckets about in reverse), no two
    sharing an element. Overlap: in param order, each starting halfway into the previous one."""
    offsets, end = [0] * len(template), 0
    for i in range(len(template)) if overlap else reversed(range(len(template))):
        offsets[i] = end
        n = template[i].numel()
        end += -(-n // 2) if overlap else n
    size = max(off + p.numel() for off, p in zip(offsets, template, strict=True))
    gen = torch.Generator().manual_seed(seed + 1_000_003)

    def at(step: int) -> Callable[[Run], None]:
        values = torch.randn(size, generator=gen).to(template[0].device, template[0].dtype)

        def install(run: Run) -> None:
            flat = values.clone()
            for i, (p, off) in enumerate(zip(run.params, offsets, strict=True)):
                none = grad_is_none(i, len(offsets), step, steps)
                p.grad = None if none else flat[off:off + p.numel()].view(p.shape)

        return install

    return at


def _autograd_feed(template: list[Parameter], seed: int, steps: int) -> Feed:
    """``zero_grad(set_to_none=False)``, then two ``backward()`` of ``sum((p * c_k).sum())`` with
    seeded coefficients: autograd zeroes and accumulates into the very grad tensors the R-variant
    used as scratch. The last param gets ``requires_grad=False`` from the middle of the run on."""
    gen = torch.Generator().manual_seed(seed + 1_000_003)

    def at(step: int) -> Callable[[Run], None]:
        coefficients = [[torch.randn(p.shape, generator=gen).to(p.device, p.dtype)
                         for p in template] for _ in range(2)]

        def install(run: Run) -> None:
            if step >= steps // 2:
                run.params[-1].requires_grad_(False)
            run.optimizer.zero_grad(set_to_none=False)
            with torch.enable_grad():
                for cs in coefficients:
                    terms = [(p * c).sum() for p, c in zip(run.params, cs, strict=True)
                             if p.requires_grad]
                    torch.autograd.backward(torch.stack(terms).sum())

        return install

    return at


def _stress_feed(case: _Case, template: list[Parameter], seed: int, steps: int) -> Feed:
    if case.grads == "autograd":
        return _autograd_feed(template, seed, steps)
    if case.grads == "own":
        return schedule_feed(GradSchedule(template, seed, steps))
    return _flat_feed(template, seed, steps, overlap=case.grads == "overlap")


def _stress_case(
    original_cls: OptimizerClass,
    rewritten_cls: OptimizerClass,
    case: _Case,
    kwargs: dict[str, Any],
    *,
    seed: int,
    steps: int,
    device: str,
    crit: Criteria,
) -> CheckResult:
    if case.dtype == torch.bfloat16:
        crit = Criteria(crit.mode, max(crit.rtol, BF16_RTOL), max(crit.atol, BF16_ATOL), crit.bits)
    what = f"stress {case.name}"

    def case_result() -> CheckResult:
        result = new_result(original_cls, rewritten_cls, what, kwargs, device, steps, crit)
        result.case = case.name
        return result

    run_kwargs = dict(kwargs)
    if case.tensor_lr:
        lr = kwargs.get("lr", default_lr(original_cls, kwargs))
        if not is_number(lr):
            return finish(case_result(), Outcome(not_applicable="no float lr option"))
        run_kwargs["lr"] = torch.tensor(float(lr))  # cloned for each run

    floor = strip_floor(case.strip_floor) if case.strip_floor is not None else nullcontext()
    with floor:
        return _with_2d_fallback(lambda problem: finish(case_result(), _stress_outcome(
            original_cls, rewritten_cls, problem, case, run_kwargs,
            seed=seed, steps=steps, device=device, crit=crit)))


def _with_2d_fallback(run: Callable[[_Problem], CheckResult]) -> CheckResult:
    """``run`` on every shape; where that is not applicable (the original raises), on 2-D params,
    with a message that says so."""
    result = run(_ALL_SHAPES)
    if not result.not_applicable:
        return result
    why = "with every shape, " + result.message.removeprefix("not applicable: ")
    plain = run(_2D_SHAPES)
    if plain.not_applicable:
        plain.message = f"not applicable: {why}; with 2-D params, " + \
            plain.message.removeprefix("not applicable: ")
    elif not plain.passed:
        plain.message = f"{plain.message} (on 2-D params only: {why})"
    else:
        plain.message = f"compared on 2-D params only: {why}"
    return plain


def _stress_outcome(
    original_cls: OptimizerClass,
    rewritten_cls: OptimizerClass,
    problem: _Problem,
    case: _Case,
    kwargs: dict[str, Any],
    *,
    seed: int,
    steps: int,
    device: str,
    crit: Criteria,
) -> Outcome:
    def build(cls: OptimizerClass, label: str, second: dict[str, Any]) -> Run:
        params = _stress_params(problem, case, seed, device)
        kw = {**kwargs, "lr": kwargs["lr"].clone()} if case.tensor_lr else kwargs
        return Run(label, cls(_param_groups(problem, case, params, second), **kw), params)

    options = second_group_options(original_cls, kwargs) if case.two_groups else [{}]
    runs, outcome = build_pair(build, original_cls, rewritten_cls, options, same_error_ok=True)
    if outcome is not None:
        return outcome
    feed = _stress_feed(case, runs[0].params, seed, steps)
    return lockstep(runs, [(0, 1)], feed, range(steps), crit, same_error_ok=True)


def _stress_swap(original_cls: OptimizerClass, rewritten_cls: OptimizerClass,
                 kwargs: dict[str, Any], *, steps: int, device: str,
                 crit: Criteria) -> CheckResult:
    """The state-dict swap (half the steps before, half after) on the odd-shaped stress params;
    on 2-D params where the original raises on those."""
    odd = _Case("state_dict swap", dense=False)

    def run(problem: _Problem) -> CheckResult:
        result = state_dict_swap(
            original_cls, rewritten_cls, kwargs, steps // 2, steps - steps // 2,
            functools.partial(_stress_params, problem, odd, 0, device), 0, crit,
            same_error_ok=True, what=f"stress {odd.name}",
        )
        result.case = odd.name
        return result

    return _with_2d_fallback(run)


def stress_matrix(
    original_cls: OptimizerClass,
    rewritten_cls: OptimizerClass,
    *,
    mode: Mode = "bitwise",
    steps: int = 8,
    device: str = "cpu",
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
) -> list[CheckResult]:
    """Every `stress_configs` configuration on each foreach path, in every `_STRESS_CASES`
    scenario for ``steps`` steps, compared after each step (bitwise: bit patterns); plus a
    state-dict swap per path on the first configuration (the defaults).

    Where the original raises (constructor or a step), the R-variant must raise the same exception
    type at the same point, and the case runs again on non-empty 2-D params (`_2D_SHAPES`); it is
    "not applicable" (passed, ``not_applicable`` set) only if the original raises there too. A
    foreach path where no case could be compared, and an original that no configuration
    constructs, give a failed result: nothing was checked.

    Cost: 56 results for torch.optim.AdamW (3 configurations x 2 paths x 9 cases + 2 swaps) in
    about 0.5 s on 2 CPU cores, tensors being tiny (297 elements): per-call overhead dominates.
    """
    crit = Criteria(mode, rtol, atol, bits=True)
    configs = stress_configs(original_cls)
    if not configs:
        result = new_result(original_cls, rewritten_cls, "stress", {}, device, steps, crit)
        result.message = "the constructor rejects every configuration, the defaults included"
        return [result]
    results: list[CheckResult] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate params, tensor lr...: the results decide
        for path in foreach_paths(original_cls):
            cases = [_stress_case(original_cls, rewritten_cls, case, {**config, **path},
                                  seed=seed, steps=steps, device=device, crit=crit)
                     for config in configs for seed, case in enumerate(_STRESS_CASES)]
            results += cases
            if all(r.not_applicable for r in cases):  # e.g. a step that needs a closure
                result = new_result(original_cls, rewritten_cls, "stress", path, device, steps,
                                    crit)
                result.message = f"no case could be compared; first: {cases[0].message}"
                results.append(result)
            results.append(_stress_swap(original_cls, rewritten_cls, {**configs[0], **path},
                                        steps=steps, device=device, crit=crit))
    return results
