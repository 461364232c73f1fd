"""`reduce(cls)`: the R-variant class of an optimizer class: found in its rewritten module, moved
onto the user's own class when that is exact, inherited by subclasses that only construct
differently (AdamW(Adam)), certified, and named so that its objects pickle."""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path
from typing import Any

import torch

from gsr_rewrite.api.modules import (
    _atomic_write,
    _cache_key,
    cache_dir,
    defining_module,
    rewrite_module,
)
from gsr_rewrite.errors import RewriteError
from gsr_rewrite.runtime import unhooked
from gsr_rewrite.runtime.patches import innermost
from gsr_rewrite.version import __version__


def _run_checks(cls: type, r_cls: type) -> str:
    """'' when `validate.certify` accepts `r_cls` against `cls` (symbolic proof where it runs,
    and the stress matrix), else why not."""
    from gsr_rewrite.proof.validate import certify

    try:
        verdict = certify(cls, r_cls)
    except Exception as e:  # a check that cannot run is a failed check
        return f"the check raised {type(e).__name__}: {e}"
    return "" if verdict.ok else verdict.detail


def _certify_cached(cls: type, owner: type, r_cls: type) -> str:
    """`_run_checks(cls, r_cls)`, its verdict cached on disk: keyed by the source files of every
    class from `cls` up to `owner` (what `r_cls` runs and how it is constructed), the tool and
    torch's version. Without readable sources nothing is cached."""
    chain = cls.__mro__[:cls.__mro__.index(owner) + 1]
    try:
        files = sorted({inspect.getsourcefile(c) or "" for c in chain})
        texts = [Path(f).read_text() for f in files]
    except (OSError, TypeError):
        return _run_checks(cls, r_cls)
    key = _cache_key(f"{cls.__module__}.{cls.__qualname__}", *files, *texts)
    verdict_path = cache_dir() / f"certified_{cls.__name__}_{key}.json"
    if verdict_path.is_file():
        return str(json.loads(verdict_path.read_text())["failure"])
    failure = _run_checks(cls, r_cls)
    verdict_path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(verdict_path, json.dumps({
        "tool": f"gsr-rewrite {__version__}", "torch": torch.__version__,
        "class": f"{cls.__module__}.{cls.__qualname__}", "runs_step_of": owner.__qualname__,
        "failure": failure}, indent=2))
    return failure


#: what a subclass may add to the class whose `step` it runs and still take that class's R-variant:
#: construction and unpickling only (AdamW(Adam) in torch.optim, `partialclass(Adam, foreach=True)`)
_INHERIT_ADDS = {"__init__", "__setstate__"}


def step_owner(cls: type) -> type | None:
    """The base class whose `step` `cls` runs, when `cls` and every class up to it add nothing
    but `__init__` / `__setstate__` and data attributes; else None (cls has its own step, or
    overrides a method that step may call)."""
    for k, c in enumerate(cls.__mro__):
        step = unhooked(vars(c).get("step"))
        if step is not None and not any(step is unhooked(vars(b).get("step"))
                                        for b in cls.__mro__[k + 1:]):
            return c if c is not cls else None
        if any(name not in _INHERIT_ADDS and name != "step" and not name.startswith("__")
               and (callable(v) or hasattr(v, "__get__"))
               and not _rewrapped_from_base(cls.__mro__[k + 1:], name, v)
               for name, v in vars(c).items()):
            return None
    return None


def _rewrapped_from_base(bases: tuple[type, ...], name: str, value: object) -> bool:
    """Whether class attribute `value` is only a base's `name` wrapped again: after any
    `torch.compile`, Dynamo sets `C._init_group = disable(C._init_group)` on every torch.optim
    class, so AdamW gets its own copy of Adam's method."""
    base = next((vars(b)[name] for b in bases if name in vars(b)), None)
    return base is not None and innermost(value) is innermost(base)


