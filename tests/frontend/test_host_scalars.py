"""State entries that only ever hold Python numbers are host scalars (frontend/host_scalars.py):
arithmetic on them is no parameter-sized temporary. One assignment that may be a tensor of any
other shape keeps the entry a tensor buffer (default-deny)."""

from __future__ import annotations

import libcst as cst
import pytest

from gsr_rewrite.api import rewrite_text
from gsr_rewrite.frontend.host_scalars import scalar_state_keys

STEP = '''
import math
import torch
from torch.optim import Optimizer


class RAdamRho(Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            rho_inf = 2 / (1 - beta2) - 1
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["rho_t"] = 0.0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                state["step"] += 1
                step = state["step"]
                exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                state["rho_t"] = RHO
                rho_t = state["rho_t"]
                bc1 = 1 - beta1 ** step
                if rho_t > 5.0:
                    rect = math.sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf
                                     / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
                    denom = exp_avg_sq.sqrt() / math.sqrt(1 - beta2 ** step)
                    denom = denom + group["eps"]
                    p.addcdiv_(exp_avg, denom, value=-group["lr"] * rect / bc1)
                else:
                    p.add_(exp_avg, alpha=-group["lr"] / bc1)
        return None
'''
FLOAT_RHO = "rho_inf - 2 * step * beta2 ** step / (1 - beta2 ** step)"


def _keys(body: str, prelude: str = "") -> frozenset[str]:
    src = f'''
import math
import torch
{prelude}

class O:
    def step(self, x=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                state = self.state[p]
''' + "".join(f"                {line}\n" for line in body.strip().splitlines())
    return scalar_state_keys(cst.parse_module(src))


def test_python_numbers_in_state_are_host_scalars() -> None:
    assert "rho_t" in _keys('''
state["step"] = 0
state["step"] += 1
step = state["step"]
state["rho_t"] = 2 / (1 - beta2) - 1 - 2 * step * beta2 ** step / (1 - beta2 ** step)
state["c"] = math.sqrt(max(state["rho_t"], 1.0)) * group["lr"]
''')
    keys = _keys('''
state["step"] = torch.tensor(0.0)
state["n"] = float(state["step"]) + len(group["params"])
state["b"] = beta1 if state["n"] > 2 else beta2
''')
    assert {"step", "n", "b"} <= keys


@pytest.mark.parametrize("value", [
    "torch.zeros_like(p)", "p.grad.clone()", "unknown(state)", "x", "p.grad.norm(dim=0)",
    "torch.tensor(values)", "torch.tensor((1.0, 2.0))", "torch.zeros(p.shape)",
    "torch.zeros((3,))", "[]", "beta1 * p", "self.scale", "group", "torch.tensor(group['b'])",
    "torch.zeros(size=p.shape)", "torch.full(size=p.shape, fill_value=0.0)",  # (a probe's)
])
def test_a_value_that_may_be_a_tensor_keeps_the_entry_a_buffer(value: str) -> None:
    keys = _keys(f'''
values = [1.0] * 4
state["rho_t"] = 0.0
if beta1 > 0:
    state["rho_t"] = {value}
''')
    assert "rho_t" not in keys


@pytest.mark.parametrize("write", [
    'state["rho_t"] += p.grad', 'state.setdefault("rho_t", torch.zeros_like(p))',
    'state.update(rho_t=torch.zeros_like(p))', 'self.state[p] = {"rho_t": torch.ones_like(p)}',
])
def test_every_way_of_writing_an_entry_is_judged(write: str) -> None:
    assert "rho_t" not in _keys(f'state["rho_t"] = 0.0\n{write}')


def test_shadowed_builtins_and_names_bound_otherwise_are_not_numbers() -> None:
    # a module's own `float` is no builtin: its body decides (test_a_helper_...)
    assert "k" not in _keys('state["k"] = float(2)\n',
                            prelude="def float(x):\n    return torch.ones(3) * x\n")
    assert "k" not in _keys('with open("f") as r:\n    state["k"] = r\n')
    assert "k" not in _keys('r = 1.0\nfor r in group["params"]:\n    pass\nstate["k"] = r\n')
    assert "k" not in _keys('state["k"] = beta1\nstate["j"] = state["k"]\nstate["k"] = p\n')


