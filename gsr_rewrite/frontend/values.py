"""Abstract values of the analysis: sets of buffers and markers, some with a tuple structure.

A value is a frozenset of strings. Buffers name tensor storage ("param", "grad", "state:KEY",
"tmp@LINE:COL"); markers start with "%" ("%list", "%self", "%group", ...). Scalars are EMPTY.

Structured values keep what a flat set loses: which element of a tuple holds which buffers, and
what iterating a container yields. `(params, grads)` is {"%@0:param", "%@1:grad"} and the grouped
lists `Optimizer._group_tensors_by_device_and_dtype([ps, gs])`, iterated, yield
`((ps', gs'), indices)` pairs: {"%*:%@0:%@0:param", "%*:%@0:%@1:grad", "%part"}. So
`for (ps, gs), _ in grouped.values()` binds `gs` to the gradients only.

Soundness: a structured part is only ever *more* precise than the flat value. `buffers` sees every
buffer at any depth (reads, writes, escapes and liveness stay complete); items that carry no
structure (a list that was also appended to, a join with an unstructured value) flow into every
element and every position.
"""

from __future__ import annotations

import re
from functools import lru_cache

Buf = str
Value = frozenset[Buf]
EMPTY: Value = frozenset()
LIST: Value = frozenset({"%list"})  # marks a list of tensors (foreach operands)
PART = "%part"  # iterating this yields disjoint subsets of the elements (grouping by device)
_EACH = "%*:"  # prefix: what iterating the value yields
_STRUCT = re.compile(r"^(?:%@\d+:|%\*:)+")


def is_buffer(b: Buf) -> bool:
    return not b.startswith("%")


def is_role(b: Buf) -> bool:
    return b in ("param", "grad") or b.startswith("state:")


def _structural(b: Buf) -> bool:
    return b.startswith(("%@", _EACH))


def is_structured(v: Value) -> bool:
    return any(_structural(b) for b in v)


@lru_cache(maxsize=1 << 16)
def flat(v: Value) -> Value:
    """The value without structure: every buffer and marker at any depth."""
    return frozenset(_STRUCT.sub("", b) for b in v) if is_structured(v) else v


def buffers(v: Value) -> Value:
    return frozenset(b for b in flat(v) if is_buffer(b))


def _part(v: Value, prefix: str) -> Value:
    return frozenset(b[len(prefix):] for b in v if b.startswith(prefix))


def _loose(v: Value) -> Value:
    """What the value holds beyond its structure (anything: it may be in any element)."""
    return frozenset(b for b in v if not _structural(b) and b != PART)


def structured(items: list[Value]) -> Value:
    """A tuple (or list literal) of these items, each at its position."""
    return frozenset(f"%@{k}:{b}" for k, item in enumerate(items) for b in item)


def container(element: Value, partition: bool = False) -> Value:
    """An iterable whose elements are `element` (a dict: its values)."""
    return frozenset(_EACH + b for b in element) | (frozenset({PART}) if partition else EMPTY)


def item(v: Value, k: int) -> Value:
    """Element k of a tuple-like value (`a, b = v`, `v[1]`)."""
    if not is_structured(v):
        return v
    return _part(v, f"%@{k}:") | _part(v, _EACH) | _loose(v)


def exact_items(v: Value) -> list[Value] | None:
    """The items of a tuple-like value every part of which has a position (`(g, m)`, no loose
    or iterated part), item 0 first; None for any other value. A real value may be shorter than
    the list (a join of tuples of several lengths), never longer."""
    if not v or not all(b.startswith("%@") for b in v):
        return None
    n = 1 + max(int(b[2:b.index(":")]) for b in v)
    return [_part(v, f"%@{k}:") for k in range(n)]


def element(v: Value) -> Value:
    """What iterating over `v` (or indexing it with an unknown index) yields: a group from
    self.param_groups, an element of a tensor list (the same buffers), a tuple's items, a
    dict's keys and values."""
    out = set(_part(v, _EACH))
    for b in v:
        m = re.match(r"%@\d+:", b)
        if m:
            out.add(b[m.end():])
    # a dict the analysis does not follow (records.LOCAL) may hold anything: its elements are
    # opaque; a followed one's (records.LOCAL_DICT) are its container part
    loose = {_ELEMENT_OF.get(b, b) for b in _loose(v) if b not in ("%list", "%dict")}
    return frozenset(out | loose)


#: iterating `self.state` yields its keys: params, any of them (an object it does not model)
_ELEMENT_OF = {"%groups": "%group", "%local": "%opaque", "%statedict": "%opaque"}


def is_container(v: Value) -> bool:
    return any(b.startswith(_EACH) for b in v)
