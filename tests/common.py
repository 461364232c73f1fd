"""What every test folder shares: paths (tests are one folder per sub-package of gsr_rewrite/), and
the certified rewrite of a fixture module."""

import functools
from pathlib import Path
from typing import Any

import pytest

from gsr_rewrite.outcome import RewriteResult
from gsr_rewrite.pipeline import compile_source

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
EXAMPLES = REPO / "examples"


@functools.cache
def compiled_fixture(package: str, name: str, importable: bool) -> RewriteResult:
    """compile_source (rewrite, then certify each class) of `<package>.<name>`, a module of a
    fixture package under tests/: as an importable module, or as a file whose package is known
    (a copy of the module is emitted)."""
    path = TESTS.joinpath(*package.split(".")[1:], f"{name}.py")
    return compile_source(path.read_text(), str(path), package,
                          f"{package}.{name}" if importable else None)


#: A fixture optimizer for must-not-fire tests: an RMS-scaled step whose `denom` the rewrite puts
#: in the gradient where it may. `helpers`: module-level code; `group_head`: a line before the
#: param loop; `param_head`: a line before `v` is read; `tail`: lines after `denom` is made (at
#: 16 spaces; later lines carry their own indentation). `step` returns `out`.
RMS_FIXTURE = '''
import torch
from torch.optim import Optimizer

{helpers}


class {name}(Optimizer):
    def __init__(self, params, lr=1e-2, beta=0.9, eps=1e-8):
        super().__init__(params, dict(lr=lr, beta=beta, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        out = 0.0
        for group in self.param_groups:
            {group_head}
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if len(state) == 0:
                    state["v"] = torch.zeros_like(p)
                {param_head}
                v = state["v"]
                v.mul_(group["beta"]).addcmul_(grad, grad, value=1 - group["beta"])
                denom = v.sqrt().add_(group["eps"])
                {tail}
        return out
'''


def rms_fixture(name: str, tail: str, helpers: str = "", group_head: str = "pass",
                param_head: str = "pass") -> str:
    return RMS_FIXTURE.format(name=name, tail=tail, helpers=helpers, group_head=group_head,
                              param_head=param_head)


def emitted_pair(source: str, path: Path, name: str) -> tuple[type, type] | None:
    """`name` and `nameR` from the module rewrite_source emits for `source` (written to
    `path`); None when it emits none."""
    from gsr_rewrite.pipeline import rewrite_source
    from gsr_rewrite.proof.validate import load_module

    result = rewrite_source(source, f"{name.lower()}.py")
    if result.code is None:
        return None
    target = path / f"{name.lower()}_r.py"
    target.write_text(result.code)
    module = load_module(target, f"gsr_fixture_{name}_{abs(hash(result.code))}")
    return getattr(module, name), getattr(module, name + "R")


def certified_pair(source: str, path: Path, name: str) -> tuple[type, type]:
    """`name` and `nameR` from the certified rewrite (compile_source) of `source`, whose class
    `name` must come out rewritten (the module is written to `path`)."""
    from gsr_rewrite.proof.validate import load_module

    result = compile_source(source, f"{name.lower()}.py")
    (cls,) = [c for c in result.classes if c.name == name]
    assert cls.status == "rewritten", cls.reason
    assert result.code is not None
    target = path / f"{name.lower()}_r.py"
    target.write_text(result.code)
    module = load_module(target, f"gsr_certified_{name}_{abs(hash(result.code))}")
    return getattr(module, name), getattr(module, name + "R")


def steps_on_64x8(cls: type, dtype: object = None, steps: int = 3) -> tuple[object, object]:
    """(the param, what the last step returned) after `steps` steps of `cls` on one 64x8 param
    (512 elements: past the conditions the fixtures read the gradient under), fixed grads."""
    import torch

    dt = dtype if isinstance(dtype, torch.dtype) else torch.float32
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(64, 8, dtype=dt))
    opt = cls([p])
    got = None
    for s in range(steps):
        p.grad = torch.randn(64, 8, dtype=dt, generator=torch.Generator().manual_seed(s))
        got = opt.step()
    return p.detach().clone(), got


def imported_fixture(source: str, module: str, folder: Path,
                     monkeypatch: pytest.MonkeyPatch) -> Any:
    """`source` written to `folder/module.py` and imported afresh (for `gsr_rewrite.reduce`,
    which reads a class's module from its file), with the rewrite cache in `folder`; the
    caller's monkeypatch undoes the path and environment."""
    import importlib
    import sys

    (folder / f"{module}.py").write_text(source)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("GSR_REWRITE_CACHE_DIR", str(folder / "cache"))
    monkeypatch.delitem(sys.modules, module, raising=False)
    return importlib.import_module(module)
