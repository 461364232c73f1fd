"""Helpers with decorators (tests/fixtures/decorated): a `@torch.compile`d helper is analysed
and left as it is while the step around it is rewritten; a module's own `no_grad` is not
torch's, so the gradients its wrapper reads after the helper returns stay out of scratch."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from gsr_rewrite.outcome import ClassOutcome, RewriteResult
from gsr_rewrite.proof.check import compare_trajectories
from gsr_rewrite.proof.validate import load_module
from gsr_rewrite.transform.plan import COMPILED
from tests.common import compiled_fixture

PACKAGE = "tests.fixtures.decorated"


def _outcome(result: RewriteResult, name: str) -> ClassOutcome:
    return next(c for c in result.classes if c.name == name)


def _r_module(result: RewriteResult, tmp_path: Path, tag: str) -> object:
    assert result.code is not None
    path = tmp_path / f"{tag}_r.py"
    path.write_text(result.code)
    return load_module(path, f"gsr_decorated_{tag}_{abs(hash(result.code))}")


@pytest.mark.parametrize("importable", [True, False])
def test_a_compiled_helper_is_followed_and_left_alone(importable: bool, tmp_path: Path) -> None:
    result = compiled_fixture(PACKAGE, "compiled_helper", importable)
    outcome = _outcome(result, "NormalizedMomentum")
    assert outcome.status == "rewritten", outcome.reason
    lives = {t.function: t for t in outcome.temporaries}
    assert lives["step"].lives_in == "gradient"  # the compiled call let go of the gradient
    inside = lives["normalized"]
    assert not inside.placed and not inside.strips and inside.how == COMPILED
    assert result.code is not None and "normalized_gsr" not in result.code
    module = _r_module(result, tmp_path, f"compiled_{importable}")
    original = importlib.import_module(f"{PACKAGE}.compiled_helper").NormalizedMomentum
    for kwargs in ({}, {"lr": 0.1, "beta": 0.5}):
        res = compare_trajectories(original, module.NormalizedMomentumR,  # type: ignore[attr-defined]
                                   kwargs, steps=7, mode="bitwise")
        assert res.passed, (kwargs, res.message)


def test_must_not_fire_a_compiled_helper_that_keeps_the_gradient() -> None:
    result = compiled_fixture(PACKAGE, "compiled_keeper", True)
    outcome = _outcome(result, "KeepingMomentum")
    assert outcome.analysis is not None and "remember" in outcome.analysis.functions
    assert any(b == "grad" for b, _, _ in outcome.analysis.escapes)
    assert not any(t.lives_in == "gradient" for t in outcome.temporaries), outcome.temporaries


def test_must_not_fire_a_modules_own_no_grad(tmp_path: Path) -> None:
    result = compiled_fixture(PACKAGE, "own_no_grad", True)
    wrapped = _outcome(result, "WrappedMomentum")
    assert wrapped.analysis is not None
    assert any(b == "grad" and "`no_grad`" in why for b, why, _ in wrapped.analysis.escapes)
    assert not any(t.lives_in == "gradient" for t in wrapped.temporaries), wrapped.temporaries
    plain = _outcome(result, "PlainMomentum")  # torch's no_grad, imported under another name
    assert [t.lives_in for t in plain.temporaries] == ["gradient"]
    module = _r_module(result, tmp_path, "own_no_grad")
    fixture = importlib.import_module(f"{PACKAGE}.own_no_grad")
    for name in ("WrappedMomentum", "PlainMomentum"):
        res = compare_trajectories(getattr(fixture, name), getattr(module, name + "R"), {},
                                   steps=7, mode="bitwise")
        assert res.passed, (name, res.message)
