"""A strip-mined run may call a helper once per strip when the helper's whole body is per
element (transform/stripmine/helpers.py): `apply_update_(p, update, lr)` in the middle of a run
no longer keeps its temporaries whole; a helper that reduces, keeps, counts, reads a global or
takes a tensor default still stops the run."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

from gsr_rewrite.analysis.interprocedural import analyse_class
from gsr_rewrite.frontend.catalog import load_catalog
from gsr_rewrite.pipeline import compile_source, parse, rewrite_source
from gsr_rewrite.proof.check import compare_trajectories
from gsr_rewrite.proof.validate import load_module
from gsr_rewrite.transform.stripmine import per_element_helpers

SOURCE = '''
import torch
from torch.optim import Optimizer

HISTORY = []
SCALE = torch.ones(3)
CALLS = 0


{helper}


class SqrtMomentum(Optimizer):
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
                    state["sq"] = torch.zeros_like(p)
                    state["m"] = torch.zeros_like(p)
                sq = state["sq"]
                sq.mul_(group["beta"]).addcmul_(grad, grad, value=1 - group["beta"])
                denom = sq.sqrt().add_(group["eps"])  # the gradient is read below: no host
                update = grad / denom
                apply_update_(p, update, group["lr"])
                state["m"].mul_(group["beta"]).add_(grad)
'''

PER_ELEMENT = '''
def apply_update_(param, update, lr: float, maximize: bool = False):
    if maximize:
        param.add_(update, alpha=lr)
    elif torch.is_tensor(lr):
        param.add_(update * lr, alpha=-1.0)
    else:
        param.add_(update, alpha=-lr)
'''


def _source(helper: str) -> str:
    return SOURCE.format(helper=textwrap.dedent(helper).strip())


def _denom(helper: str) -> tuple[int, str]:
    """(strips, how) of the run's first temporary, `sq.sqrt()`."""
    (cls,) = rewrite_source(_source(helper), "sqrt_momentum.py").classes
    t = next(t for t in cls.temporaries if t.code == "sq.sqrt()")
    return t.strips, t.how


def test_a_per_element_helper_runs_once_per_strip(tmp_path: Path) -> None:
    result = compile_source(_source(PER_ELEMENT), "sqrt_momentum.py")
    (cls,) = result.classes
    assert cls.status == "rewritten", cls.reason
    denom = next(t for t in cls.temporaries if t.code == "sq.sqrt()")
    assert denom.strips, denom.how
    assert result.code is not None
    path = tmp_path / "sqrt_momentum_r.py"
    path.write_text(result.code)
    module = load_module(path, f"gsr_strip_helper_{abs(hash(result.code))}")
    for kwargs in ({}, {"lr": torch.tensor(0.05), "beta": 0.5}):
        res = compare_trajectories(module.SqrtMomentum, module.SqrtMomentumR, kwargs, steps=7,
                                   mode="bitwise")
        assert res.passed, (kwargs, res.message)


@pytest.mark.parametrize("helper", [
    # a reduction over the whole update
    "def apply_update_(param, update, lr):\n    param.add_(update / update.norm(), alpha=-lr)",
    # what it keeps, it would keep per strip
    "def apply_update_(param, update, lr):\n    HISTORY.append(update)\n"
    "    param.add_(update, alpha=-lr)",
    # a count it keeps would count strips
    "def apply_update_(param, update, lr):\n    global CALLS\n    CALLS = CALLS + 1\n"
    "    param.add_(update, alpha=-lr)",
    "def apply_update_(param, update, lr):\n    HISTORY.append(1)\n"
    "    param.add_(update, alpha=-lr)",
    # a whole tensor it reads (a global; a default) is not cut with the strips
    "def apply_update_(param, update, lr):\n    param.add_(update * SCALE, alpha=-lr)",
    "def apply_update_(param, update, lr, scale=SCALE):\n    param.add_(update * scale, alpha=-lr)",
    # a shape read from a strip differs from the tensor's
    "def apply_update_(param, update, lr):\n    param.add_(update, alpha=-lr / update.numel())",
    # a buffer reached through its argument, not given as one
    "def apply_update_(param, update, lr):\n    param.add_(update * param.grad, alpha=-lr)",
    # an assert after a write: the original raises with every element written, a strip with
    # only the first strip's
    "def apply_update_(param, update, lr):\n    param.add_(update, alpha=-lr)\n"
    "    assert lr < 1e6, 'lr'",
    # a loop in it (over a strip's rows would differ)
    "def apply_update_(param, update, lr):\n    for row in update:\n        row.mul_(lr)\n"
    "    param.sub_(update)",
    # what it returns is made of a whole tensor (a global), not of strips
    "def apply_update_(param, update, lr):\n    param.add_(update, alpha=-lr)\n    return SCALE",
])
def test_must_not_fire_a_helper_that_is_not_per_element(helper: str) -> None:
    strips, how = _denom(helper)
    assert not strips
    assert "cannot be strip-mined" in how


def test_a_helper_that_returns_a_strip(tmp_path: Path) -> None:
    """`update = ratio(grad, denom)`: what the helper returns is made per strip, inside the
    run, and the run stays exact."""
    helper = "def ratio(a, b):\n    return a / b\n\n\n" + textwrap.dedent(PER_ELEMENT).strip()
    source = _source(helper).replace("update = grad / denom", "update = ratio(grad, denom)")
    result = compile_source(source, "sqrt_momentum.py")
    (cls,) = result.classes
    assert cls.status == "rewritten", cls.reason
    assert next(t for t in cls.temporaries if t.code == "sq.sqrt()").strips
    assert result.code is not None
    path = tmp_path / "ratio_r.py"
    path.write_text(result.code)
    module = load_module(path, f"gsr_strip_ratio_{abs(hash(result.code))}")
    res = compare_trajectories(module.SqrtMomentum, module.SqrtMomentumR, {}, steps=7,
                               mode="bitwise")
    assert res.passed, res.message


def test_per_element_helpers_names_only_those() -> None:
    source = _source(PER_ELEMENT) + textwrap.dedent('''

        def unused_reducer(x):
            return x.sum()
    ''')
    src = parse(source, "sqrt_momentum.py", None, None)
    analysis = analyse_class(src, src.classes[0], load_catalog())
    assert set(per_element_helpers(analysis.functions, load_catalog())) == {"apply_update_"}
