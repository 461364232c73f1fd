"""Kernels specialized on first use: traced once per configuration, cached on disk, never stale.

An optimizer written here (``Heavy``, momentum with a Nesterov option) goes through the Triton
backend into a file; its Triton class traces a configuration the first time a param group meets
it.  Runs in other processes (subprocesses sharing a cache folder) show what the disk cache keeps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

pytest.importorskip("triton")

from gsr_rewrite.proof.validate import load_module  # noqa: E402
from gsr_rewrite.runtime import triton_launch  # noqa: E402
from gsr_rewrite.triton_backend.check import TOLERANCE  # noqa: E402
from gsr_rewrite.triton_backend.generate import triton_classes  # noqa: E402
from gsr_rewrite.triton_backend.specialize import KernelCache, config_key  # noqa: E402

SOURCE = '''
import torch

SCALE = {scale}


class Heavy(torch.optim.Optimizer):
    def __init__(self, params, lr=0.1, momentum=0.9, nesterov=False):
        super().__init__(params, {{"lr": lr, "momentum": momentum, "nesterov": nesterov}})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["buf"] = torch.zeros_like(p)
                buf = state["buf"]
                buf.mul_(group["momentum"]).add_(p.grad)
                d = p.grad.add(buf, alpha=group["momentum"]) if group["nesterov"] else buf
                p.add_(d, alpha=-group["lr"] * SCALE)


HeavyR = Heavy  # the class the Triton class derives from (a real R-variant elsewhere)
'''

#: a child process: 4 steps of HeavyRTriton(config) from the module at argv[1]; what it counted
CHILD = r'''
import json, sys
from pathlib import Path
import torch
from gsr_rewrite.proof.validate import load_module
from gsr_rewrite.runtime import triton_launch

module = load_module(Path(sys.argv[1]), "heavy_triton")
params = [torch.nn.Parameter(torch.linspace(-1, 1, 33))]
opt = module.HeavyRTriton(params, **json.loads(sys.argv[2]))
for k in range(4):
    params[0].grad = torch.full_like(params[0], 0.5 - k)
    opt.step()
print(json.dumps({"traces": triton_launch.COUNTS["traces"],
                  "launches": triton_launch.COUNTS["launches"], "param": params[0].tolist()}))
'''


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh cache folder for this test (and the processes it starts)."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("GSR_REWRITE_CACHE_DIR", str(folder))
    return folder


def _emit(path: Path, scale: float, name: str) -> ModuleType:
    """``Heavy`` (with ``SCALE = scale``) and its Triton class, written to ``path`` and loaded."""
    source = SOURCE.format(scale=scale)
    path.write_text(source)
    text, (outcome,) = triton_classes(load_module(path, name + "_eager"), [("Heavy", "HeavyR")])
    assert outcome.specs > 0 and not outcome.refused, outcome
    path.write_text(source + text)
    return load_module(path, name)


def _child(path: Path, config: dict[str, Any]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", CHILD, str(path), json.dumps(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ))


def _result(child: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = child.communicate(timeout=300)
    assert child.returncode == 0, err[-3000:]
    return json.loads(out.splitlines()[-1])  # type: ignore[no-any-return]


def _eager(module: ModuleType, config: dict[str, Any]) -> torch.Tensor:
    params = [torch.nn.Parameter(torch.linspace(-1, 1, 33))]
    opt = module.Heavy(params, **config)
    for k in range(4):
        params[0].grad = torch.full_like(params[0], 0.5 - k)
        opt.step()
    return params[0].detach()


def _close(got: list[float], want: torch.Tensor) -> None:
    rtol, atol = TOLERANCE[torch.float32]
    torch.testing.assert_close(torch.tensor(got), want, rtol=rtol, atol=atol)


def test_configuration_keys_ignore_float_values_only() -> None:
    base = config_key({"lr": 0.1, "betas": (0.9, 0.99), "nesterov": False})
    assert config_key({"lr": 0.3, "betas": (0.5, 0.7), "nesterov": False}) == base
    assert config_key({"lr": 0.3, "betas": (0.5, 0.0), "nesterov": False}) != base
    assert config_key({"lr": 0.1, "betas": (0.9, 0.99), "nesterov": True}) != base


def test_a_configuration_is_traced_once_and_float_changes_reuse_it(cache: Path,
                                                                   tmp_path: Path) -> None:
    module = _emit(tmp_path / "heavy.py", 1.0, "heavy_once")
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(40, generator=gen)) for _ in range(3)]
    opt = module.HeavyRTriton([{"params": params[:1]}, {"params": params[1:2], "lr": 0.01},
                               {"params": params[2:], "nesterov": True}])
    before = dict(triton_launch.COUNTS)
    for _ in range(5):
        for g in opt.param_groups:
            g["lr"] *= 0.5  # a schedule: a host scalar, never a new trace
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen)
        opt.step()
    seen = {k: triton_launch.COUNTS[k] - v for k, v in before.items()}
    assert seen["traces"] == 2, "one trace per configuration: (nesterov False), (nesterov True)"
    assert seen["kernel_groups"] == 3 * 4  # steps 2-5; step 1 initialises the state eagerly
    entries = sorted(p.suffix for p in cache.rglob("*") if p.is_file())
    assert entries == [".py", ".py"]


def test_a_second_process_reuses_the_disk_cache_and_an_edited_class_does_not(
        cache: Path, tmp_path: Path) -> None:
    path = tmp_path / "heavy.py"
    module = _emit(path, 1.0, "heavy_disk")
    config = {"nesterov": True, "lr": 0.05}
    first = _result(_child(path, config))
    assert first["traces"] == 1 and first["launches"] == 3
    second = _result(_child(path, config))
    assert second["traces"] == 0 and second["launches"] == 3, "traced again: the cache missed"
    assert second["param"] == first["param"]
    _close(first["param"], _eager(module, config))

    edited = _emit(path, 0.5, "heavy_edited")  # the class's source changes: a new kernel
    third = _result(_child(path, config))
    assert third["traces"] == 1 and third["launches"] == 3
    _close(third["param"], _eager(edited, config))
    assert third["param"] != first["param"]


def test_processes_writing_the_same_entry_at_once_leave_one_whole_entry(cache: Path,
                                                                        tmp_path: Path) -> None:
    path = tmp_path / "heavy.py"
    module = _emit(path, 1.0, "heavy_race")
    config = {"momentum": 0.8}
    results = [_result(c) for c in [_child(path, config) for _ in range(3)]]
    assert all(r["param"] == results[0]["param"] for r in results)
    _close(results[0]["param"], _eager(module, config))
    files = [p for p in cache.rglob("*") if p.is_file()]
    assert [p.suffix for p in files] == [".py"], files  # no temporary file left behind
    assert _result(_child(path, config))["traces"] == 0


class MaxScaled(torch.optim.Optimizer):
    """Scales by a tensor maximum: a reduction the kernels have no partial sums for."""

    def __init__(self, params: Any, lr: float = 0.1) -> None:
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-group["lr"])
                    p.mul_(p.grad.abs().max())


def test_a_refused_configuration_is_remembered_in_memory_and_on_disk(cache: Path) -> None:
    before = triton_launch.COUNTS["traces"]
    kernels = KernelCache(MaxScaled, "MaxScaledTriton")
    assert kernels.specialize({"params": [], "lr": 0.1}) == []
    assert kernels.specialize({"params": [], "lr": 0.2}) == []  # met before: not traced again
    assert triton_launch.COUNTS["traces"] == before + 1
    (reason,) = kernels.refused.values()
    assert "no per-element translation" in reason
    assert [p.suffix for p in cache.rglob("*") if p.is_file()] == [".refused"]

    again = KernelCache(MaxScaled, "MaxScaledTriton")  # as a new process would
    assert again.specialize({"params": [], "lr": 0.3}) == []
    assert triton_launch.COUNTS["traces"] == before + 1 and again.refused == kernels.refused


def test_a_tracer_crash_costs_the_kernel_not_the_step(cache: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Tracing runs inside the user's step(): any exception of the tracer is a refusal (the eager
    R step runs), never an error of the training loop."""
    from gsr_rewrite.triton_backend import specialize

    def crash(cls: type, config: dict[str, Any]) -> Any:
        raise KeyError("a tracer bug")

    monkeypatch.setattr(specialize, "trace_entry", crash)
    kernels = KernelCache(MaxScaled, "MaxScaledTriton")
    assert kernels.specialize({"params": [], "lr": 0.1}) == []
    (reason,) = kernels.refused.values()
    assert "the tracer raised KeyError" in reason


def test_a_module_generated_with_its_specs_inline_still_runs() -> None:
    """Triton modules generated before kernels were made on first use pass a tuple of specs."""
    from gsr_rewrite.optim import LionR, lion_triton

    spec = lion_triton._LION_KERNELS.spec_for({})

    class Inline(LionR):  # type: ignore[misc]
        @torch.no_grad()
        def step(self, closure: Any = None) -> Any:
            return triton_launch.fused_step(self, (spec,), lion_triton._lion_eager_step, closure)

    params = [torch.nn.Parameter(torch.linspace(-1, 1, 33))]
    opt, before = Inline(params), triton_launch.COUNTS["launches"]
    for _ in range(3):
        params[0].grad = torch.ones_like(params[0])
        opt.step()
    assert triton_launch.COUNTS["launches"] == before + 2
