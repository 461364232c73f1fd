"""Adversarial suite: realistic optimizers (tests/adversarial/cases/) through compile_source, each
rewritten class checked by an independent lockstep oracle (tests/adversarial/harness.py).

EXPECT = "rewritten": the tool rewrites it (a safe optimizer, or one whose dangerous construct
                      the rewrite respects) and the oracle finds it equal to the original.
EXPECT = "refused":   the tool leaves it alone, with a reason (a construct where reusing a
                      dead-looking buffer could change results, or one it cannot prove).
Any rewritten class that the oracle finds different is a WRONG REWRITE and fails; an outcome
other than the expected one fails too (a precision loss or a new rewrite to review).
"""

from __future__ import annotations

import functools
import importlib.util
import itertools
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from torch.optim import Optimizer

from tests.common import REPO

ROOT = REPO
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from gsr_rewrite.errors import RewriteError  # noqa: E402
from gsr_rewrite.pipeline import compile_source  # noqa: E402
from gsr_rewrite.proof.validate import load_module  # noqa: E402
from tests.adversarial.harness import Verdict, run_pair  # noqa: E402

CASES_DIR = ROOT / "tests" / "adversarial" / "cases"
CASES = sorted(p.stem for p in CASES_DIR.glob("*.py") if not p.stem.startswith("_"))
_counter = itertools.count()


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _target_class(module: ModuleType) -> str:
    if hasattr(module, "CLASS"):
        return module.CLASS
    names = [k for k, v in vars(module).items() if isinstance(v, type) and
             issubclass(v, Optimizer) and v.__module__ == module.__name__]
    assert len(names) == 1, f"case must define exactly one optimizer class, found {names}"
    return names[0]


@dataclass
class Compiled:
    status: str          # rewritten | unchanged | refused | error
    reason: str
    equivalence: str
    code: str | None
    r_name: str


@functools.cache
def _compile(case: str) -> Compiled:
    path = CASES_DIR / f"{case}.py"
    module = _load(path, f"adv_probe_{case}_{next(_counter)}")
    name = _target_class(module)
    try:
        result = compile_source(path.read_text(), str(path))
    except RewriteError as e:  # bad or unsupported input, reported: nothing emitted
        return Compiled("refused", f"RewriteError: {e}", "bitwise", None, name + "R")
    outcome = next((c for c in result.classes if c.name == name), None)
    assert outcome is not None, f"compile_source reported no outcome for {name}"
    return Compiled(outcome.status, outcome.reason, outcome.equivalence, result.code,
                    outcome.r_name)


def _check(case: str, compiled: Compiled) -> Verdict:
    """Fresh original module (its own globals) against a fresh emitted module."""
    path = CASES_DIR / f"{case}.py"
    n = next(_counter)
    original = _load(path, f"adv_orig_{case}_{n}")
    name = _target_class(original)
    assert compiled.code is not None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / f"{case}_r.py"
        out.write_text(compiled.code)
        emitted = load_module(out, f"adv_r_{case}_{n}")
    return run_pair(getattr(original, name), getattr(emitted, compiled.r_name),
                    tolerance=compiled.equivalence == "tolerance", case=original,
                    mod_a=original, mod_b=emitted)


OUTCOMES: dict[str, str] = {}  # case -> outcome line (read by the report script)


