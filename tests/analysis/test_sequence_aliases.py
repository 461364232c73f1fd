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

from gsr_rewrite.proof.check import run_checks
from gsr_rewrite.proof.validate import load_module
from tests.common import emitted_pair, rms_fixture, steps_on_64x8

_HELPERS = '''
def _last(*xs):
    return xs[-1]


def _pick(**kw):
    return kw["g"]
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


@pytest.mark.parametrize("name", sorted(CASES))
def test_must_not_fire_a_sequence_or_a_star_argument_keeps_the_gradient(
        name: str, tmp_path: Path) -> None:
    alias, use = CASES[name]
    tail = f"""p.div_(denom.add_(1.0))
                if p.numel() >= 512:
                    p.add_({use}, alpha=-group["lr"])"""
    pair = emitted_pair(rms_fixture(name, tail, helpers=_HELPERS, param_head=alias),
                        tmp_path, name)
    if pair is not None:
        assert torch.equal(steps_on_64x8(pair[0])[0], steps_on_64x8(pair[1])[0])


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
