"""Optimizers whose base class, with the helpers their step calls, is in another module of their
package (tests/fixtures/intermediate_base): found, rewritten, certified, equal to the original,
and the R class a subclass of the original; a base helper that keeps the gradient keeps every
temporary out of it."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest

from gsr_rewrite.outcome import ClassOutcome, RewriteResult
from gsr_rewrite.proof.check import compare_trajectories
from gsr_rewrite.proof.validate import load_module
from tests.common import TESTS, compiled_fixture

PACKAGE = "tests.fixtures.intermediate_base"
FIXTURES = TESTS / "fixtures" / "intermediate_base"


def _compiled(name: str, importable: bool) -> RewriteResult:
    return compiled_fixture(PACKAGE, name, importable)


def _emitted(result: RewriteResult, tmp_path: Path, tag: str) -> Any:
    assert result.code is not None
    path = tmp_path / f"{tag}_r.py"
    path.write_text(result.code)
    return load_module(path, f"gsr_intermediate_{tag}_{abs(hash(result.code))}")


def _outcome(result: RewriteResult, name: str) -> ClassOutcome:
    return next(c for c in result.classes if c.name == name)


CONFIGS: dict[str, list[dict[str, Any]]] = {
    "AdamLike": [{}, {"weight_decay": 0.1}, {"weight_decay": 0.1, "decoupled": True},
                 {"maximize": True, "lr": 0.01}],
    "RMSpropLike": [{}, {"weight_decay": 0.1, "maximize": True}],
}


@pytest.mark.parametrize("importable", [True, False])
@pytest.mark.parametrize(("name", "cls"), [("adam_like", "AdamLike"),
                                           ("rmsprop_like", "RMSpropLike")])
def test_rewritten_certified_and_equal(name: str, cls: str, importable: bool,
                                       tmp_path: Path) -> None:
    result = _compiled(name, importable)
    outcome = _outcome(result, cls)
    assert outcome.status == "rewritten", outcome.reason
    assert outcome.equivalence == "bitwise"
    assert "passed the stress matrix" in outcome.validation  # certified by compile_source
    # a parameter-sized temporary lives in the gradient buffer now
    assert any(t.placed and t.lives_in == "gradient" for t in outcome.temporaries), \
        outcome.temporaries
    module = _emitted(result, tmp_path, f"{name}_{importable}")
    original = getattr(importlib.import_module(f"{PACKAGE}.{name}"), cls)
    r_cls = getattr(module, f"{cls}R")
    if importable:  # the module is imported, not copied: the R class derives from the original
        assert module.__dict__[cls] is original and issubclass(r_cls, original)
        assert f"from {PACKAGE}.{name} import {cls}" in result.code  # type: ignore[operator]
    else:  # a copy of the module, importing what the base's code needs from base.py
        assert issubclass(r_cls, getattr(module, cls))
    for kwargs in CONFIGS[cls]:
        res = compare_trajectories(original, r_cls, kwargs, steps=7, mode="bitwise")
        assert res.passed, (kwargs, res.message)


def test_the_base_helper_is_rewritten_in_the_r_class_only(tmp_path: Path) -> None:
    """RMSpropLike's update temporary is in base.py's `_scaled_step`: the R class holds its
    rewritten copy under a new name that only the R step calls; the base, its other subclasses
    and the original step (which r_step runs where the R step would not be exact) keep the
    original helper."""
    result = _compiled("rmsprop_like", True)
    outcome = _outcome(result, "RMSpropLike")
    (helper_temp,) = [t for t in outcome.temporaries if t.function == "self._scaled_step"]
    assert helper_temp.placed and helper_temp.lives_in == "gradient"
    module = _emitted(result, tmp_path, "rmsprop_helper")
    base = importlib.import_module(f"{PACKAGE}.base")
    r_cls = module.RMSpropLikeR
    assert "_scaled_step_gsr" in vars(r_cls) and "_scaled_step" not in vars(r_cls)
    assert r_cls._scaled_step is base.BaseOptimizer._scaled_step
    assert not hasattr(base.BaseOptimizer, "_scaled_step_gsr")
    # the base's own module is untouched: the R module imports nothing from it but what it uses
    assert "class BaseOptimizer" not in (result.code or "")


def test_must_not_fire_base_helper_keeps_the_gradient() -> None:
    """`self.state[p]["g"] = grad` and `self.saved = grad` in base.py: the gradient escapes,
    so `_scaled_step`'s update (which goes in the gradient for RMSpropLike) must not."""
    result = _compiled("recording", True)
    for cls in ("RecordingRMSprop", "SavingRMSprop"):
        outcome = _outcome(result, cls)
        assert not any(t.lives_in == "gradient" for t in outcome.temporaries), outcome.temporaries
        assert outcome.analysis is not None
        escapes = [(why, where) for b, why, where in outcome.analysis.escapes if b == "grad"]
        assert any(where.startswith(str(FIXTURES / "base.py")) for _, where in escapes), escapes
    assert "stored in optimizer state" in str(_outcome(result, "RecordingRMSprop").temporaries)
    assert "stored on attribute `.saved`" in str(_outcome(result, "SavingRMSprop").temporaries)