@pytest.mark.parametrize("case", CASES)
def test_adversarial_case(case: str, record_property: Any) -> None:
    expect = _load(CASES_DIR / f"{case}.py", f"adv_expect_{case}_{next(_counter)}").EXPECT
    assert expect in ("rewritten", "refused"), expect
    try:
        compiled = _compile(case)
    except Exception as e:  # a crash is neither a refusal nor a rewrite
        OUTCOMES[case] = f"CRASH in compile_source: {type(e).__name__}: {e}"
        raise
    if compiled.status != "rewritten":
        OUTCOMES[case] = f"{compiled.status}: {compiled.reason[:160]}"
        record_property("outcome", OUTCOMES[case])
        assert expect == "refused", (
            f"{case}: a plain safe optimizer was not rewritten ({compiled.status}: "
            f"{compiled.reason})")
        return
    verdict = _check(case, compiled)
    tag = "rewritten&equal" if verdict.ok else "WRONG REWRITE"
    OUTCOMES[case] = f"{tag} ({compiled.equivalence}): {verdict.summary()}"
    record_property("outcome", OUTCOMES[case])
    assert verdict.ok, f"WRONG REWRITE of {case}: {verdict.summary()}"
    assert expect == "rewritten", f"{case}: expected to be refused, but it was rewritten " \
        "(and is equal): review the case and update its EXPECT"


# --------------------------------------------------------------------------- oracle sanity
# Hand-written R-variants, some wrong on purpose: the oracle must catch each wrong one and
# accept the right ones (it must not look at p.grad, which the contract leaves undefined).


