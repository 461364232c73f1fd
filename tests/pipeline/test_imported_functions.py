"""Helper functions imported from another module (tests/fixtures/shared_functions: `from ._ops
import ...`) are followed as same-module helpers are: their temporaries are rewritten in copies
that only the R class calls, equal to the original; what they do with the gradient keeps it out
of the R-variant's scratch; and a name the resolver cannot pin to one plain `def` is not
followed."""

from __future__ import annotations

import importlib
import inspect
import textwrap
from pathlib import Path
from typing import Any

import pytest

from gsr_rewrite.frontend.resolve import FunctionRef, Resolver, Unresolved
from gsr_rewrite.outcome import ClassOutcome, RewriteResult
from gsr_rewrite.pipeline import rewrite_source
from gsr_rewrite.proof.check import compare_trajectories
from gsr_rewrite.proof.validate import load_module
from tests.common import TESTS, compiled_fixture

PACKAGE = "tests.fixtures.shared_functions"
FIXTURES = TESTS / "fixtures" / "shared_functions"


def _compiled(name: str, importable: bool) -> RewriteResult:
    return compiled_fixture(PACKAGE, name, importable)


def _outcome(result: RewriteResult, name: str) -> ClassOutcome:
    return next(c for c in result.classes if c.name == name)


@pytest.mark.parametrize("importable", [True, False])
def test_imported_helpers_are_rewritten_and_equal(importable: bool, tmp_path: Path) -> None:
    result = _compiled("adam_shared", importable)
    outcome = _outcome(result, "AdamShared")
    assert outcome.status == "rewritten", outcome.reason
    assert "passed the stress matrix" in outcome.validation
    by_function = {t.function: t for t in outcome.temporaries}
    # the for-loop helper's `sq.sqrt()` goes in the gradient; the foreach helper's list of
    # square roots (no gradient is passed to it) is strip-mined
    assert by_function["scaled_update_"].lives_in == "gradient"
    assert by_function["foreach_scaled_update_"].strips
    assert result.code is not None
    assert "def scaled_update__gsr(" in result.code
    assert "def foreach_scaled_update__gsr(" in result.code
    assert "def ema_(" not in result.code  # unchanged helpers are imported, not copied
    path = tmp_path / f"adam_shared_r_{importable}.py"
    path.write_text(result.code)
    module = load_module(path, f"gsr_shared_{importable}_{abs(hash(result.code))}")
    original = importlib.import_module(f"{PACKAGE}.adam_shared").AdamShared
    if importable:
        assert issubclass(module.AdamSharedR, original)
    for kwargs in ({}, {"foreach": True}, {"lr": 0.05, "betas": (0.5, 0.9), "foreach": True}):
        res = compare_trajectories(original, module.AdamSharedR, kwargs, steps=7, mode="bitwise")
        assert res.passed, (kwargs, res.message)


def test_the_imported_module_is_untouched() -> None:
    """The rewritten helper is a copy in the R module: `_ops` keeps its own functions, and the
    original step (which r_step runs where the R step would not be exact) calls them."""
    before = (FIXTURES / "_ops.py").read_text()
    result = _compiled("adam_shared", True)
    assert (FIXTURES / "_ops.py").read_text() == before
    ops: Any = importlib.import_module(f"{PACKAGE}._ops")
    assert not hasattr(ops, "scaled_update__gsr")
    assert "p.grad" not in inspect.getsource(ops.scaled_update_)
    assert "_ops import" in (result.code or "")


def test_must_not_fire_an_imported_helper_that_keeps_the_gradient() -> None:
    """`remember(grad)` appends the gradient to a list of `_ops`: the gradient escapes, so no
    temporary may live in it."""
    outcome = _outcome(_compiled("leaky", True), "LeakySGD")
    assert outcome.analysis is not None and "remember" in outcome.analysis.functions
    assert not any(t.lives_in == "gradient" for t in outcome.temporaries), outcome.temporaries
    escapes = [where for b, _, where in outcome.analysis.escapes if b == "grad"]
    assert any(where.startswith(str(FIXTURES / "_ops.py")) for where in escapes), escapes


HELPERS = '''import torch

_SCALE = 1.0


def update_(p, grad, lr):
    step = grad * lr
    p.sub_(step)


def rebound_(p, grad, lr):
    step = grad * lr
    p.sub_(step)


rebound_ = torch.no_grad()(rebound_)


def swapped_(p, grad, lr):
    step = grad * lr
    p.sub_(step)


def swap():
    global swapped_
    swapped_ = update_
'''

