"""Tests for the reference original optimizers in ``examples/`` (AdamW, Adan, Lion).

These originals are the ground truth the R-variants are checked against, so they are checked
themselves: AdamW against torch.optim.AdamW, Adan and Lion against small float64 reference
implementations written here from the papers' formulas.

Tolerance table (float32 optimizers, CPU):

| comparison                          | rtol | atol | why                                        |
|-------------------------------------|------|------|--------------------------------------------|
| AdamW vs torch.optim.AdamW          | 1e-6 | 1e-8 | same op sequence; measured bitwise on torch |
|                                     |      |      | 2.13 CPU. rtol ~ 8 fp32 ulps leaves room for |
|                                     |      |      | kernel changes; atol only for entries ~0.  |
| Adan / Lion vs float64 reference    | 1e-5 | 1e-6 | fp32 rounding accumulated over ~25 steps   |
|                                     |      |      | of size lr=1e-2 on O(1) params.            |
| for-loop vs foreach path            | 0    | 0    | on CPU foreach ops run the same per-tensor |
|                                     |      |      | kernels in the same order: bitwise.        |
"""

import importlib.util
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
import torch
from torch.optim import Optimizer

from tests.common import EXAMPLES

TORCH_TOL = dict(rtol=1e-6, atol=1e-8)
REF_TOL = dict(rtol=1e-5, atol=1e-6)
EXACT = dict(rtol=0.0, atol=0.0)


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"gsr_examples_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


adamw_mod = _load("adamw")
adan_mod = _load("adan")
lion_mod = _load("lion")
AdamW, Adan, Lion = adamw_mod.AdamW, adan_mod.Adan, lion_mod.Lion

Grads = list[list[torch.Tensor | None]]


