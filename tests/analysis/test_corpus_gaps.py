"""Known gaps of the core, one minimal optimizer each (tests/fixtures/corpus_gaps/), found by the
corpus run on torch.optim, lion_pytorch and adan_pytorch (benchmarks/results/corpus.md).

Each test states the behaviour we want; those the core does not have yet are xfail (not strict, so
a fix shows up as XPASS: then drop the marker). The control case must pass today.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gsr_rewrite.corpus.runner import CorpusRow, run_corpus
from tests.common import TESTS

GAPS = TESTS / "fixtures" / "corpus_gaps"


def _row(name: str) -> CorpusRow:
    rows = run_corpus([str(GAPS / f"{name}.py")], steps=4, quick=True)
    assert len(rows) == 1, rows
    return rows[0]


def _xfail(why: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=False, reason=why)


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GSR_REWRITE_CACHE_DIR", str(tmp_path / "cache"))


@pytest.mark.parametrize("name", [
    "control_inline",
    "out_param_lists",  # fixed: what a helper appends to its list parameters reaches the caller
    "imported_helper",  # fixed: typing.cast and torch's grouping helper are in the op catalog
    "filter_lambda",  # fixed: filter() passes its iterable through
    pytest.param("comprehension_temporary", marks=_xfail("comprehension temporaries ignored")),
    "catalog_gaps",  # fixed: sgn, full_like and the new_* constructors are in the catalog
    "nested_function",  # fixed: a function defined in step() is analysed like a helper
    "nested_appends",  # what a nested function appends to step's lists reaches step
    "decorated_helper",  # fixed: helpers are emitted callees first
    "imported_base",  # fixed: a subclass adding only __init__ runs its base's R-variant step
    "self_attribute_helper",  # fixed: self.f = f in __init__ is followed (checked at run time)
    "self_attribute_rebound_in_init",
    "state_passed_to_helper",  # fixed: every state buffer step touches outlives it
])
def test_gap_is_rewritten_and_equivalent(name: str) -> None:
    row = _row(name)
    assert row.status == "rewritten", (row.status, row.reason, row.detail)
    assert row.equivalence == "bitwise", row.detail
    assert row.after_units is not None and row.after_units <= 0.05, row.units


def test_scalar_tensor_state_is_not_a_temporary() -> None:
    row = _row("scalar_tensor_state")
    assert row.status == "unchanged", (row.status, row.reason)


def test_starred_tuple_keeps_a_tensor_lr_intact() -> None:
    from gsr_rewrite.api import rewrite_module
    from gsr_rewrite.corpus.runner import discover

    [found], _ = discover([str(GAPS / "starred_tuple.py")])
    rewritten = rewrite_module(found.module)
    assert rewritten.module is not None
    r_cls = rewritten.module.SignMomentumR
    gen = torch.Generator().manual_seed(0)
    p_o = torch.nn.Parameter(torch.randn(5, generator=gen))
    p_r = torch.nn.Parameter(p_o.detach().clone())
    opt_o = found.cls([p_o], lr=torch.tensor(0.01))
    opt_r = r_cls([p_r], lr=torch.tensor(0.01))
    for _ in range(3):
        g = torch.randn(5, generator=gen)
        p_o.grad, p_r.grad = g.clone(), g.clone()
        opt_o.step()
        opt_r.step()
    assert opt_r.param_groups[0]["lr"].item() == pytest.approx(0.01)
    assert torch.equal(p_o, p_r)


def test_self_attribute_rebound_in_init_runs_the_original_step() -> None:
    """`self.update_fn` bound to another function: the R step runs the original, which keeps
    the gradient intact (the other function reads it after the update); bound to the analysed
    function, the R step runs and uses the gradient as scratch."""
    from gsr_rewrite.api import rewrite_module
    from gsr_rewrite.corpus.runner import discover

    [found], _ = discover([str(GAPS / "self_attribute_rebound_in_init.py")])
    rewritten = rewrite_module(found.module)
    assert rewritten.module is not None
    mod = rewritten.module
    for other in (False, True):
        gen = torch.Generator().manual_seed(0)
        p_o = torch.nn.Parameter(torch.randn(6, generator=gen))
        p_r = torch.nn.Parameter(p_o.detach().clone())
        opt_o = mod.SignMomentum([p_o], reads_grad_after=other)
        opt_r = mod.SignMomentumR([p_r], reads_grad_after=other)
        for _ in range(3):
            g = torch.randn(6, generator=gen)
            p_o.grad, p_r.grad = g.clone(), g.clone()
            opt_o.step()
            opt_r.step()
            assert torch.equal(p_o, p_r)
            assert torch.equal(p_r.grad, g) == other  # scratch only on the analysed path


def test_nested_function_is_emitted_inside_step_with_its_guard() -> None:
    from gsr_rewrite.pipeline import rewrite_source

    result = rewrite_source((GAPS / "nested_function.py").read_text(), "nested_function.py")
    assert result.code is not None
    r_step = result.code[result.code.index("class SignMomentumR"):]
    assert "def apply(param, b):" in r_step and "torch.sign(b, out=param.grad)" in r_step
    assert "apply_gsr" not in result.code and result.code.count("def apply(") == 2
