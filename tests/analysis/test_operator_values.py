"""What Python's operators give when applied to tensors (session 20): each was taken for a bool
or a number, so the planner saw no tensor where there was one. Translation validation caught
both (the class was refused); the plan itself must be right:

- `+t` is `t` itself (`torch.positive`): a name bound to `+p.grad` reads the gradient later, so
  no temporary may move into it before;
- `g > 0` (and `~mask`) is a new tensor of the operands' shape: a mask made from it is a tensor
  operand of what it is combined with, so a guard compares its dtype with the host's (a float64
  mask times a float32 gradient made in the gradient would round where the original does not).
"""

from __future__ import annotations

import pytest

from gsr_rewrite.outcome import ClassOutcome
from gsr_rewrite.pipeline import rewrite_source

SOURCE = '''
import torch
from torch.optim import Optimizer


class Probe(Optimizer):
    def __init__(self, params, lr=0.1):
        super().__init__(params, dict(lr=lr))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
{body}
'''

ALIAS = '''\
                a = +g
                t = g * 2
                p.add_(t, alpha=-group["lr"])
                p.add_(a, alpha=-group["lr"])
'''
NO_ALIAS = ALIAS.replace("a = +g", "a = -g")  # a new tensor: the gradient is dead after `g * 2`

MASK = '''\
                m = {mask}
                upd = g * m
                p.add_(upd, alpha=-group["lr"])
'''


def _outcome(body: str) -> ClassOutcome:
    (cls,) = rewrite_source(SOURCE.format(body=body), "probe.py").classes
    return cls


def _one(cls: ClassOutcome, code: str) -> tuple[bool, str, str]:
    (t,) = [t for t in cls.temporaries if t.code == code]
    return t.placed, t.lives_in, t.how


def test_unary_plus_aliases_its_operand() -> None:
    cls = _outcome(ALIAS)
    placed, lives_in, how = _one(cls, "g * 2")
    assert cls.status == "rewritten", cls.reason  # the plan held: validation had nothing to undo
    assert not (placed and lives_in == "gradient"), how


def test_must_fire_a_negated_copy_leaves_the_gradient_dead() -> None:
    cls = _outcome(NO_ALIAS)
    placed, _, how = _one(cls, "g * 2")
    assert cls.status == "rewritten" and placed, how


@pytest.mark.parametrize("mask", ["(g > 0).double() * 0.1", "(~(g > 0)).double() * 0.1",
                                  "(0 < g).to(torch.float64) * 0.1", "(g > 0).float()"])
def test_a_comparison_of_tensors_is_a_tensor_operand(mask: str) -> None:
    result = rewrite_source(SOURCE.format(body=MASK.format(mask=mask)), "probe.py")
    (cls,) = result.classes
    assert cls.status == "rewritten" and result.code is not None, cls.reason
    placed, lives_in, how = _one(cls, "g * m")
    assert placed and lives_in == "gradient", how
    guards = [line.strip() for line in result.code.splitlines() if "# gsr: mul" in line]
    assert guards == ["if _gsr.fits((g,), (m,)):  # gsr: mul -> gradient"], guards
    comparisons = [t for t in cls.temporaries if t.op in ("gt", "lt")]
    assert comparisons and not any(t.placed for t in comparisons)  # a mask holds bools


def test_comparisons_of_numbers_stay_host_values() -> None:
    """`if group["lr"] > 0`, `k < 3`: no tensor, no temporary."""
    cls = _outcome('''\
                if group["lr"] > 0 and len(group["params"]) < 3:
                    p.add_(g, alpha=-group["lr"])
''')
    assert cls.temporaries == [] or all(t.op not in ("gt", "lt") for t in cls.temporaries)


SET_ALIAS = '''\
                a = next(iter({make}))
                t = g * 2
                p.add_(t, alpha=-group["lr"])
                p.add_(a, alpha=-group["lr"])
'''


@pytest.mark.parametrize("make", ["set([g])", "frozenset((g,))", "{g}"])
def test_a_set_of_the_gradient_keeps_it_out_of_reach(make: str) -> None:
    """`set(xs)` is read as `{x, ...}` is: what goes in escapes (no temporary in it)."""
    cls = _outcome(SET_ALIAS.format(make=make))
    placed, lives_in, how = _one(cls, "g * 2")
    assert not (placed and lives_in == "gradient"), how


