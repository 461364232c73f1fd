"""A strip-mined run over tensor lists goes over chunks of whole tensors (a few foreach calls per
statement instead of one per strip of every tensor) only when it touches its lists position by
position. A helper that passes its list parameters only to torch foreach calls (timm's
`_foreach_lerp(xs, ys, w)`) counts as such a call (stripmine/helpers.position_wise): before it,
timm's Lion took 10x its original's step on 2,000 small tensors. Must-not-fire: a helper that
reads an item of a list (a chunk's first item is not the list's)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gsr_rewrite.pipeline import rewrite_source
from gsr_rewrite.proof.check import compare_trajectories
from gsr_rewrite.runtime.strip_runs import strip_floor
from tests.common import certified_pair

LISTS = '''
import torch
from torch.optim import Optimizer


{helper}


class Signed(Optimizer):
    def __init__(self, params, lr=1e-2, betas=(0.9, 0.99)):
        super().__init__(params, dict(lr=lr, betas=betas))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            grads = [p.grad for p in params]
            for p in params:
                if len(self.state[p]) == 0:
                    self.state[p]["m"] = torch.zeros_like(p)
            avgs = [self.state[p]["m"] for p in params]
            beta1, beta2 = group["betas"]
            updates = lerp_all(avgs, grads, 1 - beta1)
            updates = [u.sign_() for u in updates]
            torch._foreach_add_(params, updates, alpha=-group["lr"])
            torch._foreach_lerp_(avgs, grads, 1 - beta2)
'''

POSITION_WISE = '''
def lerp_all(xs, ys, weight):
    if hasattr(torch, "_foreach_lerp"):
        return torch._foreach_lerp(xs, ys, weight)
    return torch._foreach_add(torch._foreach_mul(xs, 1 - weight), ys, alpha=weight)
'''


def _code(helper: str) -> str:
    result = rewrite_source(LISTS.format(helper=helper), "signed.py")
    assert result.code is not None
    return result.code


def test_a_position_wise_helper_lets_the_run_take_chunks(tmp_path: Path) -> None:
    assert "chunks=True" in _code(POSITION_WISE)
    original, reduced = certified_pair(LISTS.format(helper=POSITION_WISE), tmp_path, "Signed")
    for floor in (0, 1):  # strips of every tensor; chunks of whole tensors (a 1-byte floor)
        with strip_floor(floor):
            res = compare_trajectories(original, reduced, {}, steps=5, mode="bitwise",
                                       dense=True, nonempty=True)
        assert res.passed, (floor, res.message)


@pytest.mark.parametrize("helper", [
    # an item of a list: the first of a chunk is not the first of the list
    POSITION_WISE.replace("return torch._foreach_lerp(xs, ys, weight)",
                          "return torch._foreach_lerp(xs, ys, weight * float(xs[0].numel() > 0))"),
    # its length: a chunk's is not the list's
    POSITION_WISE.replace("return torch._foreach_lerp(xs, ys, weight)",
                          "return torch._foreach_lerp(xs, ys, weight / len(xs))"),
])
def test_must_not_fire_a_helper_that_reads_its_lists_otherwise(helper: str) -> None:
    assert "chunks=True" not in _code(helper)
