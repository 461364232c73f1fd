"""Translation validation by symbolic execution (gsr_rewrite.proof.symbolic, .translation)."""

from __future__ import annotations

import math
import time
from typing import Any

import pytest
import sympy
import torch
from torch import Tensor
from torch.optim import Optimizer

from gsr_rewrite.proof.symbolic import SymbolicExecutionError, SymTensor
from gsr_rewrite.proof.translation import symbolic_trajectory, validate_rewrite

# ---------------------------------------------------------------- AdamW-like, original + R variants


class AdamWLike(Optimizer):
    """Per-tensor loop and foreach path, both with a param-sized ``denom`` temporary."""

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        foreach: bool = False,
    ) -> None:
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, foreach=foreach)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self) -> None:  # type: ignore[override]
        for group in self.param_groups:
            ps, gs, ms, vs = [], [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["step"] = 0
                    st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                st["step"] += 1
                ps.append(p)
                gs.append(p.grad)
                ms.append(st["exp_avg"])
                vs.append(st["exp_avg_sq"])
            step = self.state[ps[0]]["step"]
            b1, b2 = group["betas"]
            bc1, bc2 = 1 - b1**step, 1 - b2**step
            hp = (group["lr"], b1, b2, group["eps"], group["weight_decay"], bc1, math.sqrt(bc2))
            if group["foreach"]:
                self._foreach(ps, gs, ms, vs, *hp)
            else:
                for p, g, m, v in zip(ps, gs, ms, vs, strict=True):
                    self._single(p, g, m, v, *hp)

    def _single(
        self,
        p: Tensor,
        g: Tensor,
        m: Tensor,
        v: Tensor,
        lr: float,
        b1: float,
        b2: float,
        eps: float,
        wd: float,
        bc1: float,
        bc2s: float,
    ) -> None:
        p.mul_(1 - lr * wd)
        m.lerp_(g, 1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = (v.sqrt() / bc2s).add_(eps)
        p.addcdiv_(m, denom, value=-lr / bc1)

    def _foreach(
        self,
        ps: list[Tensor],
        gs: list[Tensor],
        ms: list[Tensor],
        vs: list[Tensor],
        lr: float,
        b1: float,
        b2: float,
        eps: float,
        wd: float,
        bc1: float,
        bc2s: float,
    ) -> None:
        torch._foreach_mul_(ps, 1 - lr * wd)
        torch._foreach_lerp_(ms, gs, 1 - b1)
        torch._foreach_mul_(vs, b2)
        torch._foreach_addcmul_(vs, gs, gs, 1 - b2)
        denom = torch._foreach_sqrt(vs)
        torch._foreach_div_(denom, bc2s)
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(ps, ms, denom, -lr / bc1)


class AdamWLikeR(AdamWLike):
    """Correct R-variant: denom lives in p.grad (``out=`` and foreach copy_ + sqrt_)."""

    def _single(
        self,
        p: Tensor,
        g: Tensor,
        m: Tensor,
        v: Tensor,
        lr: float,
        b1: float,
        b2: float,
        eps: float,
        wd: float,
        bc1: float,
        bc2s: float,
    ) -> None:
        p.mul_(1 - lr * wd)
        m.lerp_(g, 1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = torch.sqrt(v, out=g).div_(bc2s).add_(eps)
        p.addcdiv_(m, denom, value=-lr / bc1)

    def _foreach(
        self,
        ps: list[Tensor],
        gs: list[Tensor],
        ms: list[Tensor],
        vs: list[Tensor],
        lr: float,
        b1: float,
        b2: float,
        eps: float,
        wd: float,
        bc1: float,
        bc2s: float,
    ) -> None:
        torch._foreach_mul_(ps, 1 - lr * wd)
        torch._foreach_lerp_(ms, gs, 1 - b1)
        torch._foreach_mul_(vs, b2)
        torch._foreach_addcmul_(vs, gs, gs, 1 - b2)
        torch._foreach_copy_(gs, vs)
        torch._foreach_sqrt_(gs)
        torch._foreach_div_(gs, bc2s)
        torch._foreach_add_(gs, eps)
        torch._foreach_addcdiv_(ps, ms, gs, -lr / bc1)


class AdamWLikeWrongBeta(AdamWLike):
    """Wrong: first moment decays with beta2 (per-tensor path only)."""

    def _single(
        self,
        p: Tensor,
        g: Tensor,
        m: Tensor,
        v: Tensor,
        lr: float,
        b1: float,
        b2: float,
        eps: float,
        wd: float,
        bc1: float,
        bc2s: float,
    ) -> None:
        super()._single(p, g, m, v, lr, b2, b2, eps, wd, bc1, bc2s)


class AdamWLikeReadsClobberedGrad(AdamWLikeR):
    """Wrong: denom overwrites the gradient *before* the moments read it."""

    def _single(
        self,
        p: Tensor,
        g: Tensor,
        m: Tensor,
        v: Tensor,
        lr: float,
        b1: float,
        b2: float,
        eps: float,
        wd: float,
        bc1: float,
        bc2s: float,
    ) -> None:
        p.mul_(1 - lr * wd)
        denom = torch.sqrt(v, out=g).div_(bc2s).add_(eps)
        m.lerp_(g, 1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        p.addcdiv_(m, denom, value=-lr / bc1)

    def _foreach(
        self,
        ps: list[Tensor],
        gs: list[Tensor],
        ms: list[Tensor],
        vs: list[Tensor],
        lr: float,
        b1: float,
        b2: float,
        eps: float,
        wd: float,
        bc1: float,
        bc2s: float,
    ) -> None:
        torch._foreach_mul_(ps, 1 - lr * wd)
        torch._foreach_copy_(gs, vs)
        torch._foreach_sqrt_(gs)
        torch._foreach_lerp_(ms, gs, 1 - b1)
        torch._foreach_mul_(vs, b2)
        torch._foreach_addcmul_(vs, gs, gs, 1 - b2)
        torch._foreach_div_(gs, bc2s)
        torch._foreach_add_(gs, eps)
        torch._foreach_addcdiv_(ps, ms, gs, -lr / bc1)


# ---------------------------------------------------------------- Lion-like, original + reordered


class LionLike(Optimizer):
    def __init__(
        self,
        params: Any,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.1,
        foreach: bool = False,
    ) -> None:
        super().__init__(
            params, dict(lr=lr, betas=betas, weight_decay=weight_decay, foreach=foreach)
        )

    @torch.no_grad()
    def step(self) -> None:  # type: ignore[override]
        for group in self.param_groups:
            ps = [p for p in group["params"] if p.grad is not None]
            gs = [p.grad for p in ps]
            ms = []
            for p in ps:
                if "exp_avg" not in self.state[p]:
                    self.state[p]["exp_avg"] = torch.zeros_like(p)
                ms.append(self.state[p]["exp_avg"])
            lr, wd = group["lr"], group["weight_decay"]
            b1, b2 = group["betas"]
            if group["foreach"]:
                self._foreach(ps, gs, ms, lr, wd, b1, b2)
            else:
                for p, g, m in zip(ps, gs, ms, strict=True):
                    self._single(p, g, m, lr, wd, b1, b2)

    def _single(
        self, p: Tensor, g: Tensor, m: Tensor, lr: float, wd: float, b1: float, b2: float
    ) -> None:
        update = m.mul(b1).add_(g, alpha=1 - b1).sign_()
        p.mul_(1 - lr * wd).add_(update, alpha=-lr)
        m.mul_(b2).add_(g, alpha=1 - b2)

    def _foreach(
        self,
        ps: list[Tensor],
        gs: list[Tensor],
        ms: list[Tensor],
        lr: float,
        wd: float,
        b1: float,
        b2: float,
    ) -> None:
        updates = torch._foreach_mul(ms, b1)
        torch._foreach_add_(updates, gs, alpha=1 - b1)
        torch._foreach_sign_(updates)
        torch._foreach_mul_(ps, 1 - lr * wd)
        torch._foreach_add_(ps, updates, alpha=-lr)
        torch._foreach_mul_(ms, b2)
        torch._foreach_add_(ms, gs, alpha=1 - b2)


class LionLikeR(LionLike):
    """Momentum first, then c = (b1/b2) m_new + (1 - b1/b2) g in the gradient buffer."""

    def _single(
        self, p: Tensor, g: Tensor, m: Tensor, lr: float, wd: float, b1: float, b2: float
    ) -> None:
        m.mul_(b2).add_(g, alpha=1 - b2)
        c = g.mul_(1 - b1 / b2).add_(m, alpha=b1 / b2).sign_()
        p.mul_(1 - lr * wd).add_(c, alpha=-lr)

    def _foreach(
        self,
        ps: list[Tensor],
        gs: list[Tensor],
        ms: list[Tensor],
        lr: float,
        wd: float,
        b1: float,
        b2: float,
    ) -> None:
        torch._foreach_mul_(ms, b2)
        torch._foreach_add_(ms, gs, alpha=1 - b2)
        torch._foreach_mul_(gs, 1 - b1 / b2)
        torch._foreach_add_(gs, ms, alpha=b1 / b2)
        torch._foreach_sign_(gs)
        torch._foreach_mul_(ps, 1 - lr * wd)
        torch._foreach_add_(ps, gs, alpha=-lr)


# ---------------------------------------------------------------- shape-mixing op (grad.norm())


class NormSGD(Optimizer):
    def __init__(self, params: Any, lr: float = 0.1, eps: float = 1e-6) -> None:
        super().__init__(params, dict(lr=lr, eps=eps))

    @torch.no_grad()
    def step(self) -> None:  # type: ignore[override]
        for group in self.param_groups:
            for p in group["params"]:
                g = p.grad
                upd = g / (g.norm() + group["eps"])
                p.add_(upd, alpha=-group["lr"])


class NormSGDR(NormSGD):
    @torch.no_grad()
    def step(self) -> None:  # type: ignore[override]
        for group in self.param_groups:
            for p in group["params"]:
                g = p.grad
                g.div_(g.norm().add_(group["eps"]))
                p.add_(g, alpha=-group["lr"])


class NormSGDScaledR(NormSGD):
    """Equal over the reals, but norm(2g)/2 == norm(g) is invisible to an uninterpreted norm."""

    @torch.no_grad()
    def step(self) -> None:  # type: ignore[override]
        for group in self.param_groups:
            for p in group["params"]:
                g = p.grad.mul_(2)
                g.div_(g.norm().add_(2 * group["eps"]))
                p.add_(g, alpha=-group["lr"])


# ---------------------------------------------------------------- tests


def test_adamw_like_rewrite_is_equal_and_storage_only() -> None:
    t0 = time.perf_counter()
    res = validate_rewrite(AdamWLike, AdamWLikeR, {"lr": 1e-2, "weight_decay": 0.1})
    elapsed = time.perf_counter() - t0
    assert res.equal, res.residuals
    assert res.exact_same_ops  # only storage moved
    assert "foreach=[False, True]" in res.notes[-1]
    assert elapsed < 10.0  # ~0.1 s in practice; loose bound, not a benchmark


def test_adamw_like_paths_agree_with_each_other() -> None:
    a = symbolic_trajectory(AdamWLike, {"foreach": False})
    b = symbolic_trajectory(AdamWLike, {"foreach": True})
    assert a.pop("group[0]['foreach']") == 0 and b.pop("group[0]['foreach']") == 1
    assert a == b
    tensors = [k for k in a if not k.startswith("group")]
    assert len(tensors) == 2 * 2 * 3 + 2  # 2 params x 2 elements x (param, m, v) + 2 steps


@pytest.mark.parametrize("flag", [False, True])
def test_wrong_variants_are_rejected(flag: bool) -> None:
    res = validate_rewrite(AdamWLike, AdamWLikeReadsClobberedGrad, {"foreach": flag})
    assert not res.equal
    assert not res.exact_same_ops
    assert any("exp_avg'" in k for k in res.residuals), res.residuals
    assert all(v for v in res.residuals.values())


def test_wrong_beta_names_exp_avg() -> None:
    res = validate_rewrite(AdamWLike, AdamWLikeWrongBeta, {"foreach": False}, steps=2)
    assert not res.equal
    assert "after_step1:state[0]['exp_avg'][0]" in res.residuals
    assert "g0_0_1" in res.residuals["after_step1:state[0]['exp_avg'][0]"]
    assert any("numerically different" in n for n in res.notes)


def test_lion_reordering_is_equal() -> None:
    res = validate_rewrite(LionLike, LionLikeR, {"lr": 1e-3, "betas": (0.9, 0.99)}, steps=3)
    assert res.equal, res.residuals
    # The limit of the exact_same_ops hint: sympy folds the rationalised constants
    # (10/11 * 99/100 + 1/11 == 9/10 ...), so the trees match although, in float32, the
    # reformulated c = (b1/b2) m_new + (1 - b1/b2) g is not bitwise b1 m + (1 - b1) g:
    assert res.exact_same_ops
    gen = torch.Generator().manual_seed(0)
    m, g = torch.randn(10_000, generator=gen), torch.randn(10_000, generator=gen)
    b1, b2 = 0.9, 0.99
    c_orig = m * b1 + g * (1 - b1)
    c_new = (m * b2 + g * (1 - b2)) * (b1 / b2) + g * (1 - b1 / b2)
    assert not torch.equal(c_orig, c_new)
    torch.testing.assert_close(c_orig, c_new)


def test_algebraic_rewrite_is_proved_not_structural() -> None:
    class AdamWLikeSqrtOfQuotient(AdamWLikeR):  # sqrt(v / bc2) instead of sqrt(v) / sqrt(bc2)
        def _single(
            self,
            p: Tensor,
            g: Tensor,
            m: Tensor,
            v: Tensor,
            lr: float,
            b1: float,
            b2: float,
            eps: float,
            wd: float,
            bc1: float,
            bc2s: float,
        ) -> None:
            p.mul_(1 - lr * wd)
            m.lerp_(g, 1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = torch.div(v, bc2s * bc2s, out=g).sqrt_().add_(eps)
            p.addcdiv_(m, denom, value=-lr / bc1)

    res = validate_rewrite(AdamWLike, AdamWLikeSqrtOfQuotient, {"foreach": False})
    assert res.equal, res.residuals
    assert not res.exact_same_ops


def test_lion_wrong_order_without_reformulation_fails() -> None:
    class LionNaiveR(LionLike):  # momentum first, then the *original* formula: wrong
        def _single(
            self, p: Tensor, g: Tensor, m: Tensor, lr: float, wd: float, b1: float, b2: float
        ) -> None:
            m.mul_(b2).add_(g, alpha=1 - b2)
            c = g.mul_(1 - b1).add_(m, alpha=b1).sign_()
            p.mul_(1 - lr * wd).add_(c, alpha=-lr)

    res = validate_rewrite(LionLike, LionNaiveR, {"foreach": False})
    assert not res.equal
    # step 1 from zero momentum agrees (sign(g) both ways); the final update does not
    assert "param[0][0]" in res.residuals
    assert not any("exp_avg" in k or "after_step1" in k for k in res.residuals)


def test_uninterpreted_norm_on_both_sides() -> None:
    res = validate_rewrite(NormSGD, NormSGDR, {"lr": 0.5})
    assert res.equal, res.residuals
    traj = symbolic_trajectory(NormSGD, {"lr": 0.5}, steps=1)
    assert "aten.linalg_vector_norm" in str(traj["param[0][0]"])
    # the limit of uninterpreted functions: a true identity through norm is not seen
    scaled = validate_rewrite(NormSGD, NormSGDScaledR, {"lr": 0.5})
    assert not scaled.equal


def test_sgd_trajectory_is_exact() -> None:
    traj = symbolic_trajectory(torch.optim.SGD, {"lr": 0.1, "foreach": False}, n_params=1)
    p, g1, g2 = sympy.symbols("p0_0 g0_0_1 g0_0_2", real=True)
    assert traj["param[0][0]"] == p - g1 / 10 - g2 / 10


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [(torch.optim.AdamW, {"lr": 1e-2}), (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9})],
)
def test_real_torch_optimizers_validate_against_themselves(cls: type, kwargs: dict) -> None:
    res = validate_rewrite(cls, cls, {**kwargs, "foreach": False})
    assert res.equal and res.exact_same_ops
    both = validate_rewrite(cls, cls, kwargs)  # foreach False and True
    assert both.equal and both.exact_same_ops
    single = symbolic_trajectory(cls, {**kwargs, "foreach": False})
    multi = symbolic_trajectory(cls, {**kwargs, "foreach": True})
    assert single.pop("group[0]['foreach']") == 0 and multi.pop("group[0]['foreach']") == 1
    assert single == multi  # torch's own for-loop and foreach paths agree exactly


def test_aliasing_views_and_out() -> None:
    class Aliasing(Optimizer):
        def __init__(self, params: Any) -> None:
            super().__init__(params, {})

        @torch.no_grad()
        def step(self) -> None:  # type: ignore[override]
            for p in self.param_groups[0]["params"]:
                g = p.grad
                alias = g.view(-1)
                torch.mul(g, 3, out=g)  # seen through `alias`
                p.data[0:1].add_(alias[1:2])  # write through a slice of a .data view
                self.state[p]["t"] = p.detach().t().clone()

    traj = symbolic_trajectory(Aliasing, {}, steps=1, n_params=1)
    p0, p1, g1 = sympy.symbols("p0_0 p0_1 g0_1_1", real=True)
    assert traj["param[0][0]"] == p0 + 3 * g1
    assert traj["param[0][1]"] == p1
    assert traj["state[0]['t'][0]"] == p0 + 3 * g1


def test_data_dependent_control_flow_raises() -> None:
    class Branchy(Optimizer):
        def __init__(self, params: Any) -> None:
            super().__init__(params, {})

        @torch.no_grad()
        def step(self) -> None:  # type: ignore[override]
            for p in self.param_groups[0]["params"]:
                if p.grad.norm().item() > 1:
                    p.sub_(p.grad)

    with pytest.raises(SymbolicExecutionError, match="data-dependent"):
        symbolic_trajectory(Branchy, {})


def test_concrete_zero_d_item_and_where() -> None:
    t = SymTensor.of([sympy.Integer(2), sympy.Symbol("x", real=True)])
    assert t[0].item() == 2.0
    w = torch.where(t > 1, t, torch.zeros_like(t))
    x = sympy.Symbol("x", real=True)
    assert w.exprs()[0] == 2
    assert w.exprs()[1] == sympy.Piecewise((x, x > 1), (0, True))