def test_a_set_of_host_values_touches_no_gradient() -> None:
    """timm's `len(set(step_sizes)) == 1`: hashing numbers reaches no gradient (it was an
    unknown function that could reach every one, so no temporary went into any)."""
    cls = _outcome('''\
                sizes = [group["lr"], 0.5 * group["lr"]]
                t = g * 2
                if len(set(sizes)) == 1:
                    p.add_(t, alpha=-sizes[0])
                else:
                    p.add_(t, alpha=-sizes[1])
''')
    placed, lives_in, how = _one(cls, "g * 2")
    assert cls.status == "rewritten" and placed and lives_in == "gradient", how


AFTER_UPDATE = '''\
                t = g * 2
                p.add_(t, alpha=-group["lr"])
                n = {after}
'''


@pytest.mark.parametrize("after", ['len(group["params"])', "len(self.param_groups)",
                                   'isinstance(group["params"], list)',
                                   'type(group["params"][0])', 'len(group["params"][0].grad)'])
def test_looking_at_other_params_as_objects_reads_no_gradient(after: str) -> None:
    """`len(group["params"])` in a per-parameter loop: the length reaches no other param's
    buffers, so the loop stays per-element and the gradient is dead after its last read."""
    placed, lives_in, how = _one(_outcome(AFTER_UPDATE.format(after=after)), "g * 2")
    assert placed and lives_in == "gradient", how


@pytest.mark.parametrize("after", ['group["params"]', 'len([q.grad.sum() for q in '
                                   'group["params"]])', 'len(group["params"][0].grad.sum(0))',
                                   'float(group["params"][0].grad.sum())'])
def test_reading_other_params_keeps_the_gradient_live(after: str) -> None:
    """A later iteration may read a gradient an earlier one used as scratch: no placement."""
    placed, lives_in, how = _one(_outcome(AFTER_UPDATE.format(after=after)), "g * 2")
    assert not (placed and lives_in == "gradient"), how


@pytest.mark.parametrize("mask", ["torch.full(g.shape, 0.1, dtype=torch.float64)",
                                  "torch.ones(g.shape, dtype=torch.float64) * 0.1",
                                  "g.new_full(g.shape, 0.1, dtype=torch.float64)",
                                  "torch.tensor([0.1], dtype=torch.float64)",
                                  "torch.tensor(0.1, dtype=torch.float64).view(1)",
                                  "g.double().abs().amax(keepdim=True)",
                                  "abs(g.double())", "torch.rand(g.shape, dtype=torch.float64)",
                                  "g.new_tensor(g, dtype=torch.float64)",
                                  "g.new_tensor(g).double()", "(0.3 + 0j) * 1.0",
                                  "torch.tensor(vals, dtype=torch.float64)",
                                  "torch.tensor(-g, dtype=torch.float64)"])
def test_a_made_tensor_of_dimensions_is_a_tensor_operand(mask: str) -> None:
    """Made from sizes or data, a tensor of dimensions decides a product's dtype (a 0-d one
    does not, nor does a number): where `g * m` goes into the gradient, m is guarded."""
    body = "                vals = [0.3]\n" + MASK.format(mask=mask)  # a list in a name
    result = rewrite_source(SOURCE.format(body=body), "probe.py")
    guards = [line.strip() for line in (result.code or "").splitlines() if "# gsr: mul" in line]
    assert all("(m,)" in line for line in guards), guards


@pytest.mark.parametrize("scalar", ["torch.tensor(0.1, dtype=torch.float64)",
                                    "torch.tensor(-group['lr'], dtype=torch.float64)",
                                    "g.new_zeros(()) + 0.1", "g.double().norm()"])
def test_a_made_0d_tensor_is_a_host_scalar(scalar: str) -> None:
    """0-d: it broadcasts like a number and leaves a float32 product float32."""
    result = rewrite_source(SOURCE.format(body=MASK.format(mask=scalar)), "probe.py")
    guards = [line.strip() for line in (result.code or "").splitlines() if "# gsr: mul" in line]
    assert guards == ["if _gsr.fits((g,), ()):  # gsr: mul -> gradient"], guards


@pytest.mark.parametrize("mask", ["torch.tensor(0.3, dtype=torch.float64)[None]",
                                  "math.prod([torch.tensor([0.3], dtype=torch.float64)])"])
def test_an_axis_added_or_a_product_of_tensors_is_a_tensor_operand(mask: str) -> None:
    """`t0d[None]` has a dimension; `math.prod([t])` is `1 * t`, a tensor (a probe's)."""
    body = "                import math\n" + MASK.format(mask=mask)
    result = rewrite_source(SOURCE.format(body=body), "probe.py")
    guards = [line.strip() for line in (result.code or "").splitlines() if "# gsr: mul" in line]
    assert all("(m,)" in line for line in guards), guards
