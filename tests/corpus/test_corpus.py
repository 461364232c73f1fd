"""The Python API (`reduce`, `rewrite_text`) and the corpus runner, on a reduced corpus (< 60 s)."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import gsr_rewrite.optim.adamw as shipped  # the reference AdamW (not torch's)
from gsr_rewrite.api import cache_dir, classes, reduce, rewrite_text, step_owner
from gsr_rewrite.corpus.command import main
from gsr_rewrite.corpus.runner import CorpusRow, run_corpus
from gsr_rewrite.errors import RewriteError
from gsr_rewrite.proof.check import compare_trajectories
from tests.common import REPO

STATUSES = {"rewritten", "unchanged", "refused", "error"}

@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("GSR_REWRITE_CACHE_DIR", str(root))
    monkeypatch.setattr(classes, "_REDUCED", {})  # nothing reduced earlier in this process counts
    return root / "generated"


def _module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, code: str) -> None:
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(code))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop(name, None)


# -- reduce() and rewrite_text() ------------------------------------------------------------------
def test_rewrite_text_matches_the_pipeline() -> None:
    source = (REPO / "examples" / "adamw.py").read_text()
    result = rewrite_text(source, "adamw.py")
    assert result.code is not None and "class AdamWR(AdamW)" in result.code
    assert [c.status for c in result.classes] == ["rewritten"]


def test_reduce_shipped_adamw(private_cache: Path) -> None:
    r_cls = reduce(shipped.AdamW)
    assert r_cls.__name__ == "AdamWR" and issubclass(r_cls, shipped.AdamW)
    assert cache_dir() == private_cache
    # the emitted module and its outcome; the verdict for the class moved onto shipped.AdamW
    assert sorted(p.name.split("_")[0] + p.suffix for p in private_cache.iterdir()) == \
        ["certified.json", "gsr.json", "gsr.py"]
    for foreach in (False, True):
        result = compare_trajectories(shipped.AdamW, r_cls, {"foreach": foreach})
        assert result.passed, result.summary
    assert reduce(shipped.AdamW) is r_cls  # cached: same module, same class object


def test_reduce_refuses_a_class_that_fails_certification(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No class without proof: a failed stress matrix refuses the class when it is emitted."""
    import gsr_rewrite.proof.check as check

    def failing(original: type, rewritten: type, **kw: object) -> list[check.CheckResult]:
        return [check.CheckResult("AdamW->AdamWR stress", {}, "cpu", 8, "bitwise", 1.0,
                                  False, "param[0] differs")]

    monkeypatch.setenv("GSR_REWRITE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(check, "stress_matrix", failing)
    monkeypatch.setattr(classes, "_REDUCED", {})  # forget the classes reduced earlier in-process
    with pytest.raises(RewriteError, match=r"AdamW was not rewritten \(refused\): failed the "
                       r"stress matrix .*param\[0\] differs"):
        reduce(shipped.AdamW)


def test_reduce_torch_adamw() -> None:
    """AdamW is `class AdamW(Adam)` adding only `__init__`: it runs Adam's R-variant step."""
    r_cls = reduce(torch.optim.AdamW)
    assert r_cls.__name__ == "AdamWR" and issubclass(r_cls, torch.optim.AdamW)
    for foreach in (False, True):
        assert compare_trajectories(torch.optim.AdamW, r_cls, {"foreach": foreach}).passed


def test_step_owner_only_for_subclasses_that_add_construction() -> None:
    class Defaults(torch.optim.Adam):
        def __init__(self, params: object, lr: float = 0.1, foreach: bool = True) -> None:
            super().__init__(params, lr=lr, foreach=foreach)  # type: ignore[arg-type]

    class OwnGroup(torch.optim.Adam):  # step calls self._init_group: overriding it changes step
        def _init_group(self, *args: object) -> bool:
            return bool(super()._init_group(*args))  # type: ignore[arg-type]

    assert step_owner(Defaults) is torch.optim.Adam
    assert step_owner(torch.optim.Adam) is None  # its own step
    assert step_owner(OwnGroup) is None
    r_cls = reduce(Defaults)
    assert issubclass(r_cls, Defaults) and r_cls.__init__ is Defaults.__init__
    for foreach in (False, True):
        assert compare_trajectories(Defaults, r_cls, {"foreach": foreach}).passed


def test_reduce_names_the_class_and_the_reason(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    _module(tmp_path, monkeypatch, "plain_sgd", """
        import torch
        from torch.optim import Optimizer

        class PlainSGD(Optimizer):
            def __init__(self, params, lr=0.1):
                super().__init__(params, dict(lr=lr))

            @torch.no_grad()
            def step(self, closure=None):
                for group in self.param_groups:
                    for p in group["params"]:
                        if p.grad is not None:
                            p.add_(p.grad, alpha=-group["lr"])

        class Keeper(Optimizer):
            def __init__(self, params, lr=0.1):
                super().__init__(params, dict(lr=lr))

            @torch.no_grad()
            def step(self, closure=None):
                for group in self.param_groups:
                    for p in group["params"]:
                        if p.grad is not None:
                            self.state[p]["last"] = p.grad
                            p.add_(p.grad.sign(), alpha=-group["lr"] * float(p.grad.abs().sum()))
    """)
    import plain_sgd

    with pytest.raises(RewriteError, match=r"plain_sgd\.PlainSGD was not rewritten \(unchanged\)"
                       r": no parameter-sized temporary in step\(\)"):
        reduce(plain_sgd.PlainSGD)
    with pytest.raises(RewriteError, match=r"plain_sgd\.Keeper was not rewritten \(refused\):"
                       r" .*gradient stored in optimizer state"):
        reduce(plain_sgd.Keeper)
    with pytest.raises(TypeError):
        reduce(int)


# -- the corpus runner -----------------------------------------------------------------------
def _check_rows(rows: list[CorpusRow]) -> None:
    for r in rows:
        assert r.status in STATUSES, r
        assert r.status == "rewritten" or r.reason, r  # every non-rewrite says why
        if r.status == "rewritten" and r.needs == "":
            assert r.passes, r


def test_corpus_on_the_shipped_optimizers() -> None:
    rows = run_corpus(["gsr_rewrite.optim"], steps=4)
    found = {(r.module, r.cls) for r in rows}
    assert {("gsr_rewrite.optim.adamw", "AdamW"), ("gsr_rewrite.optim.adamw", "AdamWR"),
            ("gsr_rewrite.optim.adan", "Adan"), ("gsr_rewrite.optim.adan", "AdanR")} <= found
    assert all(m.startswith("gsr_rewrite.optim.") for m, _ in found)
    _check_rows(rows)
    by_name = {r.cls: r for r in rows}
    for name in ("AdamW", "Adan"):
        row = by_name[name]
        assert row.status == "rewritten" and row.equivalence == "bitwise"
        assert row.before_units is not None and row.before_units >= 0.2  # foreach: >= 1 list
        assert row.after_units is not None and row.after_units <= 0.05
        assert set(row.units) == {"foreach=False", "foreach=True"}
        # the time next to the memory: measured for both paths, the worst one reported
        assert set(row.time_ratios) == set(row.units)
        assert row.time_ratio == max(row.time_ratios.values()) and 0 < row.time_ratio < 100


def test_corpus_on_selected_torch_classes() -> None:
    names = {"torch.optim.adam.Adam", "torch.optim.sgd.SGD", "torch.optim.lbfgs.LBFGS"}
    rows = run_corpus(["torch.optim"], steps=3, quick=True, classes=names)
    assert {f"{r.module}.{r.cls}" for r in rows} == names
    _check_rows(rows)
    by_name = {r.cls: r for r in rows}
    assert by_name["LBFGS"].needs == "closure"  # recorded, not skipped
    adam = by_name["Adam"]
    assert adam.before_units is not None and adam.before_units > 0


def test_corpus_records_every_class_and_survives_crashes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "odd_optims"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "quits.py").write_text("raise SystemExit('optional dependency missing')\n")
    (pkg / "kinds.py").write_text(textwrap.dedent("""
        import torch
        from torch.optim import Optimizer

        class NeedsClosure(Optimizer):
            def __init__(self, params, lr=0.1):
                super().__init__(params, dict(lr=lr))

            def step(self, closure):
                closure()

        class NeedsArgs(Optimizer):
            def __init__(self, params, lr, schedule):
                super().__init__(params, dict(lr=lr))

            def step(self, closure=None):
                pass

        class Slow(Optimizer):
            def __init__(self, params, lr=0.1):
                super().__init__(params, dict(lr=lr))

            def step(self, closure=None):
                import time
                time.sleep(30)

        class Crashes(Optimizer):
            def __init__(self, params, lr=0.1):
                super().__init__(params, dict(lr=lr))

            @torch.no_grad()
            def step(self, closure=None):
                raise RuntimeError("boom")
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    skipped: list[str] = []
    rows = run_corpus(["odd_optims"], steps=2, skipped=skipped, time_limit=5.0)
    assert sorted(r.cls for r in rows) == ["Crashes", "NeedsArgs", "NeedsClosure", "Slow"]
    _check_rows(rows)
    by_name = {r.cls: r for r in rows}
    assert by_name["NeedsClosure"].needs == "closure"
    assert by_name["NeedsArgs"].needs.startswith("special construction")
    assert "boom" in by_name["Crashes"].needs
    assert "time limit of 5 s exceeded" in by_name["Slow"].detail and by_name["Slow"].seconds < 20
    assert any(s.startswith("odd_optims.quits: import failed: SystemExit") for s in skipped)


def test_main_writes_markdown_and_json(tmp_path: Path) -> None:
    out = tmp_path / "results" / "corpus.md"
    assert main(["gsr_rewrite.optim", "--classes", "AdamW", "--quick", "--steps", "2",
                 "--out", str(out)]) == 0
    text = out.read_text()
    assert "| class | module | status | before | after | time | equivalence | reason |" in text
    assert "| AdamW | gsr_rewrite.optim.adamw | rewritten |" in text
    data = json.loads(out.with_suffix(".json").read_text())
    assert len(data["rows"]) == 1 and data["torch"] == torch.__version__
    ratio = data["rows"][0]["time_ratio"]
    assert ratio > 0 and f"| {ratio:.2f}x |" in text
    assert "**Summary.** 1 class: 1 rewritten, 0 unchanged, 0 refused, 0 errors." in text
    assert "1 (100%) with <= 0.05 after the rewrite and equivalence passed" in text


def test_reduce_is_exported_at_top_level() -> None:
    import gsr_rewrite
    from gsr_rewrite.optim import Adan

    assert gsr_rewrite.reduce(Adan).__name__ == "AdanR"


@pytest.mark.parametrize(("refused", "needs"), [
    # pytorch_optimizer's RACS (torch's Adafactor, timm's AdamP alike): the original raises on
    # the check's 0-size param; that path is compared on the other params (the row says so)
    ("grad.numel() == 0", "params without a 0-size one (checked so, foreach=True: the original"),
    # an original that fails on the other odd shapes too: that path is not compared at all
    ("grad.numel() == 1", "original vs original fails the check (foreach=True)"),
])
def test_a_path_the_check_cannot_run_is_no_failure(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   refused: str, needs: str) -> None:
    """A path where the original itself raises on the check's params was reported as FAIL, as
    if the R-variant were wrong; it is compared where the original runs, or not at all."""
    name = f"path_optims_{len(refused)}_{refused[-1]}"  # one package per case: imports cache
    pkg = tmp_path / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "two_paths.py").write_text(textwrap.dedent("""
        import torch
        from torch.optim import Optimizer

        class TwoPaths(Optimizer):
            def __init__(self, params, lr=0.1, eps=1e-8, foreach=False):
                super().__init__(params, dict(lr=lr, eps=eps, foreach=foreach))

            @torch.no_grad()
            def step(self, closure=None):
                for group in self.param_groups:
                    for p in group["params"]:
                        if p.grad is None:
                            continue
                        grad = p.grad
                        if group["foreach"] and REFUSED:
                            raise RuntimeError("cannot take an empty parameter")
                        state = self.state[p]
                        if len(state) == 0:
                            state["v"] = torch.zeros_like(p)
                        v = state["v"]
                        v.mul_(0.9).addcmul_(grad, grad, value=0.1)
                        denom = v.sqrt().add_(group["eps"])
                        p.addcdiv_(v, denom, value=-group["lr"])
    """).replace("REFUSED", refused))
    monkeypatch.syspath_prepend(str(tmp_path))
    (row,) = run_corpus([name], steps=3)
    assert row.status == "rewritten", row.reason
    assert row.equivalence == "bitwise", (row.equivalence, row.detail)
    assert needs in row.needs
