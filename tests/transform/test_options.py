"""Placements under options (transform/options.py): a gradient read late only when an option is
on (`if caution:`, `if clipping is not None:`) is dead where the denominator is made when the
options are off; the placement's guard asks them, and otherwise the statement runs as the
original does."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

from gsr_rewrite import runtime
from gsr_rewrite.pipeline import compile_source, rewrite_source
from gsr_rewrite.proof.check import compare_trajectories
from gsr_rewrite.proof.validate import load_module

SOURCE = '''
from typing import Optional

import torch
from torch.optim import Optimizer


def _clip_denom_(denom, grad, threshold: float):
    rms = grad.div(denom).norm() / (grad.numel() ** 0.5)
    denom.mul_((rms / threshold).clamp_(min=1.0))


def _single(params, grads, exp_avgs, exp_avg_sqs, *, lr: float, beta1: float, beta2: float,
            eps: float, caution: bool, clipping: Optional[float]):
    for i, param in enumerate(params):
        grad = grads[i]
        exp_avg = exp_avgs[i]
        exp_avg_sq = exp_avg_sqs[i]
{prelude}
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = exp_avg_sq.sqrt().add_(eps)
        if clipping is not None:
            _clip_denom_(denom, grad, clipping)
        if caution:
            mask = (exp_avg * grad > 0).to(grad.dtype)
            mask.div_(mask.mean().clamp_(min=1e-3))
            exp_avg = exp_avg * mask
        param.addcdiv_(exp_avg, denom, value=-lr)


class AdamWOptions(Optimizer):
    def __init__(self, params, lr=1e-2, betas=(0.9, 0.99), eps=1e-8, caution=False,
                 clipping=None):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, caution=caution,
                                      clipping=clipping))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            params, grads, exp_avgs, exp_avg_sqs = [], [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if len(state) == 0:
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                params.append(p)
                grads.append(p.grad)
                exp_avgs.append(state["exp_avg"])
                exp_avg_sqs.append(state["exp_avg_sq"])
            beta1, beta2 = group["betas"]
            _single(params, grads, exp_avgs, exp_avg_sqs, lr=group["lr"], beta1=beta1,
                    beta2=beta2, eps=group["eps"], caution=group["caution"],
                    clipping=group["clipping"])
'''


def _source(prelude: str = "") -> str:
    lines = textwrap.dedent(prelude).strip().splitlines()
    return SOURCE.format(prelude="".join(f"        {line}\n" for line in lines))


def _denom(source: str) -> tuple[str, str]:
    """(where the denominator lives, how) in the for-loop function."""
    (cls,) = rewrite_source(source, "adamw_options.py").classes
    t = next(t for t in cls.temporaries if t.code == "exp_avg_sq.sqrt()")
    return t.lives_in if t.placed else "stays", t.how


def test_the_denominator_lives_in_the_gradient_when_the_options_are_off(tmp_path: Path) -> None:
    result = compile_source(_source(), "adamw_options.py")
    (cls,) = result.classes
    assert cls.status == "rewritten", cls.reason
    lives = {t.code: t for t in cls.temporaries}
    denom = lives["exp_avg_sq.sqrt()"]
    assert denom.lives_in == "gradient"
    assert "when `clipping is None and _gsr.falsy(caution)`" in denom.how
    # with caution on, the gradient still hosts what it hosted before (the denominator is new)
    assert lives["exp_avg * grad"].lives_in == "gradient"
    assert result.code is not None
    assert "and clipping is None and _gsr.falsy(caution):" in result.code
    path = tmp_path / "adamw_options_r.py"
    path.write_text(result.code)
    module = load_module(path, f"gsr_options_{abs(hash(result.code))}")
    for kwargs in ({}, {"caution": True}, {"clipping": 0.5}, {"caution": True, "clipping": 0.5},
                   {"caution": 1}, {"caution": torch.tensor(False)}):
        res = compare_trajectories(module.AdamWOptions, module.AdamWOptionsR, kwargs, steps=7,
                                   mode="bitwise")
        assert res.passed, (kwargs, res.message)


@pytest.mark.parametrize("prelude", [
    "caution = caution and param.dim() > 1",  # rebound: its value may differ at the `if`
    "clipping = None if i == 0 else clipping",
])
def test_must_not_fire_an_option_the_function_rebinds(prelude: str) -> None:
    lives, how = _denom(_source(prelude))
    assert lives != "gradient", how


def test_must_not_fire_an_option_a_nested_function_rebinds() -> None:
    """`nonlocal caution` in a function defined inside: calling it may change the option
    between the placement and the `if`."""
    prelude = "def switch():\n    nonlocal caution\n    caution = True\n\nswitch()"
    lives, how = _denom(_source(prelude))
    assert lives != "gradient", how


def test_must_not_fire_a_test_that_is_no_option() -> None:
    """`if torch.is_tensor(grad):` calls something; a local name is no parameter."""
    source = _source().replace("if caution:", "if torch.is_tensor(grad) and caution:")
    assert _denom(source)[0] != "gradient"
    source = _source("flag = caution").replace("if caution:", "if flag:")
    assert _denom(source)[0] != "gradient"


@pytest.mark.parametrize(("value", "truthy", "falsy"), [
    (True, True, False), (False, False, True), (None, False, True), (0.0, False, True),
    (2, True, False), ("x", True, False),
    # values whose truth may change while the step runs are neither
    (torch.tensor(True), False, False), ([1], False, False), ([], False, False),
])
def test_truthy_and_falsy_trust_only_immutable_values(value: object, truthy: bool,
                                                      falsy: bool) -> None:
    assert runtime.truthy(value) is truthy
    assert runtime.falsy(value) is falsy


def test_must_not_fire_a_temporary_placed_under_options_read_where_they_are_on(
        tmp_path: Path) -> None:
    """`exp_avg.lerp(...)` lives in the gradient only when the options are off; inside
    `if caution:` it is in its own storage and still needed, so `exp_avg * grad` there may not
    be computed in place on it (it was, before the planner asked where a temporary lives from
    the node it places at: the validation refused the class, the plan was wrong)."""
    source = _source().replace(
        "        denom = exp_avg_sq.sqrt().add_(eps)\n",
        "        denom = exp_avg_sq.sqrt().add_(eps)\n"
        "        exp_avg = exp_avg.lerp(grad, 1 - beta1)\n")
    result = rewrite_source(source, "adamw_options.py")
    (cls,) = result.classes
    lives = {t.code: t for t in cls.temporaries}
    assert "when `clipping is None and _gsr.falsy(caution)`" in \
        lives["exp_avg.lerp(grad, 1 - beta1)"].how
    assert "operand 1" not in lives["exp_avg * grad"].how
    assert result.code is not None
    path = tmp_path / "adamw_options_late_r.py"
    path.write_text(result.code)
    module = load_module(path, f"gsr_options_late_{abs(hash(result.code))}")
    for kwargs in ({}, {"caution": True}):
        res = compare_trajectories(module.AdamWOptions, module.AdamWOptionsR, kwargs, steps=5,
                                   mode="bitwise")
        assert res.passed, (kwargs, res.message)