class _Adam(Optimizer):
    def __init__(self, params: Any, lr: float = 1e-2, betas: tuple[float, float] = (0.9, 0.99),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        self.calls = 0

    def _update(self, p: torch.Tensor, grad: torch.Tensor, group: dict[str, Any],
                i: int) -> None:
        state = self.state[p]
        if not state:
            state["step"] = 0
            state["m"] = torch.zeros_like(p)
            state["v"] = torch.zeros_like(p)
        state["step"] += 1
        b1, b2 = group["betas"]
        if group["weight_decay"]:
            grad = grad.add(p, alpha=group["weight_decay"])
        state["m"].mul_(b1).add_(grad, alpha=1 - b1)
        state["v"].mul_(b2).addcmul_(grad, grad, value=1 - b2)
        denom = (state["v"] / (1 - b2 ** state["step"])).sqrt_().add_(group["eps"])
        p.addcdiv_(state["m"], denom, value=-group["lr"] / (1 - b1 ** state["step"]))

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        self.calls += 1
        for group in self.param_groups:
            for i, p in enumerate(group["params"]):
                if p.grad is not None:
                    self._update(p, p.grad, group, i)
                    self._after(p, group, i)
        self._end()
        return None

    def _after(self, p: torch.Tensor, group: dict[str, Any], i: int) -> None:
        pass

    def _end(self) -> None:
        pass


class _CorruptsStateOnStep3(_Adam):
    def _end(self) -> None:
        if self.calls == 3:
            for st in self.state.values():
                if st:
                    st["m"].view(-1)[:1] += 1e-3
                    break


class _ScribblesNextGrad(_Adam):
    def _after(self, p: torch.Tensor, group: dict[str, Any], i: int) -> None:
        params = group["params"]
        if i + 1 < len(params) and params[i + 1].grad is not None:
            params[i + 1].grad.mul_(0.5)


class _ScribblesOwnGradAfterUse(_Adam):
    """Right for distinct, disjoint grads; wrong for a duplicated param or overlapping grads."""

    def _after(self, p: torch.Tensor, group: dict[str, Any], i: int) -> None:
        p.grad.fill_(float("nan"))


class _PoisonsAllGradsAtEnd(_Adam):
    """Right: grads are undefined after step(); the oracle must not look at them."""

    def _end(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad.fill_(float("nan"))


class _KeepsOtherLog(_Adam):
    def _end(self) -> None:
        self.calls += 0 if self.calls < 4 else 1  # a self attribute drifts from step 4


class _RaisesOnStep2(_Adam):
    def _end(self) -> None:
        if self.calls == 2:
            raise RuntimeError("boom")


class _OffByOneUlp(_Adam):
    def _end(self) -> None:
        p = self.param_groups[0]["params"][0]
        if self.calls == 6 and p.numel():
            p.view(-1)[0] = torch.nextafter(p.view(-1)[0], torch.tensor(float("inf")))


class _AdamKeepsEMA(_Adam):
    """Right: keeps an EMA of each param in a dict on self keyed by the param."""

    def _after(self, p: torch.Tensor, group: dict[str, Any], i: int) -> None:
        if not hasattr(self, "ema"):
            self.ema = {}
        if p in self.ema:
            self.ema[p].lerp_(p, 0.1)
        else:
            self.ema[p] = p.detach().clone()


class _EMAUnderWrongKey(_AdamKeepsEMA):
    def _after(self, p: torch.Tensor, group: dict[str, Any], i: int) -> None:
        super()._after(p, group, i)
        params = group["params"]
        if self.calls == 2 and i + 1 < len(params):
            self.ema[params[i + 1]] = self.ema.pop(p)  # same values, filed under another param


_GLOBAL_LOG: list[float] = []


class _WritesModuleGlobal(_Adam):
    def _end(self) -> None:
        if self.calls == 5:
            _GLOBAL_LOG.append(1.0)


class _ClassLog(_Adam):
    log: list[int] = []

    def _end(self) -> None:
        self.log.append(self.calls)


class _ClassLogR(_ClassLog):
    log: list[int] = []  # its own list: the R-variant logs as the original does

    def _end(self) -> None:
        self.log.append(self.calls if self.calls != 7 else -1)


@pytest.mark.parametrize("wrong, scenario", [
    (_CorruptsStateOnStep3, "base"),
    (_ScribblesNextGrad, "base"),
    (_ScribblesOwnGradAfterUse, "duplicate-param"),
    (_ScribblesOwnGradAfterUse, "overlapping-grads"),
    (_KeepsOtherLog, "base"),
    (_RaisesOnStep2, "base"),
    (_OffByOneUlp, "base"),
    (_EMAUnderWrongKey, "base"),
    (_ClassLogR, "base"),
])
def test_oracle_catches_wrong_r(wrong: type, scenario: str) -> None:
    base = _AdamKeepsEMA if issubclass(wrong, _AdamKeepsEMA) else \
        _ClassLog if issubclass(wrong, _ClassLog) else _Adam
    if base is _ClassLog:
        _ClassLog.log.clear()
        _ClassLogR.log.clear()
    verdict = run_pair(base, wrong, scenarios=[scenario])
    assert not verdict.ok, f"oracle missed {wrong.__name__} in {scenario}: {verdict.summary()}"


def test_oracle_compares_module_globals() -> None:
    """The two modules' mutable globals are compared (here: this module against a copy)."""
    import types

    shadow = types.ModuleType("shadow")
    shadow._GLOBAL_LOG = []  # type: ignore[attr-defined]
    this = sys.modules[__name__]
    _GLOBAL_LOG.clear()
    verdict = run_pair(_Adam, _WritesModuleGlobal, scenarios=["base"], mod_a=shadow, mod_b=this)
    _GLOBAL_LOG.clear()
    assert not verdict.ok and "_GLOBAL_LOG" in verdict.first, verdict.summary()


def test_oracle_ulp_needs_bitwise() -> None:
    assert run_pair(_Adam, _OffByOneUlp, tolerance=True, scenarios=["base"]).ok


@pytest.mark.parametrize("base, right", [(_Adam, _Adam), (_Adam, _PoisonsAllGradsAtEnd),
                                         (_AdamKeepsEMA, _AdamKeepsEMA)])
def test_oracle_accepts_right_r(base: type, right: type) -> None:
    verdict = run_pair(base, right)
    assert verdict.ok, verdict.summary()
    assert not verdict.not_applicable, verdict.summary()
    assert len(verdict.ran) == 7, verdict.summary()


def test_oracle_own_grad_scribble_fine_without_aliasing() -> None:
    verdict = run_pair(_Adam, _ScribblesOwnGradAfterUse,
                       scenarios=["base", "flat-bucket-grads", "autograd-accumulate", "bf16"])
    assert verdict.ok, verdict.summary()
