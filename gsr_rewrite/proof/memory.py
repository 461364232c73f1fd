"""Measured temporaries of one optimizer ``step()``, in bytes and in units of the parameter size.

CPU: the autograd profiler with ``profile_memory=True`` records one ``[memory]`` event per
allocation (+nbytes) and free (-nbytes) made through the c10 CPU allocator. Replaying them in time
order and taking the max of the running sum gives the exact peak above the level at entry. No GPU
is needed, so "zero param-sized temporaries" is testable in CI.

CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus
``memory_allocated`` at entry (both synchronized).

Time: `time_step_pair`, the median wall time of one step of an original and of its R-variant,
stepped in turn on equal params, on one CPU thread (what strip-mining costs; see `StepTimes`).
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch._C._autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from gsr_rewrite.runtime import strip_floor

__all__ = ["StepMemory", "StepTimes", "measure_step_peak_bytes", "measure_temporaries",
           "time_step_pair"]

Closure = Callable[[], Any]


@dataclass(frozen=True)
class StepMemory:
    """Peak bytes allocated by one step above the level at entry, and the parameter sizes."""

    peak_bytes: int
    param_bytes: int  # sum of numel * element_size over params that have a grad
    largest_param_bytes: int

    @property
    def units(self) -> float:
        """Temporaries in units of the parameter size (1.0 = one full copy of all params)."""
        return self.peak_bytes / self.param_bytes if self.param_bytes else 0.0


def _params(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def _peak_from_memory_events(events: Iterable[tuple[int, int]]) -> int:
    """Max of the running sum of signed byte counts, replayed in time order; never below 0."""
    running = peak = 0
    # Stable sort: events sharing a timestamp keep their recording order (alloc before its free).
    for _, nbytes in sorted(events, key=lambda e: e[0]):
        running += nbytes
        peak = max(peak, running)
    return peak


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Kineto prints `USDT ... profiler_start/stop` on file descriptor 2 at every session."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _cpu_step_peak_bytes(optimizer: torch.optim.Optimizer, closure: Closure | None) -> int:
    with _quiet_native_stderr(), profile(activities=[ProfilerActivity.CPU],
                                         profile_memory=True) as prof:
        _step(optimizer, closure)
    # Raw kineto events, not ``prof.events()``: on torch 2.13 the FunctionEvent view folds most
    # ``[memory]`` events into the owning op's ``cpu_memory_usage`` (a net sum, so an alloc+free
    # pair inside one op vanishes) and keeps only a few stray ones. The raw list has every event,
    # with a signed ``nbytes()`` and ``start_ns()``, already in recording order.
    results = prof.profiler.kineto_results if prof.profiler is not None else None
    if results is None:  # pragma: no cover - profiler API drift
        raise RuntimeError("torch profiler returned no kineto results; cannot measure CPU memory")
    events = [
        (ev.start_ns(), ev.nbytes())
        for ev in results.events()
        if ev.name() == "[memory]" and ev.device_type() == DeviceType.CPU
    ]
    return _peak_from_memory_events(events)


def _cuda_step_peak_bytes(
    optimizer: torch.optim.Optimizer, closure: Closure | None, device: torch.device
) -> int:
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    _step(optimizer, closure)
    torch.cuda.synchronize(device)
    return max(0, torch.cuda.max_memory_allocated(device) - before)


def _step(optimizer: torch.optim.Optimizer, closure: Closure | None) -> None:
    if closure is None:
        optimizer.step()
    else:
        optimizer.step(closure)


def measure_step_peak_bytes(
    optimizer: torch.optim.Optimizer, closure: Closure | None = None
) -> int:
    """Peak bytes allocated above the level at entry during one ``optimizer.step(closure)``.

    The device is that of the first parameter. With a closure, its allocations (forward/backward)
    count too. Memory freed during the step that was allocated before it lowers the running level
    but the peak is floored at 0.
    """
    params = _params(optimizer)
    device = params[0].device if params else torch.device("cpu")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"measure_step_peak_bytes supports cpu and cuda, got {device}")
    # strip-mined runs in their strips (1/64 of the tensors per temporary), not whole as the
    # run-time floor has runs of small tensors: the measurement shows what the rewrite made
    with strip_floor(0):
        if device.type == "cuda":
            return _cuda_step_peak_bytes(optimizer, closure, device)
        return _cpu_step_peak_bytes(optimizer, closure)


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _random_problem(
    shapes: Sequence[tuple[int, ...]], device: str | torch.device, dtype: torch.dtype, seed: int
) -> tuple[list[torch.nn.Parameter], Callable[[], None]]:
    """Params of ``shapes`` with random grads (the same for the same seed), and a function that
    refreshes the grads in place (an R-variant leaves scratch in them) allocating nothing that
    outlives it."""
    gen = torch.Generator().manual_seed(seed)
    dev = torch.device(device)

    def randn(shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randn(shape, generator=gen, dtype=dtype).to(dev)

    params = [torch.nn.Parameter(randn(shape)) for shape in shapes]
    for p in params:
        p.grad = randn(tuple(p.shape))

    def refresh_grads() -> None:
        for p in params:
            assert p.grad is not None
            p.grad.copy_(randn(tuple(p.shape)))  # the fresh tensor is freed before the step

    return params, refresh_grads


#: steps measured after the warm-up; the worst counts (a step may branch on its count)
MEASURED_STEPS = 8


def measure_temporaries(
    make_optimizer: Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer],
    shapes: Sequence[tuple[int, ...]],
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    warmup_steps: int = 2,
    seed: int = 0,
    steps: int | None = None,
) -> StepMemory:
    """Build params of ``shapes`` with random grads, warm up, and measure the temporaries of the
    worst of ``steps`` consecutive steps (default `MEASURED_STEPS`).

    Warm-up steps create lazily initialised state (momentum buffers, step counters) so that it is
    not counted as a temporary. Several steps are measured because a step may branch on its count
    (torch's RAdam rectifies from step 6 on, allocating 0.625 x the params where step 3 allocates
    0.25). Grads are refreshed in place before each step (an R-variant leaves scratch in them), so
    the refresh allocates nothing inside the measured step.
    """
    params, refresh_grads = _random_problem(shapes, device, dtype, seed)
    optimizer = make_optimizer(params)
    for _ in range(warmup_steps):
        refresh_grads()
        optimizer.step()
    worst: StepMemory | None = None
    for _ in range(max(MEASURED_STEPS if steps is None else steps, 1)):
        refresh_grads()
        # Sizes before the step: a step may legally rebind or drop p.grad.
        with_grad = [_nbytes(p) for p in _params(optimizer) if p.grad is not None]
        memory = StepMemory(
            peak_bytes=measure_step_peak_bytes(optimizer),
            param_bytes=sum(with_grad),
            largest_param_bytes=max(with_grad, default=0),
        )
        if worst is None or memory.units > worst.units:
            worst = memory
    assert worst is not None
    return worst


@dataclass(frozen=True)
class StepTimes:
    """Median wall time of one step of an original and of its R-variant, over ``steps`` steps."""

    original_s: float
    rewritten_s: float
    steps: int
    ratios: tuple[float, ...] = ()  # R / original of each pair of steps, in order (the spread)

    @property
    def ratio(self) -> float:
        """R-variant time over original time (2.0: the R step takes twice as long)."""
        return self.rewritten_s / self.original_s if self.original_s else math.inf


def time_step_pair(
    make_original: Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer],
    make_rewritten: Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer],
    shapes: Sequence[tuple[int, ...]],
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    warmup_steps: int = 2,
    steps: int = 7,
    min_steps: int = 5,
    budget_s: float = 0.75,
    seed: int = 0,
    floor: int | None = 0,
) -> StepTimes:
    """Median time of one step of each, each on its own copy of the params `measure_temporaries`
    builds (same ``shapes`` and ``seed``). The two step in turn, in alternating order, so drift
    (clock frequency, other processes) hits both alike; on one CPU thread. Warm-up steps create
    lazy state and are not timed; the timed steps stop early, after ``min_steps``, once
    ``budget_s`` is spent. ``floor``: the strip floor in bytes; 0 (default) times the strips the
    memory is measured with, None the run-time default (what a user's step takes)."""
    dev = torch.device(device)
    problems = [_random_problem(shapes, dev, dtype, seed) for _ in range(2)]
    optimizers = [make(params) for make, (params, _) in
                  zip((make_original, make_rewritten), problems, strict=True)]

    def step(i: int) -> float:
        problems[i][1]()  # refresh the grads
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        began = time.perf_counter()
        optimizers[i].step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        return time.perf_counter() - began

    times: tuple[list[float], list[float]] = ([], [])
    floors = strip_floor(floor) if floor is not None else contextlib.nullcontext()
    with _one_cpu_thread(), floors:
        for _ in range(warmup_steps):
            for i in (0, 1):
                step(i)
        start = time.perf_counter()
        for n in range(steps):
            for i in (0, 1) if n % 2 else (1, 0):
                times[i].append(step(i))
            if n + 1 >= min_steps and time.perf_counter() - start > budget_s:
                break
    return StepTimes(statistics.median(times[0]), statistics.median(times[1]), len(times[0]),
                     tuple(r / o for o, r in zip(*times, strict=True)))


@contextlib.contextmanager
def _one_cpu_thread() -> Iterator[None]:
    """One intra-op thread: on a busy CPU, waking the pool's threads costs tens of ms at random
    (measured: a 0.2 ms foreach step took 63 ms with 2 threads on a loaded 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
