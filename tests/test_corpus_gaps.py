"""Known gaps of the core, one minimal optimizer each (tests/fixtures/corpus_gaps/), found by the
corpus run on torch.optim, lion_pytorch and adan_pytorch (benchmarks/results/corpus.md).

Each test states the behaviour we want; those the core does not have yet are xfail (not strict, so
a fix shows up as XPASS: then drop the marker). The control case must pass today.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gsr_rewrite.corpus import CorpusRow, run_corpus

GAPS = Path(__file__).resolve().parent / "fixtures" / "corpus_gaps"


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
    pytest.param("nested_function", marks=_xfail("function defined inside step()")),
    "decorated_helper",  # fixed: helpers are emitted callees first
    "imported_base",  # fixed: a subclass adding only __init__ runs its base's R-variant step
    pytest.param("self_attribute_helper",
                 marks=_xfail("self.attr(...) bound in __init__ is not followed (safe: the class "
                              "is left unchanged; it used to be renamed wrongly)")),
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
    from gsr_rewrite.corpus import discover

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
