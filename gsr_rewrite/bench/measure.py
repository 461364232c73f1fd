"""Measure the peak memory of a training loop in this process for one configuration (model,
checkpointing, optimizer): batch 1, ``iters`` iterations of zero_grad, forward, backward, step.

Run as ``python -m gsr_rewrite.bench.measure '<config json>'``; the result is one JSON line on
stdout prefixed with ``RESULT_PREFIX``. The parent runs every configuration in a fresh process, so
the allocator state, the CUDA context and an out-of-memory error stay with that configuration.

CUDA: ``max_memory_allocated`` / ``max_memory_reserved`` per phase (peak stats reset at each phase
boundary), maxed over iterations; the timeline of the last iteration comes from the caching
allocator's trace (``torch.cuda.memory._record_memory_history``).
CPU: the profiler with ``profile_memory=True`` runs from before the model is built, so the replayed
``[memory]`` events (+bytes per allocation, -bytes per free) give absolute live bytes at every
instant. The CPU allocator caches nothing, so reserved = allocated there.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch._C._autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, record_function

from gsr_rewrite.bench.models import get_model
from gsr_rewrite.bench.timeline import replay_memory_events, timeline_json

__all__ = ["PHASE_FB", "PHASE_OPT", "RESULT_PREFIX", "OptimizerUnavailable", "RunConfig", "run_one"]

RESULT_PREFIX = "GSR_BENCH_RESULT "
PHASE_FB = "gsr.forward_backward"  # includes zero_grad(set_to_none=True), which only frees
PHASE_OPT = "gsr.optimizer_step"
PHASE_ITER = "gsr.iteration"


class OptimizerUnavailable(Exception):
    """The ``module:Class`` of an optimizer does not import (not written yet, or a typo)."""


def resolve(target: str) -> type[torch.optim.Optimizer]:
    """``"package.module:Class"`` -> the class, imported only now (it may not exist yet)."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ValueError(f"optimizer target must look like 'module:Class', got {target!r}")
    try:
        cls: type[torch.optim.Optimizer] = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise OptimizerUnavailable(f"{target}: {type(exc).__name__}: {exc}") from exc
    return cls


@dataclass(frozen=True)
class RunConfig:
    """One measured configuration; travels to the child process as JSON."""

    model: str
    checkpointing: bool
    target: str  # "module:Class"
    kwargs: dict[str, Any]
    device: str = "cpu"
    iters: int = 5
    timeline: bool = False
    seed: int = 0

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunConfig:
        return cls(**data)

    def key(self) -> str:
        """Identity for de-duplication: two pairs sharing an optimizer measure it once."""
        return json.dumps(self.to_json(), sort_keys=True)


def _setup(config: RunConfig, device: torch.device) -> tuple[Any, ...]:
    optimizer_class = resolve(config.target)  # fail before building a large model
    spec = get_model(config.model)
    torch.manual_seed(config.seed)
    with device:  # parameters are created on the device: no host copy of a 1.8 B model
        model = spec.build()
    model.to(device).train()
    if config.checkpointing:
        spec.enable_checkpointing(model)
    batch = spec.make_batch(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = optimizer_class(params, **config.kwargs)
    return model, batch, spec.loss, optimizer, params


def _iteration(model: Any, batch: Any, loss_fn: Any, optimizer: torch.optim.Optimizer) -> None:
    with record_function(PHASE_FB):
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model, batch).backward()
    with record_function(PHASE_OPT):
        optimizer.step()


