"""Root reads hoisted out of strip-mined runs (transform/stripmine/hoist.py): a run that reads
`p.grad` or `state["k"]` itself, not through a name bound before it, is strip-mined with the read
made once before the run; refused where that read could differ or raise."""

from __future__ import annotations

import tempfile
import textwrap
from pathlib import Path

import pytest
import torch

from gsr_rewrite.pipeline import compile_source, rewrite_source
from gsr_rewrite.proof.check import MEASURE_SHAPES
from gsr_rewrite.proof.memory import measure_temporaries
from gsr_rewrite.proof.validate import load_module

HEAD = '''
import torch
from torch.optim import Optimizer


class Opt(Optimizer):
    def __init__(self, params, lr=0.01, alpha=0.9, eps=1e-8, centered=False):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, centered=centered))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None: continue
                state = self.state[p]
                if len(state) == 0:
                    state["sq"] = torch.zeros_like(p)
                    state["avg"] = torch.zeros_like(p)
                    state["n"] = torch.zeros((), dtype=torch.int64)
                state["sq"].mul_(group["alpha"]).addcmul_(p.grad, p.grad, value=1 - group["alpha"])
'''


def _source(tail: str) -> str:
    return HEAD + textwrap.indent(textwrap.dedent(tail), " " * 16)


GRAD_AND_STATE = '''
denom = state["sq"].sqrt().add_(group["eps"])
p.addcdiv_(p.grad, denom, value=-group["lr"])
'''


def test_reads_of_grad_and_state_in_the_run_are_hoisted_and_exact() -> None:
    result = compile_source(_source(GRAD_AND_STATE), "hoisted.py")  # certified, or refused
    (outcome,) = result.classes
    assert outcome.status == "rewritten", outcome.reason
    assert result.code is not None
    assert "p_grad = p.grad" in result.code and 'state_sq = state["sq"]' in result.code
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "hoisted_r.py"
        path.write_text(result.code)
        module = load_module(path, "hoisted_r")
        before, after = (measure_temporaries(lambda ps, c=c: c(ps), MEASURE_SHAPES).units
                         for c in (module.Opt, module.OptR))
    assert before >= 0.125 and after <= 0.05


@pytest.mark.parametrize(("tail", "why"), [
    ('''
     denom = p.grad.abs().add_(group["eps"])
     if group["centered"]:
         denom = denom.add_(state["avg"])
     p.addcdiv_(p.grad, denom, value=-group["lr"])
     ''', "is read only on some paths through the run"),
    ('''
     denom = state["sq"].sqrt().add_(group["eps"])
     state["n"] += 1
     p.addcdiv_(p.grad, denom, value=-group["lr"])
     ''', "changes `state`"),
    ('''
     denom = state["sq"].sqrt().add_(group["eps"])
     p.addcdiv_([p.grad for _ in range(1)][0], denom, value=-group["lr"])
     ''', "comprehension or lambda"),
    ('''
     denom = state["sq"].sqrt().add_(group["eps"])
     k = sum(1 for p in () if p.grad is not None)
     p.addcdiv_(p.grad, denom, value=-group["lr"] * (1 + k))
     ''', "where its name may be another"),
])
def test_reads_that_could_differ_before_the_run_are_not_hoisted(tail: str, why: str) -> None:
    (outcome,) = rewrite_source(_source(tail), "refused.py").classes
    reasons = " ".join(t.how for t in outcome.temporaries if not t.placed)
    assert why in reasons, reasons
    assert not any(t.lives_in.endswith("strips") for t in outcome.temporaries)


def test_hoisted_run_matches_the_original_when_the_grad_is_missing() -> None:
    """A param without a gradient skips the run in both; the strips never see None."""
    result = compile_source(_source(GRAD_AND_STATE), "missing.py")
    assert result.code is not None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "missing_r.py"
        path.write_text(result.code)
        module = load_module(path, "missing_r")
        runs = []
        for cls in (module.Opt, module.OptR):
            gen = torch.Generator().manual_seed(0)
            ps = [torch.nn.Parameter(torch.randn(4, 5, generator=gen)) for _ in range(3)]
            ps[0].grad = torch.randn(4, 5, generator=gen)
            ps[2].grad = torch.randn(4, 5, generator=gen)
            opt = cls(ps)
            for _ in range(3):
                opt.step()
            runs.append([p.detach().clone() for p in ps])
    assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))


