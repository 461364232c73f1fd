"""The points-to solver evaluates a node only once a path from the entry reaches it. Evaluated
earlier (an `if`/`else` join is listed before its branches), `_apply_caution(buf, grad)` saw the
local function unbound, called an unknown function and made `buf` opaque; the loop then carried
that value round and round (timm's RMSpropTF: "did not settle in 50 rounds", refused)."""

from __future__ import annotations

from pathlib import Path

from gsr_rewrite.pipeline import rewrite_source
from gsr_rewrite.proof.check import compare_trajectories
from gsr_rewrite.proof.validate import load_module

SOURCE = '''
import torch
from torch.optim import Optimizer


def _update(params, grads, bufs, lr, momentum, caution, centered):
    def _apply_caution(_m, _g):
        mask = (_m * _g > 0).to(_g.dtype)
        mask.div_(mask.mean().clamp_(min=1e-3))
        return _m * mask

    for i, param in enumerate(params):
        grad = grads[i]
        if centered:
            avg = grad.abs().add(1.0)
        else:
            avg = grad.square().add(1.0)
        if momentum > 0:
            buf = bufs[i]
            buf.mul_(momentum).add_(grad / avg)
            if caution:
                buf = _apply_caution(buf, grad)
            param.add_(buf, alpha=-lr)
        else:
            param.add_(grad / avg, alpha=-lr)


class Cautious(Optimizer):
    def __init__(self, params, lr=1e-2, momentum=0.9, caution=False, centered=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, caution=caution,
                                      centered=centered))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            params, grads, bufs = [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if len(state) == 0:
                    state["buf"] = torch.zeros_like(p)
                params.append(p)
                grads.append(p.grad)
                bufs.append(state["buf"])
            _update(params, grads, bufs, group["lr"], group["momentum"], group["caution"],
                    group["centered"])
'''


def test_a_loop_carrying_a_local_function_result_settles(tmp_path: Path) -> None:
    result = rewrite_source(SOURCE, "cautious.py")
    (cls,) = result.classes
    assert cls.status == "rewritten", cls.reason
    assert result.code is not None
    path = tmp_path / "cautious_r.py"
    path.write_text(result.code)
    module = load_module(path, f"gsr_cautious_{abs(hash(result.code))}")
    for kw in ({}, {"caution": True}, {"centered": True, "momentum": 0.0}):
        res = compare_trajectories(module.Cautious, module.CautiousR, kw, steps=4,
                                   mode="bitwise")
        assert res.passed, (kw, res.message)