def _measure_cpu(config: RunConfig) -> dict[str, Any]:
    cpu = torch.device("cpu")
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        model, batch, loss_fn, optimizer, params = _setup(config, cpu)  # counted from zero
        for _ in range(config.iters):
            with record_function(PHASE_ITER):
                _iteration(model, batch, loss_fn, optimizer)
    results = prof.profiler.kineto_results if prof.profiler is not None else None
    if results is None:  # pragma: no cover - profiler API drift
        raise RuntimeError("torch profiler returned no kineto results; cannot measure CPU memory")
    events: list[tuple[int, int]] = []
    windows: dict[str, list[tuple[int, int]]] = {PHASE_FB: [], PHASE_OPT: [], PHASE_ITER: []}
    for ev in results.events():
        if ev.name() == "[memory]" and ev.device_type() == DeviceType.CPU:
            events.append((ev.start_ns(), ev.nbytes()))
        elif ev.name() in windows:
            windows[ev.name()].append((ev.start_ns(), ev.end_ns()))
    if len(windows[PHASE_ITER]) != config.iters:
        raise RuntimeError(f"expected {config.iters} iteration ranges, profiler has {windows}")
    last = max(windows[PHASE_ITER])
    replay = replay_memory_events(
        events, {PHASE_FB: windows[PHASE_FB], PHASE_OPT: windows[PHASE_OPT]}, last
    )
    fb, opt = replay.phase_peaks[PHASE_FB], replay.phase_peaks[PHASE_OPT]
    out = _summary(params, fb, fb, opt, opt)
    out["memory_source"] = (
        "CPU profiler [memory] events; CPU allocator caches nothing: reserved = allocated"
    )
    if config.timeline:
        in_last = {
            k: next(w for w in windows[k] if last[0] <= w[0] <= last[1])
            for k in (PHASE_FB, PHASE_OPT)
        }
        out["timeline"] = timeline_json(replay.timeline, in_last, "ms")
    return out


def _summary(
    params: Sequence[torch.Tensor], fb_alloc: int, fb_res: int, opt_alloc: int, opt_res: int
) -> dict[str, Any]:
    return {
        "params": sum(p.numel() for p in params),
        "param_bytes": sum(p.numel() * p.element_size() for p in params),
        "peak_allocated": max(fb_alloc, opt_alloc),
        "peak_reserved": max(fb_res, opt_res),
        "fb_allocated": fb_alloc,
        "fb_reserved": fb_res,
        "opt_allocated": opt_alloc,
        "opt_reserved": opt_res,
    }


