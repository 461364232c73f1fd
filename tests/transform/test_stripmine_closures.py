"""A helper's temporary that it returns (torch RAdam's `_compute_adaptive_lr`, a nested function
that makes `exp_avg_sq.sqrt()` and returns it divided) has no run of its own to be strip-mined
in; it is strip-sized where the helper is called once per strip, so each statement that calls it
is a candidate run (transform/stripmine/finder.py). A nested function may run per strip when its
body is per element: it reads the caller's tensors by name, so the run binds those names to the
strips and back to the whole tensors after it (emission.py). Must-not-fire: a name it reads that
the run assigns, a body that is not per element, a call outside any run."""

from __future__ import annotations

from pathlib import Path

import pytest

from gsr_rewrite.pipeline import rewrite_source
from gsr_rewrite.proof.check import MEASURE_SHAPES, compare_trajectories
from gsr_rewrite.proof.memory import measure_temporaries
from gsr_rewrite.runtime.strip_runs import strip_floor
from tests.common import certified_pair

RECTIFIED = '''
import math
import torch
from torch.optim import Optimizer

{helpers}


class Rectified(Optimizer):
    def __init__(self, params, lr=1e-2, betas=(0.9, 0.99), eps=1e-8):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.zeros_like(p)
                m, v = state["m"], state["v"]
                state["step"] += 1
                step = state["step"]
                m.lerp_(grad, 1 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                bc1 = 1 - beta1 ** step
                bc2 = 1 - beta2 ** step
                corrected = m / bc1
                rho_inf = 2 / (1 - beta2) - 1
                rho_t = rho_inf - 2 * step * beta2 ** step / bc2

                def rect():
                    return ((rho_t - 4) * (rho_t - 2) * rho_inf
                            / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5

                def adaptive_lr():
                    {adaptive}

                if rho_t > 5.0:
                    {update}
                else:
                    p.add_(corrected * group["lr"], alpha=-1.0)
'''

ADAPTIVE = '''root = v.sqrt()
                    root = root.add_(group["eps"])
                    return math.sqrt(bc2) / root'''
UPDATE = 'p.add_(corrected * group["lr"] * adaptive_lr() * rect(), alpha=-1.0)'


def _source(adaptive: str = ADAPTIVE, update: str = UPDATE, helpers: str = "") -> str:
    return RECTIFIED.format(adaptive=adaptive, update=update, helpers=helpers)


def _sqrt(source: str, code: str = "v.sqrt()") -> tuple[int, str]:
    """(strips, how) of the temporary `code`."""
    (cls,) = rewrite_source(source, "rectified.py").classes
    t = next(t for t in cls.temporaries if t.code == code)
    return t.strips, t.how


def _exact(source: str, tmp_path: Path) -> tuple[float, float]:
    """The certified rewrite of `source` equals its original bitwise over 9 steps (the
    rectified branch from step 6 on), in strips however small; (before, after) temporaries."""
    original, reduced = certified_pair(source, tmp_path, "Rectified")
    with strip_floor(0):
        res = compare_trajectories(original, reduced, {}, steps=9,
                                   mode="bitwise", nonempty=True)  # (`.max()` of none raises)
    assert res.passed, res.message
    before, after = (measure_temporaries(lambda ps, c=c: c(ps), MEASURE_SHAPES).units
                     for c in (original, reduced))
    return before, after


def test_a_nested_helper_that_returns_its_temporary_runs_per_strip(tmp_path: Path) -> None:
    strips, how = _sqrt(_source())
    assert strips and "where step calls it" in how, how
    before, after = _exact(_source(), tmp_path)
    assert before >= 0.1 and after <= 0.05, (before, after)


def test_the_run_binds_the_names_the_nested_function_reads(tmp_path: Path) -> None:
    result = rewrite_source(_source(), "rectified.py")
    assert result.code is not None
    assert "v = v_strip" in result.code and "v = v_whole" in result.code


def test_a_module_helper_that_returns_its_temporary(tmp_path: Path) -> None:
    """All the caller's own temporaries have a dead buffer; the helper's is strip-mined where
    the caller calls it."""
    helpers = ("def inverse_root(v, eps, bc2):\n    root = v.sqrt()\n"
               "    root = root.add_(eps)\n    return math.sqrt(bc2) / root")
    update = 'p.add_(corrected * group["lr"] * inverse_root(v, group["eps"], bc2), alpha=-1.0)'
    source = _source(update=update, helpers=helpers)
    (cls,) = rewrite_source(source, "rectified.py").classes
    t = next(t for t in cls.temporaries if t.code == "v.sqrt()")
    assert t.strips, t.how
    _exact(source, tmp_path)


@pytest.mark.parametrize(("adaptive", "update", "why"), [
    # `corrected`, which the nested function reads, is assigned where it is called: a run that
    # assigned it would leave the name on the strip from before the assignment
    ('root = v.sqrt()\n                    root = root.add_(group["eps"])\n'
     '                    return math.sqrt(bc2) / root * corrected.sign()',
     'corrected = corrected * adaptive_lr()\n                    '
     'p.add_(corrected * adaptive_lr() * rect(), alpha=-1.0)',
     "cannot be strip-mined"),
    # a shape read from a strip differs from the whole tensor's
    ('root = v.sqrt()\n                    root = root.add_(group["eps"])\n'
     '                    return math.sqrt(bc2) / root / v.numel()', UPDATE,
     "cannot be strip-mined"),
    # a reduction over the whole tensor
    ('root = v.sqrt()\n                    root = root.add_(group["eps"])\n'
     '                    return math.sqrt(bc2) / root.max()', UPDATE, "cannot be strip-mined"),
    # called outside any run too (a reduction of what it returns): whole there
    (ADAPTIVE, 'state["peak"] = float(adaptive_lr().max())\n                    ' + UPDATE,
     "outside a strip-mined run"),
])
def test_must_not_fire_where_a_strip_would_differ(adaptive: str, update: str, why: str,
                                                  tmp_path: Path) -> None:
    source = _source(adaptive, update)
    strips, how = _sqrt(source)
    assert not strips and why in how, how
    _exact(source, tmp_path)


def test_must_not_fire_a_run_that_assigns_what_the_nested_function_reads(
        tmp_path: Path) -> None:
    """`v = v * 4.0` then a call of `adaptive_lr`, which reads `v`: run per strip with `v` bound
    to the strip of the old `v`, the call would not see the new one."""
    source = _source(update='v = v * 4.0\n                    ' + UPDATE)
    strips, how = _sqrt(source, "v * 4.0")
    assert not strips and "which a nested function it calls reads, is assigned in the run" in how
    _exact(source, tmp_path)


@pytest.mark.parametrize(("adaptive", "update"), [
    # it reads the param the run writes first (the same element, written before, in both)
    ('return math.sqrt(bc2) / (v.sqrt() + p.abs())',
     'p.mul_(0.999)\n                    ' + UPDATE),
    # it writes a tensor it reads from the caller, in place
    ('m.mul_(0.5)\n                    return math.sqrt(bc2) / v.sqrt().add_(group["eps"])',
     UPDATE),
    # the run's name is deleted after it, or bound to another tensor and the function called again
    (ADAPTIVE, UPDATE + '\n                    del v'),
    (ADAPTIVE, UPDATE + '\n                    v = m.abs()\n                    '
     'p.add_(adaptive_lr(), alpha=-1e-4)'),
])
def test_exact_where_the_nested_function_sees_the_run(adaptive: str, update: str,
                                                      tmp_path: Path) -> None:
    _exact(_source(adaptive, update), tmp_path)
