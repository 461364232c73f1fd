"""Python API: rewrite source text, or turn an optimizer class into its R-variant at run time.

    >>> from gsr_rewrite.api import reduce
    >>> AdamWR = reduce(my_optim.AdamW)  # same constructor and state; p.grad is scratch after step

`reduce` reads the source of the module that defines the class, rewrites the whole module (with
relative imports made absolute), writes the emitted module to a private cache, imports it under a
unique name and returns its `<Name>R` class. The module's top level runs once more under that
name. The class returned derives from the very class passed in: the R methods are moved onto a
subclass of it when the class's code equals its file's (not edited since import), no moved method
calls super(), and that subclass passes certification against it (cached); otherwise it derives
from the class regenerated from the file. Only certified classes are emitted
(`validate.certify`, cached with the module).

Cache: ``$GSR_REWRITE_CACHE_DIR/generated/`` (default ``~/.cache/gsr-rewrite/generated/``), one
``<stem>_<hash>.py`` per module plus ``<stem>_<hash>.json`` with the per-class outcome, and
``certified_<Name>_<hash>.json`` with the verdict for a subclass that runs its base's step
(AdamW(Adam)). The hash covers the sources, their file names and package, torch's version, the
tool version and the tool's own code and rules, so a changed optimizer, torch or rewriter never
reuses a stale module or verdict. A cached class comes back in a fresh process in about 0.3 s.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import torch

from gsr_rewrite import __version__
from gsr_rewrite.errors import RewriteError
from gsr_rewrite.pipeline import ClassOutcome, RewriteResult, compile_source
from gsr_rewrite.runtime import unhooked

__all__ = ["EmittedModuleError", "ModuleRewrite", "cache_dir", "defining_module", "install",
           "reduce", "rewrite_module", "rewrite_text", "uninstall"]


def rewrite_text(source: str, filename: str = "<string>",
                 package: str | None = None) -> RewriteResult:
    """Rewrite an optimizer module given as text (`package` makes relative imports absolute).
    Only classes that `validate.certify` accepted are in the emitted code."""
    return compile_source(source, filename, package)


def cache_dir() -> Path:
    root = os.environ.get("GSR_REWRITE_CACHE_DIR") or Path.home() / ".cache" / "gsr-rewrite"
    return Path(root) / "generated"


@functools.lru_cache(maxsize=1)
def _tool_fingerprint() -> str:
    """Hash of the rewriter's own code and rule files: a changed rewriter regenerates."""
    h = hashlib.sha256(__version__.encode())
    package = Path(__file__).resolve().parents[1]
    # the rewriter's code: every module but the shipped optimizers and the benchmarks
    files: list[tuple[str, bytes]] = [
        (str(f.relative_to(package)), f.read_bytes()) for f in sorted(package.rglob("*.py"))
        if f.relative_to(package).parts[0] not in ("optim", "bench")]
    try:
        rules = sorted(resources.files("gsr_rewrite.rules").iterdir(), key=lambda t: t.name)
        files += [(t.name, t.read_bytes()) for t in rules if t.name.endswith((".toml", ".json"))]
    except ModuleNotFoundError:  # a source checkout without the installed rules package
        checkout = sorted((package.parent / "rules").glob("*.toml"))
        files += [(f.name, f.read_bytes()) for f in checkout]
    for name, data in files:
        h.update(name.encode() + b"\0" + data)
    return h.hexdigest()


class EmittedModuleError(RewriteError):
    """The emitted R-variant module was written but raised when imported (a rewriter bug)."""


@dataclass
class ModuleRewrite:
    """One module rewritten: per-class (status, reason), and the imported R-module if any."""

    source_module: str
    filename: str
    outcomes: dict[str, tuple[str, str]]  # class name -> (status, reason)
    module: ModuleType | None  # the imported emitted module; None when nothing was rewritten
    path: Path | None  # the cached emitted file
    meta_path: Path | None = None  # the cached outcome (and check results) beside it
    left: dict[str, str] = field(default_factory=dict)  # class -> temporaries it still allocates


