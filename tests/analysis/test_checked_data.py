"""`self.ATTR` that `__init__` fills with data the analysis cannot prove to be data
(`self.base_lrs = [g["lr"] for g in self.param_groups]`: a float, or whatever tensor a user
passed as a learning rate) is taken for data when the step only reads it, and the R step checks it
when it starts: torch_optimizer's AdaBound layout. Where the check fails the original step runs;
where the step could change the attribute, or hand `self` to unknown code, the attribute stays an
object the analysis does not model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gsr_rewrite.pipeline import rewrite_source
from gsr_rewrite.proof.check import compare_trajectories
from gsr_rewrite.proof.validate import load_module

BASE_LRS = '''
import torch
from torch.optim import Optimizer


class BaseLrs(Optimizer):
    def __init__(self, params, lr=1e-2, final_lr=0.1, beta=0.9, eps=1e-8):
        super().__init__(params, dict(lr=lr, final_lr=final_lr, beta=beta, eps=eps))
        self.base_lrs = [group["lr"] for group in self.param_groups]

    @torch.no_grad()
    def step(self, closure=None):
        for group, base_lr in zip(self.param_groups, self.base_lrs):
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
                bound = group["final_lr"] * group["lr"] / base_lr
                p.sub_((v / denom).mul_(bound))
'''


def _rewrite(source: str, path: Path, name: str) -> tuple[type, type, dict[str, str]]:
    result = rewrite_source(source, f"{name}.py")
    (cls,) = result.classes
    assert result.code is not None
    target = path / f"{name}_r.py"
    target.write_text(result.code)
    module = load_module(target, f"gsr_checked_data_{name}_{abs(hash(result.code))}")
    lives = {t.code: t.lives_in for t in cls.temporaries}
    return getattr(module, cls.name), getattr(module, cls.name + "R"), lives


def test_an_attribute_the_step_only_reads_is_data_checked_when_the_step_starts(
        tmp_path: Path) -> None:
    original, reduced, lives = _rewrite(BASE_LRS, tmp_path, "base_lrs")
    assert lives["v.sqrt()"] == "gradient", lives  # was: a new tensor (base_lr may be anything)
    assert "'base_lrs'" in Path(tmp_path / "base_lrs_r.py").read_text()
    res = compare_trajectories(original, reduced, {}, steps=5, mode="bitwise")
    assert res.passed, res.message


def _step_both(original: type, reduced: type, tamper: object) -> tuple[torch.Tensor, ...]:
    out = []
    for cls in (original, reduced):
        torch.manual_seed(0)
        p = torch.nn.Parameter(torch.rand(8, 8) + 0.5)
        opt = cls([p], lr=0.5)
        for _ in range(3):
            p.grad = torch.rand(8, 8) + 0.5
            if callable(tamper):
                tamper(opt, p)
            opt.step()
        out.append(p.detach().clone())
    return tuple(out)


def test_must_not_fire_where_the_attribute_holds_a_tensor_when_the_step_starts(
        tmp_path: Path) -> None:
    original, reduced, _ = _rewrite(BASE_LRS, tmp_path, "base_lrs_tensor")

    def tensor_lr(opt: torch.optim.Optimizer, p: torch.Tensor) -> None:
        opt.base_lrs = [p.grad]  # type: ignore[attr-defined]  # read after the grad is scratch

    a, b = _step_both(original, reduced, tensor_lr)
    assert torch.equal(a, b)


@pytest.mark.parametrize("change", [
    "self.base_lrs.append(group['lr'])",  # the step changes it
    "self.base_lrs[0] = grad",  # stores a tensor in it
    "_hook(self)",  # hands self to code the analysis does not follow
    "lrs = self.base_lrs",  # an alias the analysis would have to follow
])
def test_must_not_fire_where_the_step_may_change_the_attribute(change: str) -> None:
    source = "def _hook(opt):\n    pass\n\n" + BASE_LRS.replace(
        "                grad = p.grad\n",
        f"                grad = p.grad\n                {change}\n")
    result = rewrite_source(source, "base_lrs_changed.py")
    (cls,) = result.classes
    decorators = [line.split("class_attrs=")[0] for line in (result.code or "").splitlines()
                  if "r_step(" in line]  # (not checked data; a class attribute check is fine)
    assert all("'base_lrs'" not in d for d in decorators), decorators
    lives = {t.code: t.lives_in for t in cls.temporaries}
    assert lives.get("v.sqrt()") != "gradient", lives


def test_a_dunder_attribute_is_never_checked_data() -> None:
    # `self.__dict__` holds the optimizer's own attributes: never plain data, so checking it
    # would make every step run the original
    loop = "        for group, base_lr in zip(self.param_groups, self.base_lrs):"
    source = BASE_LRS.replace(loop, "        assert len(self.__dict__) > 0\n" + loop)
    result = rewrite_source(source, "dunder.py")
    assert result.code is not None and "'__dict__'" not in result.code
    assert "'base_lrs'" in result.code
