"""The R step runs only while what its copied code took from other modules and its class is what
the original step would use (runtime/patches.py): a helper patched after `reduce()`, a rewritten
helper method patched or overridden, or a helper patched before `reduce()` send the step to the
original, which then gives the patched results; undone, the R step runs again."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import gsr_rewrite

Factory = Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer]


def _side_by_side(original: Factory, reduced: Factory, steps: int = 3) -> tuple[float, bool]:
    """(max |param difference| after `steps` steps, whether the R step used its gradients)."""
    torch.manual_seed(0)
    p1 = [torch.nn.Parameter(torch.randn(4, 5)), torch.nn.Parameter(torch.randn(3))]
    p2 = [torch.nn.Parameter(p.detach().clone()) for p in p1]
    o1, o2 = original(p1), reduced(p2)
    used = False
    for _ in range(steps):
        grads = [torch.randn_like(p) for p in p1]
        for a, b, g in zip(p1, p2, grads, strict=True):
            a.grad, b.grad = g.clone(), g.clone()
        o1.step()
        o2.step()
        used |= any(not b.grad.equal(g) for b, g in zip(p2, grads, strict=True)
                    if b.grad is not None)
    return max((a - b).abs().max().item() for a, b in zip(p1, p2, strict=True)), used


def _shifted(fn: Callable[..., Any]) -> Callable[..., Any]:
    def patched(params: list[torch.Tensor], *args: Any, **kwargs: Any) -> Any:
        out = fn(params, *args, **kwargs)
        for p in params:
            p.add_(1.0)  # visibly different results
        return out
    return patched


def test_a_module_helper_patched_after_reduce_runs_the_original(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.optim.adam as adam_module

    r_cls = gsr_rewrite.reduce(torch.optim.Adam)

    def adam(params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.Adam(params, foreach=False)

    def adam_r(params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        return r_cls(params, foreach=False)

    assert _side_by_side(adam, adam_r) == (0.0, True)
    monkeypatch.setattr(adam_module, "_single_tensor_adam",
                        _shifted(adam_module._single_tensor_adam))
    assert _side_by_side(adam, adam_r) == (0.0, False)  # the (patched) original ran
    monkeypatch.undo()
    assert _side_by_side(adam, adam_r) == (0.0, True)
    # Dynamo's TorchPatcher wraps optimizer helpers in `disable` (compile mode only): not a patch
    monkeypatch.setattr(adam_module, "_single_tensor_adam",
                        torch._dynamo.disable(adam_module._single_tensor_adam))
    assert _side_by_side(adam, adam_r) == (0.0, True)


HELPERS = '''def denominator_(v, eps):
    return v.sqrt().add_(eps)
'''

OPTIMIZER = '''import torch
from torch.optim import Optimizer

from .helpers import denominator_


class Base(Optimizer):
    def _scaled_step_(self, p, grad, denom, lr):
        update = grad / denom  # into the gradient, which dies here
        p.add_(update, alpha=-lr)


class Watched(Base):
    def __init__(self, params, lr=0.01, beta=0.9, eps=1e-8):
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
                self._scaled_step_(p, grad, denominator_(v, group["eps"]), group["lr"])
'''


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh package (its own name per test: reduce() keeps one R class per class)."""
    name = f"pkg_watch_{abs(hash(str(tmp_path)))}"
    folder = tmp_path / name
    folder.mkdir()
    (folder / "__init__.py").write_text("")
    (folder / "helpers.py").write_text(HELPERS)
    (folder / "opt.py").write_text(OPTIMIZER)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("GSR_REWRITE_CACHE_DIR", str(tmp_path / "cache"))
    yield name
    for m in [m for m in sys.modules if m.startswith(name)]:
        del sys.modules[m]


def test_a_helper_method_patched_or_overridden_runs_the_original(
        package: str, monkeypatch: pytest.MonkeyPatch) -> None:
    opt = importlib.import_module(f"{package}.opt")
    r_cls = gsr_rewrite.reduce(opt.Watched)
    assert "_scaled_step__gsr" in vars(r_cls)  # the R step calls it, not `_scaled_step_`
    assert _side_by_side(opt.Watched, r_cls) == (0.0, True)

    def doubled(self: Any, p: torch.Tensor, grad: torch.Tensor, denom: torch.Tensor,
                lr: float) -> None:
        p.add_(grad / denom, alpha=-2 * lr)

    overriding = type("Overriding", (r_cls,), {"_scaled_step_": doubled})
    original_overriding = type("OriginalOverriding", (opt.Watched,), {"_scaled_step_": doubled})
    assert _side_by_side(original_overriding, overriding) == (0.0, False)
    monkeypatch.setattr(opt.Base, "_scaled_step_", doubled)
    assert _side_by_side(opt.Watched, r_cls) == (0.0, False)
    monkeypatch.undo()
    assert _side_by_side(opt.Watched, r_cls) == (0.0, True)


def test_an_imported_helper_patched_before_reduce_runs_the_original(
        package: str, monkeypatch: pytest.MonkeyPatch) -> None:
    opt = importlib.import_module(f"{package}.opt")

    def denominator_twice(v: torch.Tensor, eps: float) -> torch.Tensor:
        return v.sqrt().add_(eps) * 2

    monkeypatch.setattr(opt, "denominator_", denominator_twice)
    r_cls = gsr_rewrite.reduce(opt.Watched)  # rewritten from the file's `def`, not the patch
    assert _side_by_side(opt.Watched, r_cls) == (0.0, False)


def test_a_mock_in_place_of_a_helper_is_stale_not_a_crash() -> None:
    """`mock.patch` puts a MagicMock there (every attribute exists, `__wrapped__` too): the
    watch neither loops nor raises; the helper is not the analysed def, so the R step would not
    run; unpatched, it is."""
    from unittest import mock

    import torch.optim.adam as adam_module

    from gsr_rewrite.runtime.patches import watch

    names = {"torch.optim.adam": {"_single_tensor_adam": "_single_tensor_adam"}}
    with mock.patch.object(adam_module, "_single_tensor_adam", mock.MagicMock()):
        assert watch(names).stale
    fresh = watch(names)
    assert not fresh.stale and fresh.holds(torch.optim.Adam)
    with mock.patch.object(adam_module, "_single_tensor_adam", mock.MagicMock()):
        assert not fresh.holds(torch.optim.Adam)
