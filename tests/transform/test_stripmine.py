"""Strip-mining (gsr_rewrite/transform/stripmine/, runtime.strips): temporaries that no dead
buffer can hold run 1/K of their tensors at a time; exact, measured, and refused where a strip
would differ."""

from __future__ import annotations

import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from gsr_rewrite import runtime
from gsr_rewrite.pipeline import compile_source, rewrite_source
from gsr_rewrite.proof.check import MEASURE_SHAPES, compare_trajectories
from gsr_rewrite.proof.memory import measure_temporaries
from gsr_rewrite.proof.validate import load_module

# RMSprop-like: `denom` needs the gradient alive when it is consumed, so no dead buffer exists
HEADER = '''
import torch
from torch.optim import Optimizer


class Opt(Optimizer):
    def __init__(self, params, lr=0.01, alpha=0.9, eps=1e-8, foreach=False):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, foreach=foreach))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, alpha, eps = group["lr"], group["alpha"], group["eps"]
            params, grads, avgs = [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if len(state) == 0:
                    state["avg"] = torch.zeros_like(p)
                    state["step"] = 0
                state["step"] += 1
                params.append(p)
                grads.append(p.grad)
                avgs.append(state["avg"])
'''
FOREACH_AND_LOOP = HEADER + '''
            if group["foreach"]:
                torch._foreach_mul_(avgs, alpha)
                torch._foreach_addcmul_(avgs, grads, grads, value=1 - alpha)
                denom = torch._foreach_sqrt(avgs)
                torch._foreach_add_(denom, eps)
                scale = [lr / (1 + 0.1 * i) for i in range(len(params))]  # a list by position
                torch._foreach_mul_(grads, scale)
                torch._foreach_addcdiv_(params, grads, denom, value=-1.0)
            else:
                for i, p in enumerate(params):
                    grad, avg = grads[i], avgs[i]
                    avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
                    denom = avg.sqrt().add_(eps)
                    p.addcdiv_(grad, denom, value=-lr)
'''


def _compile(source: str) -> tuple[object, type, type]:
    result = compile_source(textwrap.dedent(source), "opt.py")
    assert result.code is not None, [c.reason for c in result.classes]
    with tempfile.TemporaryDirectory() as d:
        file = Path(d) / "opt_r.py"
        file.write_text(result.code)
        module = load_module(file, f"strip_{abs(hash(result.code))}")
    return result, module.Opt, module.OptR


def test_unplaceable_temporary_is_strip_mined_exactly_and_small() -> None:
    result, original, rewritten = _compile(FOREACH_AND_LOOP)
    (outcome,) = result.classes  # type: ignore[attr-defined]
    assert outcome.status == "rewritten"
    assert "proved equal" in outcome.validation  # symbolic proof, one-element strips
    temps = {t.op: t for t in outcome.temporaries}
    assert temps["sqrt"].strips and not temps["sqrt"].placed
    assert "strip-mined" in temps["sqrt"].how and "gradient" in temps["sqrt"].how
    _assert_bitwise_and_small(original, rewritten)


def _assert_bitwise_and_small(original: type, rewritten: type) -> None:
    """Both paths: bitwise over 7 steps; the original allocates at least one param (1/8) or
    one list (1.0) of temporaries per step, the R-variant at most 0.05."""
    for foreach in (False, True):
        res = compare_trajectories(original, rewritten, {"foreach": foreach}, steps=7,
                                   mode="bitwise")
        assert res.passed, res.message
        before = measure_temporaries(lambda ps, f=foreach: original(ps, foreach=f),
                                     MEASURE_SHAPES).units
        after = measure_temporaries(lambda ps, f=foreach: rewritten(ps, foreach=f),
                                    MEASURE_SHAPES).units
        assert before >= 0.12, (foreach, before)
        assert after <= 0.05, (foreach, after)


# NAdam-like: the run holding `denom` also advances host state (a running product kept as
# 0-dim state tensors, and a list built and scaled in place): those lines must run once per step
ONCE_PER_STEP = HEADER.replace('state["step"] = 0', 'state["step"] = 0\n'
                               '                    state["prod"] = torch.ones(())') + """
            prods = [self.state[p]["prod"] for p in params]
            if group["foreach"]:
                torch._foreach_mul_(avgs, alpha)
                torch._foreach_addcmul_(avgs, grads, grads, value=1 - alpha)
                denom = torch._foreach_sqrt(avgs)
                mus = torch._foreach_add(prods, 0.5)  # host: 0-dim tensors
                torch._foreach_mul_(mus, alpha)  # changes a host list: once per step
                torch._foreach_mul_(prods, mus)  # changes optimizer state: once per step
                del mus
                torch._foreach_add_(denom, eps)
                scale = [-lr / (1.0 + float(q)) for q in prods]
                torch._foreach_addcdiv_(params, grads, denom, scale)
            else:
                for p, grad, avg, prod in zip(params, grads, avgs, prods):
                    avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
                    prod.mul_(alpha * (prod + 0.5))
                    p.addcdiv_(grad, avg.sqrt().add_(eps), value=-lr / (1.0 + float(prod)))
"""


