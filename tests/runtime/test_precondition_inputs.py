"""The run-time precondition beyond gradients and state (an adversarial probe found each): a tensor
option that shares a gradient's bytes, two params on one storage under chunked runs, an option
or state value whose operators run user code, tensors inside lists of state, gradients an
in-place op raises on (inference tensors, negative views), and the debug poison on a gradient
that requires grad. Each must take the original step (or be exact), never differ."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch

import gsr_rewrite
from gsr_rewrite import runtime
from gsr_rewrite.optim import AdamW, AdamWR
from gsr_rewrite.pipeline import rewrite_source
from gsr_rewrite.runtime import precondition
from tests.common import imported_fixture

Setup = Callable[[list[torch.nn.Parameter], int], None]


def _fresh_grads(params: list[torch.nn.Parameter], step: int) -> None:
    gen = torch.Generator().manual_seed(step)
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen)


def _pair(orig: type, rvar: type, params: list[torch.nn.Parameter], setup: Setup,
          steps: int = 3, **options: object) -> tuple[list[torch.Tensor], list[torch.Tensor], int]:
    """Params after `steps` of the original and of the R-variant from copies of `params`
    (`setup(params, step)` lays out the gradients), and how often the R step fell back."""
    out: list[list[torch.Tensor]] = []
    fell = 0
    for cls in (orig, rvar):
        ps = copy.deepcopy(params)
        opt = cls(ps, **copy.deepcopy(options))
        before = precondition._FALLBACKS[0]
        for step in range(steps):
            setup(ps, step)
            opt.step()
        fell = precondition._FALLBACKS[0] - before
        out.append([p.detach().clone() for p in ps])
    return out[0], out[1], fell


def _params(*shapes: tuple[int, ...]) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(0)
    return [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]


def test_a_tensor_lr_inside_a_gradient_takes_the_original_step() -> None:
    """lr, a 0-d view into the first gradient: the R step would write scratch into it before
    the second param reads it."""
    holder: dict[str, torch.Tensor] = {}

    def setup(ps: list[torch.nn.Parameter], step: int) -> None:
        _fresh_grads(ps, step)
        assert ps[0].grad is not None
        ps[0].grad[0, 0] = 1e-3
        holder["lr"].set_(ps[0].grad.untyped_storage(), 0, ())  # lr is grad[0, 0] from now on

    params = _params((4, 4), (4, 4))
    out = []
    for cls in (AdamW, AdamWR):
        ps = copy.deepcopy(params)
        holder["lr"] = torch.tensor(1e-3)
        opt = cls(ps, lr=holder["lr"], foreach=False)
        before = precondition._FALLBACKS[0]
        for step in range(3):
            setup(ps, step)
            opt.step()
        out.append([p.detach().clone() for p in ps])
    assert precondition._FALLBACKS[0] - before == 3
    assert all(torch.equal(a, b) for a, b in zip(*out, strict=True))


@pytest.mark.parametrize("foreach", [False, True])
def test_two_params_on_one_storage_take_the_original_step(foreach: bool) -> None:
    """Two Parameters over the same bytes: a strip-mined run cut into chunks (the strip floor
    made tiny) would update them in another order than torch's foreach ops."""
    out, fell = [], 0
    original = torch.optim.Adagrad
    for cls in (original, gsr_rewrite.reduce(original)):
        base = torch.randn(1024, generator=torch.Generator().manual_seed(0))
        params = [torch.nn.Parameter(base.view(32, 32)), torch.nn.Parameter(base.view(32, 32))]
        opt = cls(params, lr=0.1, weight_decay=0.1, foreach=foreach)
        before = precondition._FALLBACKS[0]
        with runtime.strip_floor(1024):
            for step in range(3):
                _fresh_grads(params, step)
                opt.step()
        fell = precondition._FALLBACKS[0] - before
        out.append(base.clone())
    assert fell == 3 and torch.equal(out[0], out[1])


class _HookedFloat(float):
    """A float whose division runs code: user code in the middle of a step."""

    def __truediv__(self, other: object) -> float:
        return float(self) / float(other)  # type: ignore[arg-type]


class _Opaque:
    """A state value the precondition cannot see into."""


class _SubTensor(torch.Tensor):
    """A tensor subclass: its `__torch_function__` could run any code."""


