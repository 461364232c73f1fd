"""R-variants inside real training stacks: FSDP2 and DDP on two CPU ranks (gloo),
torch.compile, torch's step hooks, and the memory layouts models really produce."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gsr_rewrite import runtime
from gsr_rewrite.optim import AdamWR
from tests.common import REPO


def test_size_one_dims_do_not_block_placement() -> None:
    """A [1, 1, 128] class token's gradient comes with strides (8320, 128, 1) and its state with
    (128, 128, 1): the same memory order, so the gradient can host the temporary (it did not,
    and AdamWR saved nothing on a ViT)."""
    grad = torch.empty(128).as_strided((1, 1, 128), (8320, 128, 1))
    state = torch.zeros(1, 1, 128)
    assert grad.stride() == (8320, 128, 1) and state.stride() == (128, 128, 1)
    assert runtime.fits((grad,), (state,))
    assert not runtime.fits((torch.empty(4, 8).t(),), (torch.empty(8, 4),))  # a real difference

    params = [torch.nn.Parameter(torch.randn(1, 1, 128)), torch.nn.Parameter(torch.randn(4, 128))]
    opt = AdamWR(params, foreach=True)
    for _ in range(2):
        params[0].grad = torch.randn(128).as_strided((1, 1, 128), (8320, 128, 1))
        params[1].grad = torch.randn(4, 128)
        hits = runtime.GUARD_HITS[0]
        opt.step()
        assert runtime.GUARD_HITS[0] > hits  # the rewritten statements ran


def test_step_hooks_run_once_when_the_original_step_runs() -> None:
    from gsr_rewrite.optim import adamw

    params = [torch.nn.Parameter(torch.randn(3))]
    adamw.AdamW(params)  # torch wraps AdamW.step in its hooks once an object exists
    opt = adamw.AdamWR(params)
    calls: list[int] = []
    opt.register_step_post_hook(lambda *_: calls.append(1))
    params[0].grad = torch.randn(3)
    opt.step(closure=lambda: 0.0)  # a closure: the original step runs
    opt.step()
    assert calls == [1, 1]


@pytest.mark.parametrize("foreach", [False, True])
def test_torch_compile_same_graphs_as_the_original(foreach: bool) -> None:
    """Under torch.compile the R step takes the original's code (Inductor plans the
    temporaries itself): no graph break, the same number of graphs, the same results."""
    import torch._dynamo

    seen = {}
    for cls in (torch.optim.AdamW, AdamWR):
        torch._dynamo.reset()
        params = [torch.nn.Parameter(torch.randn(8, 8, generator=torch.Generator().manual_seed(k)))
                  for k in range(3)]
        opt = cls(params, lr=0.01, foreach=foreach)
        for p in params:
            p.grad = torch.ones_like(p)
        opt.step()  # state made eagerly (the R step's own path)
        for p in params:
            p.grad = torch.ones_like(p)
        explained = torch._dynamo.explain(opt.step)()
        for p in params:  # fresh gradients: after an R step they hold scratch
            p.grad = torch.ones_like(p)
        torch.compile(opt.step, backend="eager")()
        seen[cls.__name__] = (explained.graph_count, explained.graph_break_count,
                              [p.detach().clone() for p in params])
    (g0, b0, p0), (g1, b1, p1) = seen.values()
    assert (g1, b1) == (g0, b0) and b1 == 0
    assert all(torch.equal(a, b) for a, b in zip(p0, p1, strict=True))


@pytest.mark.slow
@pytest.mark.parametrize("stack", ["fsdp2", "ddp"])
@pytest.mark.parametrize("path", ["loop", "foreach"])
def test_distributed_two_ranks(stack: str, path: str, tmp_path: Path) -> None:
    """FSDP2 (DTensor params, grads and state) and DDP with gradient_as_bucket_view, 2 ranks:
    each R-variant matches its original bitwise, ran its rewritten statements (no fallback) and
    allocated ≤ 0.05 of the local parameter size in a step."""
    out = tmp_path / "ranks.json"
    run = subprocess.run([sys.executable, str(REPO / "tests" / "stacks_worker.py"), stack, path,
                          str(out)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = json.loads(out.read_text())
    assert len(ranks) == 2
    for rank in ranks:
        if stack == "fsdp2":  # a DTensor never hosts a temporary from its own view, nor one from
            # a DTensor laid out otherwise (its local shard holds other elements)
            assert rank.pop("guards") == {"fits_own_view": False, "fits_other": True,
                                          "fits_other_placement": False}
        for name, seen in rank.items():
            if "original_error" in seen:  # the original cannot run here (Adan's foreach copy
                assert stack == "fsdp2" and name == "Adan", seen  # has no DTensor rule)
                assert seen["r_error"], seen  # nor can the R-variant: same failure
                continue
            assert seen["bitwise"], (name, seen)
            assert seen["guard_hits"] > 0 and seen["fallbacks"] == 0, (name, seen)
            assert seen["original_units"] >= 0.9 and seen["r_units"] <= 0.05, (name, seen)
            assert seen["param_type"] == ("DTensor" if stack == "fsdp2" else "Parameter")


def test_after_torch_compile_adamw_still_runs_adams_r_step() -> None:
    """Any torch.compile (DeepSpeed runs one) makes Dynamo set `AdamW._init_group =
    disable(Adam._init_group)`: AdamW still only constructs differently from Adam, and gets
    Adam's R step (it was refused: "no optimizer class found")."""
    code = ("import torch, gsr_rewrite\n"
            "torch.compile(lambda x: x + 1, backend='eager')(torch.ones(2))\n"
            "assert '_init_group' in vars(torch.optim.AdamW)\n"
            "opt = gsr_rewrite.install(torch.optim.AdamW([torch.nn.Parameter(torch.ones(2))]))\n"
            "from gsr_rewrite.optim import AdamWR\n"
            "print(type(opt).__name__, AdamWR.__mro__[1].__name__)\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["AdamW", "AdamW"]
