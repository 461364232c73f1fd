"""Structured abstract values, imported functions of the op catalog, scalar state keys."""

from __future__ import annotations

import libcst as cst

from gsr_rewrite.analysis.interprocedural import analyse_class
from gsr_rewrite.frontend.catalog import load_catalog
from gsr_rewrite.frontend.effects import scalar_state_keys
from gsr_rewrite.frontend.locate import parse
from gsr_rewrite.frontend.values import (
    LIST,
    PART,
    buffers,
    container,
    element,
    flat,
    item,
    structured,
)

G, S = frozenset({"grad"}) | LIST, frozenset({"state:buf"}) | LIST


def test_tuples_keep_positions_and_buffers_see_through_them() -> None:
    pair = structured([G, S])
    assert item(pair, 0) == G and item(pair, 1) == S
    assert buffers(pair) == {"grad", "state:buf"}
    assert element(pair) == G | S  # an unknown index: either
    assert flat(structured([pair])) >= {"grad", "state:buf"}


def test_unstructured_contents_reach_every_position() -> None:
    """A tuple joined with a plain value (another path, an append): each position may hold the
    plain value's buffers too; never fewer than the flat value."""
    joined = structured([G, S]) | frozenset({"param"})
    assert item(joined, 0) == G | {"param"} and item(joined, 1) == S | {"param"}


def test_grouped_lists_unpack_per_position() -> None:
    grouped = container(structured([structured([G, S]), frozenset()]), partition=True)
    assert PART in grouped
    pair = element(grouped)
    lists = item(pair, 0)
    assert item(lists, 0) == G and item(lists, 1) == S and item(pair, 1) == frozenset()


def test_imported_functions_resolve_by_origin() -> None:
    cat = load_catalog()
    assert cat.function("typing.cast") is not None
    assert cat.function(".optimizer._get_value") is not None  # torch/optim/adam.py's import
    assert cat.function("torch.optim.Optimizer._group_tensors_by_device_and_dtype") is not None
    assert cat.function("mylib.cast") is None
    assert cat.function("torch.optim.optimizer.cast") is None


def test_scalar_state_keys_accept_torch_optim_step_forms() -> None:
    # the data given to torch.tensor must be a number where it is computed (a name bound
    # elsewhere, or not at all, may be a list: a tensor of any size)
    module = cst.parse_module(
        'def f(self, p, d, capturable, x):\n'
        '    state = self.state[p]\n'
        '    step_val = float(state["step"])\n'
        '    lr = float(self.defaults["lr"])\n'
        '    state["step"] = (torch.zeros((), device=d) if capturable else torch.tensor(0.0))\n'
        '    state["step"] = torch.tensor(step_val, dtype=torch.float32)\n'
        '    state["eta"] = torch.as_tensor(lr, device=d).clone().detach()\n'
        '    state["alias"] = torch.as_tensor(x)\n'  # may alias x: a buffer
        '    state["buf"] = torch.zeros_like(p)\n')
    assert scalar_state_keys(module) == {"step", "eta"}
    unbound = cst.parse_module('state["step"] = torch.tensor(step_val)\n')
    assert scalar_state_keys(unbound) == set()


def test_lambda_parameters_are_not_captured_names() -> None:
    src = parse('''
import torch
from torch.optim import Optimizer


class Opt(Optimizer):
    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                g = p.grad
                scale = list(map(lambda g: 1 - g, (0.9, 0.99)))
                p.add_(g.sign(), alpha=-scale[0])
''', "opt.py")
    ca = analyse_class(src, src.classes[0], load_catalog())
    assert not [e for e in ca.escapes if e[0] == "grad"]
