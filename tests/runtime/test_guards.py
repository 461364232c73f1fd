"""The guards' fast paths say exactly what the per-tensor guard says: `fits_lists` over lists of
plain tensors (checked column by column) against `fits` at every index, and `fits` on one plain
pair against its tensor-by-tensor form, on random tensors that differ in the ways a guard must
notice; `precondition._spans` against its per-tensor form."""

from __future__ import annotations

import random

import pytest
import torch

from gsr_rewrite.runtime import guards, precondition
from gsr_rewrite.runtime.guards import fits, fits_lists

Tensor = torch.Tensor


def _tensor(rng: random.Random, shape: tuple[int, ...], pool: list[Tensor]) -> Tensor:
    """A tensor of `shape`, sometimes made odd: another dtype or shape, a view sharing a pooled
    tensor's storage, a transposed or channels-last layout, requires_grad, empty, 0-d."""
    kind = rng.randrange(12)
    if kind == 0:
        return torch.randn(shape, dtype=torch.float64)
    if kind == 1:
        return torch.randn((*shape[:-1], shape[-1] + 1))
    if kind == 2 and pool:
        base = rng.choice(pool)
        return base.view(-1)[: base.numel()].view(base.shape) if base.shape == shape else base
    if kind == 3:
        return torch.randn(tuple(reversed(shape))).t() if len(shape) == 2 else torch.randn(shape)
    if kind == 4:
        return torch.randn(shape).requires_grad_()
    if kind == 5:
        return torch.randn((0, *shape[1:]))
    if kind == 6:
        return torch.tensor(1.0)
    if kind == 7:
        return torch.randint(0, 3, shape)
    if kind == 8:
        return torch.randn((2, *shape)).select(0, 1)  # a view at an offset, its own strides
    return torch.randn(shape)