OPTIMIZER = '''import torch
from torch.optim import Optimizer

from .helpers import {name}


class SGDLike(Optimizer):
    def __init__(self, params, lr=0.01):
        super().__init__(params, dict(lr=lr))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    {name}(p, p.grad, group["lr"])
'''


@pytest.mark.parametrize(("name", "followed"), [("update_", True), ("rebound_", False),
                                                ("swapped_", False)])
def test_only_a_function_bound_by_one_plain_def_is_followed(
        name: str, followed: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`rebound_` is bound again after its `def`, `swapped_` by `global` in a function: which
    function the name holds when step runs is not known, so it is an unknown call (the gradient
    escapes into it) and its temporary is not seen."""
    monkeypatch.syspath_prepend(str(tmp_path))
    package = tmp_path / f"pkg_helpers_{name}"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "helpers.py").write_text(HELPERS)
    source = OPTIMIZER.format(name=name)
    (package / "sgd_like.py").write_text(source)
    result = rewrite_source(source, str(package / "sgd_like.py"), package.name)
    outcome = _outcome(result, "SGDLike")
    assert outcome.analysis is not None
    assert (name in outcome.analysis.functions) == followed
    assert (outcome.status == "rewritten") == followed, outcome.reason
    resolver = Resolver()
    here = resolver.load(package / "helpers.py", None, False)
    assert not isinstance(here, Unresolved)
    ref = resolver.attribute(here, name)
    assert isinstance(ref, FunctionRef) == followed, ref


MUST_NOT_FIRE = {
    # the helper returns its argument: `g` is the gradient, read after the square root
    "alias": ('def same(g):\n    return g\n',
              'g = same(p.grad)\n'
              'v.mul_(0.9).addcmul_(g, g, value=0.1)\n'
              'denom = v.sqrt()\n'
              'p.addcdiv_(g, denom, value=-group["lr"])'),
    # after the loop the helper reads every parameter's gradient
    "other grads": ('def total_norm(params):\n'
                    '    return sum(float(q.grad.norm()) for q in params if q.grad is not None)\n',
                    'v.mul_(0.9).addcmul_(p.grad, p.grad, value=0.1)\n'
                    'denom = v.sqrt()\n'
                    'p.addcdiv_(v, denom, value=-group["lr"])'),
    # the helper may raise after its square root; the handler reads the gradient
    "exception": ('import torch\n\n\ndef update_(p, v, lr):\n'
                  '    denom = v.sqrt()\n'
                  '    if not bool(torch.isfinite(denom).all()):\n'
                  '        raise FloatingPointError("v")\n'
                  '    p.addcdiv_(v, denom, value=-lr)\n',
                  'v.mul_(0.9).addcmul_(p.grad, p.grad, value=0.1)\n'
                  'try:\n'
                  '    update_(p, v, group["lr"])\n'
                  'except FloatingPointError:\n'
                  '    p.add_(p.grad, alpha=-group["lr"])'),
}

LOOPING = '''import torch
from torch.optim import Optimizer

from .helpers import *  # noqa: F403


class Helped(Optimizer):
    def __init__(self, params, lr=0.01):
        super().__init__(params, dict(lr=lr))

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
BODY
            AFTER
'''


@pytest.mark.parametrize("case", sorted(MUST_NOT_FIRE))
def test_must_not_fire_through_an_imported_helper(case: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The gradient is still read where the helper (or what it returned, or a handler of what
    it raised) would find scratch in it: no temporary may live there."""
    helpers, body = MUST_NOT_FIRE[case]
    names = [line[4:].split("(")[0] for line in helpers.splitlines() if line.startswith("def ")]
    after = 'self.norm = total_norm(group["params"])' if case == "other grads" else "pass"
    source = LOOPING.replace("from .helpers import *  # noqa: F403",
                             f"from .helpers import {', '.join(names)}") \
        .replace("BODY", textwrap.indent(body, " " * 16)).replace("AFTER", after)
    monkeypatch.syspath_prepend(str(tmp_path))
    package = tmp_path / f"pkg_must_not_{case.replace(' ', '_')}"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "helpers.py").write_text(helpers)
    (package / "helped.py").write_text(source)
    result = rewrite_source(source, str(package / "helped.py"), package.name,
                            f"{package.name}.helped")
    outcome = _outcome(result, "Helped")
    assert outcome.analysis is not None and set(names) <= set(outcome.analysis.functions)
    assert any("sqrt" in t.code for t in outcome.temporaries), outcome.temporaries
    assert not any(t.lives_in == "gradient" for t in outcome.temporaries), outcome.temporaries
