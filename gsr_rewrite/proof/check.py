"""Equivalence checks of an original optimizer against its R-variant (DESIGN.md sections 3 and 5).

The original is ground truth. Both run in lockstep on identical problems with identical grads,
each on its OWN grad clones (an R-variant may leave scratch in ``p.grad``) and from the same global
RNG state; after every step every param, every state value, every param-group option and every
other attribute the optimizer keeps on ``self`` is compared.

This module holds the trajectory and checkpoint checks on `make_problem`'s params and the memory
measurement of a pair; the machinery is in `lockstep` (running, results), `snapshot` (what is
compared), `compare` (how) and `configs` (constructor options). The stress matrix, the gate
before emission, is in `stress`; its entry points are importable from here as well.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import Parameter

from gsr_rewrite.proof.compare import DEFAULT_ATOL, DEFAULT_RTOL, Criteria, Mode
from gsr_rewrite.proof.configs import OptimizerClass, accepts, foreach_paths, stress_configs
from gsr_rewrite.proof.lockstep import (
    CheckResult,
    GradSchedule,
    Run,
    clone_params,
    finish,
    lockstep,
    new_result,
    schedule_feed,
    state_dict_swap,
)
from gsr_rewrite.proof.memory import StepMemory, measure_temporaries
from gsr_rewrite.proof.stress import stress_matrix

__all__ = [
    "CheckResult",
    "check_state_dict_swap",
    "compare_trajectories",
    "foreach_paths",
    "make_problem",
    "measure_pair",
    "run_checks",
    "stress_configs",
    "stress_matrix",
]

# Equal-size shapes for measure_pair: 8 x 64x64 fp32 = 128 KiB, so 1 unit = one copy of all params.
MEASURE_SHAPES: tuple[tuple[int, ...], ...] = ((64, 64),) * 8


def make_problem(seed: int, device: str, dtype: torch.dtype = torch.float32,
                 dense: bool = False, nonempty: bool = False) -> list[Parameter]:
    """Six params with odd shapes; the last one is the one frozen mid-run by the checks.

    dense=True makes every param contiguous: an R-variant's foreach guards check whole lists, so
    one non-contiguous param sends a foreach statement to its original fallback, and only a
    dense problem exercises the rewritten foreach path. nonempty=True leaves the 0-size param
    out (for an original that raises on it: it divides by the element count, say).
    """
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=gen, dtype=dtype)

    tensors = [
        *([] if nonempty else [randn(0, 3)]),  # 0-size
        randn(1),  # 1 element
        randn(5, 7) if dense else randn(7, 5).t(),  # non-contiguous: (5, 7), strides (1, 5)
        randn(3000),  # a few thousand elements, > 2048 (a common chunk/block size)
        randn(4, 6),
        randn(8, 3),
    ]
    return [Parameter(t.to(device)) for t in tensors]


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
    nonempty: bool = False,
) -> CheckResult:
    """Run original and R-variant side by side for ``steps`` steps; compare after every step
    (on make_problem's params)."""
    crit = Criteria(mode, rtol, atol)
    what = "trajectory" + (", dense" if dense else "") + (", no 0-size param" if nonempty else "")
    result = new_result(original_cls, rewritten_cls, what, kwargs, device, steps, crit)
    params_o = make_problem(seed, device, dtype, dense, nonempty)
    params_r = clone_params(params_o)
    try:
        runs = [
            Run("original", original_cls(params_o, **kwargs), params_o),
            Run("R-variant", rewritten_cls(params_r, **kwargs), params_r),
        ]
    except Exception as exc:
        result.message = f"constructor raised {exc!r}"
        return result
    feed = schedule_feed(GradSchedule(params_o, seed, steps))
    return finish(result, lockstep(runs, [(0, 1)], feed, range(steps), crit))


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
    crit = Criteria(mode, rtol, atol)
    return state_dict_swap(original_cls, rewritten_cls, kwargs, steps_before, steps_after,
                           lambda: make_problem(seed, device, dtype, dense), seed, crit)


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
        if "foreach" not in config and accepts(original_cls, "foreach"):
            variants = [{**config, "foreach": False}, {**config, "foreach": True}]
        for kw in variants:
            # dense: the only problem where foreach reuse runs; without the 0-size param, where
            # a mean over all params is NaN (equal in both runs, whatever the rest holds)
            for dense in (False, True):
                results.append(
                    compare_trajectories(
                        original_cls, rewritten_cls, kw, steps=steps, device=device, mode=mode,
                        dense=dense, nonempty=dense,
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