def make_params(seed: int = 0) -> list[torch.Tensor]:
    """Odd shapes: 2-D, 1-element, 0-size, size-1 dim, odd length, non-contiguous, larger."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(3, 4), (1,), (0,), (5, 1, 3), (17,), (1000,)]
    params = [torch.randn(s, generator=g) for s in shapes]
    params.append(torch.randn(6, 4, generator=g).t())  # non-contiguous (4, 6)
    return params


def make_grads(params: list[torch.Tensor], steps: int, none_grads: bool, seed: int = 1) -> Grads:
    """Gradient schedule. With ``none_grads``: param 0 has no grad on steps 3, 4 and 7, param 3
    is frozen from step 5 on, and param 4 gets its first grad on step 3 (lazy state init)."""
    g = torch.Generator().manual_seed(seed)
    schedule: Grads = []
    for t in range(steps):
        row: list[torch.Tensor | None] = [torch.randn(p.shape, generator=g) for p in params]
        if none_grads:
            if t in (3, 4, 7):
                row[0] = None
            if t >= 5:
                row[3] = None
            if t < 3:
                row[4] = None
        schedule.append(row)
    return schedule


def run(
    factory: Callable[[list[torch.Tensor]], Optimizer], init: list[torch.Tensor], grads: Grads
) -> tuple[list[torch.Tensor], Optimizer]:
    params = [torch.nn.Parameter(p.clone()) for p in init]
    opt = factory(params)
    for row in grads:
        for p, grad in zip(params, row, strict=True):
            p.grad = None if grad is None else grad.clone()
        opt.step()
    return params, opt


def assert_states_close(
    params_a: list[torch.Tensor],
    opt_a: Optimizer,
    params_b: list[torch.Tensor],
    opt_b: Optimizer,
    tol: dict[str, float],
) -> None:
    """Params and every state tensor agree; 'step' compared by value (torch keeps a tensor)."""
    for a, b in zip(params_a, params_b, strict=True):
        torch.testing.assert_close(a.detach(), b.detach(), **tol)
        state_a, state_b = opt_a.state[a], opt_b.state[b]
        assert set(state_a) == set(state_b)
        for key, value in state_a.items():
            other = state_b[key]
            if key == "step":
                assert float(value) == float(other)
            else:
                torch.testing.assert_close(value, other.to(value.dtype), **tol)


# --------------------------------------------------------------------------- references (float64)


def adan_reference(
    init: list[torch.Tensor],
    grads: Grads,
    lr: float,
    betas: tuple[float, float, float],
    eps: float,
    weight_decay: float,
    no_prox: bool,
) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    b1, b2, b3 = betas
    params = [p.double() for p in init]
    states: list[dict[str, Any]] = [{} for _ in init]
    for row in grads:
        for i, grad in enumerate(row):
            if grad is None:
                continue
            g, s = grad.double(), states[i]
            if not s:
                zeros = torch.zeros_like(params[i])
                s.update(step=0, exp_avg=zeros, exp_avg_diff=zeros, exp_avg_sq=zeros, prev_grad=g)
            s["step"] += 1
            t = s["step"]
            d = g - s["prev_grad"]
            s["exp_avg"] = b1 * s["exp_avg"] + (1 - b1) * g
            s["exp_avg_diff"] = b2 * s["exp_avg_diff"] + (1 - b2) * d
            s["exp_avg_sq"] = b3 * s["exp_avg_sq"] + (1 - b3) * (g + b2 * d) ** 2
            denom = (s["exp_avg_sq"] / (1 - b3**t)).sqrt() + eps
            update = (s["exp_avg"] / (1 - b1**t) + b2 * s["exp_avg_diff"] / (1 - b2**t)) / denom
            if no_prox:
                params[i] = params[i] * (1 - lr * weight_decay) - lr * update
            else:
                params[i] = (params[i] - lr * update) / (1 + lr * weight_decay)
            s["prev_grad"] = g
    return params, states


def lion_reference(
    init: list[torch.Tensor],
    grads: Grads,
    lr: float,
    betas: tuple[float, float],
    weight_decay: float,
    maximize: bool,
) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    b1, b2 = betas
    params = [p.double() for p in init]
    states: list[dict[str, Any]] = [{} for _ in init]
    for row in grads:
        for i, grad in enumerate(row):
            if grad is None:
                continue
            g = -grad.double() if maximize else grad.double()
            s = states[i]
            if not s:
                s["exp_avg"] = torch.zeros_like(params[i])
            c = b1 * s["exp_avg"] + (1 - b1) * g
            params[i] = params[i] * (1 - lr * weight_decay) - lr * torch.sign(c)
            s["exp_avg"] = b2 * s["exp_avg"] + (1 - b2) * g
    return params, states


def assert_matches_reference(
    params: list[torch.Tensor],
    opt: Optimizer,
    ref_params: list[torch.Tensor],
    ref_states: list[dict[str, Any]],
) -> None:
    for p, ref_p, ref_s in zip(params, ref_params, ref_states, strict=True):
        torch.testing.assert_close(p.detach().double(), ref_p, **REF_TOL)
        state = opt.state[p]
        assert set(state) == set(ref_s)
        for key, value in ref_s.items():
            if key == "step":
                assert state[key] == value
            else:
                torch.testing.assert_close(state[key].double(), value, **REF_TOL)


# ----------------------------------------------------------------------------------------- AdamW


@pytest.mark.parametrize("none_grads", [False, True])
@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("foreach", [False, True])
def test_adamw_matches_torch(
    foreach: bool, amsgrad: bool, maximize: bool, none_grads: bool
) -> None:
    init = make_params()
    grads = make_grads(init, steps=50, none_grads=none_grads)
    kw = dict(lr=1e-2, weight_decay=0.1, amsgrad=amsgrad, maximize=maximize, foreach=foreach)
    ours = run(lambda ps: AdamW(ps, **kw), init, grads)
    theirs = run(lambda ps: torch.optim.AdamW(ps, **kw), init, grads)
    assert_states_close(*ours, *theirs, TORCH_TOL)


def test_adamw_state_layout() -> None:
    params, opt = run(
        lambda ps: AdamW(ps, amsgrad=True), make_params(), make_grads(make_params(), 3, False)
    )
    state = opt.state[params[0]]
    assert set(state) == {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
    assert type(state["step"]) is int and state["step"] == 3
    assert state["exp_avg"].stride() == params[0].stride()
    assert opt.state[params[-1]]["exp_avg"].stride() == params[-1].stride()  # preserve_format
    expected = {"lr", "betas", "eps", "weight_decay", "amsgrad", "maximize", "foreach"}
    assert expected <= set(opt.defaults)


# ------------------------------------------------------------------------------------------ Adan


@pytest.mark.parametrize("none_grads", [False, True])
@pytest.mark.parametrize("no_prox", [False, True])
@pytest.mark.parametrize("foreach", [False, True])
def test_adan_matches_reference(foreach: bool, no_prox: bool, none_grads: bool) -> None:
    init = make_params()
    grads = make_grads(init, steps=25, none_grads=none_grads)
    hp = dict(lr=1e-2, betas=(0.98, 0.92, 0.99), eps=1e-8, weight_decay=0.05, no_prox=no_prox)
    params, opt = run(lambda ps: Adan(ps, foreach=foreach, **hp), init, grads)
    assert_matches_reference(params, opt, *adan_reference(init, grads, **hp))


@pytest.mark.parametrize("foreach", [False, True])
def test_adan_first_difference_is_zero(foreach: bool) -> None:
    init = make_params()
    params, opt = run(lambda ps: Adan(ps, foreach=foreach), init, make_grads(init, 1, False))
    for p in params:
        assert torch.count_nonzero(opt.state[p]["exp_avg_diff"]) == 0


# ------------------------------------------------------------------------------------------ Lion


@pytest.mark.parametrize("none_grads", [False, True])
@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("foreach", [False, True])
def test_lion_matches_reference(foreach: bool, maximize: bool, none_grads: bool) -> None:
    init = make_params()
    grads = make_grads(init, steps=30, none_grads=none_grads)
    hp = dict(lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1, maximize=maximize)
    params, opt = run(lambda ps: Lion(ps, foreach=foreach, **hp), init, grads)
    assert_matches_reference(params, opt, *lion_reference(init, grads, **hp))


# ------------------------------------------------------------------------------ all three classes

CONFIGS: list[tuple[type[Optimizer], dict[str, Any]]] = [
    (AdamW, dict(lr=1e-2, weight_decay=0.1)),
    (AdamW, dict(lr=1e-2, amsgrad=True, maximize=True)),
    (Adan, dict(lr=1e-2, weight_decay=0.05)),
    (Adan, dict(lr=1e-2, weight_decay=0.05, no_prox=True)),
    (Lion, dict(lr=1e-2, weight_decay=0.1)),
    (Lion, dict(lr=1e-2, maximize=True)),
]
CONFIG_IDS = [f"{cls.__name__}-{i}" for i, (cls, _) in enumerate(CONFIGS)]


@pytest.mark.parametrize(("cls", "kw"), CONFIGS, ids=CONFIG_IDS)
def test_forloop_and_foreach_agree(cls: type[Optimizer], kw: dict[str, Any]) -> None:
    init = make_params()
    grads = make_grads(init, steps=20, none_grads=True)
    loop = run(lambda ps: cls(ps, foreach=False, **kw), init, grads)
    multi = run(lambda ps: cls(ps, foreach=True, **kw), init, grads)
    assert_states_close(*loop, *multi, EXACT)


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize(("cls", "kw"), CONFIGS, ids=CONFIG_IDS)
def test_none_grads_leave_param_and_state_untouched(
    cls: type[Optimizer], kw: dict[str, Any], foreach: bool
) -> None:
    init = make_params()
    params = [torch.nn.Parameter(p.clone()) for p in init]
    opt = cls(params, foreach=foreach, **kw)
    for row in make_grads(init, steps=10, none_grads=True):
        for p, grad in zip(params, row, strict=True):
            p.grad = grad
        skipped = [p for p in params if p.grad is None]
        before = [
            (p.detach().clone(), {k: _copy(v) for k, v in opt.state[p].items()}) for p in skipped
        ]
        opt.step()
        for p, (value, state) in zip(skipped, before, strict=True):
            assert torch.equal(p.detach(), value)
            assert set(opt.state[p]) == set(state)
            for key, old in state.items():
                new = opt.state[p][key]
                assert torch.equal(new, old) if isinstance(old, torch.Tensor) else new == old
        moved = [p for p in params if p.grad is not None and p.numel() > 0]
        assert all(len(opt.state[p]) > 0 for p in moved)


def _copy(value: Any) -> Any:
    return value.clone() if isinstance(value, torch.Tensor) else value


@pytest.mark.parametrize(("cls", "kw"), CONFIGS, ids=CONFIG_IDS)
def test_lazy_state_init(cls: type[Optimizer], kw: dict[str, Any]) -> None:
    a, b = torch.nn.Parameter(torch.randn(3)), torch.nn.Parameter(torch.randn(2))
    opt = cls([a, b], **kw)
    a.grad = torch.randn(3)
    opt.step()
    assert len(opt.state[a]) > 0
    assert b not in opt.state or len(opt.state[b]) == 0


@pytest.mark.parametrize(("cls", "kw"), CONFIGS, ids=CONFIG_IDS)
def test_closure_loss_is_returned(cls: type[Optimizer], kw: dict[str, Any]) -> None:
    p = torch.nn.Parameter(torch.randn(4))
    opt = cls([p], **kw)
    start = p.detach().clone()

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = (p**2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert isinstance(loss, torch.Tensor)
    torch.testing.assert_close(loss, (start**2).sum())
    assert not torch.equal(p.detach(), start)


@pytest.mark.parametrize(("cls", "kw"), CONFIGS, ids=CONFIG_IDS)
def test_sparse_grad_raises(cls: type[Optimizer], kw: dict[str, Any]) -> None:
    p = torch.nn.Parameter(torch.randn(4))
    opt = cls([p], **kw)
    p.grad = torch.randn(4).to_sparse()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()


@pytest.mark.parametrize(
    ("cls", "foreach_helper"),
    [
        (AdamW, adamw_mod._multi_tensor_adamw),
        (Adan, adan_mod._adan_foreach),
        (Lion, lion_mod._lion_multi),
    ],
)
def test_foreach_none_uses_forloop_on_cpu(
    cls: type[Optimizer], foreach_helper: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    def forbidden(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("foreach path taken on CPU with foreach=None")

    module = sys.modules[cls.__module__]
    monkeypatch.setattr(module, foreach_helper.__name__, forbidden)
    p = torch.nn.Parameter(torch.randn(3))
    opt = cls([p])
    assert opt.defaults["foreach"] is None
    p.grad = torch.randn(3)
    opt.step()


@pytest.mark.parametrize(("cls", "kw"), CONFIGS, ids=CONFIG_IDS)
def test_state_dict_round_trip(cls: type[Optimizer], kw: dict[str, Any]) -> None:
    init = make_params()
    grads = make_grads(init, steps=8, none_grads=True)
    straight = run(lambda ps: cls(ps, **kw), init, grads)
    first, opt = run(lambda ps: cls(ps, **kw), init, grads[:4])
    resumed_params = [torch.nn.Parameter(p.detach().clone()) for p in first]
    resumed = cls(resumed_params, **kw)
    resumed.load_state_dict(opt.state_dict())
    for row in grads[4:]:
        for p, grad in zip(resumed_params, row, strict=True):
            p.grad = grad
        resumed.step()
    assert_states_close(*straight, resumed_params, resumed, EXACT)


INVALID: list[tuple[type[Optimizer], dict[str, Any]]] = [
    *[
        (cls, bad)
        for cls in (AdamW, Lion)
        for bad in (
            dict(lr=-1e-3),
            dict(betas=(1.0, 0.99)),
            dict(betas=(0.9, -0.1)),
            dict(weight_decay=-0.1),
        )
    ],
    (AdamW, dict(eps=-1e-8)),
    (Adan, dict(lr=-1e-3)),
    (Adan, dict(eps=-1e-8)),
    (Adan, dict(betas=(0.98, 0.92))),
    (Adan, dict(betas=(1.0, 0.92, 0.99))),
    (Adan, dict(betas=(0.98, -0.5, 0.99))),
    (Adan, dict(betas=(0.98, 0.92, 1.5))),
    (Adan, dict(weight_decay=-0.1)),
]


@pytest.mark.parametrize(("cls", "kw"), INVALID, ids=[f"{c.__name__}-{kw}" for c, kw in INVALID])
def test_invalid_hyperparameters_raise(cls: type[Optimizer], kw: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        cls([torch.nn.Parameter(torch.randn(2))], **kw)