def test_host_state_changed_in_a_run_changes_once_per_step() -> None:
    result, original, rewritten = _compile(ONCE_PER_STEP)
    (outcome,) = result.classes  # type: ignore[attr-defined]
    temps = [t for t in outcome.temporaries if t.op == "sqrt"]
    assert temps and all(t.strips for t in temps), [t.how for t in temps]
    assert "if strip_index == 0:" in result.code  # type: ignore[attr-defined]
    with runtime.fine_strips():  # one-element strips: the host lines would run many times
        for foreach in (False, True):
            res = compare_trajectories(original, rewritten, {"foreach": foreach}, steps=7,
                                       mode="bitwise")
            assert res.passed, res.message
    after = measure_temporaries(lambda ps: rewritten(ps, foreach=True), MEASURE_SHAPES).units
    assert after <= 0.05, after


# Rprop-like: comparisons make bool masks (never placed in a float buffer), masked fills and
# loops over list positions run inside the strips; `grads = list(grads)` is read after the
# first run, which then grows to cover the read
LOOPS_AND_MASKS = HEADER + """
            if group["foreach"]:
                signs = torch._foreach_mul(grads, avgs)
                torch._foreach_copy_(avgs, grads)
                torch._foreach_sign_(signs)
                for sign in signs:
                    sign[sign.gt(0)] = 1.2
                    sign[sign.lt(0)] = 0.5
                grads = list(grads)
                for i in range(len(grads)):
                    grads[i].copy_(torch.where(signs[i].eq(0.5), 0, grads[i]))
                del signs
                steps = [g.sign() for g in grads]
                torch._foreach_add_(params, steps, alpha=-lr)
            else:
                for p, grad, avg in zip(params, grads, avgs):
                    sign = grad.mul(avg).sign()
                    avg.copy_(grad)
                    sign[sign.gt(0)] = 1.2
                    grad[sign.eq(-1.0)] = 0
                    p.add_(grad.sign().mul_(sign), alpha=-lr)
"""


def test_masks_and_loops_over_positions_run_in_strips() -> None:
    result, original, rewritten = _compile(LOOPS_AND_MASKS)
    (outcome,) = result.classes  # type: ignore[attr-defined]
    masks = [t for t in outcome.temporaries if t.op in ("gt", "lt", "eq")]
    assert masks and all(t.strips and not t.placed for t in masks), [t.how for t in masks]
    _assert_bitwise_and_small(original, rewritten)


def _reasons(source: str) -> str:
    result = rewrite_source(textwrap.dedent(source), "opt.py")
    return " | ".join(t.how for c in result.classes for t in c.temporaries)


@pytest.mark.parametrize(("body", "why"), [
    ('''
            for p, grad, avg in zip(params, grads, avgs):
                denom = avg.sqrt()
                denom.div_(denom.mean())  # a reduction: one strip's mean is not the tensor's
                p.addcdiv_(grad, denom, value=-lr)
''', "`.mean()` is not per-element"),
    ('''
            for p, grad, avg in zip(params, grads, avgs):
                denom = avg.sqrt()
                # changes host state, and reads the strip: cannot run once, nor once per strip
                self.state[p]["step"] += float(grad.dtype == torch.float32)
                p.addcdiv_(grad, denom, value=-lr)
''', "would run once per strip"),
    ('''
            for p, grad, avg in zip(params, grads, avgs):
                denom = avg.sqrt()
                mask = (denom * grad) > 0  # strip-sized, read after the run
                p.addcdiv_(grad, denom, value=-lr)
                p.sub_(mask.to(p.dtype), alpha=lr)
''', "`mask` is assigned inside the run and may be read after it"),
    ('''
            total = 0.0
            for p, grad, avg in zip(params, grads, avgs):
                denom = avg.sqrt()
                total = total + 1.0  # accumulates once per strip
                p.addcdiv_(grad, denom, value=-lr * total)
''', "`total` is read before the run assigns it"),
    ('''
            for p, grad, avg in zip(params, grads, avgs):
                denom = avg.sqrt()
                p.addcdiv_(grad, torch.flip(denom, [0]), value=-lr)  # elements change places
''', "`torch.flip` is not a per-element op"),
    ('''
            if group["foreach"]:
                denom = torch._foreach_sqrt(avgs)
                scale = [torch.tensor(-lr) for _ in params]
                torch._foreach_div_(denom, scale)  # reads the host list ...
                torch._foreach_mul_(scale, 2.0)  # ... that a later line changes, once per step
                torch._foreach_addcdiv_(params, grads, denom, scale)
''', "changes `scale` after the run read it"),
    ('''
            if group["foreach"]:
                denom = torch._foreach_sqrt(avgs)
                twice = lr_list = [torch.tensor(-lr) for _ in params]
                torch._foreach_div_(denom, lr_list)  # reads, through another name ...
                torch._foreach_mul_(twice, 2.0)  # ... the list this line changes
                torch._foreach_addcdiv_(params, grads, denom, lr_list)
''', "changes `lr_list` after the run read it"),
    ('''
            if group["foreach"]:
                denom = torch._foreach_sqrt(avgs)
                prev = None
                for d in denom:
                    if prev is not None:
                        d.add_(prev)  # the previous position's strip: another shape, maybe
                    prev = d
                torch._foreach_addcdiv_(params, grads, denom, value=-lr)
''', "`prev` goes from one list position to the next"),
])
def test_refused_where_a_strip_would_differ(body: str, why: str) -> None:
    reasons = _reasons(HEADER + body)
    assert "cannot be strip-mined" in reasons and why in reasons, reasons


