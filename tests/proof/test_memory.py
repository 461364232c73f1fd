"""gsr_rewrite.proof.memory: the CPU profiler replay is exact enough to tell 0, 1 param and 1 unit
apart.

Op facts below were measured on CPU with torch 2.13.0; each test asserts what was measured.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.optim import Optimizer

from gsr_rewrite.proof.memory import (
    StepMemory,
    _peak_from_memory_events,
    measure_step_peak_bytes,
    measure_temporaries,
)

# Bookkeeping slack: the largest non-tensor-sized allocation seen in these steps is a 8-byte
# wrapped scalar plus its 4-byte float copy per op; 256 B is << 4 KiB, the smallest param here.
SLACK = 256
MIXED = [(32, 32), (64, 64), (16, 48), (100,)]  # 4 KiB .. 16 KiB fp32; largest 16 KiB
EQUAL = [(64, 64)] * 8  # 8 x 16 KiB = 128 KiB


def _grads(params: list[torch.Tensor]) -> list[torch.Tensor]:
    return [p.grad for p in params if p.grad is not None]


class LoopToy(Optimizer):
    """One param-sized temporary at a time: ``del`` frees it before the next is made."""

    def __init__(self, params: Any, *, keep_previous: bool = False) -> None:
        super().__init__(params, {})
        self.keep_previous = keep_previous

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                t = p.grad * 2
                p.add_(t)
                if not self.keep_previous:
                    del t  # without this, rebinding t keeps two temporaries alive at once


class ForeachToy(Optimizer):
    def __init__(self, params: Any) -> None:
        super().__init__(params, {})

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> None:
        for group in self.param_groups:
            ts = torch._foreach_mul(_grads(group["params"]), 2.0)  # 1 unit: all temps at once
            torch._foreach_add_(group["params"], ts)


class InPlaceToy(Optimizer):
    def __init__(self, params: Any, lr: float = 0.1) -> None:
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> None:
        if closure is not None:
            closure()
        for group in self.param_groups:
            for p in group["params"]:
                p.add_(p.grad, alpha=-group["lr"])


class LazyStateToy(InPlaceToy):
    """Creates a param-sized state buffer on its first step; steady state allocates nothing."""

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if "buf" not in self.state[p]:
                    self.state[p]["buf"] = torch.zeros_like(p)
                self.state[p]["buf"].add_(p.grad)
                p.add_(self.state[p]["buf"], alpha=-group["lr"])


class OpToy(Optimizer):
    """Runs ``op(xs, ys)`` as its step, to measure a single op under the same harness."""

    def __init__(self, params: Any, op: Callable[[list[torch.Tensor], list[torch.Tensor]], Any]):
        super().__init__(params, {})
        self.op = op

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> None:
        params = self.param_groups[0]["params"]
        self.op(_grads(params), params)


def _nbytes(shape: tuple[int, ...]) -> int:
    return torch.Size(shape).numel() * 4


def test_loop_toy_measures_largest_param() -> None:
    mem = measure_temporaries(LoopToy, MIXED)
    largest = max(_nbytes(s) for s in MIXED)
    assert mem.largest_param_bytes == largest == 16384
    assert mem.param_bytes == sum(_nbytes(s) for s in MIXED)
    assert largest <= mem.peak_bytes <= largest + SLACK


def test_loop_toy_rebinding_holds_two_temporaries() -> None:
    # Measured: without `del`, the previous t lives while the next is computed, so the peak is
    # the largest sum of two consecutive params (4 KiB + 16 KiB for (32,32) then (64,64)).
    mem = measure_temporaries(lambda ps: LoopToy(ps, keep_previous=True), MIXED)
    sizes = [_nbytes(s) for s in MIXED]
    pair = max(a + b for a, b in zip(sizes, sizes[1:], strict=False))
    assert pair == 4096 + 16384
    assert pair <= mem.peak_bytes <= pair + SLACK


def test_foreach_toy_measures_one_unit() -> None:
    mem = measure_temporaries(ForeachToy, MIXED)
    assert mem.param_bytes <= mem.peak_bytes <= mem.param_bytes + SLACK
    assert 1.0 <= mem.units < 1.01


def test_in_place_toy_measures_nothing() -> None:
    mem = measure_temporaries(InPlaceToy, MIXED)
    smallest = min(_nbytes(s) for s in MIXED)
    assert mem.peak_bytes < 0.01 * smallest
    assert mem.units < 0.01


def test_warmup_excludes_lazy_state() -> None:
    cold = measure_temporaries(LazyStateToy, EQUAL, warmup_steps=0)
    warm = measure_temporaries(LazyStateToy, EQUAL)
    assert cold.param_bytes <= cold.peak_bytes <= cold.param_bytes + SLACK  # 1 unit of new state
    assert warm.peak_bytes == 0


def _measure_op(op: Callable[[list[torch.Tensor], list[torch.Tensor]], Any]) -> StepMemory:
    return measure_temporaries(lambda ps: OpToy(ps, op), EQUAL)


def test_fact_sqrt_out_is_allocation_free_on_cpu() -> None:
    def op(xs: list[torch.Tensor], ys: list[torch.Tensor]) -> None:
        for x, y in zip(xs, ys, strict=True):
            torch.sqrt(x, out=y)  # negative grads give NaN; irrelevant here

    assert _measure_op(op).peak_bytes == 0  # measured: 0 B


def test_fact_foreach_copy_then_sqrt_inplace_is_allocation_free_on_cpu() -> None:
    def op(xs: list[torch.Tensor], ys: list[torch.Tensor]) -> None:
        torch._foreach_copy_(ys, xs)
        torch._foreach_sqrt_(ys)

    assert _measure_op(op).peak_bytes == 0  # measured: 0 B


def test_fact_foreach_sqrt_out_allocates_a_full_list_on_cpu() -> None:
    # Measured: as on CUDA, the out= overload computes into a fresh list and copies: exactly one
    # temporary per tensor, all alive at once = 1.00 units (131072 B for 8 x 64x64 fp32).
    def op(xs: list[torch.Tensor], ys: list[torch.Tensor]) -> None:
        torch.ops.aten._foreach_sqrt.out(xs, out=ys)

    mem = _measure_op(op)
    assert mem.peak_bytes == mem.param_bytes == 131072
    assert mem.units == 1.0


def test_measure_step_peak_bytes_counts_closure_and_floors_at_zero() -> None:
    p = torch.nn.Parameter(torch.zeros(256))
    p.grad = torch.ones(256)
    opt = InPlaceToy([p])
    assert measure_step_peak_bytes(opt, closure=lambda: torch.ones(1024)) >= 4096
    big = [torch.ones(4096)]

    def free_preexisting() -> None:
        big.clear()  # frees 16 KiB allocated before the step: running sum goes negative

    assert measure_step_peak_bytes(opt, closure=free_preexisting) == 0


def test_peak_replay_orders_by_time_and_keeps_ties_in_record_order() -> None:
    events = [(30, -100), (10, 100), (20, 50), (20, -50), (40, 10)]
    assert _peak_from_memory_events(events) == 150
    assert _peak_from_memory_events([(1, -5), (2, 3)]) == 0
    assert _peak_from_memory_events([]) == 0


def test_units_is_zero_without_params() -> None:
    assert StepMemory(peak_bytes=12, param_bytes=0, largest_param_bytes=0).units == 0.0
    assert StepMemory(peak_bytes=64, param_bytes=128, largest_param_bytes=32).units == 0.5


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_foreach_toy_measures_one_unit() -> None:
    mem = measure_temporaries(ForeachToy, EQUAL, device="cuda")
    # The CUDA caching allocator rounds each block up to 512 B; 64x64 fp32 is a multiple.
    assert 1.0 <= mem.units < 1.05
    assert measure_temporaries(InPlaceToy, EQUAL, device="cuda").peak_bytes == 0
