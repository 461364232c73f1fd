"""`runtime.strips` at run time: how many strips a run takes under the strip floor, and the
cost of asking when the answer is one (the for-loop path calls it once per parameter)."""

from __future__ import annotations

import pytest
import torch

from gsr_rewrite.runtime import strip_runs
from gsr_rewrite.runtime.strip_runs import STRIP_FRACTION, at, strip_floor, strips


def _count(count: int, *values: object) -> int:
    return sum(1 for _ in strips(count, *values))


def test_small_single_tensors_run_whole_without_checking_how_to_cut_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    ts = [torch.randn(64, 64) for _ in range(3)]

    def never(values: object) -> None:
        raise AssertionError("the budget alone says one strip")

    with strip_floor(1 << 20):
        monkeypatch.setattr(strip_runs, "_strip_positions", never)
        (strip,) = list(strips(192, *ts, at(ts, 1)))
        assert strip[0] is ts[0] and strip[3][1] is ts[1]  # whole tensors, the item too
        monkeypatch.undo()
        assert _count(192, *ts) == 1


@pytest.mark.parametrize("floor", [0, 1 << 10, 64 << 10, 1 << 20])
@pytest.mark.parametrize("shape", [(0,), (7,), (64, 64), (256, 256)])
def test_plain_tensors_take_the_strips_whole_by_budget_would_give(
        floor: int, shape: tuple[int, ...]) -> None:
    ts = (torch.randn(shape), torch.randn(shape))
    items = [torch.randn(shape)]
    with strip_floor(floor):
        whole = strip_runs._whole_by_budget(64, (*ts, at(items, 0)))
        got = list(strips(64, *ts, at(items, 0)))
        if whole is not None:
            assert len(got) == 1 and all(a is b for a, b in zip(got[0], whole, strict=True))
            assert got[0][2] is items  # an item's strip is its list
        else:  # the general path's strips: the same element ranges
            got = list(strips(64, *ts))
            expected = list(strip_runs._strips(64, ts))
            assert [[(t.data_ptr(), t.shape) for t in s] for s in got] == \
                [[(t.data_ptr(), t.shape) for t in s] for s in expected]


def test_the_floor_decides_the_strip_count_alike_on_both_paths() -> None:
    big = [torch.randn(256, 256) for _ in range(2)]  # 256 KiB each
    per_strip = STRIP_FRACTION * 64 * 1024  # a floor of 64 KiB per temporary and strip
    with strip_floor(per_strip // STRIP_FRACTION):
        singles = _count(64, *big)
        lists = _count(64, [big[0]], [big[1]])
    assert singles == lists == 4  # 256 KiB over 64 KiB
    with strip_floor(0):  # off: the emitted count
        assert _count(64, *big) == 64


def _pieces(count: int, *values: object) -> list[tuple[object, ...]]:
    return list(strips(count, *values, chunks=True))


def test_chunks_are_consecutive_whole_tensors_within_the_budget() -> None:
    sizes = [3, 10, 700, 40, 5000, 8, 8, 8, 300]  # elements, fp32
    xs = [torch.randn(n) for n in sizes]
    ys = [torch.randn(n) for n in sizes]
    budget = 2048  # bytes of one temporary per piece: floor x STRIP_FRACTION / count
    with strip_floor(budget):
        pieces = _pieces(STRIP_FRACTION, xs, ys)
    covered = []
    for x, y, piece in pieces:
        assert isinstance(piece, tuple) and len(x) == len(y) == piece[1] - piece[0]
        if piece[1] - piece[0] > 1:  # several positions: whole tensors, within the budget
            assert all(a is b for a, b in zip(x, xs[piece[0]:piece[1]], strict=True))
            assert sum(t.numel() * 4 for t in x) <= budget
        covered.append(piece[:2])
    # positions in order, each once; the 5,000-element tensor alone, cut into strips
    assert sorted(set(covered)) == [(0, 2), (2, 3), (3, 4), (4, 5), (5, 9)]
    assert covered.count((4, 5)) == 10  # 20,000 bytes over 2,048: 10 strips of 512 elements
    big = [x[0] for x, _, piece in pieces if piece[:2] == (4, 5)]
    assert sum(t.numel() for t in big) == 5000 and all(t.numel() * 4 <= budget for t in big)


def test_chunks_fall_back_to_strips_where_positions_could_not_be_cut_alike() -> None:
    t = torch.randn(64, 64)
    with strip_floor(1024):
        assert all(p[-1] is None for p in _pieces(64, t, t.clone()))  # single tensors
        uneven = _pieces(64, [t, t], [t])  # lists of different lengths: strips, whole
        assert len(uneven) == 1 and uneven[0][-1] is None
        # an empty list is one the run does not use; 16 KiB over 1 KiB: 16 strips
        assert [p[-1] for p in _pieces(64, [t], [])] == [(0, 1, 1)] * 16
    with strip_floor(0):  # the floor off: the emitted strips, no chunks
        assert all(p[-1] is None for p in _pieces(64, [t], [t]))


@pytest.mark.parametrize("device_threads", [1, 2])
def test_with_cpu_threads_a_tensor_large_enough_to_be_split_among_them_stays_whole(
        device_threads: int) -> None:
    """ATen splits an op on a CPU tensor of more than 32,768 elements among its threads; each
    thread's range ends in a scalar tail that rounds otherwise than the vector body (fp32 `pow`,
    bf16 `rsqrt`), so strips would not be bitwise: with more than one thread the tensor runs
    whole. Smaller tensors are cut as before."""
    saved = torch.get_num_threads()
    torch.set_num_threads(device_threads)
    try:
        with strip_floor(0):
            n = strip_runs.CPU_PARALLEL_GRAIN + 64
            big = _count(64, torch.randn(n), torch.randn(n))
            small = _count(64, torch.randn(4096), torch.randn(4096))
            chunked = sum(1 for _ in strips(64, [torch.randn(n)], [torch.randn(n)],
                                            chunks=True))
    finally:
        torch.set_num_threads(saved)
    assert big == chunked and (big > 1) == (device_threads == 1)
    assert small == 64  # 4,096 elements: cut alike under threads (tails stay where they were)


def test_strips_agree_bitwise_with_the_whole_op_under_threads() -> None:
    """What the rule keeps: under 2 threads, the strips a run takes give what the whole
    tensor's op gives, on an op whose scalar tail rounds otherwise (fp32 pow 1/3)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        x = torch.rand(65_601, generator=torch.Generator().manual_seed(0)) * 10
        whole = x.pow(1 / 3)
        out = torch.empty_like(x)
        with strip_floor(0):
            for xs, os_ in strips(64, x, out):
                torch.pow(xs, 1 / 3, out=os_)
    finally:
        torch.set_num_threads(saved)
    assert torch.equal(out, whole)


def test_a_list_of_numbers_beside_tensor_lists_is_not_cut() -> None:
    """torch's Adamax: `bias_corrections` (floats) ran in a strip-mined run once the analysis
    took `state["step"]` for a tensor; cutting asked a float for its device and raised."""
    from gsr_rewrite.runtime.strip_runs import _strip_positions

    ts = [torch.zeros(64, 64), torch.zeros(64, 64)]
    assert _strip_positions([[0.1, 0.2], ts]) is None
    assert _strip_positions([ts, [torch.ones(64, 64), torch.ones(64, 64)]]) is not None