@pytest.mark.parametrize("seed", range(300))
def test_fits_lists_fast_path_says_what_fits_says_at_every_index(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randrange(1, 5)
    shapes = [rng.choice([(3, 4), (5,), (2, 3, 2), (1, 4)]) for _ in range(n)]
    pool: list[Tensor] = []
    columns = []
    for _ in range(rng.randrange(1, 4)):
        plain = rng.random() < 0.5  # half the cases: every tensor ordinary
        col = [torch.randn(s) if plain else _tensor(rng, s, pool) for s in shapes]
        pool += col
        columns.append(col)
    if rng.random() < 0.3:  # the same list as host and operand
        columns.append(columns[0])
    k = rng.randrange(0, len(columns) + 1)
    hosts, like = columns[:k], columns[k:]
    if not hosts and not like:
        return
    expected = all(fits([h[i] for h in hosts], [x[i] for x in like]) for i in range(n))
    assert fits_lists(hosts, like) == expected
    if guards._plain_lists_fit(hosts, like):  # the fast path never says yes wrongly
        assert expected


@pytest.mark.parametrize("seed", range(100))
def test_fits_pair_fast_path_says_what_fits_says(seed: int) -> None:
    rng = random.Random(1000 + seed)
    shape = rng.choice([(3, 4), (5,), (2, 3, 2), (1, 4)])
    pool: list[Tensor] = []
    h = _tensor(rng, shape, pool) if rng.random() < 0.6 else torch.randn(shape)
    pool.append(h)
    t = rng.choice([h, _tensor(rng, shape, pool), torch.randn(shape), None])
    like = (t,) if t is not None else ()
    expected = guards._fits_each((h,), like)
    assert fits((h,), like) == expected
    if guards._plain_pair_fits(h, t):  # the fast path never says yes wrongly
        assert expected


@pytest.mark.parametrize("seed", range(100))
def test_fits_without_host_fast_path_says_what_fits_says(seed: int) -> None:
    rng = random.Random(2000 + seed)
    shape = rng.choice([(3, 4), (5,), (2, 3, 2), (1, 4)])
    pool: list[Tensor] = []
    like = []
    for _ in range(rng.randrange(1, 4)):
        like.append(_tensor(rng, shape, pool) if rng.random() < 0.5 else torch.randn(shape))
        pool.append(like[-1])
    expected = guards._fits_each((), like)
    assert fits((), like) == expected
    if guards._plain_alike(like):  # the fast path never says yes wrongly
        assert expected


def test_fits_without_host_fast_path_is_taken_for_ordinary_tensors() -> None:
    a, b = torch.randn(64, 64), torch.randn(64, 64)
    assert guards._plain_alike((a,)) and guards._plain_alike((a, b))
    assert not guards._plain_alike((a, b.double()))  # the chain would change dtype
    assert not guards._plain_alike((a, torch.randn(64, 1)))  # or broadcast
    assert not guards._plain_alike((torch.randint(0, 3, (4,)),))
    with torch.enable_grad():
        assert not guards._plain_alike((a, b.requires_grad_()))  # autograd would record it


def test_fits_pair_fast_path_is_taken_for_ordinary_tensors() -> None:
    grad, state = torch.randn(64, 64), torch.randn(64, 64)
    assert guards._plain_pair_fits(grad, state)
    assert not guards._plain_pair_fits(grad, grad.view(-1).view(64, 64))  # shared storage
    assert guards._plain_pair_fits(grad, None)  # a host alone (`fits((grad,), ())`)
    assert not guards._plain_pair_fits(grad.requires_grad_(), state)


def test_fits_lists_fast_path_is_taken_for_ordinary_lists() -> None:
    grads = [torch.randn(64, 64) for _ in range(50)]
    states = [torch.randn(64, 64) for _ in range(50)]
    assert guards._plain_lists_fit([grads], [states])
    hits = guards.GUARD_HITS[0]
    assert fits_lists([grads], [states]) and guards.GUARD_HITS[0] == hits + 50


def test_spans_of_plain_tensors_match_the_per_tensor_form() -> None:
    base = torch.randn(10, 10)
    ts = [base, base[2:5], base.t(), torch.randn(0), torch.randn(7, dtype=torch.float64),
          torch.randn(3, 4)[:, 1]]

    def one(t: Tensor) -> tuple[object, int, int]:
        lo = t.data_ptr()
        return t.device, lo, lo + (t.nbytes if t.is_contiguous() else precondition._extent(t))

    assert precondition._spans(ts) == [one(t) for t in ts if t.numel()]


def test_no_rewritten_statement_where_autograd_would_record_it() -> None:
    """A step without `no_grad` (torch_optimizer's Apollo): weight decay as `grad.add(p, ...)`
    makes a temporary that requires grad; `torch.abs(x, out=h)` raises on it ("functions with
    out=... arguments don't support automatic differentiation"), so the guard says no, on every
    path (the certificate's lookup included); under no_grad the same tensors fit."""
    from gsr_rewrite.runtime import layout

    p = torch.nn.Parameter(torch.randn(4, 5))
    host, x = torch.randn(4, 5), torch.randn(4, 5).add(p)  # x requires grad
    with torch.no_grad():
        assert fits((host,), (x,)) and fits_lists(([host],), ([x],))
    assert not fits((host,), (x,)) and not fits_lists(([host],), ([x],))
    assert not fits((host,), (p,))
    with pytest.raises(RuntimeError, match="out="):
        torch.abs(x, out=host)  # what the guard keeps from running
    p.grad = host  # a step's certificate, where p (a like operand) looks like its gradient
    holder = type("Holder", (), {"param_groups": [{"params": [p]}], "state": {}})()
    holds, certificate = precondition.checked(holder, certify=True)
    assert holds and certificate is not None
    previous = layout.enter(certificate)
    try:
        assert layout.pair_fits(layout.active() or {}, host, p)  # the lookup alone says yes
        assert not fits((host,), (p,)) and not fits_lists(([host],), ([p],))
        with torch.no_grad():
            assert fits((host,), (p,))
    finally:
        layout.leave(previous)
    assert fits((host,), (torch.randn(4, 5),))  # nothing requires grad: grad mode alone is fine


def test_a_0d_operand_fits_as_a_number_unless_it_shares_the_host_or_is_complex() -> None:
    """Session 20: a 0-d real tensor among the operands (`torch.tensor(-lr)`) broadcasts as a
    number and leaves a float host's dtype; one inside the host changes as an in-place op
    writes the host, and a complex one makes the result complex: both refused."""
    g, other = torch.randn(8, 8), torch.randn(8, 8)
    with torch.no_grad():
        assert fits((g,), (other, torch.tensor(0.5, dtype=torch.float64)))
        assert not fits((g,), (other, g.view(-1)[3]))  # 0-d, in the host's storage
        assert not fits((g,), (other, torch.tensor(0.5 + 0j)))
        assert not fits((g,), (other, torch.tensor([0.5])))  # of a dimension: not a number
