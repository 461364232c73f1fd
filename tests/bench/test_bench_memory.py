"""The memory benchmark: event replay, row building with failures, and one CPU run end to end.

The end-to-end test uses a pair that exists today (torch AdamW foreach -> fused): fused AdamW has no
param-sized temporaries, so its training-step peak is lower on CPU too, as an R-variant's must be.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from gsr_rewrite.bench.__main__ import memory_main
from gsr_rewrite.bench.measure import (
    PHASE_FB,
    PHASE_OPT,
    RunConfig,
    _CudaTrace,
    _is_oom,
    run_one,
)
from gsr_rewrite.bench.memory import (
    DEFAULT_PAIRS,
    OptimizerPair,
    OptimizerSpec,
    Plan,
    parse_pair,
    run_benchmark,
)
from gsr_rewrite.bench.report import markdown_report, markdown_table, model_verdicts
from gsr_rewrite.bench.timeline import downsample, replay_memory_events

MB = 2**20


# --- event replay ----------------------------------------------------------------------------


def test_replay_peaks_per_phase_count_the_level_on_entry() -> None:
    # t: 0 +100 | fb [10, 20]: +50 -30 | opt [30, 40]: +80 -80 | later +1000 (outside every window)
    events = [(0, 100), (12, 50), (15, -30), (32, 80), (35, -80), (50, 1000)]
    replay = replay_memory_events(events, {"fb": [(10, 20)], "opt": [(30, 40)]}, (10, 40))
    assert replay.phase_peaks == {"fb": 150, "opt": 200}
    assert replay.peak == 200
    assert replay.timeline == [(10, 100), (12, 150), (15, 120), (32, 200), (35, 120), (40, 120)]
    # A phase without events still holds what it inherited.
    assert replay_memory_events(events, {"idle": [(20, 30)]}).phase_peaks == {"idle": 120}


def test_replay_sorts_by_time_and_keeps_recording_order_of_ties() -> None:
    # Out of order, and an alloc/free pair sharing a timestamp: the alloc counts first.
    events = [(5, -10), (1, 10), (3, 40), (3, -40)]
    replay = replay_memory_events(events, {"all": [(0, 9)]}, start_level=7)
    assert replay.phase_peaks["all"] == 7 + 10 + 40


def test_replay_max_over_repeated_windows() -> None:
    events = [(1, 10), (2, -10), (11, 30), (12, -30)]
    assert replay_memory_events(events, {"p": [(0, 5), (10, 15)]}).phase_peaks["p"] == 30


def test_downsample_keeps_the_peak() -> None:
    points = [(t, (t * 37) % 101) for t in range(10_000)] + [(10_000, 5000)]
    small = downsample(points, 200)
    assert len(small) <= 202
    assert max(b for _, b in small) == 5000
    assert [t for t, _ in small] == sorted(t for t, _ in small)


def test_cuda_trace_replay_with_a_fake_allocator_trace() -> None:
    """The CUDA timeline path, fed a hand-written trace (no GPU needed)."""
    trace = _CudaTrace.__new__(_CudaTrace)  # skip __init__: it talks to the allocator
    trace.base, trace.marks = 1000, [3, 6]
    entries = [
        {"action": "alloc", "size": 500, "time_us": 10},  # forward activation
        {"action": "segment_alloc", "size": 2048, "time_us": 11},  # reserved only: ignored
        {"action": "free_completed", "size": 500, "time_us": 12},
        {"action": "alloc", "size": 300, "time_us": 20},  # optimizer temporary
        {"action": "free_requested", "size": 300, "time_us": 21},  # counted at free_completed
        {"action": "free_completed", "size": 300, "time_us": 22},
    ]
    timeline = trace._from_trace(entries)
    assert timeline["time_unit"] == "ms"
    assert max(timeline["bytes"]) == 1500 and timeline["bytes"][-1] == 1000
    assert timeline["phases"][PHASE_FB] == [0.0, 0.002]
    assert timeline["phases"][PHASE_OPT] == [0.01, 0.012]


# --- failures become rows, not crashes -------------------------------------------------------


def test_oom_classification() -> None:
    assert _is_oom(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert _is_oom(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried ..."))
    assert not _is_oom(ValueError("shape mismatch"))


def test_missing_optimizer_is_unavailable_not_a_crash() -> None:
    config = RunConfig("tiny_vit", False, "gsr_rewrite.no_such_module:AdamWR", {})
    result = run_one(config)
    assert result["status"] == "unavailable"
    assert "gsr_rewrite.no_such_module:AdamWR" in result["error"]


def _fake_result(config: RunConfig, peak_mb: float, opt_is_peak: bool = True) -> dict[str, Any]:
    peak = int(peak_mb * MB)
    other = peak - MB
    fb, opt = (other, peak) if opt_is_peak else (peak, other)
    return {
        "config": config.to_json(), "status": "ok", "params": 88_200_000,
        "peak_allocated": peak, "peak_reserved": peak + MB, "fb_allocated": fb,
        "fb_reserved": fb, "opt_allocated": opt, "opt_reserved": opt,
    }  # fmt: skip


def test_oom_rows_are_reported_as_did_not_fit() -> None:
    calls: list[RunConfig] = []

    def runner(config: RunConfig, timeout_s: float) -> dict[str, Any]:
        calls.append(config)
        is_r = config.target.endswith("R")
        if config.model == "vit_g_32" and not config.checkpointing and not is_r:
            return {"config": config.to_json(), "status": "oom", "error": "OutOfMemoryError: x"}
        if config.model == "vit_g_32" and not config.checkpointing:
            return _fake_result(config, 70_000)
        return _fake_result(config, 1000 if is_r else 1250, opt_is_peak=not is_r)

    pair = DEFAULT_PAIRS["adamw"]
    plan = Plan(["vit_b_32", "vit_g_32"], [False, True], [pair], device="cuda")
    rows = run_benchmark(plan, runner=runner)
    assert len(rows) == 4 and len(calls) == 8
    oom = next(r for r in rows if r.model == "vit_g_32" and not r.checkpointing)
    assert oom.did_not_fit and oom.savings_pct is None
    fine = next(r for r in rows if r.model == "vit_b_32" and not r.checkpointing)
    assert fine.savings_pct == pytest.approx(20.0)

    table = markdown_table(rows, reserved=True)
    oom_line = next(line for line in table.splitlines() if "vit_g_32 | 88.20 | off" in line)
    assert "did not fit" in oom_line and "fits only as variant" in oom_line
    assert (
        "| vit_b_32 | 88.20 | off | AdamW[foreach] → AdamWR[foreach] | 1,250.0 | 1,000.0 | 20.0 |"
        in table
    )
    assert "yes / no" in table and "1,251.0" in table  # reserved column
    meta = {"device": "cuda", "device_name": "fake GPU", "iters": 5}
    report = markdown_report(rows, meta)
    assert "## Did not fit or failed" in report
    assert "AdamW[foreach]: did not fit in vit_g_32 (checkpointing off)" in report
    verdicts = "\n".join(model_verdicts(rows))
    assert "adamw 20.0 % → 20.0 % (+0.0 points)" in verdicts


def test_shared_optimizers_are_measured_once() -> None:
    calls: list[str] = []

    def runner(config: RunConfig, timeout_s: float) -> dict[str, Any]:
        calls.append(config.key())
        return _fake_result(config, 10)

    torch_foreach = OptimizerSpec("torch.optim:AdamW", {"foreach": True})
    pairs = [
        OptimizerPair("a", torch_foreach, OptimizerSpec("torch.optim:AdamW", {"fused": True})),
        OptimizerPair("b", torch_foreach, OptimizerSpec("torch.optim:AdamW", {"foreach": False})),
    ]
    rows = run_benchmark(Plan(["tiny_vit"], [False], pairs), runner=runner)
    assert len(rows) == 2 and len(calls) == 3 == len(set(calls))


def test_parse_pair() -> None:
    pair = parse_pair("mine=my.optim:Sophia,my.optim_r:SophiaR")
    assert pair.name == "mine" and pair.variant.target == "my.optim_r:SophiaR"
    assert pair.original.kwargs == {"foreach": True} == pair.variant.kwargs
    assert pair.label == "Sophia[foreach] → SophiaR[foreach]"
    with pytest.raises(ValueError, match="name=module:Orig,module:R"):
        parse_pair("mine=Sophia")


# --- end to end on CPU, through the command line and a fresh process per configuration ----------


def test_cpu_benchmark_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, png = tmp_path / "memory_cpu.md", tmp_path / "memory_cpu.png"
    argv = [
        "--device", "cpu", "--models", "tiny_vit", "--checkpointing", "off", "--iters", "3",
        "--pair", "ref=torch.optim:AdamW,torch.optim:AdamW", "--r-kwargs", 'ref={"fused": true}',
        "--out", str(out), "--plot", str(png),
    ]  # fmt: skip
    assert memory_main(argv) == 0
    printed, results_line = capsys.readouterr().out.rstrip("\n").rsplit("\n", 1)
    row = next(line for line in printed.splitlines() if line.startswith("| tiny_vit"))
    assert "AdamW[foreach] → AdamW[fused]" in row and "| yes / no |" in row
    assert out.read_text() == printed.rstrip("\n") + "\n"
    assert results_line.startswith(f"wrote {out}, {out.with_suffix('.json')}")

    data = json.loads(out.with_suffix(".json").read_text())
    (result,) = data["rows"]
    orig, fused = result["original"], result["variant"]
    assert orig["status"] == fused["status"] == "ok", (orig.get("error"), fused.get("error"))
    assert fused["peak_allocated"] < orig["peak_allocated"]
    assert result["savings_pct"] > 0
    # foreach AdamW allocates one param-sized temporary list in step(); fused allocates none.
    temporaries = orig["opt_allocated"] - fused["opt_allocated"]
    assert temporaries == pytest.approx(orig["param_bytes"], rel=0.05)
    assert orig["peak_reserved"] == orig["peak_allocated"]  # CPU: reserved = allocated
    assert orig["timeline"]["phases"][PHASE_OPT][0] > orig["timeline"]["phases"][PHASE_FB][0]

    if importlib.util.find_spec("matplotlib") is None:
        pytest.skip("matplotlib not installed: the plot is not drawn")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_user_model_by_import_path() -> None:
    from gsr_rewrite.bench.models import get_model

    spec = get_model("tests.fixtures.user_model:spec")
    assert spec.name == "user_mlp"
    model = spec.build()
    loss = spec.loss(model, spec.make_batch(torch.device("cpu")))
    assert loss.ndim == 0
