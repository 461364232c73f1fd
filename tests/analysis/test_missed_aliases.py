"""Gradient reads and aliases the analysis missed (an adversarial probe found each, session 20).
In each, `g * 2` (or `g * 0`) was placed in the gradient while the gradient was read later
through another name or by a construct that reads a tensor's contents without naming an op:

- a local function (or any helper called through a name bound to it) that returns its
  argument: the call's value was dropped (`a = h(g)` held nothing);
- a tensor's truth (`if g.view(-1)[0]:`, `while`, `assert`, `x if g[0] else y`, `g[0] and ...`)
  and membership (`0.0 in g`): read, not peeked;
- a tensor used as an index (`lut[g.long()]`): read;
- `torch.linalg.diagonal`, a view, taken for a reduction (every `torch.linalg.*` was).

Translation validation or the stress matrix caught the plain forms; gated behind a branch the
checks do not take (`if state["step"] > 10:`), the nested-function form was emitted and
differed. Each case must keep the temporary out of the gradient; the control places it."""

from __future__ import annotations

import pytest

from gsr_rewrite.pipeline import rewrite_source
from tests.analysis.test_operator_values import SOURCE as PROBE

#: test_operator_values' probe optimizer, with a module-level helper that returns its argument
SOURCE = PROBE.replace("\n\nclass Probe", "\n\ndef ident(x):\n    return x\n\n\nclass Probe", 1)

TAIL = '''\
                t = g * 2
                p.add_(t, alpha=-group["lr"])
'''

CASES = {
    "nested-identity": ("def h(x):\n    return x\na = h(g)\n", "p.add_(a, alpha=-1.0)"),
    "nested-view": ("def h(x):\n    return x.view_as(x)\na = h(g)\n", "p.add_(a, alpha=-1.0)"),
    "nested-captured": ("def h():\n    return g\na = h()\n", "p.add_(a, alpha=-1.0)"),
    "helper-by-name": ("f = ident\na = f(g)\n", "p.add_(a, alpha=-1.0)"),
    "if-truth": ("", "if g.view(-1)[0]:\n    p.add_(1.0)"),
    "while-truth": ("", "while g.view(-1)[0] > 1e9:\n    p.add_(1.0)"),
    "assert-truth": ("", "assert g.view(-1)[0] or True"),
    "ifexp-truth": ("", "p.add_(1.0 if g.view(-1)[0] else 0.5)"),
    "boolop-truth": ("", "if g.view(-1)[0] and group['lr']:\n    p.add_(1.0)"),
    "in-tensor": ("", "if 0.0 in g:\n    p.add_(1.0)"),
    "tensor-index": ("lut = torch.arange(-10.0, 10.0)\n", "p.add_(lut[g.to(torch.long)])"),
    "linalg-diagonal": ("a = torch.linalg.diagonal(g.view(1, -1))\n",
                        "p.add_(a.sum(), alpha=-1.0)"),
}


def _indent(code: str) -> str:
    return "".join(" " * 16 + line + "\n" for line in code.splitlines())


def _gradient_hosts(before: str, after: str) -> tuple[str, bool]:
    body = _indent(before) + TAIL + _indent(after)
    (cls,) = rewrite_source(SOURCE.format(body=body), "probe.py").classes
    temps = [t for t in cls.temporaries if t.code == "g * 2"]
    return cls.status, any(t.placed and t.lives_in == "gradient" for t in temps)


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_later_read_keeps_the_temporary_out_of_the_gradient(case: str) -> None:
    status, in_gradient = _gradient_hosts(*CASES[case])
    assert status == "refused" or not in_gradient, case


def test_must_fire_without_a_later_read_the_gradient_hosts_it() -> None:
    status, in_gradient = _gradient_hosts("def h(x):\n    return x * 1\na = h(g)\n",
                                          "p.add_(a, alpha=-1.0)")
    assert status == "rewritten" and in_gradient