def inherit_variant(cls: type, owner: type, owner_r: type) -> type:
    """`<cls>R`: `cls` with the methods `owner_r` rewrote (step and the helper methods it calls).

    Sound when `step_owner(cls) is owner`: those methods are then exactly what `cls` runs, and
    what they were proved against; `cls` only constructs the optimizer differently.
    """
    rewritten = {k: v for k, v in vars(owner_r).items()
                 if not (k.startswith("__") and k.endswith("__"))}
    for name, fn in rewritten.items():
        if "__class__" in getattr(getattr(fn, "__code__", None), "co_freevars", ()):
            raise RewriteError(f"{owner_r.__module__}.{owner_r.__name__}.{name}",
                               "uses super(): it cannot be moved onto a subclass")
    # the R step falls back to `cls`'s own step, and checks `cls`'s methods (runtime/patches.py)
    rewritten = {k: v.gsr_on(cls) if hasattr(v, "gsr_on") else v for k, v in rewritten.items()}
    return type(cls.__name__ + "R", (cls,), {
        **rewritten, "__module__": owner_r.__module__, "__qualname__": cls.__qualname__ + "R",
        "__doc__": f"{cls.__name__} running the R-variant of {owner.__name__}.step (generated by "
                   "gsr-rewrite); after step() the contents of p.grad are undefined."})


#: classes `reduce()` returned in this process: the same class for the same original, always
_REDUCED: dict[type, type] = {}


def reduce(cls: type, *, check: bool = True) -> type:
    """The R-variant of optimizer class `cls`: `<Name>R`, generated from `cls`'s module source.

    No class without proof: the R-variant was certified when it was emitted (`validate.certify`:
    symbolic proof where it can run, and the differential stress matrix, run once and cached
    with the module); a subclass that only constructs differently (AdamW(Adam)) is certified
    against `cls` itself. `check` is kept for compatibility and no longer skips anything.
    Raises `RewriteError` naming the class and the reason when it is not rewritten (no
    parameter-sized temporary, the gradient escapes, the source cannot be read, the
    certification failed, ...).
    """
    del check  # every class is certified
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise TypeError(f"reduce() takes a torch.optim.Optimizer subclass, got {cls!r}")
    r_cls = _REDUCED.get(cls)
    if r_cls is None:
        r_cls = _REDUCED[cls] = _reduce_uncached(cls)
        module = _mirror_name(cls)
        if module is not None:  # objects pickle by reference to it, in any process
            r_cls.__module__, r_cls.__qualname__ = module, r_cls.__name__
    return r_cls


def _mirror_name(cls: type) -> str | None:
    """The module path under which `reduce(cls)` is found again (gsr_rewrite/reduced.py), or None
    when `cls` cannot be imported by its name (nested, made in a function, renamed)."""
    module = sys.modules.get(cls.__module__)
    if "." in cls.__qualname__ or getattr(module, cls.__qualname__, None) is not cls:
        return None
    return f"gsr_rewrite.reduced.{cls.__module__}"


def _reduce_uncached(cls: type) -> type:
    label = f"{cls.__module__}.{cls.__qualname__}"
    owner = step_owner(cls)
    if owner is not None:  # AdamW(Adam), partialclass(Adam, foreach=True): Adam's R-variant
        r_cls = inherit_variant(cls, owner, reduce(owner))
        failure = _certify_cached(cls, owner, r_cls)
        if failure:
            raise RewriteError(label, f"{label} was rewritten, but {r_cls.__name__} failed its "
                               f"check against {cls.__name__}: {failure}")
        return r_cls
    if "<locals>" in cls.__qualname__:
        raise RewriteError(label, "class was created inside a function; only module-level "
                           "`class` statements can be rewritten")
    module_name, path = defining_module(cls)
    try:
        rewritten = rewrite_module(module_name, path)
    except RewriteError as e:
        raise RewriteError(e.where, f"{label} was not rewritten: {e.reason}") from e
    except Exception as e:  # a crash of the rewriter itself: still name the class
        raise RewriteError(str(path), f"{label} was not rewritten: gsr-rewrite crashed "
                           f"({type(e).__name__}: {e}); please report it") from e
    outcome = rewritten.outcomes.get(cls.__name__)
    if outcome is None:
        raise RewriteError(str(path), f"{label} was not rewritten: the analysis found no "
                           f"optimizer class `{cls.__name__}` in this module (found: "
                           f"{', '.join(rewritten.outcomes) or 'none'})")
    status, reason = outcome
    if status != "rewritten" or rewritten.module is None:
        raise RewriteError(str(path), f"{label} was not rewritten ({status}): {reason}")
    r_copy = getattr(rewritten.module, cls.__name__ + "R")
    assert isinstance(r_copy, type)  # certified when it was emitted (compile_source)
    return _onto_original(cls, getattr(rewritten.module, cls.__name__), r_copy)