def _temps(rho: str) -> dict[str, str]:
    result = rewrite_text(STEP.replace("RHO", rho), "radam_rho.py")
    (cls,) = result.classes
    return {t.code: t.lives_in if t.placed else "stays" for t in cls.temporaries}


def test_radam_rho_in_state_has_no_phantom_temporaries() -> None:
    temps = _temps(FLOAT_RHO)
    assert not any("rho" in code for code in temps), temps
    assert temps["exp_avg_sq.sqrt()"] == "gradient"
    assert all(where != "stays" for where in temps.values()), temps


@pytest.mark.parametrize("rho", [
    "torch.full_like(p, " + FLOAT_RHO + ")",  # parameter-sized: a tensor entry
    "torch.tensor([" + FLOAT_RHO + "] * p.numel()).view_as(p)",
])
def test_radam_rho_that_may_be_a_tensor_stays_a_buffer(rho: str) -> None:
    temps = _temps(rho)
    assert any("rho_t" in code for code in temps), temps  # its arithmetic allocates


INIT_SCALAR = '''
def init_scalar(value=0.0, device=None, dtype=None):
    if isinstance(value, torch.Tensor):
        if value.device == device:
            return value
        return value.to(device=device, dtype=dtype)
    return torch.tensor(value, dtype=dtype or torch.float32, device=device)
'''


@pytest.mark.parametrize("write", [
    'state["step"] = init_scalar(device="cpu")',
    'state["step"] = init_scalar(0.0, "cpu")',
    'state["step"] = init_scalar(state["step"], device=p.device)',  # a host scalar stays one
    'state["step"] = zeros_scalar()',
])
def test_a_helper_that_returns_a_0_dim_tensor_makes_a_host_scalar(write: str) -> None:
    """timm's `state["step"] = _init_scalar(device=...)`: the helper's every return is a 0-dim
    tensor made from a number, or the tensor it was given, when that is one."""
    prelude = INIT_SCALAR + '\n\ndef zeros_scalar(device=None):\n' \
        '    return torch.zeros((), device=device)\n'
    assert "step" in _keys(f'state["step"] = 0\n{write}', prelude=prelude)


@pytest.mark.parametrize("write, helper", [
    ('state["step"] = init_scalar(p)', INIT_SCALAR),                # given a parameter
    ('state["step"] = init_scalar(values)', INIT_SCALAR),           # a list: a 1-d tensor
    ('state["step"] = init_scalar(*[0.0])', INIT_SCALAR),           # a spread
    ('state["step"] = init_scalar(0.0, bad=1)', INIT_SCALAR),       # a keyword it lacks
    ('state["step"] = make(p)', "def make(x):\n    if x.dim():\n        return x\n"),  # None
    ('state["step"] = make(0.0)', "def make(x):\n    x = torch.ones(3)\n    return x\n"),
    ('state["step"] = make(p)', "def make(*xs):\n    return torch.tensor(0.0)\n"),
    # the parameter bound again to a number on one path only: it may still be `p`
    ('state["step"] = make(p)', "def make(x):\n    if x is None:\n        x = 0.0\n"
                                "    return x\n"),
    ('state["step"] = make()', "def make():\n    return make()\n"),  # recursion: not judged
    ('state["step"] = make()', "def make():\n    yield torch.tensor(0.0)\n"),
])
def test_a_helper_that_may_return_another_tensor_keeps_the_entry_a_buffer(
        write: str, helper: str) -> None:
    assert "step" not in _keys(f'values = [1.0, 2.0]\nstate["step"] = 0\n{write}',
                               prelude=helper)


def test_a_helper_defined_twice_is_not_judged() -> None:
    """Two modules of the analysis define `make` (one returns a tensor of the param's shape):
    which one a call reaches is not known."""
    prelude = "def make():\n    return torch.tensor(0.0)\n\n\n" \
        "def make():\n    return torch.zeros(5)\n"
    assert "step" not in _keys('state["step"] = make()', prelude=prelude)
