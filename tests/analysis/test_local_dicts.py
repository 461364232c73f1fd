"""Dicts a function makes for itself are followed (what comes out is what was put in); any other
dict's contents are opaque, whatever it was built from."""

from __future__ import annotations

import textwrap

import libcst as cst
import pytest

from gsr_rewrite.analysis.local_dicts import local_dicts
from gsr_rewrite.api import rewrite_text
from gsr_rewrite.outcome import ClassOutcome


def _followed(body: str, imports: dict[str, str] | None = None) -> frozenset[str]:
    func = cst.parse_module(textwrap.dedent(body)).body[0]
    assert isinstance(func, cst.FunctionDef)
    return local_dicts(func, imports or {})


@pytest.mark.parametrize(("body", "followed"), [
    ("def f(xs):\n    d = {}\n    for i, x in enumerate(xs):\n"
     "        d.setdefault(x.device, []).append(i)\n    return [len(v) for v in d.values()]\n",
     {"d"}),
    ("def f():\n    d = dict(a=1)\n    d['b'] = 2\n    if 'a' in d and len(d):\n"
     "        del d['a']\n    if not d: pass\n    for k in d: pass\n", {"d"}),
    ("def f():\n    d = {}\n    e = d or {}\n", set()),  # `e` may be the dict itself
    ("def f():\n    d: dict = {}\n    d.update(a=1)\n    return d.get('a')\n", {"d"}),
    # the dict reaches something else: not followed
    ("def f(g):\n    d = {}\n    g(d)\n", set()),
    ("def f():\n    d = {}\n    e = d\n    e['a'] = 1\n", set()),
    ("def f():\n    d = {}\n    return d\n", set()),
    ("def f():\n    a = b = {}\n    a['x'] = 1\n", set()),
    ("def f():\n    d = {}\n    h = lambda: d\n", set()),
    ("def f():\n    d = {}\n    def g():\n        d['a'] = 1\n    g()\n", set()),
    ("def f(o):\n    d = {}\n    class C:\n        d['a'] = o\n", set()),
    ("def f(d):\n    d = {}\n", set()),  # a parameter: the caller's dict until rebound
    ("def f(xs):\n    d = {}\n    d = xs\n", set()),  # bound to something else too
    ("def f():\n    global d\n    d = {}\n", set()),
    ("def f():\n    d = {}\n    d |= {'a': 1}\n", set()),
    ("def f():\n    d = {}\n    (d := {})\n", set()),
    ("def f(x):\n    d = {}\n    x[d] = 1\n", set()),
])
def test_which_dicts_are_followed(body: str, followed: set[str]) -> None:
    assert _followed(body) == followed


def test_defaultdict_of_lists_by_origin() -> None:
    body = "def f():\n    d = defaultdict(list)\n    d[0].append(1)\n"
    assert _followed(body, {"defaultdict": "collections.defaultdict"}) == {"d"}
    assert _followed(body, {"defaultdict": "mylib.defaultdict"}) == set()
    assert _followed(body) == set()  # not imported: some other defaultdict
    lam = "def f():\n    d = defaultdict(lambda: 0)\n"
    assert _followed(lam, {"defaultdict": "collections.defaultdict"}) == set()


SOURCE = '''
import torch
from torch.optim import Optimizer


class Mine(Optimizer):
    def __init__(self, params, lr=1e-3, beta=0.9, eps=1e-8):
        super().__init__(params, dict(lr=lr, beta=beta, eps=eps))

    def _post(self):
        for group in self.param_groups:
            for p in group["params"]:
                p.add_(p.grad, alpha=-0.1)

    @torch.no_grad()
    def step(self, closure=None):
{prologue}
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if len(state) == 0:
                    state["v"] = torch.zeros_like(p)
                v = state["v"]
                v.mul_(group["beta"]).addcmul_(grad, grad, value=1 - group["beta"])
                denom = v.sqrt().add_(group["eps"])
                p.addcdiv_(v, denom, value=-group["lr"])
{epilogue}
'''


