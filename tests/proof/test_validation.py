"""Translation validation (stage 6): emitted rewrites are proved equal, wrong ones are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from gsr_rewrite.pipeline import compile_source, rewrite_source
from gsr_rewrite.proof.validate import load_module, prove_class
from tests.common import REPO


def test_shipped_variants_are_proved_equal() -> None:
    from gsr_rewrite.optim import AdamW, AdamWR, Adan, AdanR

    for orig, rvar in ((AdamW, AdamWR), (Adan, AdanR)):
        proof = prove_class(orig, rvar)
        assert proof.proved is True, proof.detail


def test_a_wrong_rewrite_is_caught(tmp_path: Path) -> None:
    code = rewrite_source((REPO / "examples" / "adamw.py").read_text(), "adamw.py").code
    assert code is not None
    good = "denom = torch.sqrt(exp_avg_sq, out=grad)"
    assert good in code
    wrong = code.replace(good, "denom = torch.sqrt(exp_avg_sq.mul(1.5), out=grad)")
    path = tmp_path / "wrong_adamw.py"
    path.write_text(wrong)
    module = load_module(path, "wrong_adamw")
    proof = prove_class(module.AdamW, module.AdamWR)
    assert proof.proved is False
    assert "differs" in proof.detail and "param" in proof.detail


def test_compile_source_reports_the_verdict() -> None:
    result = compile_source((REPO / "tests" / "golden" / "momentum_loop" / "before.py")
                            .read_text(), "before.py")
    (c,) = result.classes
    assert c.status == "rewritten"
    assert c.validation.startswith("proved equal by symbolic execution")


def test_a_proof_past_its_time_budget_leaves_the_stress_matrix_to_decide(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Symbolic execution stops at its budget (timm's Lamb swelled for minutes): the proof says
    it could not run, and certification rests on the stress matrix, which still catches a wrong
    rewrite."""
    from gsr_rewrite.optim import Lion, LionR
    from gsr_rewrite.proof import validate

    monkeypatch.setattr(validate, "PROOF_BUDGET_S", 0.0)
    proof = prove_class(Lion, LionR)
    assert proof.proved is None and "time budget" in proof.detail
    assert validate.certify(Lion, LionR, mode="tolerance").ok  # LionR's rule: within tolerance
    code = rewrite_source((REPO / "examples" / "adamw.py").read_text(), "adamw.py").code
    assert code is not None
    path = tmp_path / "wrong_adamw.py"
    path.write_text(code.replace("denom = torch.sqrt(exp_avg_sq, out=grad)",
                                 "denom = torch.sqrt(exp_avg_sq.mul(1.5), out=grad)"))
    module = load_module(path, "wrong_adamw_budget")
    assert not validate.certify(module.AdamW, module.AdamWR).ok
