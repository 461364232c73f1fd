"""A decorator is known by where its name comes from (the defining module's imports), never by
the name alone; and what a helper hands back to its caller is followed there, not lost."""

from __future__ import annotations

import dataclasses
import textwrap

import libcst as cst
import pytest

from gsr_rewrite.analysis.decorators import decorator_kind
from gsr_rewrite.api import rewrite_text
from gsr_rewrite.frontend.source import parse_module
from gsr_rewrite.outcome import ClassOutcome


def _kind(source: str, package: str | None = None) -> str | None:
    """The kind of the decorator on the module's function `f`."""
    home = parse_module(textwrap.dedent(source), "m.py")
    home = dataclasses.replace(home, package=package)
    func = home.functions["f"]
    (decorator,) = func.decorators
    return decorator_kind(decorator.decorator, home)


@pytest.mark.parametrize(("source", "package", "kind"), [
    ("import torch\n@torch.no_grad()\ndef f(): pass\n", None, "mode"),
    ("import torch as T\n@T.inference_mode()\ndef f(): pass\n", None, "mode"),
    ("from torch import no_grad as ng\n@ng()\ndef f(): pass\n", None, "mode"),
    ("from .optimizer import _use_grad_for_differentiable\n"
     "@_use_grad_for_differentiable\ndef f(): pass\n", "torch.optim", "mode"),
    ("@staticmethod\ndef f(): pass\n", None, "mode"),
    ("import torch\n@torch.compile\ndef f(): pass\n", None, "compile"),
    ("import torch\n@torch.compile(fullgraph=True)\ndef f(): pass\n", None, "compile"),
    # the same names, bound by the module itself or from elsewhere: not known
    ("def no_grad(fn): return fn\n@no_grad\ndef f(): pass\n", None, None),
    ("from mylib import no_grad\n@no_grad()\ndef f(): pass\n", None, None),
    ("import mylib\n@mylib.torch.no_grad()\ndef f(): pass\n", None, None),
    ("def staticmethod(fn): return fn\n@staticmethod\ndef f(): pass\n", None, None),
    ("from .optimizer import _use_grad_for_differentiable\n"
     "@_use_grad_for_differentiable\ndef f(): pass\n", None, None),  # package unknown
    ("compile = lambda fn: fn\n@compile\ndef f(): pass\n", None, None),
])
def test_decorator_kind_by_origin(source: str, package: str | None, kind: str | None) -> None:
    assert _kind(source, package) == kind


SOURCE = '''
import torch
from torch.optim import Optimizer


class Mine(Optimizer):
    def __init__(self, params, lr=1e-3, beta=0.9):
        super().__init__(params, dict(lr=lr, beta=beta))

    def _lists(self, group):
        params, grads, bufs = [], [], []
        for p in group["params"]:
            if p.grad is not None:
                state = self.state[p]
                if len(state) == 0:
                    state["buf"] = torch.zeros_like(p)
                params.append(p)
                grads.append(p.grad)
                bufs.append(state["buf"])
        return params, grads, bufs

    def _grad_of(self, p):
        return p.grad

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            params, grads, bufs = self._lists(group)
            for p, g, b in zip(params, grads, bufs):
{body}
'''


def _temps(body: str) -> tuple[ClassOutcome, dict[str, str]]:
    indented = "".join(f"                {line}\n" for line in textwrap.dedent(body).splitlines())
    result = rewrite_text(SOURCE.format(body=indented), "mine.py")
    (mine,) = result.classes
    return mine, {t.code: t.lives_in if t.placed else "stays" for t in mine.temporaries}


def test_lists_a_helper_returns_are_followed_in_the_caller() -> None:
    """The gradients `_lists` returns are its caller's again: dead after their last read."""
    _, temps = _temps('''
        b.mul_(group["beta"]).add_(g)
        update = b * group["lr"]
        p.sub_(update)
    ''')
    assert temps == {'b * group["lr"]': "gradient"}


def test_must_not_fire_a_returned_gradient_read_after() -> None:
    """The gradient is read after the temporary through the list the helper returned."""
    _, temps = _temps('''
        update = b * group["lr"]
        p.sub_(update)
        b.mul_(group["beta"]).add_(g)
    ''')
    assert temps['b * group["lr"]'] != "gradient"


def test_must_not_fire_a_returned_gradient_kept_in_state() -> None:
    """`_grad_of` returns the gradient and the caller keeps it: it escapes in the caller."""
    mine, temps = _temps('''
        self.state[p]["last"] = self._grad_of(p)
        b.mul_(group["beta"]).add_(g)
        update = b * group["lr"]
        p.sub_(update)
    ''')
    assert temps['b * group["lr"]'] != "gradient"
    assert mine.analysis is not None
    assert any(b == "grad" and "state" in why for b, why, _ in mine.analysis.escapes)


def test_what_step_returns_escapes() -> None:
    result = rewrite_text(SOURCE.format(body="                pass\n").replace(
        "        for group in self.param_groups:",
        "        for group in self.param_groups:\n"
        "            if closure is None:\n"
        "                return self.param_groups[0]['params'][0].grad"), "mine.py")
    (mine,) = result.classes
    assert mine.analysis is not None
    assert any(b == "grad" and why == "returned from the function"
               for b, why, _ in mine.analysis.escapes)


def test_a_helper_returning_a_temporary_keeps_it() -> None:
    """A temporary a helper returns outlives the helper's plan: it stays where it is made."""
    source = SOURCE.format(body='''                b.mul_(group["beta"]).add_(g)
                p.sub_(self._scaled(b, group["lr"]))
''').replace("    def _grad_of(self, p):", "    def _scaled(self, b, lr):\n"
             "        return b * lr\n\n    def _grad_of(self, p):")
    (mine,) = rewrite_text(source, "mine.py").classes
    (temp,) = mine.temporaries
    assert temp.code == "b * lr" and not temp.placed
    assert "returned from the function" in temp.how


def test_a_decorator_that_is_not_a_dotted_name_is_not_known() -> None:
    """`@torch.no_grad().__call__` names no function of torch: not known."""
    home = parse_module("import torch\n", "m.py")
    assert decorator_kind(cst.parse_expression("torch.no_grad().__call__"), home) is None
