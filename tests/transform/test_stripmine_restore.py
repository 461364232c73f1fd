"""A strip-mined run that reads a host name before it binds it again (torch_optimizer AdaBound's
`step_size = torch.full_like(denom, step_size)`): every strip must start from the value the run
starts with, not from the strip before it. The emitted loop saves that value before the strips
and binds the name to it again at the start of each."""

from __future__ import annotations

from pathlib import Path

from gsr_rewrite.pipeline import rewrite_source
from gsr_rewrite.proof.check import compare_trajectories
from gsr_rewrite.proof.validate import load_module
from gsr_rewrite.runtime.strip_runs import strip_floor

REBOUND = '''
import torch
from torch.optim import Optimizer


class Rebound(Optimizer):
    def __init__(self, params, lr=0.1, beta=0.9, eps=1e-8):
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
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.zeros_like(p)
                m, v = state["m"], state["v"]
                m.mul_(group["beta"]).add_(grad, alpha=1 - group["beta"])
                v.mul_(group["beta"]).addcmul_(grad, grad, value=1 - group["beta"])
                denom = v.sqrt().add_(group["eps"])
                step_size = group["lr"]
                step_size = torch.full_like(denom, step_size)
                step_size.div_(denom).clamp_(0.0, 1.0).mul_(m)
                p.add_(-step_size)
'''


def test_a_host_name_read_before_the_run_binds_it_starts_every_strip_alike(
        tmp_path: Path) -> None:
    result = rewrite_source(REBOUND, "rebound.py")
    (cls,) = result.classes
    assert result.code is not None
    lives = {t.code: t.lives_in for t in cls.temporaries}
    assert lives["torch.full_like(denom, step_size)"].endswith("strips"), lives
    assert "step_size = step_size_before_strips" in result.code
    target = tmp_path / "rebound_r.py"
    target.write_text(result.code)
    module = load_module(target, f"gsr_rebound_{abs(hash(result.code))}")
    with strip_floor(0):  # strips however small the tensors: the later strips are compared too
        res = compare_trajectories(module.Rebound, module.ReboundR, {}, steps=5, mode="bitwise")
    assert res.passed, res.message


def test_a_name_the_run_may_find_unbound_is_not_saved_before_it() -> None:
    # `step_size` is bound before the run on one path only: saving it there could raise where
    # the original does not (it would read it only where bound), so the run stays whole
    source = REBOUND.replace('                step_size = group["lr"]\n',
                             '                if group["lr"] > 0:\n'
                             '                    step_size = group["lr"]\n')
    result = rewrite_source(source, "rebound_maybe.py")
    (cls,) = result.classes
    lives = {t.code: t.lives_in for t in cls.temporaries}
    assert not lives["torch.full_like(denom, step_size)"].endswith("strips"), lives
