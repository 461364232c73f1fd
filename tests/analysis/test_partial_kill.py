"""Must-not-fire: a gradient is dead only where every element of it is overwritten before the
next read. Writing every element of a view of some of its elements (`grad[0].zero_()`), or of
what may be a copy of it (`grad.float()` of a float64 gradient), leaves the rest to read; and
`p._grad` is the gradient under another name. Each of these, found by adversarial probing, was
taken for a kill or for no read, so the temporary before it went into the gradient that is then
read; under a condition the stress matrix does not meet (params of 64 rows, float64) the
R-variant differed from its original. The R-variants are run where the condition holds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gsr_rewrite.pipeline import rewrite_source
from tests.common import emitted_pair, rms_fixture, steps_on_64x8

_DIV = "p.div_(denom.add_(1.0))"

CASES = {
    # a padding row left out of a plain-gradient correction, for params of >= 64 rows
    "RowZero": _DIV + '''
                if p.dim() == 2 and p.shape[0] >= 64:
                    grad[0].zero_()
                    p.add_(grad, alpha=-group["lr"])''',
    "NarrowZero": _DIV + '''
                if p.dim() == 2 and p.shape[0] >= 64:
                    grad.narrow(0, 0, 1).zero_()
                    p.add_(grad, alpha=-group["lr"])''',
    "NamedRow": _DIV + '''
                if p.dim() == 2 and p.shape[0] >= 64:
                    row = grad[0]
                    row.fill_(0.0)
                    p.add_(grad, alpha=-group["lr"])''',
    # a float32 work buffer: the gradient itself for float32, a copy for float64
    "FloatCopy": _DIV + '''
                buf = grad.float()
                buf.zero_()
                p.add_(grad, alpha=-group["lr"])''',
    "UnderscoreGrad": _DIV + '''
                if p.numel() >= 512:
                    p.add_(p._grad, alpha=-group["lr"])''',
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_must_not_fire_the_gradient_is_read_after_a_write_to_part_or_a_copy_of_it(
        name: str, tmp_path: Path) -> None:
    source = rms_fixture(name, CASES[name])
    (cls,) = rewrite_source(source, f"{name.lower()}.py").classes
    lives = {t.code: t.lives_in for t in cls.temporaries}
    assert lives.get("v.sqrt()") != "gradient", lives
    pair = emitted_pair(source, tmp_path, name)
    for dtype in (torch.float32, torch.float64):
        if pair is not None:
            assert torch.equal(steps_on_64x8(pair[0], dtype)[0], steps_on_64x8(pair[1], dtype)[0])


def test_a_write_to_every_element_of_the_whole_gradient_still_kills_it() -> None:
    source = rms_fixture("WholeZero", _DIV + '''
                grad.zero_()
                p.add_(grad, alpha=-group["lr"])''')
    (cls,) = rewrite_source(source, "wholezero.py").classes
    assert {t.code: t.lives_in for t in cls.temporaries}["v.sqrt()"] == "gradient"
