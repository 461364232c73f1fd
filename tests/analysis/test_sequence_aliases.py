"""Must-not-fire, found by a second adversarial probe: a list or tuple made with `+` or `*`
(`[grad] + []`, `[grad] * 2`, `keep += [grad]`, `(state["h"] + [grad])[-2:]`) holds the same
tensors, where the analysis took `+` and `*` for tensor arithmetic (a new tensor); a helper that
takes `*args` or `**kwargs` may return one of them (`def _last(*xs): return xs[-1]`), where the
analysis took its result for a new value. Each let a temporary go into a gradient read later.
And the check itself: it compares what step() returns, and runs its dense problem without the
0-size param (where a mean over all params is NaN in both runs)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gsr_rewrite.pipeline import rewrite_source
from gsr_rewrite.proof.check import run_checks
from gsr_rewrite.proof.validate import load_module

_SOURCE = '''
import torch
from torch.optim import Optimizer


def _last(*xs):
    return xs[-1]


def _pick(**kw):
    return kw["g"]


class {name}(Optimizer):
    def __init__(self, params, lr=1e-2, beta=0.9, eps=1e-8):
        super().__init__(params, dict(lr=lr, beta=beta, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if len(state) == 0:
                    state["v"] = torch.zeros_like(p)
                {alias}
                v = state["v"]
                v.mul_(group["beta"]).addcmul_(grad, grad, value=1 - group["beta"])
                denom = v.sqrt().add_(group["eps"])
                p.div_(denom.add_(1.0))
                if p.numel() >= 512:
                    p.add_({use}, alpha=-group["lr"])
'''

CASES = {
    "ListConcat": ("keep = [grad] + []", "keep[0]"),
    "ListRepeat": ("keep = [grad] * 2", "keep[1]"),
    "TupleConcat": ("keep = tuple([grad]) + tuple()", "keep[0]"),
    "AugConcat": ("keep = []\n                keep += [grad]", "keep[0]"),
    "StateHistory": ('state["h"] = (state.get("h", []) + [grad])[-2:]', 'state["h"][-1]'),
    "VarargsHelper": ("raw = _last(None, grad)", "raw"),
    "KwargsHelper": ("raw = _pick(g=grad)", "raw"),
}


def _run(cls: type) -> torch.Tensor:
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(64, 8))
    opt = cls([p])
    for s in range(3):
        p.grad = torch.randn(64, 8, generator=torch.Generator().manual_seed(s))
        opt.step()
    return p.detach().clone()


@pytest.mark.parametrize("name", sorted(CASES))
def test_must_not_fire_a_sequence_or_a_star_argument_keeps_the_gradient(
        name: str, tmp_path: Path) -> None:
    alias, use = CASES[name]
    result = rewrite_source(_SOURCE.format(name=name, alias=alias, use=use), f"{name.lower()}.py")
    if result.code is None:
        return
    target = tmp_path / f"{name.lower()}_r.py"
    target.write_text(result.code)
    module = load_module(target, f"gsr_sequence_aliases_{name}_{abs(hash(result.code))}")
    assert torch.equal(_run(getattr(module, name)), _run(getattr(module, name + "R")))


_RETURNS = '''
import torch
from torch.optim import Optimizer


class Returns(Optimizer):
    def __init__(self, params, lr=1e-2):
        super().__init__(params, dict(lr=lr))

    @torch.no_grad()
    def step(self, closure=None):
        total = 0.0
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    total += float(p.grad.sum())
                    p.add_(p.grad, alpha=-group["lr"])
        return total


class ReturnsR(Returns):
    @torch.no_grad()
    def step(self, closure=None):
        super().step()
        return -1.0
'''


def test_the_check_compares_what_step_returns(tmp_path: Path) -> None:
    target = tmp_path / "returns.py"
    target.write_text(_RETURNS)
    module = load_module(target, "gsr_check_returns")
    results = run_checks(module.Returns, module.ReturnsR, [{}], steps=2)
    assert not all(r.passed for r in results)
    assert any("returned" in r.message for r in results if not r.passed)