class _CudaTrace:
    """Allocator trace of one iteration: every alloc (+size) and free (-size) in order.

    Phase boundaries are trace positions (the trace length when a phase ends), so no clock has to
    be matched against the allocator's ``time_us``. If the private API drifts, the timeline falls
    back to ``memory_allocated()`` samples at the phase boundaries.
    """

    def __init__(self) -> None:
        self.base = torch.cuda.memory_allocated()
        self.marks: list[int] = []
        self.samples = [(time.perf_counter_ns(), self.base)]
        try:
            torch.cuda.memory._record_memory_history("all", context=None, max_entries=2_000_000)
            self.recording = True
        except Exception:  # noqa: BLE001 - private API; fall back to samples
            self.recording = False

    def _trace(self) -> list[dict[str, Any]]:
        snapshot: Any = torch.cuda.memory._snapshot()
        trace: list[dict[str, Any]] = snapshot["device_traces"][torch.cuda.current_device()]
        return trace

    def mark(self) -> None:
        self.samples.append((time.perf_counter_ns(), torch.cuda.memory_allocated()))
        if self.recording:
            self.marks.append(len(self._trace()))

    def finish(self, fb_peak: int, opt_peak: int) -> dict[str, Any]:
        self.mark()
        if self.recording:
            try:
                trace = self._trace()
                torch.cuda.memory._record_memory_history(None)
                return self._from_trace(trace)
            except (KeyError, IndexError, TypeError):
                pass
        (t0, a0), (t1, a1), (t2, a2) = self.samples
        points = [
            (t0, a0),
            ((t0 + t1) // 2, fb_peak),
            (t1, a1),
            ((t1 + t2) // 2, opt_peak),
            (t2, a2),
        ]
        phases = {PHASE_FB: (t0, t1), PHASE_OPT: (t1, t2)}
        return timeline_json(points, phases, "ms") | {"coarse": True}

    def _from_trace(self, trace: list[dict[str, Any]]) -> dict[str, Any]:
        sign = {"alloc": 1, "free_completed": -1}
        has_time = all("time_us" in e for e in trace)
        # Position k stands for time k when the trace has no timestamps.
        when = [int(e["time_us"]) * 1000 if has_time else k for k, e in enumerate(trace)]
        events = [
            (when[k], sign[e["action"]] * int(e["size"]))
            for k, e in enumerate(trace)
            if e["action"] in sign
        ]
        fb_end, opt_end = self.marks[0], self.marks[1]
        t_start, t_mid, t_end = when[0], when[max(0, fb_end - 1)], when[opt_end - 1]
        replay = replay_memory_events(events, {}, (t_start, t_end), start_level=self.base)
        phases = {PHASE_FB: (t_start, t_mid), PHASE_OPT: (when[min(fb_end, opt_end - 1)], t_end)}
        return timeline_json(replay.timeline, phases, "ms" if has_time else "allocator events")


def _measure_cuda(config: RunConfig) -> dict[str, Any]:
    device = torch.device("cuda", torch.cuda.current_device())
    model, batch, loss_fn, optimizer, params = _setup(config, device)
    fb_alloc = fb_res = opt_alloc = opt_res = 0
    timeline: dict[str, Any] | None = None
    for i in range(config.iters):
        trace = _CudaTrace() if config.timeline and i == config.iters - 1 else None
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()  # peak := current, so each phase has its own peak
        with record_function(PHASE_FB):
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model, batch).backward()
        torch.cuda.synchronize()
        fb_peak = torch.cuda.max_memory_allocated()
        fb_alloc, fb_res = max(fb_alloc, fb_peak), max(fb_res, torch.cuda.max_memory_reserved())
        if trace is not None:
            trace.mark()
        torch.cuda.reset_peak_memory_stats()
        with record_function(PHASE_OPT):
            optimizer.step()
        torch.cuda.synchronize()
        opt_peak = torch.cuda.max_memory_allocated()
        opt_alloc, opt_res = (
            max(opt_alloc, opt_peak),
            max(opt_res, torch.cuda.max_memory_reserved()),
        )
        if trace is not None:
            timeline = trace.finish(fb_peak, opt_peak)
    out = _summary(params, fb_alloc, fb_res, opt_alloc, opt_res)
    out["memory_source"] = "CUDA caching allocator: max_memory_allocated / max_memory_reserved"
    out["device_name"] = torch.cuda.get_device_name(device)
    if timeline is not None:
        out["timeline"] = timeline
    return out


def _is_oom(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, torch.cuda.OutOfMemoryError) or any(
        s in text for s in ("out of memory", "can't allocate memory", "cannot allocate memory")
    )


def run_one(config: RunConfig) -> dict[str, Any]:
    """Measure one configuration; failures become a status, never an exception."""
    result: dict[str, Any] = {"config": config.to_json(), "torch": torch.__version__}
    start = time.perf_counter()
    try:
        measure = _measure_cuda if config.device == "cuda" else _measure_cpu
        result |= measure(config)
        result["status"] = "ok"
    except Exception as exc:  # noqa: BLE001 - every failure is a row in the table
        unavailable = isinstance(exc, OptimizerUnavailable)
        result["status"] = "unavailable" if unavailable else "oom" if _is_oom(exc) else "error"
        first_line = (str(exc).strip().splitlines() or [""])[0]
        result["error"] = f"{type(exc).__name__}: {first_line[:300]}"
    result["elapsed_s"] = round(time.perf_counter() - start, 2)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m gsr_rewrite.bench.measure '<RunConfig json>'", file=sys.stderr)
        return 2
    result = run_one(RunConfig.from_json(json.loads(args[0])))
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