def _onto_original(cls: type, copy: type, r_copy: type) -> type:
    """`r_copy` derives from `copy`, the class regenerated from `cls`'s source; a subclass of
    `cls` itself is what users expect (`isinstance(opt, cls)`, type checks in frameworks). It
    is made by moving `r_copy`'s methods onto `cls` when that is exact: every method of `cls` has
    the code of `copy`'s (the file was not edited since `cls` was imported), no moved method
    (nor the original step the R step falls back to) calls super(), and the result passes the
    same certification against `cls`. Otherwise `r_copy`, as emitted."""
    moved = [v for k, v in vars(r_copy).items() if not (k.startswith("__") and k.endswith("__"))]
    if not _same_code(cls, copy) or any(_calls_super(_function(f)) for f in
                                        [*moved, vars(copy).get("step")]):
        return r_copy
    r_cls = inherit_variant(cls, cls, r_copy)
    return r_copy if _certify_cached(cls, cls, r_cls) else r_cls


def _function(f: object) -> object:
    """The plain function behind a method, a static/class method, a torch step hook or a
    `functools.wraps` decorator."""
    f = getattr(unhooked(f), "__func__", unhooked(f))
    return inspect.unwrap(f) if callable(f) else f


#: what every class body gets from Python itself, not from its source
_CLASS_BOOKKEEPING = frozenset({"__module__", "__qualname__", "__doc__", "__dict__", "__weakref__",
                                "__firstlineno__"})


def _same_code(a: type, b: type) -> bool:
    """`a` and `b` define the same attribute names, their functions the same code (file names
    and line numbers aside) and defaults, and their other attributes equal values."""
    va, vb = ({k: v for k, v in vars(c).items() if k not in _CLASS_BOOKKEEPING} for c in (a, b))
    if va.keys() != vb.keys():
        return False
    for k, x in va.items():
        fx, fy = _function(x), _function(vb[k])
        cx, cy = getattr(fx, "__code__", None), getattr(fy, "__code__", None)
        if (cx is None) != (cy is None):
            return False
        if cx is None:  # a class-level constant
            if not _equal(x, vb[k]):
                return False
        elif _bare(cx) != _bare(cy) or not all(
                _equal(getattr(fx, f, None), getattr(fy, f, None))
                for f in ("__defaults__", "__kwdefaults__")):
            return False
    return True


def _equal(x: object, y: object) -> bool:
    """`x == y` as a plain bool; False when they cannot say (tensors, odd objects)."""
    try:
        return bool(type(x) is type(y) and x == y)
    except Exception:
        return False


def _bare(code: Any) -> Any:
    """`code` without its file name and line numbers (nested code objects too)."""
    consts = tuple(_bare(c) if hasattr(c, "co_code") else c for c in code.co_consts)
    return code.replace(co_filename="", co_firstlineno=1, co_linetable=b"", co_consts=consts)


#: instance attribute listing what `install` put on an optimizer (what `uninstall` removes)


def _calls_super(fn: object) -> bool:
    """Whether `fn` (or a function nested in it) names `super`; True when it has no code."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return True
    pending = [code]
    while pending:
        c = pending.pop()
        if "super" in c.co_names or "__class__" in c.co_freevars:
            return True
        pending += [k for k in c.co_consts if hasattr(k, "co_names")]
    return False
