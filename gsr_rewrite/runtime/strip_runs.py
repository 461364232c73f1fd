"""Strip-mined runs: a run of statements whose temporaries found no dead buffer executes over
strips of its tensors (`strips`, `at`), few enough to stay within the strip floor; a run over
tensor lists that the rewriter proved position by position executes over chunks of whole
tensors instead (`strips(..., chunks=True)`, `part`), and cuts only the tensors larger than
its budget."""

from __future__ import annotations

import contextlib
import os
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from itertools import accumulate
from operator import attrgetter
from typing import Any

import torch

from gsr_rewrite.runtime.guards import _PLAIN, GUARD_HITS

Tensor = torch.Tensor


#: Elements per strip are a multiple of this: a multiple of every CPU vector loop's step, so each
#: element takes the same code path (vector body or scalar tail) in a strip as in its whole tensor.
STRIP_ALIGN = 64
#: ATen's CPU elementwise kernels (TensorIterator) split an op on more elements than this among
#: threads; each thread's range ends in a scalar tail that rounds otherwise than the vector body
#: (fp32 `pow`, bf16 `rsqrt`, `add(alpha=)`), and the ranges depend on the tensor's size, so
#: strips of a larger tensor are exact on the CPU only with one thread: with more it stays whole
#: (its temporaries one tensor, not a strip). At or under it, an op runs on one thread, or (the
#: vectorized math functions, split from 2,048 elements) ends ranges in vector-width tails: no
#: element differed between strips and whole ops of 22 ops in fp32, fp64, bf16 and fp16 at sizes
#: 2,048 to 32,768 under 2, 8 and 16 threads (session 18); above it, pow and rsqrt did.
CPU_PARALLEL_GRAIN = 32768
#: A strip-mined run with k temporaries alive at once is emitted with 64 * k strips
STRIP_FRACTION = 64
#: GSR_STRIPS=N overrides the number of strips of every strip-mined run (1: whole tensors, the
#: original's speed and memory); unset, each run uses the number the rewriter chose.
_STRIPS_OVERRIDE = os.environ.get("GSR_STRIPS", "")
#: A strip-mined run is cut into no more strips than it needs to keep its temporaries under this
#: many bytes (GSR_STRIP_FLOOR_MB, default 16 MiB; 0: always the emitted count, 1/64 of the
#: tensors per temporary): a run over 2,000 tensors of 64x64 takes 4 strips instead of 128, one
#: over ViT-B/32's 88 M params 44, and a small run one (whole tensors, the original's speed).
_STRIP_FLOOR = [int(float(os.environ.get("GSR_STRIP_FLOOR_MB", "16")) * 2**20)]


@contextlib.contextmanager
def strip_floor(nbytes: int) -> Iterator[None]:
    """Run with another strip floor (memory measurements use 0: the strip structure itself)."""
    saved, _STRIP_FLOOR[0] = _STRIP_FLOOR[0], nbytes
    try:
        yield
    finally:
        _STRIP_FLOOR[0] = saved


def strip_floor_bytes() -> int:
    """The strip floor in force (GSR_STRIP_FLOOR_MB, or the innermost `strip_floor`)."""
    return _STRIP_FLOOR[0]


