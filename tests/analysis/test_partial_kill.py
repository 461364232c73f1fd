"""Must-not-fire: a gradient is dead only where every element of it is overwritten before the
next read. Writing every element of a view of some of its elements (`grad[0].zero_()`), or of
what may be a copy of it (`grad.float()` of a float64 gradient), leaves the rest to read; and
`p._grad` is the gradient under another name. Each of these, found by adversarial probing, was
taken for a kill or for no read, so the temporary before it went into the gradient that is then
read; under a condition the stress matrix does not meet (params of 64 rows, float64) the
R-variant differed from its original. The R-variants are run where the condition holds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gsr_rewrite.pipeline import rewrite_source
from gsr_rewrite.proof.validate import load_module

_HEAD = '''
import torch
from torch.optim import Optimizer


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
                v = state["v"]
                v.mul_(group["beta"]).addcmul_(grad, grad, value=1 - group["beta"])
                denom = v.sqrt().add_(group["eps"])
                p.div_(denom.add_(1.0))
'''

CASES = {
    # a padding row left out of a plain-gradient correction, for params of >= 64 rows
    "RowZero": '''
                if p.dim() == 2 and p.shape[0] >= 64:
                    grad[0].zero_()
                    p.add_(grad, alpha=-group["lr"])
''',
    "NarrowZero": '''
                if p.dim() == 2 and p.shape[0] >= 64:
                    grad.narrow(0, 0, 1).zero_()
                    p.add_(grad, alpha=-group["lr"])
''',
    "NamedRow": '''
                if p.dim() == 2 and p.shape[0] >= 64:
                    row = grad[0]
                    row.fill_(0.0)
                    p.add_(grad, alpha=-group["lr"])
''',
    # a float32 work buffer: the gradient itself for float32, a copy for float64
    "FloatCopy": '''
                buf = grad.float()
                buf.zero_()
                p.add_(grad, alpha=-group["lr"])
''',
    "UnderscoreGrad": '''
                if p.numel() >= 512:
                    p.add_(p._grad, alpha=-group["lr"])
''',
}


def _run(cls: type, dtype: torch.dtype) -> torch.Tensor:
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(64, 8, dtype=dtype))
    opt = cls([p])
    for s in range(3):
        p.grad = torch.randn(64, 8, dtype=dtype, generator=torch.Generator().manual_seed(s))
        opt.step()
    return p.detach().clone()


@pytest.mark.parametrize("name", sorted(CASES))
def test_must_not_fire_the_gradient_is_read_after_a_write_to_part_or_a_copy_of_it(
        name: str, tmp_path: Path) -> None:
    source = _HEAD.format(name=name) + CASES[name]
    result = rewrite_source(source, f"{name.lower()}.py")
    (cls,) = result.classes
    lives = {t.code: t.lives_in for t in cls.temporaries}
    assert lives.get("v.sqrt()") != "gradient", lives
    if result.code is None:
        return
    target = tmp_path / f"{name.lower()}_r.py"
    target.write_text(result.code)
    module = load_module(target, f"gsr_partial_kill_{name}_{abs(hash(result.code))}")
    for dtype in (torch.float32, torch.float64):
        assert torch.equal(_run(getattr(module, name), dtype),
                           _run(getattr(module, name + "R"), dtype))


def test_a_write_to_every_element_of_the_whole_gradient_still_kills_it() -> None:
    source = _HEAD.format(name="WholeZero") + '''
                grad.zero_()
                p.add_(grad, alpha=-group["lr"])
'''
    (cls,) = rewrite_source(source, "wholezero.py").classes
    assert {t.code: t.lives_in for t in cls.temporaries}["v.sqrt()"] == "gradient"
