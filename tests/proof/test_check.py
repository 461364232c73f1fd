"""gsr_rewrite.proof.check (with stress, lockstep, snapshot and compare) on toy SGD-with-momentum
optimizers: a correct GSR variant passes bitwise, wrong ones fail with a message naming the step
and the tensor."""

from __future__ import annotations

import collections
import inspect
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.optim import Optimizer

from gsr_rewrite.proof.check import (
    CheckResult,
    check_state_dict_swap,
    compare_trajectories,
    make_problem,
    measure_pair,
    run_checks,
    stress_configs,
    stress_matrix,
)
from gsr_rewrite.proof.compare import Criteria, compare_values
from gsr_rewrite.proof.lockstep import GradSchedule
from gsr_rewrite.proof.snapshot import snapshot
from gsr_rewrite.runtime.strip_runs import strip_floor_bytes

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
    schedule = GradSchedule(params, seed=0, total_steps=7)
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


# -- stress matrix --------------------------------------------------------------------------------
# ToySGD has a boolean flip (nesterov, which needs momentum: stress_configs pairs it with one),
# another (maximize), and three numeric options that default to 0. Each *R class below is wrong in
# exactly one way, and only the stress case named in its docstring can see it: each test asserts
# the exact set of failing cases, so it would fail if that case were left out of the matrix.

CASES = ("two groups, odd shapes", "two groups, dense", "duplicate param", "overlapping grads",
         "bucket-view grads", "autograd accumulation", "tensor lr", "bf16",
         "cut by a small strip floor")


class ToySGD(Optimizer):
    """SGD with momentum, dampening, weight decay, nesterov and maximize in one Python loop; keeps
    its step count on ``self.count``; ``p.sub_(d * lr)`` allocates one temporary per param."""

    def __init__(self, params: Any, lr: float = 0.1, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False,
                 maximize: bool = False) -> None:
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov needs momentum and zero dampening")
        defaults = {"lr": lr, "momentum": momentum, "dampening": dampening,
                    "weight_decay": weight_decay, "nesterov": nesterov, "maximize": maximize}
        super().__init__(params, defaults)
        self.count = 0

    def _lr(self, group: dict[str, Any]) -> float:
        lr = group["lr"]
        return lr.item() if isinstance(lr, torch.Tensor) else float(lr)

    def _dampening(self, group: dict[str, Any]) -> float:
        return float(group["dampening"])

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> None:
        self.count += 1
        for group in self.param_groups:
            lr = self._lr(group)
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, p.grad, self.state[p], group, lr)

    def _direction(self, p: torch.Tensor, g: torch.Tensor, state: dict[str, Any],
                   group: dict[str, Any]) -> torch.Tensor:
        d = -g if group["maximize"] else g
        if group["weight_decay"] != 0:
            d = d.add(p, alpha=group["weight_decay"])
        momentum = group["momentum"]
        if momentum != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = d.clone()
            else:
                buf.mul_(momentum).add_(d, alpha=1 - self._dampening(group))
            d = d.add(buf, alpha=momentum) if group["nesterov"] else buf
        return d

    def _update(self, p: torch.Tensor, g: torch.Tensor, state: dict[str, Any],
                group: dict[str, Any], lr: float) -> None:
        p.sub_(self._direction(p, g, state, group) * lr)


class ToySGDR(ToySGD):
    """Correct: when the direction is the gradient itself, the update lives in the grad buffer,
    guarded like gsr_rewrite.runtime (no duplicate param, no grad overlapping another grad)."""

    def _update(self, p: torch.Tensor, g: torch.Tensor, state: dict[str, Any],
                group: dict[str, Any], lr: float) -> None:
        d = self._direction(p, g, state, group)
        others = [q.grad for q in group["params"] if q is not p and q.grad is not None]
        if d is g and _listed_once(p, group) and not any(_overlap(g, o) for o in others):
            p.sub_(g.mul_(lr))
        else:
            p.sub_(d * lr)


def _listed_once(p: torch.Tensor, group: dict[str, Any]) -> bool:
    return sum(q is p for q in group["params"]) == 1


