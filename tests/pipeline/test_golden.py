"""Golden before/after tests, and must-not-fire cases.

Each tests/golden/CASE/before.py is rewritten; the emitted module and the report must equal
tests/golden/CASE/expected.txt. Regenerate with
`GSR_REGEN_GOLDEN=1 pytest tests/pipeline/test_golden.py` and review the diff. Every emitted
rewrite is also run against its original (bitwise).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gsr_rewrite.cli.report import to_text
from gsr_rewrite.pipeline import rewrite_source
from gsr_rewrite.proof.check import compare_trajectories
from gsr_rewrite.proof.validate import load_module
from tests.common import TESTS

GOLDEN = TESTS / "golden"
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "before.py").exists())
#: the gradient must not hold any temporary in these (it is still read, or it escapes)
MUST_NOT_FIRE = {"read_after_reuse", "grad_in_state", "grad_to_unknown_fn", "view_used_later",
                 "alias_bound_later", "list_of_lists_loop", "cast_not_from_typing",
                 "closure_reads_grad_late", "closure_passed_as_value",
                 "closure_reads_all_grads"}


def _render(case: str) -> tuple[str, str | None]:
    source = (GOLDEN / case / "before.py").read_text()
    result = rewrite_source(source, "before.py")
    text = (result.code or "# (no module emitted)\n") + "\n# ---- report ----\n"
    text += "".join(f"# {line}\n" for line in to_text(result, {}, None, verbose=True).splitlines())
    return text, result.code


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text, code = _render(case)
    expected = GOLDEN / case / "expected.txt"
    if os.environ.get("GSR_REGEN_GOLDEN"):
        expected.write_text(text)
    assert expected.exists(), f"no golden for {case}; run with GSR_REGEN_GOLDEN=1"
    assert text == expected.read_text(), f"{case}: output differs from its golden"
    if code is not None:
        path = tmp_path / f"{case}_r.py"
        path.write_text(code)
        monkeypatch.syspath_prepend(str(GOLDEN / case))  # stubs of what before.py imports
        module = load_module(path, f"golden_{case}")
        result = rewrite_source((GOLDEN / case / "before.py").read_text(), "before.py")
        for c in result.classes:
            if c.status == "rewritten":
                res = compare_trajectories(getattr(module, c.name), getattr(module, c.r_name),
                                           {}, steps=7, mode="bitwise")
                assert res.passed, res.message


@pytest.mark.parametrize("case", sorted(MUST_NOT_FIRE))
def test_must_not_fire_keeps_the_gradient(case: str) -> None:
    result = rewrite_source((GOLDEN / case / "before.py").read_text(), "before.py")
    temps = [t for c in result.classes for t in c.temporaries]
    assert temps, "the case must contain a temporary that could have gone into the gradient"
    assert not any(t.placed and t.lives_in == "gradient" for t in temps)
    reasons = " ".join(t.how for t in temps) + " ".join(c.reason for c in result.classes)
    assert "gradient" in reasons  # the report says why the gradient was not used


def test_fires_where_the_gradient_is_dead() -> None:
    for case in ("momentum_loop", "foreach_into", "rebinding_chain", "adan_prev_grad"):
        result = rewrite_source((GOLDEN / case / "before.py").read_text(), "before.py")
        assert all(c.status == "rewritten" for c in result.classes), case
        assert all(t.placed for c in result.classes for t in c.temporaries), case
