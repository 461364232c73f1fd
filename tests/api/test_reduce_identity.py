"""`reduce(X)` is a subclass of the user's own `X` (not of a regenerated copy) when that is
exact, so `isinstance(opt, X)` and type checks in frameworks hold."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch

from gsr_rewrite import reduce
from gsr_rewrite.api import classes
from gsr_rewrite.proof.check import compare_trajectories

SOURCE = '''
import torch
from torch.optim import Optimizer


class Mine(Optimizer):
    def __init__(self, params, lr=1e-2, beta=0.9, eps=1e-8):
        super().__init__(params, dict(lr=lr, beta=beta, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if len(state) == 0:
                    state["v"] = torch.zeros_like(p)
                v = state["v"]
                v.mul_(group["beta"]).addcmul_(grad, grad, value=1 - group["beta"])
                denom = v.sqrt().add_(group["eps"])
                p.addcdiv_(v, denom, value=-group["lr"])
        return None
'''


@pytest.mark.parametrize("cls", [torch.optim.Adam, torch.optim.AdamW, torch.optim.RMSprop])
def test_torch_classes(cls: type) -> None:
    r_cls = reduce(cls)
    assert issubclass(r_cls, cls)
    for foreach in (False, True):
        assert compare_trajectories(cls, r_cls, {"foreach": foreach}).passed


def _fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> type:
    (tmp_path / f"{name}.py").write_text(SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("GSR_REWRITE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(classes, "_REDUCED", {})
    module = importlib.import_module(name)
    return module.Mine  # type: ignore[no-any-return]


def test_own_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mine = _fixture(tmp_path, monkeypatch, "identity_fixture_a")
    r_cls = reduce(mine)
    assert issubclass(r_cls, mine)
    assert isinstance(r_cls([torch.nn.Parameter(torch.zeros(2))]), mine)
    assert compare_trajectories(mine, r_cls, {}).passed


def test_a_file_edited_after_import_keeps_the_regenerated_base(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The live class and the file disagree: the R class keeps deriving from the class made
    from the file (what was certified), rather than mixing the two."""
    mine = _fixture(tmp_path, monkeypatch, "identity_fixture_b")
    path = tmp_path / "identity_fixture_b.py"
    path.write_text(path.read_text().replace("lr=1e-2", "lr=1e-3"))
    try:
        r_cls = reduce(mine)
        assert not issubclass(r_cls, mine)
        assert r_cls.__mro__[1].__name__ == "Mine"
    finally:
        sys.modules.pop("identity_fixture_b", None)
