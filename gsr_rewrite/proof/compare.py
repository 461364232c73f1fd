"""Comparing what two runs hold: the comparison modes, their tolerance bounds, and
`compare_values`, which walks tensors, containers and scalars and says what differs first.

Bitwise mode compares values exactly, NaN equal to NaN, and with `Criteria.bits` (the stress
matrix) bit patterns; tolerance mode compares floating-point values within the bounds below.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass
from typing import Any, Literal

import torch

Mode = Literal["bitwise", "tolerance"]

# Tolerance table (mode="tolerance" only; bitwise mode ignores it):
#   float32: rtol 1.3e-6, atol 1e-5 -- torch.testing.assert_close defaults for float32, i.e.
#   about 11 ulp relative; enough for a reassociated per-element formula over 7 steps, far below
#   the 1e-3 relative change a wrong rewrite produces. Callers may pass other bounds; results
#   record the bounds used.
DEFAULT_RTOL = 1.3e-6
DEFAULT_ATOL = 1e-5
#   bfloat16 (the stress matrix's bf16 case): rtol 1.6e-2 (2 bf16 ulp, 2 * 2**-7), atol 1e-5 --
#   torch.testing.assert_close defaults for bfloat16. The float32 cases keep the bounds above.
BF16_RTOL = 1.6e-2
BF16_ATOL = 1e-5


@dataclass(frozen=True)
class Criteria:
    """How two values are compared: the mode, its bounds, and whether bits count."""

    mode: Mode
    rtol: float
    atol: float
    bits: bool = False  # bitwise mode compares bit patterns: -0.0 != 0.0 (any NaN == any NaN)


def _max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.numel() == 0:
        return 0.0
    a64 = a.detach().to("cpu", torch.float64)
    b64 = b.detach().to("cpu", torch.float64)
    same = (a64 == b64) | (a64.isnan() & b64.isnan())  # equal infs and NaN-vs-NaN count as 0
    diff = torch.where(same, torch.zeros_like(a64), (a64 - b64).abs())
    return float(torch.nan_to_num(diff, nan=math.inf).max())


_INT_OF_SIZE = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal bit patterns (so -0.0 differs from 0.0), any NaN equal to any NaN."""
    if a.is_complex():
        a, b = torch.view_as_real(a.resolve_conj()), torch.view_as_real(b.resolve_conj())
    ints = _INT_OF_SIZE[a.element_size()]
    a_bits, b_bits = a.detach().contiguous().view(ints), b.detach().contiguous().view(ints)
    if torch.equal(a_bits, b_bits):
        return True
    return bool(((a_bits == b_bits) | (a.isnan() & b.isnan())).all())


def _tensors_match(a: torch.Tensor, b: torch.Tensor, crit: Criteria) -> bool:
    exact_only = not (a.is_floating_point() or a.is_complex())
    if crit.mode == "tolerance" and not exact_only:
        return torch.allclose(a, b, rtol=crit.rtol, atol=crit.atol, equal_nan=True)
    if crit.bits and not exact_only:
        return _same_bits(a, b)
    if torch.equal(a, b):
        return True
    # NaN-aware equality; note -0.0 == 0.0 here (values, not bit patterns, are compared).
    return not exact_only and bool(((a == b) | (a.isnan() & b.isnan())).all())


def compare_values(a: Any, b: Any, what: str, crit: Criteria) -> tuple[float, str | None]:
    """(max |diff|, None) when ``a`` matches ``b``, else (max |diff|, what differed)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return math.inf, f"{what} is {type(a).__name__} vs {type(b).__name__}"
        if a.dtype != b.dtype or a.shape != b.shape:
            return math.inf, (f"{what} is {a.dtype}{tuple(a.shape)} vs {b.dtype}{tuple(b.shape)}")
        if not crit.bits and torch.equal(a, b):  # the common case, without _max_abs_diff's copies
            return 0.0, None
        ok = _tensors_match(a, b, crit)
        diff = 0.0 if ok and crit.mode == "bitwise" else _max_abs_diff(a, b)
        bits = "; bit patterns differ" if diff == 0 else ""
        return diff, None if ok else f"{what} differs (max |diff| = {diff:.3g}{bits})"
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            only_a = sorted(map(str, set(a) - set(b)))
            only_b = sorted(map(str, set(b) - set(a)))
            return math.inf, f"{what or 'snapshot'} keys differ: {only_a} vs {only_b}"
        worst = 0.0
        for key in a:
            where = f"{what}[{key!r}]" if what else str(key)  # top level: a snapshot label
            diff, msg = compare_values(a[key], b[key], where, crit)
            worst = max(worst, diff)
            if msg:
                return worst, msg
        return worst, None
    if isinstance(a, collections.deque) and type(a) is type(b) and a.maxlen != b.maxlen:
        return math.inf, f"{what} has maxlen {a.maxlen} vs {b.maxlen}"
    if isinstance(a, list | tuple | collections.deque) and type(a) is type(b):
        if len(a) != len(b):
            return math.inf, f"{what} has length {len(a)} vs {len(b)}"
        return compare_values(dict(enumerate(a)), dict(enumerate(b)), what, crit)
    if isinstance(a, float) and isinstance(b, float):
        if (math.isnan(a) and math.isnan(b)) or a == b:
            return 0.0, None
        diff = abs(a - b)
        ok = crit.mode == "tolerance" and diff <= crit.atol + crit.rtol * abs(a)
        return diff, None if ok else f"{what} is {a!r} vs {b!r}"
    try:
        equal = bool(a == b)
    except Exception:  # e.g. an array-valued ==; treat as different, with the values shown
        equal = False
    return 0.0, None if equal else f"{what} is {a!r} vs {b!r}"
