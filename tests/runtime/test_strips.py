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


def test_the_floor_decides_the_strip_count_alike_on_both_paths() -> None:
    big = [torch.randn(256, 256) for _ in range(2)]  # 256 KiB each
    per_strip = STRIP_FRACTION * 64 * 1024  # a floor of 64 KiB per temporary and strip
    with strip_floor(per_strip // STRIP_FRACTION):
        singles = _count(64, *big)
        lists = _count(64, [big[0]], [big[1]])
    assert singles == lists == 4  # 256 KiB over 64 KiB
    with strip_floor(0):  # off: the emitted count
        assert _count(64, *big) == 64
