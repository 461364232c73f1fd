"""gsr_rewrite.check on toy SGD-with-momentum optimizers: a correct GSR variant passes bitwise,
wrong ones fail with a message naming the step and the tensor."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.optim import Optimizer

from gsr_rewrite.check import (
    _GradSchedule,
    check_state_dict_swap,
    compare_trajectories,
    make_problem,
    measure_pair,
    run_checks,
)

KW = {"lr": 0.1, "momentum": 0.9}


class SGDMomentum(Optimizer):
    """The original: ``update = buf * lr`` allocates one param-sized temporary per param."""

    buf_key = "momentum_buffer"
    step_increment = 1.0

    def __init__(self, params: Any, lr: float = 0.01, momentum: float = 0.9, foreach: bool = False):
        super().__init__(params, {"lr": lr, "momentum": momentum, "foreach": foreach})

    def _gather(self, group: dict[str, Any]) -> tuple[list[torch.Tensor], ...]:
        params, grads, bufs = [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:
                state["step"] = torch.tensor(0.0)
                state[self.buf_key] = torch.zeros_like(p)
            state["step"] += self.step_increment
            params.append(p)
            grads.append(p.grad)
            bufs.append(state[self.buf_key])
        return params, grads, bufs

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> None:
        for group in self.param_groups:
            params, grads, bufs = self._gather(group)
            lr, m = group["lr"], group["momentum"]
            if group["foreach"]:
                self._foreach(params, grads, bufs, lr, m)
            else:
                for p, g, buf in zip(params, grads, bufs, strict=True):
                    self._single(p, g, buf, lr, m)

    def _single(self, p: torch.Tensor, g: torch.Tensor, buf: torch.Tensor, lr: float, m: float):
        buf.mul_(m).add_(g)
        p.sub_(buf * lr)

    def _foreach(self, params: list[torch.Tensor], grads: list[torch.Tensor],
                 bufs: list[torch.Tensor], lr: float, m: float) -> None:  # fmt: skip
        torch._foreach_mul_(bufs, m)
        torch._foreach_add_(bufs, grads)
        updates = torch._foreach_mul(bufs, lr)  # 1 unit of temporaries
        torch._foreach_sub_(params, updates)


class SGDMomentumR(SGDMomentum):
    """Correct GSR variant: the update lives in the (dead) grad buffer; 0 temporaries."""

    def _single(self, p: torch.Tensor, g: torch.Tensor, buf: torch.Tensor, lr: float, m: float):
        buf.mul_(m).add_(g)
        p.sub_(g.copy_(buf).mul_(lr))

    def _foreach(self, params: list[torch.Tensor], grads: list[torch.Tensor],
                 bufs: list[torch.Tensor], lr: float, m: float) -> None:  # fmt: skip
        torch._foreach_mul_(bufs, m)
        torch._foreach_add_(bufs, grads)
        torch._foreach_copy_(grads, bufs)
        torch._foreach_mul_(grads, lr)
        torch._foreach_sub_(params, grads)


class PoisonGradR(SGDMomentumR):
    """Fills grads with NaN after step (the debug switch): harmless iff grads are not shared."""

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> None:
        super().step(closure)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad.fill_(float("nan"))


class EarlyReuseR(SGDMomentum):
    """Wrong: scribbles on the grad before its last read (buf gets lr * g instead of g)."""

    def _single(self, p: torch.Tensor, g: torch.Tensor, buf: torch.Tensor, lr: float, m: float):
        g.mul_(lr)
        buf.mul_(m).add_(g)
        p.sub_(buf * lr)


class StateOnlyWrongR(SGDMomentumR):
    """Wrong only in state: params match the original, the step counter does not."""

    step_increment = 2.0


class RenamedStateR(SGDMomentumR):
    """Same math, different state key: trajectories match, checkpoints do not."""

    buf_key = "buf"


class UlpOffR(SGDMomentumR):
    """Update scaled by 1 + 2**-23 (one float32 ulp): not bitwise, well within tolerance."""

    def _single(self, p: torch.Tensor, g: torch.Tensor, buf: torch.Tensor, lr: float, m: float):
        buf.mul_(m).add_(g)
        p.sub_(g.copy_(buf).mul_(lr * (1 + 2**-23)))


def test_make_problem_has_odd_shapes() -> None:
    params = make_problem(0, "cpu")
    numels = [p.numel() for p in params]
    assert 0 in numels and 1 in numels and max(numels) >= 2048
    assert any(not p.is_contiguous() for p in params)
    assert all(isinstance(p, torch.nn.Parameter) for p in params)
    again = make_problem(0, "cpu")
    assert all(torch.equal(p, q) for p, q in zip(params, again, strict=True))


def test_grad_schedule_has_none_frozen_and_noncontiguous_grads() -> None:
    params = make_problem(0, "cpu")
    schedule = _GradSchedule(params, seed=0, total_steps=7)
    steps = [schedule.grads(s) for s in range(7)]
    assert all(g[-1] is None for g in steps[3:]) and steps[0][-1] is not None  # frozen mid-run
    assert any(g[i] is None for g in steps[:3] for i in range(len(params) - 1))
    grad = steps[0][2]
    assert grad is not None and grad.stride() == params[2].stride() != grad.contiguous().stride()


@pytest.mark.parametrize("foreach", [False, True])
def test_correct_variant_passes_bitwise(foreach: bool) -> None:
    res = compare_trajectories(SGDMomentum, SGDMomentumR, {**KW, "foreach": foreach})
    assert res.passed, res.message
    assert res.max_abs_diff == 0.0 and res.mode == "bitwise" and res.steps == 7
    assert res.config == {**KW, "foreach": foreach} and res.device == "cpu"


def test_early_reuse_fails_naming_step_and_param() -> None:
    res = compare_trajectories(SGDMomentum, EarlyReuseR, KW)
    assert not res.passed
    assert res.message.startswith("step 1: R-variant vs original: param[1] (shape (1,))")
    assert "differs" in res.message and res.max_abs_diff > 0


def test_state_is_compared_even_when_params_match() -> None:
    res = compare_trajectories(SGDMomentum, StateOnlyWrongR, KW)
    assert not res.passed
    assert "step 1:" in res.message and "state of param[0] (shape (0, 3))" in res.message
    assert "['step']" in res.message


def test_each_optimizer_gets_its_own_grads() -> None:
    # If the harness shared one grad tensor, whichever optimizer steps second would read NaN.
    for first, second in [(SGDMomentum, PoisonGradR), (PoisonGradR, SGDMomentum)]:
        for foreach in (False, True):
            res = compare_trajectories(first, second, {**KW, "foreach": foreach})
            assert res.passed, res.message


def test_tolerance_mode_accepts_ulp_difference_and_reports_it() -> None:
    bitwise = compare_trajectories(SGDMomentum, UlpOffR, KW)
    assert not bitwise.passed and "step 1:" in bitwise.message
    tol = compare_trajectories(SGDMomentum, UlpOffR, KW, mode="tolerance")
    assert tol.passed, tol.message
    assert 0 < tol.max_abs_diff < 1e-5 and tol.rtol is not None


def test_state_dict_swap_both_ways() -> None:
    for foreach in (False, True):
        res = check_state_dict_swap(SGDMomentum, SGDMomentumR, {**KW, "foreach": foreach})
        assert res.passed, res.message
        assert res.steps == 8 and res.max_abs_diff == 0.0


def test_state_dict_swap_catches_renamed_state() -> None:
    assert compare_trajectories(SGDMomentum, RenamedStateR, KW).passed is False  # keys differ
    res = check_state_dict_swap(SGDMomentum, RenamedStateR, KW)
    assert not res.passed and "keys" in res.message


def test_constructor_error_is_reported_not_raised() -> None:
    res = compare_trajectories(SGDMomentum, SGDMomentumR, {"bogus": 1})
    assert not res.passed and "constructor raised" in res.message


def test_run_checks_covers_foreach_and_swap() -> None:
    results = run_checks(SGDMomentum, SGDMomentumR, [KW, {"lr": 0.5, "momentum": 0.0}])
    # per config and path: odd-shaped trajectory, dense trajectory, state-dict swap
    assert len(results) == 12 and all(r.passed for r in results), [r.summary for r in results]
    assert [r.config["foreach"] for r in results[:6]] == [False] * 3 + [True] * 3
    pinned = run_checks(SGDMomentum, SGDMomentumR, [{**KW, "foreach": True}], steps=3)
    assert len(pinned) == 3 and pinned[0].steps == 3
    failed = run_checks(SGDMomentum, EarlyReuseR, [KW])
    assert not failed[0].passed and not failed[1].passed
    assert failed[3].passed and failed[4].passed  # the foreach path of EarlyReuseR is correct


def test_measure_pair_original_one_unit_variant_zero() -> None:
    orig, rvar = measure_pair(SGDMomentum, SGDMomentumR, {**KW, "foreach": True})
    assert orig.param_bytes == rvar.param_bytes == 8 * 64 * 64 * 4
    assert 1.0 <= orig.units < 1.01
    assert rvar.units < 0.01
