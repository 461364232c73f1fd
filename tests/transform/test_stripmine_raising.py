"""A run of statements that may raise is strip-mined only where it raises before it changes
anything: every strip takes the same path (a run's `if` tests read no tensor contents), so the
first strip raises from the state the original raises from. A mode check (`else: raise ...`,
`else: assert False` before reading a name the other branches bind) is such a path; a raise or
an assert after a write is not (the original raised with every element written, the first strip
with 1/strips of them)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
import torch

from gsr_rewrite.pipeline import rewrite_source
from gsr_rewrite.proof.check import compare_trajectories
from gsr_rewrite.proof.validate import load_module
from gsr_rewrite.runtime import strip_floor

_CLASS = '''

class Moded(Optimizer):
    def __init__(self, params, lr=1e-2, wd=0.1, mode="plain"):
        super().__init__(params, dict(lr=lr, wd=wd, mode=mode))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if len(state) == 0:
                    state["m"] = torch.zeros_like(p)
                _update(p, p.grad, state["m"], group["lr"], group["wd"], group["mode"])
'''


def _source(otherwise: str, tail: str = "") -> str:
    """`_update`: `update` is made per mode and no buffer is dead where it lives (the
    gradient is read at the end), so it can only be strip-mined; `otherwise` ends the modes."""
    return '''
import torch
from torch.optim import Optimizer


def _update(p, grad, m, lr, wd, mode):
    m.mul_(0.9).add_(grad)
    if mode == "plain":
        update = p * wd + m.sign()
    elif mode == "scaled":
        update = p * wd + m * 0.5
    else:
''' + "".join(f"        {line}\n" for line in otherwise.splitlines()) + tail + '''
    p.add_(update, alpha=-lr)
    p.add_(grad, alpha=-lr * 0.1)
''' + _CLASS


def _rewrite(source: str, path: Path) -> tuple[list[tuple[str, str]], ModuleType]:
    result = rewrite_source(source, "moded.py")
    (cls,) = result.classes
    assert result.code is not None
    target = path / "moded_r.py"
    target.write_text(result.code)
    module = load_module(target, f"gsr_moded_{abs(hash(result.code))}")
    return [(t.code, t.lives_in) for t in cls.temporaries], module


def _stripped(lives: list[tuple[str, str]], codes: set[str]) -> list[bool]:
    return [where.endswith("strips") for code, where in lives if code in codes]


@pytest.mark.parametrize("otherwise", ["assert False", "assert False, mode",
                                       'raise ValueError(f"unknown mode {mode}")'])
def test_a_run_whose_mode_check_raises_before_it_writes_is_strip_mined(
        otherwise: str, tmp_path: Path) -> None:
    lives, module = _rewrite(_source(otherwise), tmp_path)
    assert _stripped(lives, {"p * wd", "m.sign()", "m * 0.5"}) == [True] * 4, lives
    for mode in ("plain", "scaled"):
        with strip_floor(0):  # strips however small the tensors
            res = compare_trajectories(module.Moded, module.ModedR, {"mode": mode}, steps=4,
                                       mode="bitwise")
        assert res.passed, res.message
    params = [torch.nn.Parameter(torch.ones(300))]
    params[0].grad = torch.ones(300)
    opt = module.ModedR(params, mode="other")
    with pytest.raises((AssertionError, ValueError)):
        opt.step()


def _after_failed_step(cls: type, mode: str, lr: float) -> torch.Tensor:
    p = torch.nn.Parameter(torch.linspace(-1, 1, 4096))
    p.grad = torch.linspace(1, 2, 4096)
    opt = cls([p], lr=lr, mode=mode)
    with pytest.raises((AssertionError, ValueError)), strip_floor(0):
        opt.step()
    return torch.cat([p.detach(), opt.state[p]["m"]])


def test_must_not_fire_a_run_that_writes_before_it_raises(tmp_path: Path) -> None:
    lives, module = _rewrite(_source('m.zero_()\nraise ValueError("unknown mode")'), tmp_path)
    assert not any(_stripped(lives, {"p * wd", "m.sign()"})), lives
    assert torch.equal(_after_failed_step(module.Moded, "other", 1e-2),
                       _after_failed_step(module.ModedR, "other", 1e-2))


def test_must_not_fire_a_run_with_an_assert_after_a_write(tmp_path: Path) -> None:
    source = _source("update = p * 2.0", tail='    m.mul_(0.5)\n    assert lr > 0, "lr"\n')
    lives, module = _rewrite(source, tmp_path)
    assert not any(_stripped(lives, {"p * wd", "m.sign()"})), lives
    assert torch.equal(_after_failed_step(module.Moded, "plain", -1.0),
                       _after_failed_step(module.ModedR, "plain", -1.0))


IN_A_LOOP = '''
import torch
from torch.optim import Optimizer


class Looped(Optimizer):
    def __init__(self, params, lr=1e-2, wd=0.1, mode="plain"):
        super().__init__(params, dict(lr=lr, wd=wd, mode=mode))

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
                m = state["m"]
                m.mul_(0.9).add_(grad)
                if group["mode"] == "plain":
                    update = p * group["wd"] + m.sign()
                else:
                    assert False
                p.add_(update, alpha=-group["lr"])
                p.add_(grad, alpha=-group["lr"] * 0.1)
'''


def test_must_not_fire_an_unbound_read_where_an_earlier_iteration_bound_the_name() -> None:
    """Under `python -O` the assert is gone and the second parameter reads the first one's
    `update`: the run may not assume the name is unbound where it starts."""
    result = rewrite_source(IN_A_LOOP, "looped.py")
    (cls,) = result.classes
    lives = [(t.code, t.lives_in) for t in cls.temporaries]
    assert not any(_stripped(lives, {'p * group["wd"]', "m.sign()"})), lives


def test_must_not_fire_a_raise_whose_message_reads_a_tensor_of_the_run(tmp_path: Path) -> None:
    """The message would read a strip of `m` in the R-variant, all of it in the original."""
    lives, _ = _rewrite(_source('raise ValueError(f"unknown mode {m.sum()}")'), tmp_path)
    assert not any(_stripped(lives, {"p * wd", "m.sign()"})), lives


def test_must_not_fire_an_unbound_read_a_nested_function_may_bind() -> None:
    """`_default` binds `update` (nonlocal) before the run: under `python -O` the assert path
    reads that whole tensor, where each strip would want its own strip."""
    source = _source("assert False").replace('''def _update(p, grad, m, lr, wd, mode):
''', '''def _update(p, grad, m, lr, wd, mode):
    def _default():
        nonlocal update
        update = p * 0.0

    _default()
''')
    (cls,) = rewrite_source(source, "moded.py").classes
    assert cls.status == "rewritten", cls.reason
    reasons = [t.how for t in cls.temporaries if t.code == "p * wd"]
    assert any("`update` is read before the run assigns it" in how for how in reasons), reasons
