"""Must-not-fire: reads of a gradient or a temporary that the analysis once did not see, found by
adversarial probing. In each, the R-variant put a temporary in a buffer that one of these then
read: a gradient read inside an f-string, through the keys of `self.state`, through `**{...}`
keyword arguments, in a comprehension's `if` or in its later `for` clauses; reads that run
later than they are written, in a generator function, a `map` of a lambda or a generator
expression consumed after the loop; and temporaries kept by a lambda's default argument or by
an exception's arguments. The R-variants run where the reads happen (params of 512 elements)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.common import emitted_pair, rms_fixture, steps_on_64x8

_GRADS = '''
def _grads(ps):
    for q in ps:
        yield q.grad
'''

_DIV = "p.div_(denom.add_(1.0))"

CASES = {
    "FString": ("pass", _DIV + '''
                if float(f"{p.grad.view(-1)[0].item():.6f}") > 0:
                    p.mul_(0.5)'''),
    "KwUnpack": ("pass", _DIV + '''
                if p.numel() >= 512:
                    p.add_(**{"other": p.grad, "alpha": -group["lr"]})'''),
    "CompIf": ("pass", _DIV + '''
            for q in [q for q in group["params"] if q.grad.sum() > 0]:
                q.mul_(0.5)'''),
    "CompLaterFor": ("pass", _DIV + '''
            sums = [g.sum() for q in group["params"] for g in [q.grad]]
            for q, s in zip(group["params"], sums):
                q.sub_(s * 1e-3)'''),
    "StateKeys": ("pass", _DIV + '''
        for q in self.state:
            if q.grad is not None and q.numel() >= 512:
                q.add_(q.grad, alpha=-0.01)'''),
    "GeneratorHelper": ("late = _grads(group['params'])", _DIV + '''
            for q, g in zip(group["params"], late):
                q.add_(g, alpha=-0.01)'''),
    "MapLambda": ("late = map(lambda q: q.grad, group['params'])", _DIV + '''
            for q, g in zip(group["params"], late):
                q.add_(g, alpha=-0.01)'''),
    "FilterLambda": ("late = filter(lambda q: q.grad.sum() > 0, group['params'])", _DIV + '''
            for q in late:
                q.mul_(0.5)'''),
    "LazyGenerator": ("late = (q.grad.sum() for q in group['params'])", _DIV + '''
            for q, s in zip(group["params"], late):
                q.sub_(s * 1e-3)'''),
    "LambdaDefault": ("pass", '''stat = lambda d=denom: d.sum()
                p.div_(denom.add(1.0))
                out += float(stat())'''),
    "ExceptionArgs": ("pass", '''err = ValueError(denom)
                p.div_(denom.add(1.0))
                out += float(err.args[0].sum())'''),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_must_not_fire_a_read_the_analysis_once_missed(name: str, tmp_path: Path) -> None:
    before, inside = CASES[name]
    pair = emitted_pair(rms_fixture(name, inside, helpers=_GRADS, group_head=before),
                        tmp_path, name)
    for dtype in (torch.float32, torch.float64):
        if pair is not None:
            (a, ra), (b, rb) = steps_on_64x8(pair[0], dtype), steps_on_64x8(pair[1], dtype)
            assert torch.equal(a, b) and ra == rb, (a - b).abs().max()
