"""The layout proof (analysis/layout.py): a step that may change a tensor's layout in place, or
calls what the analysis cannot name, gets no layout certificate (its guards read tensors one by
one); a step of ops, builtins and followed helpers gets one (`r_step(..., fixed_layout=True)`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gsr_rewrite.api import rewrite_text
from gsr_rewrite.pipeline import rewrite_source

SOURCE = '''
import torch
from torch.optim import Optimizer


def _scale(x, s):
    return x.mul_(s)


class Mine(Optimizer):
    def __init__(self, params, lr=1e-3, beta=0.9, eps=1e-8):
        super().__init__(params, dict(lr=lr, beta=beta, eps=eps))

    def _hook(self, t):
        return t

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None:
            with torch.enable_grad():
                closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if len(state) == 0:
                    state["v"] = torch.zeros_like(p)
                v = state["v"]
                EXTRA
                v.mul_(group["beta"]).addcmul_(grad, grad, value=1 - group["beta"])
                denom = v.sqrt()
                p.addcdiv_(v, denom.add_(group["eps"]), value=-group["lr"])
        return None
'''


def _outcome(extra: str) -> tuple[str, bool, str, str]:
    result = rewrite_text(SOURCE.replace("EXTRA", extra), "mine.py")
    (mine,) = result.classes
    return mine.status, mine.fixed_layout, mine.layout_reason, result.code or ""


def test_ops_builtins_and_followed_helpers_get_a_certificate() -> None:
    status, fixed, reason, code = _outcome(
        'grad = _scale(grad, 1.0) if len(state) > 0 else grad.add(0.0)')
    assert status == "rewritten" and fixed and not reason
    assert "r_step(Mine, fixed_layout=True)" in code


@pytest.mark.parametrize(("extra", "why"), [
    ("grad.unsqueeze_(0).squeeze_(0)", "`squeeze_` may change"),  # shape and strides change
    ("v.t_()", "`t_` may change"),
    ("p.data = p.data.clone()", "`.data` is assigned"),  # the param's storage swapped
    ("v.requires_grad_(False)", "`requires_grad_` may change"),
    ("torch.utils.swap_tensors(v, v.clone())", "`swap_tensors` may change"),
    ("getattr(v, 'set_')(v.clone())", "computed callable"),
    ("op = 'set_'", "names an op that changes"),  # named by a string, for getattr later
    ("self._unknown(grad)", "`self._unknown(...)` is not followed"),  # may do anything
    ("group['fn'](grad)", "computed callable"),
    ("map(self._hook, [grad])", "`map` of a function that is not a lambda"),
    ("max([grad], key=self._hook)", "`key=` function"),
    ("super().zero_grad()", "`.zero_grad(...)` is not known"),
    ("setattr(p, 'data', p.data.clone())", "`setattr` may change"),
    ("del p.data", "`.data` is assigned or deleted"),
    ("f = self._hook; f(grad)", "`f(...)` is not known"),  # bound to what was not followed
    ("torch.ops.aten._resize_output_(v, [4], v.device)", "may change"),
    ("torch.ops.aten.add_(v, 1.0)", "`torch.ops.aten.add_(...)` is not known"),  # raw operators
])
def test_what_may_change_a_layout_takes_no_certificate(extra: str, why: str) -> None:
    status, fixed, reason, code = _outcome(extra)
    assert not fixed and why in reason, (extra, reason)
    if status == "rewritten":  # its guards read tensors one by one
        assert "fixed_layout" not in code


def test_a_context_manager_that_is_not_torchs_takes_no_certificate() -> None:
    source = SOURCE.replace("with torch.enable_grad():", "with self._ctx():")
    result = rewrite_text(source.replace("EXTRA", "pass"), "mine.py")
    (mine,) = result.classes
    assert not mine.fixed_layout and "context manager" in mine.layout_reason


def test_must_not_fire_a_name_in_code_from_another_module_is_that_modules(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`_scale` is followed in the step's module, but the base class's module binds its own
    `_scale` (one that transposes in place): the base method's call is that one, not known."""
    root = tmp_path
    package = root / "pkg_layout_foreign"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "base.py").write_text(
        "import torch\n\n\ndef _scale(x, s):\n    return x.t_()\n\n\n"
        "class Base(torch.optim.Optimizer):\n    def _hook(self, t):\n"
        "        return _scale(t, 1.0)\n")
    source = SOURCE.replace("from torch.optim import Optimizer", "from .base import Base") \
        .replace("class Mine(Optimizer):", "class Mine(Base):") \
        .replace("    def _hook(self, t):\n        return t\n\n", "") \
        .replace("EXTRA", "grad = _scale(grad, 1.0)\n                self._hook(v)")
    (package / "mine.py").write_text(source)
    monkeypatch.syspath_prepend(str(root))
    result = rewrite_source(source, str(package / "mine.py"), package.name, f"{package.name}.mine")
    (mine,) = [c for c in result.classes if c.name == "Mine"]
    assert mine.analysis is not None and "_scale" in mine.analysis.functions
    assert not mine.fixed_layout
    assert "base.py" in mine.layout_reason and "_scale(...)" in mine.layout_reason, \
        mine.layout_reason