@pytest.mark.parametrize("body", [
    '''
            for p, grad, avg in zip(params, grads, avgs):
                denom = avg.sqrt()
                p.addcdiv_(grad * SCALE, denom, value=-lr)  # a whole tensor, not cut in strips
''',
    '''
            for p, grad, avg in zip(params, grads, avgs):
                denom = avg.sqrt()
                p.addcdiv_(grad * self.state[p][KEY], denom, value=-lr)  # a key not known
''',
    '''
            for p, grad, avg in zip(params, grads, avgs):
                denom = avg.sqrt()
                p.addcdiv_(grad * self.scale, denom, value=-lr)  # set by whoever: a tensor?
''',
])
def test_must_not_fire_a_run_reading_what_the_analysis_does_not_model(body: str) -> None:
    """A module global bound to a tensor, a state entry under a key the analysis cannot name, an
    attribute of self it does not know to be data: any may be a whole parameter-sized tensor,
    which a strip must not meet."""
    source = HEADER.replace("from torch.optim import Optimizer\n",
                            "from torch.optim import Optimizer\n\nSCALE = torch.ones(3)\n"
                            "KEY = 'avg'\n") + body
    reasons = _reasons(source)
    assert "strip-mined: the" not in reasons, reasons  # (accepted runs say "the N statements")
    assert "it reads an object the analysis does not model" in reasons, reasons


@pytest.fixture
def no_floor() -> Iterator[None]:
    """The strip structure itself: without the run-time floor, small runs are cut too."""
    with runtime.strip_floor(0):
        yield


def test_the_floor_cuts_a_run_into_no_more_strips_than_it_needs() -> None:
    """Temporaries under the floor: one strip (whole tensors, the original's speed); above it,
    as many strips as keep them under it, never more than the emitted count."""
    small = [torch.zeros(64 * 64) for _ in range(8)]  # 128 KiB per operand list
    assert len(list(runtime.strips(128, small, small))) == 1
    with runtime.strip_floor(2**20):  # 2 temporaries of 128 KiB fit under 1 MiB: 1 strip
        assert len(list(runtime.strips(128, small, small))) == 1
    with runtime.strip_floor(64 * 1024):  # 2 x 128 KiB over a 64 KiB floor: 4 strips
        pieces = list(runtime.strips(128, small, small))
        assert len(pieces) == 4
        assert sum(x.numel() for strip in pieces for x in strip[0]) == 8 * 64 * 64
    with runtime.strip_floor(1):
        assert len(list(runtime.strips(128, small, small))) == 64  # 4096 elements, 64-aligned


def test_strips_keep_list_positions_and_cover_every_element(no_floor: None) -> None:
    a = [torch.arange(300.0), torch.arange(5.0), torch.zeros(0)]
    b = [torch.zeros(300), torch.zeros(5), torch.zeros(0)]
    scales = [1.0, 2.0, 3.0]  # goes with a and b position by position
    count = 0
    for xs, ys in runtime.strips(4, a, b):
        assert len(xs) == len(ys) == 3
        assert all(x.numel() <= 128 for x in xs)
        torch._foreach_add_(ys, torch._foreach_mul(xs, scales))
        count += 1
    assert count == 3  # 300 elements in strips of 128 (aligned to 64)
    assert torch.equal(b[0], torch.arange(300.0)) and torch.equal(b[1], 2 * torch.arange(5.0))


def test_strips_yield_whole_tensors_when_they_cannot_be_cut_alike(no_floor: None) -> None:
    t = torch.randn(6, 7).t()  # not contiguous
    u = torch.randn(7, 6)
    (whole,) = list(runtime.strips(8, t, u))
    assert whole[0] is t and whole[1] is u
    (whole,) = list(runtime.strips(8, torch.ones(4), torch.ones(5)))  # shapes differ
    assert whole[0].numel() == 4


def test_items_of_a_list_are_cut_like_the_tensors_and_missing_items_raise(no_floor: None
                                                                          ) -> None:
    grad, avgs = torch.ones(200), [torch.zeros(200)]
    for g, items in runtime.strips(3, grad, runtime.at(avgs, 0)):
        items[0].add_(g)
    assert torch.equal(avgs[0], torch.ones(200))
    for _g, items in runtime.strips(3, grad, runtime.at([], 0)):
        with pytest.raises(IndexError):
            items[0]  # noqa: B018 - as `[][0]` would in the original
