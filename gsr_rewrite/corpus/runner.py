"""Corpus runner: rewrite every optimizer class of installed packages and measure the outcome.

(The command line, `python -m gsr_rewrite.corpus PACKAGE...`, is in command.py.)

For each module of each package (walked with pkgutil), every class that subclasses
``torch.optim.Optimizer`` and whose ``class`` statement is in that module is one row. Its module is
rewritten once (cached, `gsr_rewrite.api.rewrite_module`); each class then gets: the status and
reason, the measured temporaries of a step before and after (units of the parameter size, on
8 x 64x64 fp32 params, the worst of 8 steps and of the for-loop and foreach paths), and the
bitwise equivalence over `steps` steps (with the max |diff| under tolerance when not bitwise).
Classes that need a closure or special construction are recorded as such, never skipped. One
crash never stops a run.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import inspect
import pkgutil
import re
import signal
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

import torch
from torch.optim import Optimizer

from gsr_rewrite.api import (
    EmittedModuleError,
    ModuleRewrite,
    defining_module,
    inherit_variant,
    rewrite_module,
    step_owner,
)
from gsr_rewrite.bench.output import progress_bar
from gsr_rewrite.corpus.rows import REUSE_FROM, REUSE_TO, CorpusRow
from gsr_rewrite.errors import RewriteError
from gsr_rewrite.proof.check import MEASURE_SHAPES, compare_trajectories, foreach_paths
from gsr_rewrite.proof.memory import measure_temporaries, time_step_pair
from gsr_rewrite.proof.validate import load_module

__all__ = ["CorpusRow", "discover", "run_corpus"]

@dataclass
class Found:
    module: str
    name: str
    cls: type
    label: str  # the module name, or the .py path it was loaded from


class _TimeLimit(BaseException):  # not an Exception: no per-step `except` may swallow it
    pass


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """SIGALRM-based limit (main thread on POSIX only; elsewhere no limit)."""
    if seconds <= 0 or threading.current_thread() is not threading.main_thread() or \
            not hasattr(signal, "SIGALRM"):
        yield
        return

    def fire(signum: int, frame: FrameType | None) -> None:
        raise _TimeLimit(f"time limit of {seconds:g} s exceeded")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _import(target: str) -> ModuleType:
    """A module name, or a .py file (loaded as a top-level module named after its path)."""
    if not target.endswith(".py"):
        return importlib.import_module(target)
    path = Path(target).resolve()
    name = "_gsr_corpus_" + re.sub(r"\W", "_", str(path.with_suffix("")))
    return sys.modules.get(name) or load_module(path, name)


def _modules(target: str, skipped: list[str]) -> Iterator[ModuleType]:
    try:
        root = _import(target)
    except BaseException as e:  # noqa: B036 - a package may call exit() on a missing extra
        if isinstance(e, KeyboardInterrupt):
            raise
        skipped.append(f"{target}: import failed: {type(e).__name__}: {e}")
        return
    yield root
    for info in pkgutil.walk_packages(getattr(root, "__path__", []), target + ".",
                                      onerror=lambda n: skipped.append(f"{n}: walk failed")):
        try:
            yield importlib.import_module(info.name)
        except BaseException as e:  # noqa: B036 - lion_pytorch.triton calls exit()
            if isinstance(e, KeyboardInterrupt):
                raise
            skipped.append(f"{info.name}: import failed: {type(e).__name__}: {e}")


def _defined_in(obj: type, module: ModuleType) -> bool:
    """True when `module`'s file holds the class statement of `obj` (torch sets
    ``__module__ = "torch.optim"`` on some classes, so ``__module__`` alone is not enough)."""
    file = getattr(module, "__file__", None)
    if not file:
        return False
    try:
        return defining_module(obj)[1] == Path(file).resolve()
    except RewriteError:
        return obj.__module__ == module.__name__


def discover(packages: list[str]) -> tuple[list[Found], list[str]]:
    """Optimizer classes defined in the modules of `packages`, and notes on skipped modules."""
    found: list[Found] = []
    seen: set[int] = set()
    skipped: list[str] = []
    for target in packages:
        for module in _modules(target, skipped):
            label = target if target.endswith(".py") else module.__name__
            for name, obj in sorted(vars(module).items()):
                if (isinstance(obj, type) and issubclass(obj, Optimizer) and obj is not Optimizer
                        and id(obj) not in seen and _defined_in(obj, module)):
                    seen.add(id(obj))
                    found.append(Found(module.__name__, name, obj, label))
    return found, skipped


def _needs_closure(cls: type) -> bool:
    try:
        params = list(inspect.signature(cls.step).parameters.values())[1:]  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        return False
    return any(p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
               for p in params)


def _paths(cls: type, quick: bool) -> list[dict[str, Any]]:
    return [{}] if quick else foreach_paths(cls)


def _label(kw: dict[str, Any]) -> str:
    return "default" if not kw else ",".join(f"{k}={v}" for k, v in kw.items())


def _units(cls: type, kw: dict[str, Any]) -> float:
    return measure_temporaries(lambda ps: cls(ps, **kw), MEASURE_SHAPES).units


def _evaluate(row: CorpusRow, cls: type, r_cls: type | None, steps: int, quick: bool) -> None:
    if _needs_closure(cls):
        row.needs = "closure"
        return
    paths = _paths(cls, quick)
    for kw in paths:
        try:
            cls([torch.nn.Parameter(torch.zeros(MEASURE_SHAPES[0]))], **kw)
        except Exception as e:
            row.needs = f"special construction: {cls.__name__}(params, **{kw}) raised {e!r}"
            return
        try:
            row.units[_label(kw)] = [_units(cls, kw), None]
        except Exception as e:
            row.needs = f"special inputs: step() raised on dense fp32 grads: {e!r}"
            return
    row.before_units = max(u[0] for u in row.units.values() if u[0] is not None)
    # the paths the check can run: the original against itself passes there, on the odd shapes
    # or, where the original raises on the 0-size param, on the others (nonempty)
    checkable: list[tuple[dict[str, Any], bool]] = []
    for kw in paths:
        own = compare_trajectories(cls, cls, kw, steps=2)
        if own.passed or compare_trajectories(cls, cls, kw, steps=2, nonempty=True).passed:
            checkable.append((kw, not own.passed))
            if not own.passed:
                row.needs = row.needs or (f"params without a 0-size one (checked so"
                                          f"{'' if kw is paths[0] else ', ' + _label(kw)}: the "
                                          f"original fails on it: {own.message})")
        else:
            row.needs = row.needs or (f"special inputs: original vs original fails the check"
                                      f"{'' if kw is paths[0] else ' (' + _label(kw) + ')'}: "
                                      f"{own.message}")
    if r_cls is None or not checkable:
        return
    try:
        for kw in paths:
            row.units[_label(kw)][1] = _units(r_cls, kw)
    except Exception as e:
        row.equivalence, row.detail = "FAIL", f"R-variant step raised: {_crash(e)}"
        return
    row.after_units = max(u[1] for u in row.units.values() if u[1] is not None)
    for kw in paths:  # on the params the memory was measured on, as a user's step runs them
        row.time_ratios[_label(kw)] = time_step_pair(
            functools.partial(cls, **kw), functools.partial(r_cls, **kw), MEASURE_SHAPES,
            floor=None).ratio
    row.time_ratio = max(row.time_ratios.values())
    row.equivalence, row.max_abs_diff = "bitwise", 0.0
    for kw, nonempty in checkable:
        res = compare_trajectories(cls, r_cls, kw, steps=steps, nonempty=nonempty)
        if res.passed:
            continue
        tol = compare_trajectories(cls, r_cls, kw, steps=steps, mode="tolerance",
                                   nonempty=nonempty)
        row.max_abs_diff = max(row.max_abs_diff, tol.max_abs_diff, res.max_abs_diff)
        row.detail = row.detail or f"{_label(kw)}: {res.message}"
        row.equivalence = "tolerance" if tol.passed and row.equivalence != "FAIL" else "FAIL"


def _short(text: str) -> str:
    """Paths relative to their sys.path entry (.../site-packages/torch/x.py -> torch/x.py)."""
    for entry in sorted((p for p in sys.path if p and p != "."), key=len, reverse=True):
        text = text.replace(str(Path(entry).resolve()) + "/", "").replace(entry + "/", "")
    return text


def _crash(e: BaseException) -> str:
    """The error and the innermost frame of gsr_rewrite (or the innermost one) that raised it."""
    frames = traceback.extract_tb(e.__traceback__)
    ours = [f for f in frames if "gsr_rewrite" in f.filename] or frames
    where = f" at {Path(ours[-1].filename).name}:{ours[-1].lineno}" if ours else ""
    return f"{type(e).__name__}: {e}{where}"


def run_corpus(packages: list[str], *, steps: int = 7, quick: bool = False,
               classes: Collection[str] | None = None, time_limit: float = 180.0,
               progress: Callable[[CorpusRow], None] | None = None,
               skipped: list[str] | None = None) -> list[CorpusRow]:
    """One row per optimizer class of `packages` (only those named in `classes`, if given)."""
    found, notes = discover(packages)
    if skipped is not None:
        skipped.extend(notes)
    if classes is not None:
        found = [f for f in found if f.name in classes or f"{f.label}.{f.name}" in classes]
    rewrites: dict[str, ModuleRewrite | BaseException] = {}
    rows: list[CorpusRow] = []
    with progress_bar(len(found), "class") as bar:
        for f in found:
            bar.set_postfix_str(f"{f.label}.{f.name}")
            rows.append(_run_one(f, rewrites, steps, quick, time_limit))
            if progress is not None:
                progress(rows[-1])
            bar.update()
    return rows


def _run_one(f: Found, rewrites: dict[str, ModuleRewrite | BaseException], steps: int,
             quick: bool, time_limit: float) -> CorpusRow:
    """The row of one class; a crash or a time limit is recorded in it."""
    start = time.perf_counter()
    row = CorpusRow(f.name, f.label, "error")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = _source_module(f)
            if module is not None and module not in rewrites:
                with _time_limit(time_limit):  # once per module, its own time limit
                    rewrites[module] = _rewrite(module)
            with _time_limit(time_limit):
                _one(row, f, rewrites, steps, quick)
    except (Exception, _TimeLimit) as e:  # recorded in the row; the run goes on
        row.detail = _crash(e)
        if row.status == "error":
            row.reason = row.reason or row.detail
    row.seconds = time.perf_counter() - start
    return row


def _rewrite(module: str) -> ModuleRewrite | BaseException:
    try:
        return rewrite_module(module)
    except (Exception, _TimeLimit) as e:
        return e


def _source_module(f: Found) -> str | None:
    """The module to rewrite for this class: its own, or that of the base whose step it runs
    (AdamW(Adam), `partialclass(Adam, foreach=True)`); None when there is none."""
    owner = step_owner(f.cls)
    if owner is not None:
        try:
            return defining_module(owner)[0]
        except RewriteError:
            return None
    return None if "<locals>" in f.cls.__qualname__ else f.module


def _one(row: CorpusRow, f: Found, rewrites: dict[str, ModuleRewrite | BaseException],
         steps: int, quick: bool) -> None:
    module, owner = _source_module(f), step_owner(f.cls)
    if module is None:
        row.status = "refused"
        row.reason = (f"class created inside a function ({f.cls.__qualname__}): no module-level "
                      "class statement to rewrite")
        _evaluate(row, f.cls, None, steps, quick)
        return
    name = (owner or f.cls).__name__
    rw = rewrites[module]
    r_cls = None
    if isinstance(rw, EmittedModuleError):
        row.status, row.reason = "error", _short(str(rw))
    elif isinstance(rw, RewriteError):
        row.status, row.reason = "refused", _short(str(rw))
    elif isinstance(rw, BaseException):
        row.status, row.reason = "error", f"rewrite crashed: {_crash(rw)}"
    elif name not in rw.outcomes:
        row.status = "refused"
        row.reason = f"the analysis did not find class {name} in {rw.filename}"
    else:
        row.status, row.reason = rw.outcomes[name]
        if row.status == "rewritten" and rw.module is not None:
            r_cls = getattr(rw.module, name + "R")
            if owner is not None:
                r_cls = inherit_variant(f.cls, owner, r_cls)
    if owner is not None:
        row.reason = f"runs {owner.__module__}.{name}.step" + (f": {row.reason}" if row.reason
                                                                 else "")
    _evaluate(row, f.cls, r_cls, steps, quick)
    left = rw.left.get(name) if isinstance(rw, ModuleRewrite) else None
    heavy = row.after_units if row.status == "rewritten" else row.before_units
    if row.status in ("rewritten", "unchanged") and (heavy or 0.0) > REUSE_TO and left:
        row.reason = (row.reason + "; " if row.reason else "") + "still allocates: " + \
            _short(left)
    if row.status != "rewritten" and (row.before_units or 0.0) >= REUSE_FROM:
        row.detail = row.detail or (f"one step allocates {row.before_units:.3f} "
                                    "parameter-sizes that were not rewritten")