WHILE_LOOP = '''
import torch
from torch.optim import Optimizer


class Opt(Optimizer):
    def __init__(self, params, lr=0.01, alpha=0.9, eps=1e-8):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            i = 0
            while i < len(params):
                p = params[i]
                state = self.state[p]
                if len(state) == 0:
                    state["sq"] = torch.zeros_like(p)
                sq = state["sq"]
                sq.mul_(group["alpha"]).addcmul_(p.grad, p.grad, value=1 - group["alpha"])
                denom = sq.sqrt().add_(group["eps"])
                p.addcdiv_(p.grad, denom, value=-group["lr"])
                i += 1
'''


def test_a_while_loop_over_indices_is_strip_mined_inside() -> None:
    """The loop's back edge reads only its test (`i < len(params)`), not every name of its body:
    `denom`, bound in the run, is not read after it."""
    result = compile_source(WHILE_LOOP, "while_loop.py")
    (outcome,) = result.classes
    assert outcome.status == "rewritten", outcome.reason
    assert [t.lives_in for t in outcome.temporaries if t.op == "sqrt"] == ["1/64 strips"]


@pytest.mark.parametrize(("wrap", "refused"), [
    ("with contextlib.suppress(RuntimeError):", True),
    ("try:", True),
    ("with torch.no_grad():", False),
])
def test_a_run_where_an_exception_could_be_caught_midway_is_not_strip_mined(
        wrap: str, refused: bool) -> None:
    """Strip by strip, an exception in a later strip comes after earlier strips were written;
    where the step may catch it and go on, the run is not strip-mined."""
    body = textwrap.indent(textwrap.dedent(GRAD_AND_STATE), "    ")
    tail = f"{wrap}\n{body}" + ("except RuntimeError:\n    pass\n" if wrap == "try:" else "")
    source = "import contextlib\n" + _source(tail)
    (outcome,) = rewrite_source(source, "wrapped.py").classes
    strip_mined = any(t.lives_in.endswith("strips") for t in outcome.temporaries)
    assert strip_mined != refused, [t.how for t in outcome.temporaries]
    if refused:
        assert any("swallow" in t.how or "`try` with `except`" in t.how
                   for t in outcome.temporaries)


@pytest.mark.parametrize(("tail", "why"), [
    ('''
     denom = state["sq"].sqrt().add_(group["eps"])
     p = p.view_as(p)
     p.addcdiv_(p.grad, denom, value=-group["lr"])
     ''', "rebinds `p`"),
    ('''
     denom = state["sq"].sqrt().add_(group["eps"])
     self.last_grad = p.grad
     p.addcdiv_(p.grad, denom, value=-group["lr"])
     ''', "a tensor escapes: stored on attribute `.last_grad`"),
])
def test_a_hoisted_read_that_could_name_another_tensor_or_escape_is_refused(
        tail: str, why: str) -> None:
    """The root rebound inside the run (the read before it would see the old `p`), or the
    gradient stored on self from inside the run (it escapes)."""
    (outcome,) = rewrite_source(_source(tail), "escapes.py").classes
    reasons = " ".join(t.how for t in outcome.temporaries if not t.placed)
    assert why in reasons, reasons
    assert not any(t.lives_in.endswith("strips") for t in outcome.temporaries)


def test_a_while_loop_that_carries_a_run_value_to_its_next_iteration_is_not_strip_mined() -> None:
    """The back edge reads the loop test only, but a value the run binds and the next iteration
    reads before binding it again is still seen: strips of it must not cross iterations."""
    carried = WHILE_LOOP.replace(
        "                sq = state[\"sq\"]\n",
        "                sq = state[\"sq\"]\n"
        "                if i > 0:\n"
        "                    p.add_(denom.mean(), alpha=0.0)\n")
    assert carried != WHILE_LOOP
    (outcome,) = rewrite_source(carried, "carried.py").classes
    assert not any(t.lives_in.endswith("strips") for t in outcome.temporaries if t.op == "sqrt")