def _overlap(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Element ranges of two contiguous tensors intersect (same storage)."""
    if a.numel() == 0 or b.numel() == 0 or a.untyped_storage().data_ptr() != \
            b.untyped_storage().data_ptr():
        return False
    return a.storage_offset() < b.storage_offset() + b.numel() and \
        b.storage_offset() < a.storage_offset() + a.numel()


class FirstGroupLrR(ToySGDR):
    """Wrong in "two groups, *": every group steps with the first group's lr."""

    def _lr(self, group: dict[str, Any]) -> float:
        return super()._lr(self.param_groups[0])


class DuplicateOnlyR(ToySGD):
    """Wrong in "duplicate param": scribbles into the grad when no OTHER grad tensor shares its
    storage, but a param listed twice hands the same grad to both visits (the `t is not h`
    exemption), so the second visit reads lr * g."""

    def _update(self, p: torch.Tensor, g: torch.Tensor, state: dict[str, Any],
                group: dict[str, Any], lr: float) -> None:
        d = self._direction(p, g, state, group)
        others = [q.grad for q in group["params"] if q.grad is not None and q.grad is not g]
        storage = g.untyped_storage().data_ptr()
        if d is g and all(o.untyped_storage().data_ptr() != storage for o in others):
            p.sub_(g.mul_(lr))
        else:
            p.sub_(d * lr)


class OverlapOnlyR(ToySGD):
    """Wrong in "overlapping grads": refuses duplicate params but scribbles into a grad that
    overlaps the next param's grad."""

    def _update(self, p: torch.Tensor, g: torch.Tensor, state: dict[str, Any],
                group: dict[str, Any], lr: float) -> None:
        d = self._direction(p, g, state, group)
        if d is g and _listed_once(p, group):
            p.sub_(g.mul_(lr))
        else:
            p.sub_(d * lr)


class BucketOnlyR(ToySGD):
    """Wrong in "bucket-view grads": its scratch starts at the grad's storage, not at the grad
    (storage_offset ignored), so with grads packed in one buffer it overwrites other params'
    grads; refuses grads that overlap each other or repeat."""

    def _update(self, p: torch.Tensor, g: torch.Tensor, state: dict[str, Any],
                group: dict[str, Any], lr: float) -> None:
        d = self._direction(p, g, state, group)
        grads = [q.grad for q in group["params"] if q.grad is not None]
        disjoint = not any(_overlap(a, b) for i, a in enumerate(grads) for b in grads[i + 1:])
        if d is g and g.is_contiguous() and disjoint:
            scratch = torch.as_strided(g, (g.numel(),), (1,), 0)  # offset 0: the bug
            p.sub_(scratch.copy_(g.reshape(-1)).mul_(lr).view_as(p))
        else:
            p.sub_(d * lr)


class LateR(ToySGDR):
    """Wrong from step 6 on, in every case (the matrix runs 8 steps)."""

    def _update(self, p: torch.Tensor, g: torch.Tensor, state: dict[str, Any],
                group: dict[str, Any], lr: float) -> None:
        super()._update(p, g, state, group, lr * (1 + 2**-10) if self.count > 5 else lr)


class TensorLrR(ToySGDR):
    """Wrong in "tensor lr": reads a tensor lr through bfloat16."""

    def _lr(self, group: dict[str, Any]) -> float:
        lr = group["lr"]
        return float(lr.to(torch.bfloat16)) if isinstance(lr, torch.Tensor) else float(lr)


class Bf16R(ToySGDR):
    """Wrong in "bf16": updates bf16 params in float32 and rounds once (the original rounds the
    update, then the difference)."""

    def _update(self, p: torch.Tensor, g: torch.Tensor, state: dict[str, Any],
                group: dict[str, Any], lr: float) -> None:
        if p.dtype != torch.bfloat16:
            return super()._update(p, g, state, group, lr)
        d = self._direction(p, g, state, group)
        p.copy_((p.float() - d.float() * lr).to(p.dtype))


class SmallFloorR(ToySGDR):
    """Wrong only under a small strip floor (what a strip-mined run that chunks or cuts its
    tensors wrongly would be): the case that sets one must see it."""

    def _update(self, p: torch.Tensor, g: torch.Tensor, state: dict[str, Any],
                group: dict[str, Any], lr: float) -> None:
        super()._update(p, g, state, group, lr * (1.5 if strip_floor_bytes() < 2**20 else 1.0))


class ThreeDimR(ToySGDR):
    """Wrong for 3-D params only (every case has the (2, 3, 4) param)."""

    def _update(self, p: torch.Tensor, g: torch.Tensor, state: dict[str, Any],
                group: dict[str, Any], lr: float) -> None:
        if p.dim() != 3:
            return super()._update(p, g, state, group, lr)
        p.sub_(self._direction(p, g, state, group).flip(-1) * lr)


class CountR(ToySGDR):
    """Params and state right; the step count on self is not."""

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> None:
        super().step(closure)
        self.count += 1


class DampeningR(ToySGDR):
    """Wrong only when momentum and dampening are both non-zero (both default to 0): only the
    all-numeric-options-at-once configuration has both."""

    def _dampening(self, group: dict[str, Any]) -> float:
        return 2 * float(group["dampening"])


class GradDiff(Optimizer):
    """``p -= lr * (2 g - g_prev)``: keeps a copy of the last gradient in state."""

    def __init__(self, params: Any, lr: float = 0.1) -> None:
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state, g = self.state[p], p.grad
                prev = state.get("prev_grad")
                d = g * 2 if prev is None else (g * 2).sub_(prev)
                self._keep(state, g)
                p.sub_(d * group["lr"])

    def _keep(self, state: dict[str, Any], g: torch.Tensor) -> None:
        state["prev_grad"] = g.clone()


class AliasPrevGradR(GradDiff):
    """Wrong in "autograd accumulation": keeps the (dead) grad itself as prev_grad; exact while
    every step brings new grad tensors, wrong when zero_grad and backward refill the same ones."""

    def _keep(self, state: dict[str, Any], g: torch.Tensor) -> None:
        state["prev_grad"] = g


def _failed_cases(results: list[CheckResult]) -> set[str]:
    return {r.case for r in results if not r.passed}


def test_stress_configs_flip_bools_and_zero_numbers() -> None:
    assert stress_configs(ToySGD) == [
        {},
        {"nesterov": True, "momentum": 0.5},  # alone the constructor raises: paired with momentum
        {"maximize": True},
        {"momentum": 0.5},
        {"dampening": 0.05},
        {"weight_decay": 0.05},
        {"momentum": 0.5, "dampening": 0.05, "weight_decay": 0.05},
    ]
    assert stress_configs(torch.optim.AdamW) == [{}, {"amsgrad": True}, {"maximize": True}]
    sgd = stress_configs(torch.optim.SGD)  # weight_decay=0 is an int default annotated float
    assert {"weight_decay": 0.05} in sgd and {"nesterov": True, "momentum": 0.5} in sgd
    assert all(not {"foreach", "fused", "differentiable"} & set(c) for c in sgd)
    assert stress_configs(GradDiff) == [{}]
    assert stress_configs(TwoDimOnly) == stress_configs(ToySGD)  # options behind **kwargs


@pytest.mark.parametrize("original", [ToySGD, GradDiff, torch.optim.SGD, torch.optim.AdamW])
def test_stress_matrix_passes_for_a_plain_subclass(original: type[Optimizer]) -> None:
    plain = type(original.__name__ + "R", (original,), {})
    results = stress_matrix(original, plain)
    assert results and all(r.passed for r in results), [r.summary for r in results if not r.passed]
    ran = {r.case for r in results}
    assert ran == {*CASES, "state_dict swap"}
    paths = {r.config.get("foreach") for r in results}
    assert paths == ({False, True} if "foreach" in inspect.signature(original).parameters
                     else {None})
    assert sum(r.case == "state_dict swap" for r in results) == len(paths)  # once per path
    assert all(r.steps == 8 and r.max_abs_diff == 0.0 for r in results if r.case in CASES)


def test_stress_results_name_case_config_and_path() -> None:
    results = stress_matrix(torch.optim.SGD, type("SGDR", (torch.optim.SGD,), {}))
    names = [r.name for r in results]
    assert "SGD->SGDR stress duplicate param (maximize=True, foreach=True)" in names
    assert "SGD->SGDR stress bf16 (defaults, foreach=False)" in names
    # torch.optim.SGD rejects nothing here; foreach SGD takes a tensor lr too
    assert all("not applicable" not in r.message for r in results)


@pytest.mark.parametrize("wrong, failing", [
    (FirstGroupLrR, {"two groups, odd shapes", "two groups, dense"}),
    (DuplicateOnlyR, {"duplicate param"}),
    (OverlapOnlyR, {"overlapping grads"}),
    (BucketOnlyR, {"bucket-view grads"}),
    (TensorLrR, {"tensor lr"}),
    (Bf16R, {"bf16"}),
    (SmallFloorR, {"cut by a small strip floor"}),
])
def test_each_case_catches_its_wrong_variant(wrong: type[Optimizer], failing: set[str]) -> None:
    assert _failed_cases(stress_matrix(ToySGD, wrong)) == failing


def test_correct_toy_variant_passes_the_matrix() -> None:
    results = stress_matrix(ToySGD, ToySGDR)
    assert all(r.passed for r in results), [r.summary for r in results if not r.passed]


def test_autograd_accumulation_catches_state_aliasing_the_grad() -> None:
    assert _failed_cases(stress_matrix(GradDiff, AliasPrevGradR)) == {"autograd accumulation"}


def test_steps_past_five_are_compared() -> None:
    assert all(r.passed for r in stress_matrix(ToySGD, LateR, steps=5))
    failed = [r for r in stress_matrix(ToySGD, LateR) if not r.passed]
    # not the swap: its loaded R-variant starts counting at 0 (self.count is not checkpointed)
    assert _failed_cases(failed) == set(CASES)
    assert all(int(r.message.split(":")[0].removeprefix("step ")) >= 6 for r in failed)


def test_three_dim_params_are_in_every_case() -> None:
    failed = [r for r in stress_matrix(ToySGD, ThreeDimR) if not r.passed]
    assert _failed_cases(failed) == {*CASES, "state_dict swap"}
    assert all("(shape (2, 3, 4))" in r.message for r in failed)


def test_attributes_on_self_are_compared() -> None:
    failed = [r for r in stress_matrix(ToySGD, CountR) if not r.passed]
    assert _failed_cases(failed) == {*CASES, "state_dict swap"}
    assert all("step 1:" in r.message and "self.count is 1 vs 2" in r.message for r in failed)


def test_numeric_option_defaulting_to_zero_is_turned_on() -> None:
    failed = [r for r in stress_matrix(ToySGD, DampeningR) if not r.passed]
    assert failed and {r.case for r in failed} <= set(CASES)
    assert all(r.config == {"momentum": 0.5, "dampening": 0.05, "weight_decay": 0.05}
               for r in failed)


class TensorLrRejected(ToySGD):
    """The original rejects a tensor lr in its constructor."""

    def __init__(self, params: Any, lr: float = 0.1, **kwargs: Any) -> None:
        if isinstance(lr, torch.Tensor):
            raise TypeError("lr must be a float")
        super().__init__(params, lr, **kwargs)


class AcceptsTensorLrR(TensorLrRejected):
    def __init__(self, params: Any, lr: float = 0.1, **kwargs: Any) -> None:
        super().__init__(params, float(lr), **kwargs)


class NoBf16(ToySGD):
    """The original raises at the first step on bf16 params."""

    def _update(self, p: torch.Tensor, g: torch.Tensor, state: dict[str, Any],
                group: dict[str, Any], lr: float) -> None:
        if p.dtype == torch.bfloat16:
            raise NotImplementedError("no bf16")
        super()._update(p, g, state, group, lr)


class NoBf16WrongErrorR(NoBf16):
    def _update(self, p: torch.Tensor, g: torch.Tensor, state: dict[str, Any],
                group: dict[str, Any], lr: float) -> None:
        if p.dtype == torch.bfloat16:
            raise TypeError("no bf16")
        super()._update(p, g, state, group, lr)


class RaisesOnBf16R(ToySGDR):
    def _update(self, p: torch.Tensor, g: torch.Tensor, state: dict[str, Any],
                group: dict[str, Any], lr: float) -> None:
        if p.dtype == torch.bfloat16:
            raise NotImplementedError("no bf16")
        super()._update(p, g, state, group, lr)


def _by_case(results: list[CheckResult], case: str) -> list[CheckResult]:
    return [r for r in results if r.case == case]


def test_original_raising_is_not_applicable_when_the_variant_raises_alike() -> None:
    rejected = _by_case(stress_matrix(TensorLrRejected, type("R", (TensorLrRejected,), {})),
                        "tensor lr")
    assert rejected and all(r.passed and r.not_applicable for r in rejected)
    assert all(r.message.startswith("not applicable: with every shape, constructor: original "
                                    "raised TypeError") for r in rejected)
    bf16 = _by_case(stress_matrix(NoBf16, type("R", (NoBf16,), {})), "bf16")
    assert bf16 and all(r.passed and r.not_applicable for r in bf16)
    assert all(r.message.startswith("not applicable: with every shape, step 1: ") for r in bf16)


def test_variant_must_raise_where_and_what_the_original_raises() -> None:
    accepts = _by_case(stress_matrix(TensorLrRejected, AcceptsTensorLrR), "tensor lr")
    assert accepts and all(not r.passed and "constructor" in r.message for r in accepts)
    wrong_type = _by_case(stress_matrix(NoBf16, NoBf16WrongErrorR), "bf16")
    assert wrong_type and all(not r.passed and "TypeError" in r.message for r in wrong_type)
    only_r = stress_matrix(ToySGD, RaisesOnBf16R)
    assert _failed_cases(only_r) == {"bf16"}
    assert all("R-variant.step() raised NotImplementedError" in r.message
               for r in _by_case(only_r, "bf16"))


class TwoDimOnly(ToySGD):
    """Takes 2-D params only (like torch.optim.Muon)."""

    def __init__(self, params: Any, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        if any(p.dim() != 2 for g in self.param_groups for p in g["params"]):
            raise ValueError("2-D params only")


class TwoDimOnlyFirstGroupLrR(TwoDimOnly, FirstGroupLrR):
    pass


def test_cases_fall_back_to_2d_params_where_the_original_rejects_the_mix() -> None:
    results = stress_matrix(TwoDimOnly, type("R", (TwoDimOnly,), {}))
    assert all(r.passed and not r.not_applicable for r in results)
    assert all(r.message == "compared on 2-D params only: with every shape, constructor: "
                            "original raised ValueError('2-D params only'), the R-variant alike"
               for r in results)
    assert _failed_cases(stress_matrix(TwoDimOnly, TwoDimOnlyFirstGroupLrR)) == {
        "two groups, odd shapes", "two groups, dense"}
    # torch's Adafactor divides by zero on the 0-size param
    adafactor = stress_matrix(torch.optim.Adafactor,
                              type("AdafactorR", (torch.optim.Adafactor,), {}))
    assert all(r.passed and not r.not_applicable for r in adafactor)


def test_a_path_where_nothing_could_be_compared_fails() -> None:
    results = stress_matrix(torch.optim.LBFGS, type("LBFGSR", (torch.optim.LBFGS,), {}))
    failed = [r for r in results if not r.passed]
    assert len(failed) == 1 and "no case could be compared" in failed[0].message
    assert all(r.not_applicable for r in results if r is not failed[0])


def test_unconstructible_original_fails_the_matrix() -> None:
    class NeedsLr(ToySGD):
        def __init__(self, params: Any, lr: float, **kwargs: Any) -> None:
            super().__init__(params, lr, **kwargs)

    assert stress_configs(NeedsLr) == []
    results = stress_matrix(NeedsLr, type("R", (NeedsLr,), {}))
    assert len(results) == 1 and not results[0].passed and "constructor" in results[0].message


def test_snapshot_compares_plain_data_inner_optimizers_and_param_keys() -> None:
    def build() -> ToySGD:
        params = make_problem(0, "cpu")
        opt = ToySGD(params, momentum=0.5)
        opt.history = collections.deque([torch.ones(2)], maxlen=3)  # type: ignore[attr-defined]
        opt.by_param = {params[2]: 1.5}  # type: ignore[attr-defined]
        opt.inner = ToySGD(params[:2])  # type: ignore[attr-defined]
        opt.hook = opt.step  # type: ignore[attr-defined]  # bound methods: equal by type
        opt.myself = opt  # type: ignore[attr-defined]
        return opt

    crit = Criteria("bitwise", 0.0, 0.0)
    a, b = build(), build()
    assert compare_values(snapshot(a), snapshot(b), "", crit)[1] is None
    b.by_param = {b.param_groups[0]["params"][3]: 1.5}  # type: ignore[attr-defined]
    msg = compare_values(snapshot(a), snapshot(b), "", crit)[1]
    assert msg is not None and "self.by_param" in msg and "param[2]" in msg
    b = build()
    b.history[0][1] = 2.0  # type: ignore[attr-defined]
    msg = compare_values(snapshot(a), snapshot(b), "", crit)[1]
    assert msg is not None and msg.startswith("self.history[0] differs")
    b = build()
    b.inner.count = 3  # type: ignore[attr-defined]
    msg = compare_values(snapshot(a), snapshot(b), "", crit)[1]
    assert msg is not None and "self.inner" in msg and "count" in msg
    b = build()
    b.hook = "x"  # type: ignore[attr-defined]
    assert compare_values(snapshot(a), snapshot(b), "", crit)[1] is not None
    bare = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    assert not [k for k in snapshot(bare) if k.startswith("self.")]  # torch's own bookkeeping


def test_bitwise_stress_distinguishes_signed_zeros() -> None:
    crit = Criteria("bitwise", 0.0, 0.0, bits=True)
    assert compare_values(torch.tensor([0.0]), torch.tensor([-0.0]), "x", crit)[1] is not None
    nan = torch.tensor([float("nan")])
    assert compare_values(nan, -nan, "x", crit)[1] is None  # any NaN equals any NaN
