"""GPU acceptance tests of the Triton R-variants (issue 5), on ViT-B/32 parameter shapes.

Skipped without CUDA. On an H100:
    python -m pytest -q -m gpu tests/triton_backend/test_triton_gpu.py
Every time, memory and bandwidth figure comes from benchmarks/step_bench.py's measuring
functions, so these bars and the committed benchmark tables measure the same thing. The rows are
measured once per session (functools.cache); the compiled Lion baseline compiles in a child
process (cut off after 300 s).
"""

from __future__ import annotations

import functools
import os
from typing import Any

import pytest
import torch

from gsr_rewrite import optim as gsr_optim
from gsr_rewrite.triton_backend.check import TOLERANCE
from tests.bench.test_step_bench import load_step_bench

bench = load_step_bench()

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
    pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1",
                       reason="TRITON_INTERPRET=1: the kernels would run in the interpreter"),
]

DEVICE = torch.device("cuda")
CFG = bench.Settings(device=DEVICE, steps=30, warmup=5, profile_steps=10, compile_timeout=300)
STEPS = 7  # >= 7 steps, as in the CPU equivalence tests
RTOL, ATOL = TOLERANCE[torch.float32]  # the backend's table: 1e-5, 1e-6 after 7 steps
NAMES = list(bench.OPTIMIZERS)


@functools.cache
def _sets() -> dict[str, Any]:
    sets: dict[str, Any] = bench.param_sets(smoke=False)
    return sets


@functools.cache
def _measured(optimizer: str, variant: str, set_name: str) -> Any:
    return bench.measure_row(optimizer, variant, _sets()[set_name], CFG)


def row(optimizer: str, variant: str, set_name: str = "vit_b32") -> Any:
    """A measured step_bench row; the test fails if the row could not be measured."""
    pytest.importorskip("triton")  # here, not at import: the CPU tests need TRITON_INTERPRET first
    r = _measured(optimizer, variant, set_name)
    if r.skipped:
        pytest.fail(f"{r.label} could not be measured: {r.reason}")
    return r


@functools.cache
def copy_gbs() -> float:
    return float(bench.copy_bandwidth(DEVICE, 512 * 2**20).gbs)


def _pair(name: str, first: str, second: str) -> tuple[Any, Any, list[torch.Tensor],
                                                        list[torch.Tensor]]:
    """Two optimizers (class names in gsr_rewrite.optim) on identical ViT-B/32 params."""
    pytest.importorskip("triton")
    case = bench.OPTIMIZERS[name]
    shapes = _sets()["vit_b32"].shapes
    a = bench.make_problem(shapes, DEVICE, seed=0).params
    b = bench.make_problem(shapes, DEVICE, seed=0).params
    return (getattr(gsr_optim, first.format(case.title))(a, foreach=True, **case.hyper),
            getattr(gsr_optim, second.format(case.title))(b, foreach=True, **case.hyper), a, b)


def _grads(params: list[torch.Tensor], gen: torch.Generator) -> list[torch.Tensor]:
    return [torch.randn(p.shape, device=DEVICE, generator=gen) for p in params]


def _assert_params_close(name: str, ref: torch.Tensor, got: torch.Tensor, lr: float) -> None:
    if name != "lion":
        torch.testing.assert_close(got, ref, rtol=RTOL, atol=ATOL)
        return
    # Lion moves each element by +-lr: where the reordered c = lerp(m, g) is within rounding of
    # 0 its sign can flip, moving that element by up to 2 lr per step. README: >= 99.9 % agree.
    diff = (got - ref).abs()
    assert diff.max().item() <= 2 * lr * STEPS + ATOL
    off = (diff > ATOL + RTOL * ref.abs()).float().mean().item()
    assert off <= 1e-3, f"{off:.2e} of Lion params differ beyond rounding"


