"""A run that cannot be strip-mined only because of an option's branch (timm's Adan: `if caution:`
takes the mean of a mask) is duplicated under the test that the option is off, and strip-mined
there (transform/specialize.py). Exact with the option on, off, or of a type whose truth could
change; must-not-fire where the test is not an option (rebound, or not a parameter) or has an
`else`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gsr_rewrite.pipeline import rewrite_source
from gsr_rewrite.proof.check import MEASURE_SHAPES, compare_trajectories
from gsr_rewrite.proof.memory import measure_temporaries
from gsr_rewrite.runtime.strip_runs import strip_floor
from gsr_rewrite.transform.specialize import SPECIALIZED
from tests.common import certified_pair

CAUTIOUS = '''
import torch
from torch.optim import Optimizer


def _update(params, grads, avgs, sqs, prevs, *, lr, beta1, beta2, eps, caution):
    for i, p in enumerate(params):
        grad, m, v, prev = grads[i], avgs[i], sqs[i], prevs[i]
        {head}
        m.mul_(beta1).add_(grad, alpha=1 - beta1)
        v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = v.sqrt().add_(eps)
        {branch}
        p.addcdiv_(m, denom, value=-lr)
        prev.mul_(0.5).add_(grad)  # the gradient is read last here: no buffer for denom


class Cautious(Optimizer):
    def __init__(self, params, lr=1e-2, betas=(0.9, 0.99), eps=1e-8, caution=False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, caution=caution))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            ps = [p for p in group["params"] if p.grad is not None]
            for p in ps:
                if len(self.state[p]) == 0:
                    for k in ("m", "v", "prev"):
                        self.state[p][k] = torch.zeros_like(p)
            _update(ps, [p.grad for p in ps], [self.state[p]["m"] for p in ps],
                    [self.state[p]["v"] for p in ps], [self.state[p]["prev"] for p in ps],
                    lr=group["lr"], beta1=group["betas"][0], beta2=group["betas"][1],
                    eps=group["eps"], caution=group["caution"])
'''

CAUTION = '''if caution:
            mask = (m * grad > 0).to(grad.dtype)
            mask.div_(mask.mean().clamp_(min=1e-3))
            m = m * mask'''


def _source(branch: str = CAUTION, head: str = "pass") -> str:
    return CAUTIOUS.format(branch=branch, head=head)


def _denom(source: str) -> tuple[str, list[int]]:
    """(the class's reason, the strips of each `v.sqrt()` temporary)."""
    (cls,) = rewrite_source(source, "cautious.py").classes
    return cls.reason, [t.strips for t in cls.temporaries if t.code == "v.sqrt()"]


def _exact(source: str, tmp_path: Path, settings: list[dict[str, Any]]) -> tuple[type, type]:
    """The certified rewrite equals its original bitwise, in strips however small, with each of
    `settings`; (original, R-variant)."""
    original, reduced = certified_pair(source, tmp_path, "Cautious")
    with strip_floor(0):
        for kwargs in settings:
            res = compare_trajectories(original, reduced, kwargs, steps=5, mode="bitwise",
                                       nonempty=True)
            assert res.passed, (kwargs, res.message)
    return original, reduced


def test_a_run_is_strip_mined_where_its_option_is_off(tmp_path: Path) -> None:
    reason, strips = _denom(_source())
    assert reason.startswith(SPECIALIZED), reason
    assert any(strips) and not all(strips), strips  # strips in the copy, whole in the original
    # a list is a caution whose truth could change: the original runs, exactly
    original, reduced = _exact(_source(), tmp_path, [{}, {"caution": True}, {"caution": []},
                                                     {"caution": ["on"]}])
    before, after = (measure_temporaries(lambda ps, c=c: c(ps), MEASURE_SHAPES).units
                     for c in (original, reduced))
    assert before >= 0.125 and after <= 0.05, (before, after)
    on = measure_temporaries(lambda ps: reduced(ps, caution=True), MEASURE_SHAPES).units
    assert on >= 0.125  # with caution on, its run as written: whole temporaries


@pytest.mark.parametrize(("branch", "head"), [
    # the test is not an option: a parameter the function binds again
    (CAUTION, "caution = caution or i > 100"),
    # nor a local value
    (CAUTION.replace("if caution:", "if float(v.max()) > 1e3:"), "pass"),
    # an `if` with an `else`: both branches run in some setting
    (CAUTION + "\n        else:\n            m = m * 1.0", "pass"),
])
def test_must_not_fire_where_the_test_is_not_an_option_alone(branch: str, head: str) -> None:
    reason, strips = _denom(_source(branch, head))
    assert not reason.startswith(SPECIALIZED) and not any(strips), (reason, strips)
