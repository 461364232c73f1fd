"""`torch.min(a, b)` / `a.max(b)` of two tensors is the element-wise minimum / maximum, so a run
that computes one may be strip-mined (torch_optimizer's AdaMod bounds its per-element rate with
`torch.min(step_size, exp_avg_lr)`); with one argument, or a dimension, they reduce: a strip's
minimum is not the tensor's, and the run stays whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from gsr_rewrite.pipeline import rewrite_source
from gsr_rewrite.proof.check import MEASURE_SHAPES, compare_trajectories
from gsr_rewrite.proof.memory import measure_temporaries
from gsr_rewrite.runtime.strip_runs import strip_floor
from tests.common import certified_pair

BOUNDED = '''
import torch
from torch.optim import Optimizer


class Bounded(Optimizer):
    def __init__(self, params, lr=1e-2, betas=(0.9, 0.99, 0.9), eps=1e-8):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2, beta3 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if len(state) == 0:
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.zeros_like(p)
                    state["rate"] = torch.zeros_like(p)
                m, v, rate = state["m"], state["v"], state["rate"]
                m.mul_(beta1).add_(grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denom = v.sqrt().add_(group["eps"])
                step_size = torch.full_like(denom, group["lr"])
                step_size.div_(denom)
                rate.mul_(beta3).add_(step_size, alpha=1 - beta3)
                step_size = {bound}
                step_size.mul_(m)
                p.add_(-step_size)
'''


def _rewrite(bound: str, tmp_path: Path) -> tuple[dict[str, str], float, float]:
    """(where each temporary lives, before, after) of the certified rewrite; it equals the
    original bitwise in strips however small."""
    original, reduced = certified_pair(BOUNDED.format(bound=bound), tmp_path, "Bounded")
    with strip_floor(0):
        res = compare_trajectories(original, reduced, {}, steps=6,
                                   mode="bitwise", nonempty=True)
    assert res.passed, res.message
    before, after = (measure_temporaries(lambda ps, c=c: c(ps), MEASURE_SHAPES).units
                     for c in (original, reduced))
    (cls,) = rewrite_source(BOUNDED.format(bound=bound), "bounded.py").classes
    return {t.code: t.how for t in cls.temporaries}, before, after


@pytest.mark.parametrize("bound", ["torch.min(step_size, rate)", "step_size.min(rate)",
                                   "torch.max(rate, step_size)"])
def test_an_elementwise_min_of_two_tensors_is_strip_mined(bound: str, tmp_path: Path) -> None:
    how, before, after = _rewrite(bound, tmp_path)
    assert how['torch.full_like(denom, group["lr"])'].startswith("strip-mined"), how
    assert before >= 0.2 and after <= 0.05, (before, after)


@pytest.mark.parametrize("bound", ["step_size / torch.min(step_size)",
                                   "step_size / step_size.max()"])
def test_must_not_fire_a_min_that_reduces(bound: str, tmp_path: Path) -> None:
    how, _, _ = _rewrite(bound, tmp_path)
    assert not how['torch.full_like(denom, group["lr"])'].startswith("strip-mined"), how
