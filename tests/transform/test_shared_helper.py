"""Two classes of one module call the same helper, and what their callers need after the call
makes the helper's rewrite differ (the gradient is dead after it in one, read after it in the
other). Each R class gets the helper rewritten for it: the later one under a name of its own.
(Before, the whole module failed: "helper rewritten two different ways for two classes".)"""

from __future__ import annotations

from pathlib import Path

from gsr_rewrite.pipeline import rewrite_source
from gsr_rewrite.proof.check import compare_trajectories
from gsr_rewrite.proof.validate import load_module

SOURCE = '''
import torch
from torch.optim import Optimizer


def _rms(p, grad, v, beta, eps):
    v.mul_(beta).addcmul_(grad, grad, value=1 - beta)
    denom = v.sqrt().add_(eps)
    p.div_(denom.add_(1.0))


class _Base(Optimizer):
    def __init__(self, params, lr=1e-2, beta=0.9, eps=1e-8):
        super().__init__(params, dict(lr=lr, beta=beta, eps=eps))

    def _state(self, p):
        state = self.state[p]
        if len(state) == 0:
            state["v"] = torch.zeros_like(p)
        return state["v"]


class RmsOnly(_Base):
    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    _rms(p, p.grad, self._state(p), group["beta"], group["eps"])


class RmsThenSgd(_Base):
    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    _rms(p, p.grad, self._state(p), group["beta"], group["eps"])
                    p.add_(p.grad, alpha=-group["lr"])
'''


def test_a_helper_two_classes_rewrite_differently_is_emitted_for_each(tmp_path: Path) -> None:
    result = rewrite_source(SOURCE, "shared_helper.py")
    assert result.code is not None
    assert {c.name for c in result.classes if c.status == "rewritten"} >= \
        {"RmsOnly", "RmsThenSgd"}
    assert "def _rms_gsr(" in result.code and "def _rms_gsr_RmsThenSgdR(" in result.code
    target = tmp_path / "shared_helper_r.py"
    target.write_text(result.code)
    module = load_module(target, f"gsr_shared_helper_{abs(hash(result.code))}")
    for name in ("RmsOnly", "RmsThenSgd"):
        res = compare_trajectories(getattr(module, name), getattr(module, name + "R"), {},
                                   steps=5, mode="bitwise")
        assert res.passed, res.message
