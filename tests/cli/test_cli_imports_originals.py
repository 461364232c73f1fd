"""The command line on an importable module whose classes all live in it: the emitted module
imports the original classes and the module-level objects its copied code reads, instead of
copying the module (issue 13). So the R class is a subclass of the user's class, a module-level
dict the user mutates at run time is the one the R step reads (found by adversarial probing:
with a copy, the original saw `SETTINGS["decay"] = 0.5` and the R step did not), the module's
top-level code runs once, and the R module refuses to import once the original's source changed
(an upgraded package or an edited file: its copied code would no longer stand for it)."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from gsr_rewrite.cli.main import main
from gsr_rewrite.proof.validate import load_module

SOURCE = '''
import torch
from torch.optim import Optimizer

SETTINGS = {"decay": 0.0}
IMPORTS = []
IMPORTS.append(1)  # top-level code: runs once per import of this module


class Settled(Optimizer):
    def __init__(self, params, lr=1e-2, eps=1e-8):
        super().__init__(params, dict(lr=lr, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if not state:
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.zeros_like(p)
                m, v = state["m"], state["v"]
                p.mul_(1 - SETTINGS["decay"])
                m.lerp_(grad, 0.1)
                v.mul_(0.9).addcmul_(grad, grad, value=0.1)
                denom = v.sqrt().add_(group["eps"])
                p.addcdiv_(m, denom, value=-group["lr"])
'''


def _steps(cls: type, params: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    ps = copy.deepcopy(params)
    opt = cls(ps)
    for step in range(3):
        gen = torch.Generator().manual_seed(step)
        for p in ps:
            p.grad = torch.randn(p.shape, generator=gen)
        opt.step()
    return [p.detach().clone() for p in ps]


def test_the_output_imports_the_original_module(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "settled_mod.py").write_text(SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("GSR_REWRITE_CACHE_DIR", str(tmp_path / "cache"))
    sys.modules.pop("settled_mod", None)
    out = tmp_path / "settled_r.py"
    result = CliRunner().invoke(main, ["settled_mod", "-o", str(out), "--check"])
    assert result.exit_code == 0, result.stdout + result.stderr
    emitted = out.read_text()
    assert "from settled_mod import Settled  # the original classes" in emitted
    assert "class Settled(" not in emitted and "same_sources(" in emitted
    assert "sqrt -> gradient" in emitted  # the temporary moved: the R step differs in code

    import settled_mod  # type: ignore[import-not-found]  # noqa: PLC0415

    r_module = load_module(out, "gsr_cli_settled_r")
    assert issubclass(r_module.SettledR, settled_mod.Settled)
    assert settled_mod.IMPORTS == [1]  # the module's top-level code ran once
    params = [torch.nn.Parameter(torch.randn(4, 4)) for _ in range(2)]
    settled_mod.SETTINGS["decay"] = 0.5  # mutated at run time: both steps see it
    try:
        for a, b in zip(_steps(settled_mod.Settled, params), _steps(r_module.SettledR, params),
                        strict=True):
            assert torch.equal(a, b)
    finally:
        settled_mod.SETTINGS["decay"] = 0.0

    (tmp_path / "settled_mod.py").write_text(SOURCE.replace("0.1)", "0.2)"))  # edited since
    with pytest.raises(ImportError, match="settled_mod changed since this R module"):
        load_module(out, "gsr_cli_settled_r_stale")
    sys.modules.pop("settled_mod", None)


def test_a_file_whose_imports_are_not_on_the_path_is_an_error_not_a_traceback(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "loose"
    folder.mkdir()
    (folder / "loose_cfg.py").write_text('SETTINGS = {"decay": 0.0}\n')
    (folder / "loose_opt.py").write_text(SOURCE.replace(
        'SETTINGS = {"decay": 0.0}', "from loose_cfg import SETTINGS"))
    monkeypatch.setenv("GSR_REWRITE_CACHE_DIR", str(tmp_path / "cache"))
    result = CliRunner().invoke(main, [str(folder / "loose_opt.py"), "-o",
                                       str(tmp_path / "loose_r.py")])
    assert result.exit_code == 1
    assert "does not import (ModuleNotFoundError: No module named 'loose_cfg')" in \
        result.stdout + result.stderr
    assert not (tmp_path / "loose_r.py").exists()