def test_an_option_whose_operators_run_code_takes_the_original_step() -> None:
    a, b, fell = _pair(AdamW, AdamWR, _params((4, 4)), _fresh_grads, lr=_HookedFloat(1e-3))
    assert fell == 3 and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    # numpy scalars and plain values run no user code: the R step runs
    import numpy as np
    a, b, fell = _pair(AdamW, AdamWR, _params((4, 4)), _fresh_grads, lr=np.float64(1e-3),
                       betas=(np.float64(0.9), 0.999))
    assert fell == 0 and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_state_the_check_cannot_see_into_takes_the_original_step() -> None:
    params = _params((4, 4))
    opt = AdamWR(params)
    _fresh_grads(params, 0)
    opt.step()
    assert precondition.distinct_buffers(opt)
    opt.state[params[0]]["note"] = _Opaque()
    assert not precondition.distinct_buffers(opt)
    opt.state[params[0]]["note"] = {"tag": "plain", "sizes": (1, 2)}
    assert precondition.distinct_buffers(opt)
    opt.param_groups[0]["lr"] = torch.tensor(1e-3).as_subclass(_SubTensor)  # may run code
    assert not precondition.distinct_buffers(opt)
    opt.param_groups[0]["lr"] = torch.tensor(1e-3)
    assert precondition.distinct_buffers(opt)


def test_a_gradient_that_is_a_state_tensor_in_a_list_takes_the_original_step() -> None:
    params = _params((4, 4))
    opt = AdamWR(params)
    _fresh_grads(params, 0)
    opt.step()
    history = [torch.zeros(4, 4), torch.zeros(4, 4)]
    opt.state[params[0]]["history"] = history
    assert precondition.distinct_buffers(opt)
    params[0].grad = history[1]  # writing scratch into it would change the optimizer's state
    assert not precondition.distinct_buffers(opt)


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("kind", ["inference", "negative view"])
def test_gradients_an_in_place_op_raises_on_take_the_original_step(foreach: bool,
                                                                   kind: str) -> None:
    """The original only reads the gradient; an R step writing into it would raise ("Inplace
    update to inference tensor outside InferenceMode"; foreach ops refuse mutable lists of
    negative views)."""
    def setup(ps: list[torch.nn.Parameter], step: int) -> None:
        gen = torch.Generator().manual_seed(step)
        for p in ps:
            g = torch.randn(p.shape, generator=gen)
            if kind == "inference":
                with torch.inference_mode():
                    p.grad = g.clone()
            else:
                p.grad = torch._neg_view(g.neg())

    a, b, fell = _pair(AdamW, AdamWR, _params((4, 4), (6,)), setup, foreach=foreach)
    assert fell == 3 and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_debug_poison_fills_a_gradient_that_requires_grad() -> None:
    params = _params((4, 4))
    opt = AdamWR(params)
    params[0].grad = torch.randn(4, 4, requires_grad=True)
    runtime.set_debug_poison(True)
    try:
        opt.step()
    finally:
        runtime.set_debug_poison(False)
    assert params[0].grad is not None and bool(params[0].grad.isnan().all())


class _LoggingDict(dict):  # type: ignore[type-arg]
    """A param group whose `[]` runs code (it could read gradients mid-step)."""

    def __getitem__(self, key: object) -> object:
        return super().__getitem__(key)