def defining_module(cls: type) -> tuple[str, Path]:
    """Name and file of the module whose source has the `class` statement of `cls`.

    ``cls.__module__`` is not always that module (torch sets ``__module__ = "torch.optim"`` on
    some classes), so the file comes from the code of the class's own functions when it can.
    """
    files: list[str] = []
    for attr in vars(cls).values():
        if isinstance(attr, (classmethod, staticmethod)):
            attr = attr.__func__
        if not callable(attr) or isinstance(attr, type):
            continue
        code = getattr(inspect.unwrap(attr), "__code__", None)
        if code is not None and code.co_filename.endswith(".py"):
            files.append(code.co_filename)
    if not files:
        try:
            files.append(inspect.getsourcefile(cls) or "")
        except TypeError:
            pass
    # a decorator without functools.wraps reports its own file: prefer the file with the class
    files = [f for f in files if f.endswith(".py") and _has_class(f, cls.__name__)]
    if not files:
        raise RewriteError(cls.__qualname__, "its source file cannot be found (defined in an "
                           "interactive session or a compiled module); put it in a .py file")
    path = Path(max(set(files), key=files.count)).resolve()
    own = sys.modules.get(cls.__module__)
    candidates = [(cls.__module__, own)] if own is not None else []
    for name, mod in [*candidates, *list(sys.modules.items())]:
        f = getattr(mod, "__file__", None)
        if f and Path(f).resolve() == path:
            return name, path
    raise RewriteError(str(path), f"{cls.__qualname__}: its module is not imported")


def _has_class(file: str, name: str) -> bool:
    try:
        return f"class {name}" in Path(file).read_text()
    except OSError:
        return False