def _mine(prologue: str = "", epilogue: str = "") -> ClassOutcome:
    def indent(text: str) -> str:
        return "".join(f"        {line}\n" for line in textwrap.dedent(text).splitlines())
    source = SOURCE.format(prologue=indent(prologue), epilogue=indent(epilogue))
    (mine,) = rewrite_text(source, "mine.py").classes
    return mine


def _placed(mine: ClassOutcome) -> dict[str, str]:
    return {t.code: t.lives_in if t.placed else "stays" for t in mine.temporaries}


def test_a_dict_of_index_lists_keeps_the_gradient() -> None:
    """timm's grouping by device: `groups.setdefault(key, []).append(i)` puts integers in a
    list in a dict the step made; the gradient does not escape through it."""
    mine = _mine(epilogue='''
        groups = {}
        for i, group in enumerate(self.param_groups):
            groups.setdefault(group["lr"], []).append(i)
        for idx in groups.values():
            assert all(isinstance(i, int) for i in idx)
    ''')
    assert _placed(mine)["v.sqrt()"] == "gradient", mine.reason


def test_must_not_fire_an_element_of_a_dict_not_followed() -> None:
    """`holder` is passed on, so it is not followed: `holder["opt"]` may be anything, here the
    optimizer, whose `_post` reads every gradient after the step's last use of it."""
    mine = _mine(prologue='holder = {"opt": self}\nprint(holder)',
                 epilogue='holder["opt"]._post()')
    assert _placed(mine)["v.sqrt()"] != "gradient"


def test_must_not_fire_a_followed_dict_holding_the_optimizer() -> None:
    """A followed dict is exactly what was put in: `self`, whose `_post` reads the gradients."""
    mine = _mine(prologue='holder = {}\nholder["opt"] = self',
                 epilogue='holder.get("opt")._post()')
    assert _placed(mine)["v.sqrt()"] != "gradient"


def test_must_not_fire_a_gradient_put_in_a_followed_dict() -> None:
    """What goes into a dict escapes, followed or not."""
    mine = _mine(prologue="kept = {}",
                 epilogue='kept[0] = self.param_groups[0]["params"][0].grad')
    assert _placed(mine)["v.sqrt()"] != "gradient"
    assert mine.analysis is not None
    assert any(b == "grad" and "dict `kept`" in why for b, why, _ in mine.analysis.escapes)


@pytest.mark.parametrize("extend", [
    "kept += [grad]",  # a list extended in place holds the gradient from here on
    "kept += grad",  # `list += tensor` adds the tensor's rows: views of the gradient
])
def test_must_not_fire_a_gradient_added_to_a_list_in_place(extend: str) -> None:
    source = SOURCE.format(prologue="", epilogue="").replace(
        '                v = state["v"]\n',
        '                v = state["v"]\n'
        f'                kept = [v]\n                {extend}\n').replace(
        '                p.addcdiv_(v, denom, value=-group["lr"])\n',
        '                p.addcdiv_(v, denom, value=-group["lr"])\n'
        '                for t in kept:\n                    p.add_(t, alpha=1e-3)\n')
    (mine,) = rewrite_text(source, "mine.py").classes
    assert _placed(mine)["v.sqrt()"] != "gradient"


def test_must_not_fire_a_gradient_added_to_a_list_in_a_followed_dict() -> None:
    source = SOURCE.format(prologue="", epilogue="").replace(
        '                v = state["v"]\n',
        '                v = state["v"]\n'
        '                kept = {"xs": [v]}\n                kept["xs"] += [grad]\n').replace(
        '                p.addcdiv_(v, denom, value=-group["lr"])\n',
        '                p.addcdiv_(v, denom, value=-group["lr"])\n'
        '                for t in kept["xs"]:\n                    p.add_(t, alpha=1e-3)\n')
    (mine,) = rewrite_text(source, "mine.py").classes
    assert _placed(mine)["v.sqrt()"] != "gradient"


def test_must_not_fire_a_followed_dict_spread_from_another() -> None:
    """`{**holder}` holds whatever `holder` holds: here the optimizer."""
    mine = _mine(prologue='holder = {"opt": self}\nprint(holder)\nboth = {**holder}',
                 epilogue='both["opt"]._post()')
    assert _placed(mine)["v.sqrt()"] != "gradient"