def _budgeted(count: int, positions: list[list[Tensor]]) -> int:
    """`count` strips give each of the run's `count / 64` temporaries 1/64 of its tensors; fewer
    when the temporaries of all positions still fit under the floor."""
    floor = _STRIP_FLOOR[0]
    if floor <= 0:
        return count
    total = sum(g[0].numel() * g[0].element_size() for g in positions if g)
    return max(1, min(count, -(-count * total // (STRIP_FRACTION * floor))))


class At:
    """`at(xs, i)`: the strips of `xs[i]` (a run reads that item of a tensor list)."""

    def __init__(self, seq: Sequence[Any], index: Any) -> None:
        self.seq, self.index = seq, index

    def item(self) -> Any:
        return self.seq[self.index] if -len(self.seq) <= self.index < len(self.seq) else None


at = At


class StripItem:
    """Stands for `xs` inside a strip: `xs[i]` is the strip of item i; any other index, or an
    item that does not exist, raises as the original `xs[i]` would."""

    def __init__(self, seq: Sequence[Any], index: Any, piece: Any) -> None:
        self.seq, self.index, self.piece = seq, index, piece

    def __getitem__(self, j: Any) -> Any:
        self.seq[j]  # noqa: B018 - IndexError where the original raises it
        if j != self.index:
            raise RuntimeError("gsr-rewrite: a strip-mined run indexed an item it did not slice")
        return self.piece

    def __len__(self) -> int:
        return len(self.seq)


#: Where a chunk of whole tensors lies in its run's lists: (start, stop, length of the lists)
Piece = tuple[int, int, int]


def strips(count: int, *values: Any, chunks: bool = False) -> Iterable[tuple[Any, ...]]:
    """`values` (tensors, lists of tensors position by position, or `at(xs, i)`) cut into
    `count` strips.

    Each strip is a tuple like `values` whose tensors are views of the same contiguous element
    range of each tensor (aligned to STRIP_ALIGN); lists keep their length and order, so lists of
    scalars that go with them still match. Tensors that cannot be sliced alike (non-contiguous,
    different shapes, sparse, a mix of lists and single tensors) are yielded whole, once.

    With `chunks` (the rewriter proved that the run pairs its lists only position by position,
    in torch foreach calls), each tuple ends with the `Piece` it covers, for `part`: when every
    value is a list of one length and the floor is on, the run goes over consecutive positions
    whose tensors fit the budget together (sub-lists of whole tensors: a few foreach calls
    instead of one per strip of every tensor), and a position larger than the budget alone is
    cut into strips; otherwise the Piece is None and the strips are as above."""
    if chunks:
        return _chunked(count, values)
    first: Any = values[0] if values else None
    if type(first) in _PLAIN and not _STRIPS_OVERRIDE and not _FINE_STRIPS[0] and \
            _STRIP_FLOOR[0] > 0 and count * first.nbytes <= STRIP_FRACTION * _STRIP_FLOOR[0] and \
            all(type(v) in _PLAIN or type(v) is At for v in values):
        # `_whole_by_budget` of plain tensors and items, in a few reads (~0.5 µs, not 3)
        return (tuple(v.seq if type(v) is At else v for v in values),)
    whole = _whole_by_budget(count, values)  # the for-loop path's common case, once per param
    return (whole,) if whole is not None else _strips(count, values)


def _strips(count: int, values: Sequence[Any]) -> Iterator[tuple[Any, ...]]:
    whole = [v.item() if isinstance(v, At) else v for v in values]
    positions = _strip_positions(whole) if count > 1 else None
    if _STRIPS_OVERRIDE and not _FINE_STRIPS[0]:
        count = int(_STRIPS_OVERRIDE)
    elif positions is not None and not _FINE_STRIPS[0]:
        count = _budgeted(count, positions)
    if count <= 1:
        positions = None
    if positions is None:
        yield tuple(StripItem(v.seq, v.index, w) if isinstance(v, At) else w
                    for v, w in zip(values, whole, strict=True))
        return
    align = 1 if _FINE_STRIPS[0] else STRIP_ALIGN
    sizes = []
    for group in positions:
        n = group[0].numel() if group else 0
        per = -(-n // count)
        sizes.append(max(align, -(-per // align) * align))
    pieces: dict[int, list[Tensor]] = {}  # id(tensor) -> its strips
    total = 1
    for group, size in zip(positions, sizes, strict=True):
        for t in group:
            if id(t) not in pieces:
                flat = t.view(-1)
                pieces[id(t)] = list(torch.split(flat, size)) if t.numel() else [flat]
                total = max(total, len(pieces[id(t)]))

    def piece(t: Any, k: int) -> Any:
        if not isinstance(t, Tensor):
            return t
        ts = pieces[id(t)]
        return ts[k] if k < len(ts) else ts[-1][ts[-1].numel():]

    def cut(v: Any, w: Any, k: int) -> Any:
        if isinstance(v, At):
            return StripItem(v.seq, v.index, piece(w, k))
        if isinstance(v, (list, tuple)):
            return type(v)(piece(t, k) for t in v)
        return piece(v, k)

    GUARD_HITS[0] += total > 1
    for k in range(total):
        yield tuple(cut(v, w, k) for v, w in zip(values, whole, strict=True))


def part(value: Any, piece: Piece | None) -> Any:
    """What a chunk of a run sees of a value its foreach calls pair with the run's lists: the
    same positions of a list or tuple (it has one item per position), anything else as it is."""
    if piece is None or not isinstance(value, (list, tuple)):
        return value
    start, stop, n = piece
    if len(value) != n:  # the original's foreach call raises on this mismatch too
        raise RuntimeError(f"gsr-rewrite: a list of {len(value)} items goes with tensor lists "
                           f"of {n}")
    return value if stop - start == n else value[start:stop]


def _chunked(count: int, values: Sequence[Any]) -> Iterator[tuple[Any, ...]]:
    """`strips(count, *values, chunks=True)`."""
    n = _common_length(values)
    if n is None or _STRIPS_OVERRIDE or (_STRIP_FLOOR[0] <= 0 and not _FINE_STRIPS[0]):
        for cut in strips(count, *values):
            yield (*cut, None)
        return
    ranges = _position_ranges(count, values, n)
    GUARD_HITS[0] += len(ranges) > 1
    for start, stop in ranges:
        sub = [v[start:stop] if len(v) else v for v in values]
        for cut in strips(count if stop - start == 1 else 1, *sub):
            yield (*cut, (start, stop, n))


def _common_length(values: Sequence[Any]) -> int | None:
    """The length of every non-empty value when all are lists or tuples of one length (empty
    ones are lists the run does not use); None otherwise."""
    n = None
    for v in values:
        if not isinstance(v, (list, tuple)):
            return None
        if len(v):
            if n is not None and len(v) != n:
                return None
            n = len(v)
    return n


_nbytes = attrgetter("nbytes")


def _position_ranges(count: int, values: Sequence[Any], n: int) -> list[tuple[int, int]]:
    """Consecutive positions whose tensors (of the first list) take at most the budget of one
    temporary, `STRIP_FRACTION / count` of the floor, together; a position over it alone.
    Translation validation (`fine_strips`): one position each."""
    if _FINE_STRIPS[0]:
        return [(j, j + 1) for j in range(n)]
    first = next(v for v in values if len(v))
    budget = _STRIP_FLOOR[0] * STRIP_FRACTION // count
    try:
        sizes = list(map(_nbytes, first))
    except AttributeError:  # None at some position: it takes no room
        sizes = [t.nbytes if isinstance(t, Tensor) else 0 for t in first]
    ends = list(accumulate(sizes))
    ranges, start, base = [], 0, 0
    while start < n:
        stop = max(start + 1, bisect_right(ends, base + budget, lo=start))
        ranges.append((start, stop))
        base, start = ends[stop - 1], stop
    return ranges


def _whole_by_budget(count: int, values: Sequence[Any]) -> tuple[Any, ...] | None:
    """The one strip of a run of single tensors (and items `at(xs, i)`) that the strip floor
    alone makes whole: `_budgeted` would say 1 for any way to cut them (`_strip_positions`
    groups them with the first one's size), so they need no checking. The strip of an item is
    its list itself: whole, `xs[i]` is what the original reads. None otherwise."""
    floor = _STRIP_FLOOR[0]
    if floor <= 0 or _STRIPS_OVERRIDE or _FINE_STRIPS[0]:
        return None
    first = None
    for v in values:
        if isinstance(v, (list, tuple)) and len(v):
            return None  # lists: `_budgeted` sums every position
        w = v.item() if isinstance(v, At) else v
        if first is None and isinstance(w, Tensor):
            first = w
    if _budgeted(count, [[first]] if first is not None else []) > 1:
        return None
    return tuple(v.seq if isinstance(v, At) else v for v in values)


def _strip_positions(values: Sequence[Any]) -> list[list[Tensor]] | None:
    """The tensors that must be cut alike, one group per position; None when they cannot be."""
    lists = [v for v in values if isinstance(v, (list, tuple)) and len(v)]  # empty: unused
    singles = [v for v in values if isinstance(v, Tensor)]
    if lists and singles:
        return None
    if lists:
        n = len(lists[0])
        if any(len(v) != n for v in lists):
            return None
        groups = [[v[i] for v in lists if v[i] is not None] for i in range(n)]
    else:
        groups = [singles]
    threaded = torch.get_num_threads() > 1 and not _FINE_STRIPS[0]
    for g in groups:
        if not g:
            continue
        if not all(isinstance(t, Tensor) for t in g):  # a list of numbers: nothing to cut
            return None
        if threaded and g[0].device.type == "cpu" and g[0].numel() > CPU_PARALLEL_GRAIN:
            return None  # cut, its elements would round on other code paths than whole
        shape = g[0].shape
        for t in g:
            plain = type(t) is Tensor or isinstance(t, torch.nn.Parameter) or _FINE_STRIPS[0]
            # a 0-d tensor stays whole: its 1-element strip would be 1-d, and type promotion
            # with a 0-d operand (a tensor lr) depends on that (bf16 results round otherwise)
            if not isinstance(t, Tensor) or not plain or t.layout != torch.strided or \
                    t.shape != shape or not t.is_contiguous() or t.dim() == 0:
                return None
    return groups


_FINE_STRIPS = [False]


@contextlib.contextmanager
def fine_strips() -> Iterator[None]:
    """Translation validation: strips of one element, on symbolic tensors too, so that the proof
    covers the slicing itself (its tensors have a few elements, fewer than STRIP_ALIGN)."""
    _FINE_STRIPS[0] = True
    try:
        yield
    finally:
        _FINE_STRIPS[0] = False