def _cache_key(*parts: str) -> str:
    """Hash of `parts` (sources, file names, ...), the tool and torch's version: a cached
    rewrite or verdict is reused only when all of them are unchanged."""
    h = hashlib.sha256(_tool_fingerprint().encode() + b"\0" + torch.__version__.encode())
    for part in parts:
        h.update(b"\0" + part.encode())
    return h.hexdigest()[:20]


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(suffix=".tmp", prefix=".gsr_", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _import(path: Path, name: str) -> ModuleType:
    if name in sys.modules:  # same source and tool: the very same module, so classes are stable
        return sys.modules[name]
    from gsr_rewrite.proof.validate import load_module

    try:
        return load_module(path, name)
    except Exception as e:
        sys.modules.pop(name, None)
        raise EmittedModuleError(str(path), f"the emitted module does not import: "
                                 f"{type(e).__name__}: {e}") from e


def rewrite_module(module_name: str, path: Path | None = None) -> ModuleRewrite:
    """Rewrite the module `module_name` (its source file, or `path`), cached; import the result.

    Raises `RewriteError` when the pipeline rejects the module as a whole, and its subclass
    `EmittedModuleError` when the emitted module does not import.
    """
    mod = sys.modules.get(module_name)
    if path is None:
        file = getattr(mod, "__file__", None)
        if not file or not file.endswith(".py"):
            raise RewriteError(module_name, "module has no Python source file")
        path = Path(file)
    package = getattr(mod, "__package__", None) or None
    if package is None and "." in module_name:
        package = module_name.rsplit(".", 1)[0]
    source = path.read_text()
    key = _cache_key(str(path), package or "", source)
    stem = module_name.replace(".", "_")
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    code_path, meta_path = folder / f"{stem}_{key}.py", folder / f"{stem}_{key}.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
    else:
        result = compile_source(source, str(path), package)  # certified classes only
        meta = {"tool": f"gsr-rewrite {__version__}", "source": str(path),
                "classes": {c.name: [c.status, c.reason, _left(c), c.validation]
                            for c in result.classes},
                "code": result.code is not None}
        if result.code is not None:
            _atomic_write(code_path, result.code)
        _atomic_write(meta_path, json.dumps(meta, indent=2))
    outcomes = {k: (v[0], v[1]) for k, v in meta["classes"].items()}
    left = {k: v[2] for k, v in meta["classes"].items() if len(v) > 2 and v[2]}
    if not meta["code"] or not code_path.is_file():
        return ModuleRewrite(module_name, str(path), outcomes, None, None, meta_path, left)
    generated = _import(code_path, f"_gsr_generated_{stem}_{key}")
    return ModuleRewrite(module_name, str(path), outcomes, generated, code_path, meta_path, left)


def _left(c: ClassOutcome) -> str:
    """Why a rewritten class still allocates: its first temporaries left in place."""
    kept = [t for t in c.temporaries if not t.placed and not t.strips]
    text = "; ".join(f"`{t.code}` ({t.function}:{t.line}) stays: {_last_word(t.how)}"
                     for t in kept[:2])
    return text + (f"; and {len(kept) - 2} more" if len(kept) > 2 else "")


def _last_word(how: str) -> str:
    """The most specific part of a temporary's reason: why strip-mining, the last resort, was
    refused (the dead-buffer reasons come first and are longer)."""
    mark = "cannot be strip-mined: "
    return how[how.rindex(mark):] if mark in how else how


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
    return base is not None and _innermost(value) is _innermost(base)


def _innermost(f: object) -> object:
    """What Dynamo's `disable(...)` wrappers (one or more) wrap."""
    while hasattr(f, "_torchdynamo_orig_callable"):
        f = f._torchdynamo_orig_callable
    return f


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
        from gsr_rewrite import reduced

        module = reduced.name_for(cls)
        if module is not None:  # objects pickle by reference to it, in any process
            r_cls.__module__, r_cls.__qualname__ = module, r_cls.__name__
    return r_cls


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
_INSTALLED = "_gsr_installed"


def install(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """Give `optimizer` the R step of its class in place; `type(optimizer)` stays what it was.

    For code that checks `type(opt)` (DeepSpeed ZeRO's list of tested optimizers,
    `DDP._register_fused_optim`): the methods `reduce(type(optimizer))` rewrote (step and the
    helpers it calls) become attributes of this one object, `step` wrapped in torch's step hooks
    as the class's is. Install before creating LR schedulers or wrappers that replace
    `optimizer.step` (a step already replaced on the object is refused). Pickling an installed
    optimizer keeps only its state (torch pickles `defaults`, `state`, `param_groups`): install
    again after loading. `uninstall` undoes it. Returns `optimizer`.
    """
    cls = type(optimizer)
    if _INSTALLED in vars(optimizer):
        return optimizer
    if "step" in vars(optimizer):
        raise RewriteError(f"{cls.__qualname__}.step", "this optimizer's step was already "
                           "replaced on the object (an LR scheduler or a wrapper); install the "
                           "R step before creating them")
    r_cls = reduce(cls)
    methods = {name: fn for name, fn in vars(r_cls).items() if callable(fn)
               and not (name.startswith("__") and name.endswith("__"))}
    if not issubclass(r_cls, cls):  # the methods were made for a regenerated copy of `cls`:
        for name, fn in methods.items():  # they run on `cls` objects unless they call super()
            if _calls_super(_function(fn)):
                raise RewriteError(f"{r_cls.__qualname__}.{name}", "calls super(): it cannot "
                                   f"run on a {cls.__qualname__} object; use the class "
                                   f"{r_cls.__name__} instead")
    for name, fn in methods.items():
        if name == "step":  # torch's step hooks, once (an R object's class step has them)
            fn = torch.optim.Optimizer.profile_hook_step(cast(Callable[..., Any], unhooked(fn)))
        setattr(optimizer, name, fn.__get__(optimizer, cls))
    setattr(optimizer, _INSTALLED, tuple(methods))
    return optimizer


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


def uninstall(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """Undo `install`: the object runs its class's methods again. Returns `optimizer`."""
    for name in vars(optimizer).pop(_INSTALLED, ()):
        vars(optimizer).pop(name, None)
    return optimizer
