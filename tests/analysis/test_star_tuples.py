"""A helper that takes the tensors of one parameter as `*tensors` and hands them back in order
(`p, grad, m, v = self.as_real(p, p.grad, m, v)`: pytorch_optimizer's 39 per-parameter steps
call their base's `view_as_real(param, *state_and_grads)` so) is followed: `*tensors` is the
tuple of the call's extra positional arguments, each at its position; `tuple(f(t) for t in
tensors)` keeps the positions, and so does `(param, *tensors)` with the starred tuple last.

Before, the call filled `*tensors`, so it was taken for an unknown call: every name it bound
could be any tensor of any parameter, and nothing after it was rewritten.

Must-not-fire: whatever may change the order or the count (a reversed or sorted tuple, a
filtering comprehension, a slice, the starred tuple before other items) gives every name every
tensor, so the gradient is not taken for dead while the name that really holds it is read."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gsr_rewrite.pipeline import rewrite_source
from gsr_rewrite.proof.check import compare_trajectories
from tests.common import certified_pair

SOURCE = '''
import torch
from torch.optim import Optimizer


class Base(Optimizer):
    @staticmethod
    def as_real(param, *tensors):
        if torch.is_complex(param):
            param = torch.view_as_real(param)
            {convert}
        return {returned}


class Starred(Base):
    def __init__(self, params, lr=1e-2, eps=1e-8):
        super().__init__(params, dict(lr=lr, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.zeros_like(p)
                {unpack} = self.as_real(p, p.grad, state["m"], state["v"])
                m.lerp_(grad, 0.1)
                v.mul_(0.9).addcmul_(grad, grad, value=0.1)
                denom = v.sqrt().add_(group["eps"])
                p.addcdiv_(m, denom, value=-group["lr"])
'''

IN_ORDER = ("tensors = tuple(torch.view_as_real(t) if t is not None and torch.is_complex(t) "
            "else t for t in tensors)")


def _source(convert: str = IN_ORDER, returned: str = "param, *tensors",
            unpack: str = "p, grad, m, v") -> str:
    return SOURCE.format(convert=convert, returned=returned, unpack=unpack)


def _placed(source: str) -> tuple[str, list[bool], list[str]]:
    (cls,) = [c for c in rewrite_source(source, "starred.py").classes if c.name == "Starred"]
    denoms = [t for t in cls.temporaries if t.code == "v.sqrt()"]
    return cls.status, [t.placed for t in denoms], [t.how for t in denoms]


@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64])
def test_the_tensors_come_back_at_their_positions(dtype: torch.dtype, tmp_path: Path) -> None:
    status, placed, how = _placed(_source())
    assert status == "rewritten" and placed == [True], how
    assert "the gradient buffer" in how[0], how
    original, reduced = certified_pair(_source(), tmp_path, "Starred")
    res = compare_trajectories(original, reduced, {}, steps=4, mode="bitwise", nonempty=True,
                               dtype=dtype)
    assert res.passed, res.message


#: each changes the order or the count of what comes back, or which position a name gets
REORDERED = {
    "reversed": dict(convert="tensors = tuple(reversed(tensors))",
                     returned="param, *reversed(tensors)"),
    "sorted": dict(convert="pass", returned="param, *sorted(tensors, key=lambda t: t.numel())"),
    "filtered": dict(convert="tensors = tuple(t for t in tensors if t.numel() > 0)"),
    "sliced": dict(convert="pass", returned="param, *tensors[1:], tensors[0]",
                   unpack="p, m, v, grad"),
    "star-first": dict(convert="pass", returned="(*tensors, param)", unpack="grad, m, v, p"),
    "swapped-in-helper": dict(convert="pass", returned="param, tensors[1], tensors[0], "
                              "*tensors[2:]", unpack="p, m, grad, v"),
}


@pytest.mark.parametrize("case", sorted(REORDERED))
def test_an_order_the_analysis_cannot_follow_keeps_the_gradient(case: str) -> None:
    status, placed, how = _placed(_source(**REORDERED[case]))
    assert placed != [True] or "the gradient buffer" not in how[0], (case, status, how)


def test_a_reversed_pair_is_not_read_in_its_written_order() -> None:
    """`m, grad = reversed((g0, m0))`: `m` is the state, `grad` the gradient, read after
    `denom` is made, so `denom` must not go into it (before, `reversed` kept the tuple's
    positions: the analysis took `m` for the gradient, last read by the lerp)."""
    source = _source(convert="pass", returned="(param, *tensors)", unpack="p, g0, m0, v") \
        .replace("                m.lerp_(grad, 0.1)\n",
                 "                m, grad = reversed((g0, m0))\n"
                 "                m.lerp_(grad, 0.1)\n") \
        .replace("p.addcdiv_(m, denom", "p.addcdiv_(grad, denom")
    status, placed, how = _placed(source)
    assert placed != [True] or "the gradient buffer" not in how[0], (status, how)


def test_calls_of_several_lengths_join_their_positions() -> None:
    """A second call with fewer tensors: each position holds what either call put there, and
    the step still finds the gradient at its place."""
    source = _source().replace(
        "                state = self.state[p]\n",
        "                state = self.state[p]\n                q, _ = self.as_real(p, p.grad)\n")
    status, placed, how = _placed(source)
    assert status == "rewritten" and placed == [True], how


SHIFTED = '''
import torch
from torch.optim import Optimizer


def shift(param, *tensors):
    views = (t.view_as(t) for t in tensors)
    next(views)
    return (param, *views)


class Shifted(Optimizer):
    def __init__(self, params, lr=1e-2, eps=1e-8):
        super().__init__(params, dict(lr=lr, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.zeros_like(p)
                v = state["v"]
                q, grad, m = shift(p, v, p.grad, state["m"])
                m.lerp_(grad, 0.1)
                denom = v.sqrt().add_(group["eps"])
                p.addcdiv_(grad, denom, value=-group["lr"])
'''


def test_a_generator_advanced_before_it_is_spliced_has_no_positions() -> None:
    """`next(views)` drops the first item: `(param, *views)` is `(param, grad, m)`, not
    `(param, v, grad, m)` cut short. A generator iterated later gets no positions (one a
    builtin consumes at once, `tuple(...)`, does): the gradient, read after `denom`, stays.
    (A guard: the reads such a generator carries already kept it without positions.)"""
    (cls,) = [c for c in rewrite_source(SHIFTED, "shifted.py").classes if c.name == "Shifted"]
    denoms = [t for t in cls.temporaries if t.code == "v.sqrt()"]
    assert not any(t.placed and "gradient" in t.how for t in denoms), [t.how for t in denoms]


@pytest.mark.parametrize("change", [
    "del ys[0]",               # the items after it move
    "ys[0:1] = []",            # a slice assigned: the same
    "ys[0] = ys[1]",           # an item replaced
])
def test_a_list_whose_items_move_has_no_positions(change: str) -> None:
    """`ys = [m, grad]`, then `change`, then `g = ys[0]`: g may be the gradient (after `del`,
    it is), read after `denom`; before, `del` changed nothing in the analysis and `g` was
    taken for `m`, so `denom` went into the gradient (translation validation caught it)."""
    source = _source(convert="pass", returned="(param, *tensors)", unpack="p, g0, m0, v") \
        .replace("                m.lerp_(grad, 0.1)\n",
                 f"                ys = [m0, g0]\n                {change}\n"
                 "                grad, m = ys[0], m0\n                m.lerp_(g0, 0.1)\n") \
        .replace("v.mul_(0.9).addcmul_(grad, grad, value=0.1)",
                 "v.mul_(0.9).addcmul_(g0, g0, value=0.1)") \
        .replace("p.addcdiv_(m, denom, value=-group[\"lr\"])",
                 "p.addcdiv_(m, denom, value=-group[\"lr\"])\n"
                 "                p.add_(grad, alpha=-1e-3)")
    status, placed, how = _placed(source)
    assert placed != [True] or "the gradient buffer" not in how[0], (change, status, how)