@pytest.mark.parametrize("name", NAMES)
def test_matches_eager_original_after_7_steps(name: str) -> None:
    ref, tri, ref_params, tri_params = _pair(name, "{}", "{}RTriton")
    gen = torch.Generator(DEVICE).manual_seed(1)
    launches = bench.triton_launch.COUNTS["launches"]
    for _ in range(STEPS):
        for a, b, g in zip(ref_params, tri_params, _grads(ref_params, gen), strict=True):
            a.grad, b.grad = g, g.clone()
        ref.step()
        tri.step()
    assert bench.triton_launch.COUNTS["launches"] - launches == STEPS - 1  # step 1 is eager
    lr = bench.OPTIMIZERS[name].hyper["lr"]
    for a, b in zip(ref_params, tri_params, strict=True):
        _assert_params_close(name, a, b, lr)
        sa, sb = ref.state[a], tri.state[b]
        assert sa.keys() == sb.keys()
        for key, va in sa.items():
            if isinstance(va, torch.Tensor):
                torch.testing.assert_close(sb[key], va, rtol=RTOL, atol=ATOL, msg=key)
            else:
                assert sb[key] == va, key


@pytest.mark.parametrize("name", NAMES)
def test_bandwidth_at_least_90pct_of_copy(name: str) -> None:
    r = row(name, "triton_r")
    assert r.bandwidth_gbs >= 0.9 * copy_gbs(), (r.bandwidth_gbs, copy_gbs())


@pytest.mark.parametrize("name", NAMES)
def test_wall_time_within_10pct_of_kernel_time(name: str) -> None:
    r = row(name, "triton_r")
    assert r.wall_ms <= 1.1 * r.kernel_ms, (r.wall_ms, r.kernel_ms)


@pytest.mark.parametrize(("name", "baseline", "ratio"), [
    ("adamw", "fused", 0.7),  # torch AdamW(fused=True)
    ("lion", "compiled", 0.5),  # torch.compile of the foreach Lion step
    ("adan", "foreach", 0.3),  # timm (or reference) foreach Adan
])
def test_wall_time_against_baseline(name: str, baseline: str, ratio: float) -> None:
    ours, theirs = row(name, "triton_r"), row(name, baseline)
    assert ours.wall_ms <= ratio * theirs.wall_ms, (ours.wall_ms, theirs.label, theirs.wall_ms)


def test_2000_small_tensors_adamw_under_0_3_ms() -> None:
    assert row("adamw", "triton_r", "small_2000").wall_ms <= 0.3


@pytest.mark.parametrize("name", NAMES)
def test_no_param_sized_temporaries(name: str) -> None:
    assert row(name, "triton_r").peak_units < 0.05


# Last in the file: a failed capture should not disturb the tests above.
@pytest.mark.xfail(strict=False, reason="slot scalars are computed on the host each step; "
                                        "capture is not supported yet")
@pytest.mark.parametrize("name", NAMES)
def test_cuda_graph_replay_matches_eager(name: str) -> None:
    eager, graphed, eager_params, graph_params = _pair(name, "{}RTriton", "{}RTriton")
    gen = torch.Generator(DEVICE).manual_seed(1)

    def load_grads() -> None:  # in place: a graph replays fixed addresses
        for a, b, g in zip(eager_params, graph_params, _grads(eager_params, gen), strict=True):
            bench._grad(a).copy_(g)
            bench._grad(b).copy_(g)

    side = torch.cuda.Stream()  # type: ignore[no-untyped-call]
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the capture stream: state init, then a kernel
        for _ in range(2):
            load_grads()
            eager.step()
            graphed.step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        graphed.step()
    for _ in range(STEPS - 2):
        load_grads()
        eager.step()
        graph.replay()
    torch.cuda.synchronize()
    for a, b in zip(eager_params, graph_params, strict=True):
        assert torch.equal(a, b)
        for key, va in eager.state[a].items():
            vb = graphed.state[b][key]
            assert torch.equal(va, vb) if isinstance(va, torch.Tensor) else va == vb, key
