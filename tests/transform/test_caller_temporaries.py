"""A helper may not place its temporaries in a buffer where its caller keeps a temporary that is
live across the call (or that it is given): timm's Lamb calls `_add_scaled_(p, p, s)` while its
`update` lives in the gradient, and `_add_scaled_` would make `update * scale` there too."""

from __future__ import annotations

from pathlib import Path

import torch

from gsr_rewrite.pipeline import compile_source, rewrite_source
from gsr_rewrite.proof.check import compare_trajectories
from gsr_rewrite.proof.validate import load_module

SOURCE = '''
import torch
from torch.optim import Optimizer


def _add_scaled_(param, update, scale):
    if torch.is_tensor(scale):
        param.add_(update * scale)
    else:
        param.add_(update, alpha=scale)


class Scaled(Optimizer):
    def __init__(self, params, lr=1e-2, beta=0.9, weight_decay=0.1):
        super().__init__(params, dict(lr=lr, beta=beta, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr = group["lr"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if len(state) == 0:
                    state["m"] = torch.zeros_like(p)
                m = state["m"]
                m.mul_(group["beta"]).add_(grad)
                update = m * 2.0
                _add_scaled_(p, p, -lr * group["weight_decay"])
                _add_scaled_(p, update, -lr)
'''


def test_must_not_fire_a_helper_temporary_in_the_storage_of_a_live_caller_temporary(
        tmp_path: Path) -> None:
    result = rewrite_source(SOURCE, "scaled.py")
    (cls,) = result.classes
    lives = {t.code: t for t in cls.temporaries}
    assert lives["m * 2.0"].lives_in == "gradient"  # `update`, live across a call
    assert lives["update * scale"].lives_in != "gradient", lives["update * scale"].how
    assert result.code is not None
    path = tmp_path / "scaled_r.py"
    path.write_text(result.code)
    module = load_module(path, f"gsr_scaled_{abs(hash(result.code))}")
    res = compare_trajectories(module.Scaled, module.ScaledR, {"lr": torch.tensor(0.01)},
                               steps=5, mode="bitwise")
    assert res.passed, res.message


HELPER = '''
import torch
from torch.optim import Optimizer

KEPT = []


def _adaptive(v, eps):
    root = v.sqrt()
    root.add_(eps)
{extra}    return 0.5 / root


class Rooted(Optimizer):
    def __init__(self, params, lr=1e-2, beta=0.9, eps=1e-8):
        super().__init__(params, dict(lr=lr, beta=beta, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if len(state) == 0:
                    state["v"] = torch.zeros_like(p)
                v = state["v"]
                v.mul_(group["beta"]).addcmul_(p.grad, p.grad, value=1 - group["beta"])
                p.add_(_adaptive(v, group["eps"]), alpha=-group["lr"])
'''


def _helper_temps(extra: str = "") -> dict[str, str]:
    result = rewrite_source(HELPER.format(extra=extra), "rooted.py")
    (cls,) = result.classes
    return {t.code: t.lives_in if t.placed else "stays" for t in cls.temporaries}


def test_a_returned_temporary_takes_over_a_dying_temporary_of_its_function() -> None:
    """RAdam's `_compute_adaptive_lr`: `return (bc2 ** 0.5) / root` needs no storage of its
    own, `root` (made by the helper, dead after the division) is as new."""
    temps = _helper_temps()
    assert temps["0.5 / root"] == "temporary at 9:12"
    assert temps["v.sqrt()"] == "stays"  # returned in `root`'s storage: the helper's own
    result = compile_source(HELPER.format(extra=""), "rooted.py")  # proved and stress-tested
    (cls,) = result.classes
    assert cls.status == "rewritten", cls.reason


def test_must_not_fire_a_returned_temporary_that_also_escapes_elsewhere() -> None:
    temps = _helper_temps("    KEPT.append(root)\n")
    assert temps["0.5 / root"] == "stays"


HANDED_BACK = '''
import torch
from torch.optim import Optimizer

KEPT = []


def _normalized(update, eps):
{extra}    update.div_(update.norm().clamp(min=eps))
    return update


class Normed(Optimizer):
    def __init__(self, params, lr=1e-2, momentum=0.9, eps=1e-7):
        super().__init__(params, dict(lr=lr, momentum=momentum, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if len(state) == 0:
                    state["buf"] = torch.zeros_like(p)
                buf = state["buf"]
                buf.lerp_(grad, 1 - group["momentum"])
                update = grad.lerp(buf, group["momentum"])
                update = _normalized(update, group["eps"])
                p.add_(update, alpha=-group["lr"])
'''


def test_a_temporary_a_helper_hands_back_to_its_caller_does_not_escape() -> None:
    """Muon's Newton-Schulz may return the tensor it was given: the caller follows it."""
    result = compile_source(HANDED_BACK.format(extra=""), "normed.py")
    (cls,) = result.classes
    assert cls.status == "rewritten", cls.reason
    lives = {t.code: t.lives_in for t in cls.temporaries}
    assert lives['grad.lerp(buf, group["momentum"])'] == "gradient"


def test_must_not_fire_a_handed_back_temporary_the_helper_also_keeps() -> None:
    result = rewrite_source(HANDED_BACK.format(extra="    KEPT.append(update)\n"), "normed.py")
    (cls,) = result.classes
    lives = {t.code: t.lives_in for t in cls.temporaries}
    assert lives['grad.lerp(buf, group["momentum"])'] != "gradient"
