"""A rule's reordering runs in float32/float64 only; bf16 and fp16 take the exact original order.

A rule from rules/ is proved in real arithmetic; in bf16/fp16 its reordered rounding is coarse
enough that LionR's `sign()` turned it into full `lr` steps (1.4 % of bf16 params differed from
Lion after 100 steps). The rule's run-time guard therefore also asks for wide floats: other dtypes
run the original statements, strip-mined (exact, and still no full-size temporary).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch.optim import Optimizer

from gsr_rewrite import runtime
from gsr_rewrite.optim import Lion, LionR
from gsr_rewrite.pipeline import compile_source, rewrite_source
from gsr_rewrite.proof.check import MEASURE_SHAPES
from gsr_rewrite.proof.memory import measure_temporaries
from gsr_rewrite.proof.validate import load_module
from gsr_rewrite.transform.reformulate import RULE

LOW = [torch.bfloat16, torch.float16]
WIDE = [torch.float32, torch.float64]
SHAPES = [(64, 33), (1000,), (7,), (1,), (128, 128)]
_INT = {2: torch.int16, 4: torch.int32, 8: torch.int64}

# Not Lion's structure: the loop is in `step`, torch is imported as `th`, `sign` is a method.
SIGN_MOMENTUM = '''
import torch as th
from torch.optim import Optimizer


class SignMomentum(Optimizer):
    def __init__(self, params, lr=1e-2, beta1=0.8, beta2=0.95):
        super().__init__(params, dict(lr=lr, beta1=beta1, beta2=beta2))

    @th.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if not state:
                    state["m"] = th.zeros_like(p)
                m = state["m"]
                c = m.lerp(grad, 1 - group["beta1"])
                p.add_(c.sign(), alpha=-group["lr"])
                m.lerp_(grad, 1 - group["beta2"])
'''


def _differing(a: torch.Tensor, b: torch.Tensor) -> int:
    """Elements whose bits differ."""
    kind = _INT[a.element_size()]
    return int((a.detach().view(kind) != b.detach().view(kind)).sum())


def _lockstep(original: type[Optimizer], rewritten: type[Optimizer], dtype: torch.dtype,
              kwargs: dict[str, Any], steps: int = 100) -> None:
    """Both step the same gradients in `dtype` (params, grads and state); after every step
    every param and state element must be bit for bit the original's."""
    gen = torch.Generator().manual_seed(7)
    a_params = [torch.nn.Parameter(torch.randn(s, generator=gen).to(dtype)) for s in SHAPES]
    b_params = [torch.nn.Parameter(p.detach().clone()) for p in a_params]
    a, b = original(a_params, **kwargs), rewritten(b_params, **kwargs)
    total = sum(p.numel() for p in a_params)
    for step in range(steps):
        for p, q in zip(a_params, b_params, strict=True):
            g = torch.randn(p.shape, generator=gen).to(dtype)
            p.grad, q.grad = g.clone(), g.clone()
        a.step()
        b.step()
        params = sum(_differing(p, q) for p, q in zip(a_params, b_params, strict=True))
        state = sum(_differing(a.state[p][k], b.state[q][k])
                    for p, q in zip(a_params, b_params, strict=True) for k in a.state[p])
        assert params == state == 0, (f"step {step}: {params} of {total} param elements and "
                                      f"{state} state elements differ from the original's")


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("dtype", LOW, ids=str)
def test_lion_r_in_low_precision_is_bitwise_lion(dtype: torch.dtype, foreach: bool) -> None:
    # lr 1e-2 > one bf16 ulp of params near 1: a flipped sign would change the param
    _lockstep(Lion, LionR, dtype, {"lr": 1e-2, "weight_decay": 0.1, "foreach": foreach})


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("dtype", WIDE, ids=str)
def test_wide_floats_keep_the_reordered_path(dtype: torch.dtype, foreach: bool) -> None:
    """In float32/float64 the rule's branch runs: guards let rewritten statements run, and the
    step allocates nothing (the exact branch would allocate its strips)."""
    hits = runtime.GUARD_HITS[0]
    after = measure_temporaries(lambda ps: LionR(ps, foreach=foreach), MEASURE_SHAPES,
                                dtype=dtype)
    assert runtime.GUARD_HITS[0] > hits
    assert after.peak_bytes == 0, after


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("dtype", LOW, ids=str)
def test_low_precision_still_saves_the_temporary(dtype: torch.dtype, foreach: bool) -> None:
    """The exact branch is strip-mined: Lion allocates two params (for-loop) or one copy of all
    params (foreach); LionR at most 1/32 of all params (a 1/64 strip, and the previous strip
    while the next one is made)."""
    before = measure_temporaries(lambda ps: Lion(ps, foreach=foreach), MEASURE_SHAPES,
                                 dtype=dtype)
    after = measure_temporaries(lambda ps: LionR(ps, foreach=foreach), MEASURE_SHAPES,
                                dtype=dtype)
    assert before.peak_bytes >= (before.param_bytes if foreach else
                                 2 * before.largest_param_bytes), before
    assert 0 < after.peak_bytes <= after.param_bytes // 32, after


@pytest.fixture(scope="module")
def sign_momentum(tmp_path_factory: pytest.TempPathFactory) -> Any:
    result = compile_source(SIGN_MOMENTUM, "sign_momentum.py")
    (c,) = result.classes
    assert c.status == "rewritten" and c.rules == [RULE], (c.status, c.reason)
    assert result.code is not None
    path = Path(tmp_path_factory.mktemp("sign_momentum")) / "sign_momentum_r.py"
    path.write_text(result.code)
    return load_module(path, "sign_momentum_r")


@pytest.mark.parametrize("dtype", LOW, ids=str)
def test_any_source_reordered_by_a_rule_is_exact_in_low_precision(sign_momentum: Any,
                                                                  dtype: torch.dtype) -> None:
    _lockstep(sign_momentum.SignMomentum, sign_momentum.SignMomentumR, dtype, {})


def test_no_reordering_where_the_module_names_no_torch() -> None:
    """Without a name for torch the dtype test cannot be written: default-deny, no rule (the
    temporary is strip-mined instead, bitwise)."""
    source = SIGN_MOMENTUM.replace("import torch as th", "from torch import no_grad, zeros_like")
    source = source.replace("th.no_grad", "no_grad").replace("th.zeros_like", "zeros_like")
    (c,) = rewrite_source(source, "sign_momentum.py").classes
    assert c.status == "rewritten", c.reason
    assert (c.equivalence, c.rules) == ("bitwise", [])