class _SideEffectTensor(torch.Tensor):
    """A gradient whose ops run code of its own."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        return super().__torch_function__(func, types, args, kwargs or {})


class _PlainSubclass(torch.nn.Parameter):
    """A parameter subclass that overrides no op (FSDP's FlatParameter is one)."""


def test_what_else_the_optimizer_holds_is_checked_too() -> None:
    """A group that is a dict subclass; a tensor in `defaults` or under a state key that is
    not a param, sharing a gradient's bytes; a gradient of a tensor subclass that runs code on
    its ops: the original step. A subclass that overrides nothing: the R step."""
    params = _params((4, 4))
    opt = AdamWR(params)
    _fresh_grads(params, 0)
    opt.step()
    assert precondition.distinct_buffers(opt)
    opt.param_groups[0] = _LoggingDict(opt.param_groups[0])
    assert not precondition.distinct_buffers(opt)
    opt.param_groups[0] = dict(opt.param_groups[0])
    opt.defaults["kept"] = params[0].grad
    assert not precondition.distinct_buffers(opt)
    del opt.defaults["kept"]
    opt.state["kept"] = params[0].grad  # type: ignore[index]
    assert not precondition.distinct_buffers(opt)
    del opt.state["kept"]  # type: ignore[arg-type]
    assert precondition.distinct_buffers(opt)
    params[0].grad = torch.randn(4, 4).as_subclass(_SideEffectTensor)
    assert not precondition.distinct_buffers(opt)
    plain = [_PlainSubclass(torch.randn(4, 4))]
    opt2 = AdamWR(plain)
    plain[0].grad = torch.randn(4, 4)
    assert precondition.distinct_buffers(opt2)



STEP_COUNT = '''
import torch
from torch.optim import Optimizer


class StepCount(Optimizer):
    def __init__(self, params, lr=1e-2, eps=1e-8):
        super().__init__(params, dict(lr=lr, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.zeros_like(p)
                state["step"] += 1
                m, v = state["m"], state["v"]
                m.lerp_(p.grad, 0.1)
                v.mul_(0.9).addcmul_(p.grad, p.grad, value=0.1)
                bc = 1 - 0.9 ** state["step"]
                denom = (v / bc).sqrt_().add_(group["eps"])
                p.addcdiv_(m, denom, value=-group["lr"])
                p.add_(p.grad, alpha=-1e-4)
'''


def test_a_host_scalar_state_entry_that_holds_a_tensor_takes_the_original_step(
        tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """The analysis took `state["step"]` for a host scalar (every write in the module is a
    number), so the strip-mined run of `denom` uses it whole. A user who puts a tensor of the
    param's shape there (a loaded state, by hand) gets the original step
    (`r_step(..., scalar_state=("step",))`), not strips divided by a whole tensor."""
    from pathlib import Path

    orig = imported_fixture(STEP_COUNT, "step_count_mod", Path(str(tmp_path)),
                            monkeypatch).StepCount
    rvar = gsr_rewrite.reduce(orig)
    code = rewrite_source(STEP_COUNT, "step_count_mod.py").code
    assert code is not None and "scalar_state=('step',)" in code
    assert "_gsr.strips(" in code  # denom's run is strip-mined: the gradient is read after it
    params = _params((64, 8), (64, 8))
    out = []
    fell = 0
    for cls in (orig, rvar):
        ps = copy.deepcopy(params)
        opt = cls(ps)
        _fresh_grads(ps, 0)
        opt.step()
        for p in ps:
            opt.state[p]["step"] = torch.full_like(p, float(opt.state[p]["step"]))
        before = precondition._FALLBACKS[0]
        with runtime.fine_strips():
            for step in range(1, 3):
                _fresh_grads(ps, step)
                opt.step()
        fell = precondition._FALLBACKS[0] - before
        out.append([p.detach().clone() for p in ps])
    assert fell == 2
    assert all(torch.equal(a, b) for a, b in zip(*out, strict=True))


SCALED_SGD = '''
import torch
from torch.optim import Optimizer


class ScaledSGD(Optimizer):
    def __init__(self, params, lr=0.1):
        super().__init__(params, dict(lr=lr))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                upd = p.grad * group["lr"]
                p.sub_(upd)
'''


@pytest.mark.parametrize("lr", [torch.tensor([0.01], dtype=torch.float64),
                                torch.tensor([0.01]), 0.01 + 0j])
def test_an_option_tensor_of_dimensions_takes_the_original_step(
        lr: object, tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """`p.grad * group["lr"]` goes into the gradient: the analysis takes options for numbers,
    and a 0-d tensor lr decides the product's dtype no more than one does. `lr` of shape (1,)
    does (float64: the original's product is float64, the float32 gradient would round it),
    and a complex lr makes it complex: the original step runs (a probe found the first)."""
    from pathlib import Path

    orig = imported_fixture(SCALED_SGD, "scaled_sgd_mod", Path(str(tmp_path)),
                            monkeypatch).ScaledSGD
    code = rewrite_source(SCALED_SGD, "scaled_sgd_mod.py").code
    assert code is not None and "gsr: mul -> gradient" in code
    rvar = gsr_rewrite.reduce(orig)
    params = _params((1000,))
    try:
        a, b, fell = _pair(orig, rvar, params, _fresh_grads, lr=lr)
    except RuntimeError:  # the complex lr: the original raises as well (a complex product)
        assert isinstance(lr, complex)
        return
    assert fell == 3 and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    _, _, fell = _pair(orig, rvar, params, _fresh_grads, lr=torch.tensor(0.01))  # 0-d: R runs
    assert fell == 0


def test_a_state_entry_unsqueezed_in_place_is_no_host_scalar() -> None:
    """`state["s"] = torch.tensor(0.1, dtype=float64)` then `.unsqueeze_(0)` in the step: the
    check at the step's start sees an empty state, so the analysis may not take `state["s"]`
    for a host scalar where the step changes layouts in place."""
    source = SCALED_SGD.replace('''                upd = p.grad * group["lr"]''', '''\
                state = self.state[p]
                if len(state) == 0:
                    state["s"] = torch.tensor(0.1, dtype=torch.float64)
                    state["s"].unsqueeze_(0)
                upd = p.grad * state["s"]''')
    result = rewrite_source(source, "unsqueezed.py")
    (cls,) = result.classes
    assert cls.analysis is not None and not cls.analysis.scalar_state
    assert result.code is None or "scalar_state" not in result.code
    assert "gsr: mul -> gradient" not in (result.code or "")
