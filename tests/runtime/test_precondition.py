"""The run-time precondition of every R step (`runtime.distinct_buffers`): when a step's gradients
or state overlap each other or a param, or a param is listed twice, the original step runs, so
results stay bitwise equal; when they are disjoint (views of one flat buffer included) the R step
runs."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch

from gsr_rewrite import runtime
from gsr_rewrite.optim import AdamW, AdamWR, Adan, AdanR, Lion, LionR
from gsr_rewrite.runtime import precondition

PAIRS = [(AdamW, AdamWR), (Adan, AdanR), (Lion, LionR)]
SHAPES = [(4, 6), (12,), (3, 2)]
Layout = Callable[[list[torch.nn.Parameter], list[torch.Tensor]], list[torch.nn.Parameter]]


def _params(seed: int) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in SHAPES]


def _grads(step: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(100 + step)
    return [torch.randn(s, generator=gen) for s in SHAPES]


def _own(params: list[torch.nn.Parameter], grads: list[torch.Tensor]) -> list[torch.nn.Parameter]:
    for p, g in zip(params, grads, strict=True):
        p.grad = g.clone()
    return params


def _flat_views(params: list[torch.nn.Parameter], grads: list[torch.Tensor]
                ) -> list[torch.nn.Parameter]:
    """Disjoint views of one flat buffer (DDP's gradient_as_bucket_view)."""
    flat = torch.cat([g.reshape(-1) for g in grads])
    at = 0
    for p, g in zip(params, grads, strict=True):
        p.grad = flat[at:at + g.numel()].view(g.shape)
        at += g.numel()
    return params


def _overlapping(params: list[torch.nn.Parameter], grads: list[torch.Tensor]
                 ) -> list[torch.nn.Parameter]:
    """The second gradient starts inside the first one's bytes."""
    _own(params, grads)
    buf = torch.cat([grads[0].reshape(-1), grads[1].reshape(-1)])
    params[0].grad = buf[:24].view(4, 6)
    params[1].grad = buf[12:24]
    return params


def _grad_is_state(params: list[torch.nn.Parameter], grads: list[torch.Tensor]
                   ) -> list[torch.nn.Parameter]:
    """Marked by the caller: the first gradient is a state tensor of its param."""
    return _own(params, grads)


def _run(cls: type, layout: Layout, steps: int = 6, duplicate: bool = False,
         alias_state: bool = False) -> list[torch.Tensor]:
    params = _params(0)
    listed = [*params, params[0]] if duplicate else params
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns about the duplicated param
        opt = cls(listed, lr=0.01)
    for step in range(steps):
        layout(params, _grads(step))
        if alias_state and step > 0:
            key = next(k for k, v in opt.state[params[0]].items()
                       if isinstance(v, torch.Tensor) and v.shape == params[0].shape)
            opt.state[params[0]][key].copy_(params[0].grad)
            params[0].grad = opt.state[params[0]][key]
        opt.step()
    out = [p.detach().clone() for p in params]
    out += [v.clone() for p in params for v in opt.state[p].values()
            if isinstance(v, torch.Tensor)]
    return out


@pytest.mark.parametrize(("orig", "rvar"), PAIRS, ids=[o.__name__ for o, _ in PAIRS])
@pytest.mark.parametrize(("layout", "duplicate", "alias_state", "falls_back"), [
    (_own, False, False, False),
    (_flat_views, False, False, False),
    (_own, True, False, True),
    (_overlapping, False, False, True),
    (_grad_is_state, False, True, True),
], ids=["own", "flat-views", "duplicated-param", "overlapping-grads", "grad-is-state"])
def test_bitwise_equal_and_falls_back_only_when_buffers_are_shared(
        orig: type, rvar: type, layout: Layout, duplicate: bool, alias_state: bool,
        falls_back: bool) -> None:
    expected = _run(orig, layout, duplicate=duplicate, alias_state=alias_state)
    before = precondition._FALLBACKS[0]
    got = _run(rvar, layout, duplicate=duplicate, alias_state=alias_state)
    for a, b in zip(expected, got, strict=True):
        assert torch.equal(a, b)
    assert (precondition._FALLBACKS[0] > before) == falls_back


def test_shared_spans_may_overlap_but_not_owned_ones() -> None:
    base = torch.zeros(10)
    spans = precondition._spans([base[:6], base[4:]])
    assert spans is not None
    assert precondition._spans_disjoint([], spans)  # options (one lr tensor, twice) may overlap
    assert not precondition._spans_disjoint(spans[:1], spans[1:])  # a grad inside one may not
    assert precondition._spans_disjoint(precondition._spans([base[:4]]) or [],
                                   precondition._spans([base[4:]]) or [])


def test_strided_view_counts_its_whole_extent() -> None:
    base = torch.zeros(4, 4)
    column = base[:, 0]  # elements 0, 4, 8, 12: its span reaches element 12
    inner = base[1, 1:3]  # elements 5, 6: between two of the column's elements
    assert not precondition._spans_disjoint(precondition._spans([column]) or [],
                                       precondition._spans([inner]) or [])


@pytest.mark.parametrize("seed", range(200))
def test_address_columns_agree_with_the_span_walk(seed: int) -> None:
    """The vectorized check on plain tensors (`_addresses_disjoint`) says what the span walk says,
    on random views of two buffers: contiguous, strided, empty, options among them or not."""
    gen = torch.Generator().manual_seed(seed)

    def pick(n: int) -> int:
        return int(torch.randint(n, (), generator=gen))

    bases = [torch.zeros(64), torch.zeros(64)]
    ts = []
    for _ in range(1 + pick(8)):
        base, start = bases[pick(2)], pick(64)
        step = 1 + pick(3) * pick(2)  # mostly contiguous
        ts.append(base[start:start + pick(12):step])
    shared = pick(len(ts) + 1)
    lows = tuple(map(torch.Tensor.data_ptr, ts))
    sizes = tuple(t.nbytes for t in ts)
    dense = tuple(map(torch.Tensor.is_contiguous, ts))
    walked = precondition._spans_disjoint(precondition._spans(ts[shared:]) or [],
                                          precondition._spans(ts[:shared]) or [])
    assert precondition._addresses_disjoint(ts, lows, sizes, dense, shared) == walked


def test_a_closure_takes_the_original_step() -> None:
    params = _params(0)
    opt = AdamWR(params, lr=0.01)
    ref = AdamW([torch.nn.Parameter(p.detach().clone()) for p in params], lr=0.01)
    grads = _grads(0)

    def closure(ps: list[torch.nn.Parameter]) -> Callable[[], float]:
        def run() -> float:
            for p, g in zip(ps, grads, strict=True):
                p.grad = g.clone()
            return 0.0
        return run

    opt.step(closure(params))  # grads are set inside the step: the R step never sees them
    ref.step(closure([p for g in ref.param_groups for p in g["params"]]))
    for a, b in zip(params, ref.param_groups[0]["params"], strict=True):
        assert torch.equal(a, b)
    # tensors without real memory all report address 0: they count as overlapping
    metas = [torch.empty(3, device="meta"), torch.empty(3, device="meta")]
    assert not precondition._spans_disjoint(precondition._spans(metas) or [], [])


@pytest.mark.parametrize("op", ["div", "sub", "mul", "add", "pow"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("first", [0.3, torch.tensor(0.3)], ids=["number", "0-d tensor"])
def test_scalar_first_computes_as_the_original_does(op: str, dtype: torch.dtype,
                                                    first: float | torch.Tensor) -> None:
    """`s OP t` placed into a dead buffer, bitwise equal to the original expression; for a 0-d
    tensor `s` the old forms differed: `t.reciprocal() * s` in 1016 of 4096 fp32 elements, a
    swapped bf16 `t * s` in most elements."""
    gen = torch.Generator().manual_seed(3)
    t = (torch.rand(4096, generator=gen) + 0.5).to(dtype)
    out = torch.empty_like(t)
    expected = {"div": lambda: first / t, "sub": lambda: first - t, "mul": lambda: first * t,
                "add": lambda: first + t, "pow": lambda: first ** t}[op]()
    assert torch.equal(runtime.scalar_first(op, first, t, out), expected)
