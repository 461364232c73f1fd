"""The layout certificate: shape, strides, dtype and device of every param, gradient and state
tensor of a step, read once per step, so that the guards inside the step look them up instead
of reading them tensor by tensor (issue 16: on 2,000 small tensors a guard cost ~1.5 µs per
param and statement; a lookup ~0.3).

A step gets a certificate only when

- its class was proved to change no tensor's layout in place (`analysis/layout.py`: no `set_`,
  `unsqueeze_`, `.data =`, ... and no call the analysis cannot name; the generated
  `r_step(..., fixed_layout=True)` says so). The one in-step layout change that remains, an
  `out=` that resizes its target, changes the shape, which every lookup compares again;
- the run-time precondition held (precondition.py): every gradient and state tensor owns its
  bytes, so two distinct certified tensors never share memory;
- every tensor is a plain tensor and torch offers Dynamo's `TensorGuards`, which re-checks the
  recorded sizes, strides, dtype, device and requires_grad of 10,000 tensors in ~0.7 ms (the
  record is rebuilt when it fails: new shapes, new state, another grad mode).

The certificate maps `id(tensor)` to an `Entry` and holds the tensors, so no id is reused while
it is active; it is active (per thread) only while the R step runs, and made at its first lookup.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any, NamedTuple, cast

import torch

Tensor = torch.Tensor

TensorGuards: Any
try:  # private to Dynamo; without it there is no certificate and every guard reads its tensors
    from torch._C._dynamo.guards import TensorGuards
except ImportError:  # pragma: no cover - torch builds without Dynamo
    TensorGuards = None


class Entry(NamedTuple):
    kind: int  # equal kinds: equal shape, strides, dtype and device (when certified)
    host: bool  # a gradient or state tensor that may hold a temporary (`guards.fits` of it)
    shape: torch.Size  # compared again at each lookup: an `out=` may have resized it since


Certificate = dict[int, Entry]


class Pending:
    """A step's record and tensors; their certificate is made at the first lookup (a step whose
    guards look nothing up, such as strip-mined runs over views, pays only the record's check)."""

    __slots__ = ("every", "ids", "record")

    def __init__(self, record: Record, every: list[Tensor]) -> None:
        self.record, self.every = record, every  # holding them: no id is reused meanwhile
        self.ids: Certificate | None = None

    def certificate(self) -> Certificate:
        if self.ids is None:
            self.ids = self.record.certificate(self.every)
        return self.ids


class _Active(threading.local):
    cert: Pending | None = None


ACTIVE = _Active()


def active() -> Certificate | None:
    """The certificate of the R step this thread runs; None outside one, or without one."""
    cert = ACTIVE.cert
    return None if cert is None else cert.certificate()


class Record:
    """What `TensorGuards` found of one optimizer's tensors, in order: it holds while `check`
    passes (compared by identity: the same record, the same sizes, strides and dtypes)."""

    def __init__(self, every: list[Tensor], shared: int) -> None:
        self.shared, self.count = shared, len(every)
        # TensorGuards compares dispatch keys as the grad modes show them; inference mode hides
        # what makes an inference tensor one, so a record holds only in the mode it was made in
        self.inference = torch.is_inference_mode_enabled()
        self.guard = TensorGuards(*every, dynamic_dims_sizes=None, dynamic_dims_strides=None)
        self.unsafe = unwritable(every[shared:])  # fixed by the dispatch keys TensorGuards checks
        self.entries = _entries(every, shared)
        # byte counts and contiguity: fixed by sizes, strides and dtype, which `check` compares
        self.sizes = tuple(t.nbytes for t in every)
        self.dense = tuple(t.is_contiguous() for t in every)

    def holds(self, every: list[Tensor], shared: int) -> bool:
        return self.shared == shared and self.count == len(every) and \
            self.inference == torch.is_inference_mode_enabled() and self.guard.check(*every)

    def certificate(self, every: list[Tensor]) -> Certificate:
        return dict(zip(map(id, every), self.entries, strict=True))


def unwritable(ts: list[Tensor]) -> bool:
    """A tensor an in-place op raises on where the original only reads it: a negative view (a
    foreach op refuses a mutable list of them) or, outside inference mode, an inference tensor."""
    try:
        return any(map(Tensor.is_neg, ts)) or \
            (not torch.is_inference_mode_enabled() and any(map(Tensor.is_inference, ts)))
    except (RuntimeError, NotImplementedError):  # a subclass that does not say: as before
        return False


#: optimizer -> the record of its last certified step
_RECORDS: weakref.WeakKeyDictionary[Any, Record] = weakref.WeakKeyDictionary()


def record(opt: Any, every: list[Tensor], shared: int) -> Record | None:
    """The record of plain tensors `every` whose first `shared` are params (never hosts) and the
    rest gradients and state; None where TensorGuards is missing or takes other arguments. A
    certificate from it holds only once the precondition found them owning their bytes."""
    if TensorGuards is None:
        return None
    found = _RECORDS.get(opt)
    try:
        if found is None or not found.holds(every, shared):
            found = _RECORDS[opt] = Record(every, shared)
    except (TypeError, RuntimeError):  # another TensorGuards signature: guards read tensors
        return None
    return found


def _entries(every: list[Tensor], shared: int) -> list[Entry]:
    kinds: dict[tuple[Any, ...], int] = {}
    out = []
    for i, t in enumerate(every):
        shape, dtype = t.shape, t.dtype
        kind = kinds.setdefault((shape, t.stride(), dtype, t.device), len(kinds))
        host = i >= shared and dtype.is_floating_point and not t.requires_grad and \
            t.layout == torch.strided and t.dim() > 0 and t.numel() > 0 and t.is_contiguous()
        out.append(Entry(kind, host, shape))
    return out


def enter(cert: Pending | None) -> Pending | None:
    """Make `cert` the active certificate of this thread; returns what `leave` restores."""
    previous, ACTIVE.cert = ACTIVE.cert, cert
    return previous


def leave(previous: Pending | None) -> None:
    ACTIVE.cert = previous


def pair_fits(ids: Certificate, h: Any, t: Any) -> bool:
    """True only when `guards.fits((h,), (t,))` (`fits((h,), ())` for t None) holds, by lookup;
    False means "ask the guard"."""
    mine = ids.get(id(h))
    if mine is None or not mine.host or h.shape != mine.shape:
        return False
    if t is None or t is h:
        return True
    theirs = ids.get(id(t))
    return theirs is not None and theirs.kind == mine.kind and t.shape == mine.shape


def lists_fit(ids: Certificate, hosts: Any, like: Any) -> bool:
    """True only when `guards.fits_lists(hosts, like)` holds (equal lengths checked by the
    caller), by lookup; False means "ask the guard"."""
    if not hosts:
        return False
    columns = [*hosts, *like]
    found = [list(map(ids.get, map(id, x))) for x in columns]
    if any(None in col for col in found):
        return False
    entries = cast(list[list[Entry]], found)
    kinds = [e.kind for e in entries[0]]
    for x, col in zip(columns, entries, strict=True):
        if [e.kind for e in col] != kinds or list(map(Tensor.size, x)) != [e.shape for e in col]:
            return False
    return all(e.host for col in entries[:len(hosts)] for e in col)
