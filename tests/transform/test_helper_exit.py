"""What a helper's caller needs after the call decides what is dead at the helper's exit: a
statement that reads a buffer after a helper call returns keeps it live there, a buffer the
caller overwrites whole after the call (Mars' `state["last_grad"].copy_(grad)`) is dead there, and
state the helper alone reads stays live (the next step needs it)."""

from __future__ import annotations

from pathlib import Path

from gsr_rewrite.pipeline import rewrite_source
from gsr_rewrite.proof.check import compare_trajectories
from gsr_rewrite.proof.validate import load_module

_HEAD = '''
import torch
from torch.optim import Optimizer


class {name}(Optimizer):
    def __init__(self, params, lr=1e-2, beta=0.9):
        super().__init__(params, dict(lr=lr, beta=beta))

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
                    state["last"] = torch.zeros_like(p)
'''

# the statement reads `grad` again after `_scale` returns: `_scale` may not use it as scratch
READ_AFTER_CALL = '''
def _scale(grad, m, beta):
    t = grad * 2.0
    m.mul_(beta).add_(t)
    return m.sum()
''' + _HEAD.format(name="ReadAfterCall") + '''
                p.add_(_scale(grad, state["m"], group["beta"]) * grad, alpha=-group["lr"])
'''

# Mars: the helper's last read of `last` comes before the caller overwrites it whole
OVERWRITTEN_AFTER_CALL = '''
def _mars(p, grad, m, last, lr, beta):
    c = (grad - last).mul_(0.5).add_(grad)
    c = c / torch.norm(c).clamp_(min=1.0)
    m.mul_(beta).add_(c, alpha=1 - beta)
    p.add_(m, alpha=-lr)
''' + _HEAD.format(name="OverwrittenAfterCall") + '''
                _mars(p, grad, state["m"], state["last"], group["lr"], group["beta"])
                state["last"].copy_(grad)
'''

# only the helper names state["m"]; the next step reads it, so it is never scratch
STATE_ONLY_THE_HELPER_NAMES = '''
def _momentum(p, grad, state, lr, beta):
    m = state["m"]
    m.mul_(beta).add_(grad)
    p.add_(m * 2.0, alpha=-lr)
''' + _HEAD.format(name="StateOnlyTheHelperNames") + '''
                _momentum(p, grad, state, group["lr"], group["beta"])
'''


def _lives(source: str, path: Path) -> dict[str, str]:
    """Where each temporary lives, after checking the R-variant against its original."""
    result = rewrite_source(source, "helper_exit.py")
    (cls,) = result.classes
    assert result.code is not None, [t.how for t in cls.temporaries]
    target = path / "helper_exit_r.py"
    target.write_text(result.code)
    module = load_module(target, f"gsr_helper_exit_{abs(hash(result.code))}")
    res = compare_trajectories(getattr(module, cls.name), getattr(module, cls.name + "R"),
                               {}, steps=5, mode="bitwise")
    assert res.passed, res.message
    return {t.code: t.lives_in for t in cls.temporaries}


def test_must_not_fire_a_helper_temporary_in_a_buffer_its_calling_statement_reads_after(
        tmp_path: Path) -> None:
    lives = _lives(READ_AFTER_CALL, tmp_path)
    assert lives["grad * 2.0"] != "gradient"


def test_a_state_buffer_the_caller_overwrites_after_the_call_is_dead_at_the_helper_exit(
        tmp_path: Path) -> None:
    lives = _lives(OVERWRITTEN_AFTER_CALL, tmp_path)
    assert lives["(grad - last)"] == "state 'last'"
    assert lives["c / torch.norm(c).clamp_(min=1.0)"] == "state 'last'"


def test_must_not_fire_a_temporary_in_state_only_a_helper_names(tmp_path: Path) -> None:
    lives = _lives(STATE_ONLY_THE_HELPER_NAMES, tmp_path)
    assert lives["m * 2.0"] == "gradient"  # not state 'm': the next step reads it

# the statement calls `_twice` again after it returns (a comprehension): the second call reads
# state["last"], which the caller overwrites only after the whole statement
CALLED_AGAIN_IN_THE_STATEMENT = '''
def _twice(p, last, lr):
    t = last * 0.5
    p.add_(t, alpha=-lr)
''' + _HEAD.format(name="CalledAgainInTheStatement") + '''
                _ = [_twice(p, state["last"], group["lr"]) for _ in range(2)]
                state["last"].copy_(grad)
'''


def test_must_not_fire_a_helper_temporary_in_a_buffer_a_comprehension_reads_again(
        tmp_path: Path) -> None:
    lives = _lives(CALLED_AGAIN_IN_THE_STATEMENT, tmp_path)
    assert lives["last * 0.5"] != "state 'last'"
