"""A helper that takes `*args` or `**kwargs` is followed at a call that puts nothing into
`**kwargs` (pytorch_optimizer: every optimizer's step calls `self.init_group(group)` of an
`init_group(self, group, **kwargs)`; refusing it refused 41 classes of that package).
`**kwargs` is then an empty dict: the analysis binds it to an object it does not model (any use
of it is assumed the worst of); `*args` is the tuple of the extra positional arguments a call
gives (test_star_tuples.py). Must-not-fire: a call that passes a keyword no named parameter
takes, or spreads `*xs` / `**kw`."""

from __future__ import annotations

from pathlib import Path

import pytest

from gsr_rewrite.pipeline import rewrite_source
from gsr_rewrite.proof.check import compare_trajectories
from tests.common import certified_pair

SOURCE = '''
import torch
from torch.optim import Optimizer


class Starry(Optimizer):
    def __init__(self, params, lr=1e-2, beta=0.99, eps=1e-8):
        super().__init__(params, dict(lr=lr, beta=beta, eps=eps))
        self.seen = []

    def init_group(self, group, *args, **kwargs):
        {body}
        for p in group["params"]:
            if p.grad is not None and len(self.state[p]) == 0:
                self.state[p]["m"] = torch.zeros_like(p)
                self.state[p]["v"] = torch.zeros_like(p)

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            self.init_group({call})
            for p in group["params"]:
                if p.grad is None:
                    continue
                m, v = self.state[p]["m"], self.state[p]["v"]
                m.lerp_(p.grad, 0.1)
                v.mul_(group["beta"]).addcmul_(p.grad, p.grad, value=1 - group["beta"])
                denom = v.sqrt().add_(group["eps"])
                p.addcdiv_(m, denom, value=-group["lr"])
'''


def _source(call: str = "group", body: str = "pass") -> str:
    return SOURCE.format(call=call, body=body)


def _outcome(source: str) -> tuple[str, str, list[bool]]:
    """(status, the class's reason and why `v.sqrt()` lives where it does, whether placed)."""
    (cls,) = rewrite_source(source, "starry.py").classes
    denoms = [t for t in cls.temporaries if t.code == "v.sqrt()"]
    return cls.status, " ".join([cls.reason, *(t.how for t in denoms)]), \
        [t.placed for t in denoms]


@pytest.mark.parametrize("call", ["group", "group=group",
                                  # an extra positional: `*args` is the tuple of it (unused)
                                  "group, p_extra := group['params'][0].grad"])
def test_a_call_that_fills_no_star_parameter_is_followed(call: str, tmp_path: Path) -> None:
    status, reason, placed = _outcome(_source(call))
    assert status == "rewritten", reason
    assert placed == [True], reason
    original, reduced = certified_pair(_source(call), tmp_path, "Starry")
    res = compare_trajectories(original, reduced, {}, steps=4, mode="bitwise", nonempty=True)
    assert res.passed, res.message


@pytest.mark.parametrize("call", [
    "group, extra=group['params'][0].grad",       # a keyword no parameter takes: into **kwargs
    "*[group]",                                    # a spread: which parameter gets what is unknown
    "group, **{'extra': group['params'][0].grad}",
])
def test_a_call_that_fills_a_star_parameter_stays_unknown(call: str) -> None:
    status, reason, placed = _outcome(_source(call))
    assert placed != [True], (call, status, reason)
    assert "the gradient buffer escapes" in reason, reason


def test_what_a_call_puts_into_args_is_followed_there() -> None:
    """The gradient given as an extra positional argument is kept by the helper (`args[0]`):
    it escapes there, as it would given by name."""
    status, reason, placed = _outcome(_source("group, group['params'][0].grad",
                                              "self.seen.append(args[0])"))
    assert placed != [True], (status, reason)
    assert "the gradient buffer escapes" in reason, reason


def test_uses_of_the_star_parameters_are_assumed_the_worst_of() -> None:
    """`kwargs.get("g", ...)` may hand back anything: the gradient is not scratch after it."""
    body = 'self.seen.append(kwargs.get("g", group["params"][0].grad))'
    status, reason, placed = _outcome(_source(body=body))
    assert placed != [True], (status, reason)
