"""What an R step's copied code took from other modules and from its class when the R module was
imported, checked before every R step (`r_step(..., watch=...)`).

An R module is code copied from the original modules: a global the copy reads was bound when the
R module was imported, while the original step reads it when it runs; a helper the R step calls
rewritten (`f_gsr`, `self.m_gsr`) stands for the original `f` or `m`. Patching any of those
after the import (`mock.patch("torch.optim.adam._single_tensor_adam", ...)`, instrumentation,
a subclass overriding `m`) would change the original step and not the R step. So each step checks
that they are still the objects seen at import (module globals: one dict lookup each; methods:
`inspect.getattr_static` on the optimizer's type; Dynamo's `disable` wrappers are looked
through), and a followed function must still be the `def` the rewrite analysed (its code
object's name, unwrapped), else the original step runs."""

from __future__ import annotations

import hashlib
import importlib
import importlib.abc
import importlib.util
import inspect
import types
from dataclasses import dataclass
from typing import Any

_MISSING = object()


@dataclass(frozen=True)
class Watched:
    #: (module __dict__, name, the object seen, what it wraps): still that object (one dict
    #: lookup, ~0.1 us), or a Dynamo wrapper of what it wrapped
    values: tuple[tuple[dict[str, Any], str, Any, Any], ...]
    methods: tuple[tuple[str, Any], ...]  # (attribute of the optimizer's class, what it wraps)
    stale: bool  # a followed function was not the analysed def when the module was imported

    def holds(self, cls: type) -> bool:
        return not self.stale and \
            all(_same(d.get(name, _MISSING), seen, inner) for d, name, seen, inner in self.values) \
            and all(innermost(_static(cls, name)) is inner for name, inner in self.methods)

    def on(self, cls: type) -> Watched:
        """The same watch for the R step moved onto `cls` (api/classes.py: a class with the
        same methods as the one it was generated for): its methods are `cls`'s now."""
        return Watched(self.values, tuple((m, innermost(_static(cls, m)))
                                          for m, _ in self.methods), self.stale)


def _same(now: Any, seen: Any, inner: Any) -> bool:
    return now is seen or innermost(now) is inner


def watch(modules: dict[str, dict[str, str]], cls: type | None = None,
          methods: tuple[str, ...] = ()) -> Watched:
    """modules: {module: {global: the name of the `def` the rewrite followed for it, or ""}};
    methods: attributes of `cls` (the original class) the R class holds rewritten copies of."""
    values: list[tuple[dict[str, Any], str, Any, Any]] = []
    stale = False
    for module, names in modules.items():
        try:
            space = vars(importlib.import_module(module))
        except ImportError:  # a copy of a module that cannot be imported: no other original
            continue
        for name, def_name in names.items():
            seen = space.get(name, _MISSING)
            values.append((space, name, seen, innermost(seen)))
            stale |= bool(def_name) and _def_name(seen) != def_name
    found = tuple((m, innermost(_static(cls, m))) for m in methods) if cls is not None else ()
    return Watched(tuple(values), found, stale)


def innermost(f: Any) -> Any:
    """What Dynamo's `disable(...)` wrappers (one or more) wrap: they change only how the
    function is compiled (torch._dynamo's TorchPatcher wraps optimizer helpers so, at
    `torch.compile`'s first use), never what it computes."""
    for _ in range(16):  # (an attribute stored on the wrapper: a mock's are not followed)
        inner = inspect.getattr_static(f, "_torchdynamo_orig_callable", _MISSING)
        if inner is _MISSING:
            break
        f = inner
    return f


def _static(cls: type, name: str) -> Any:
    try:
        return inspect.getattr_static(cls, name)
    except AttributeError:
        return _MISSING


def _def_name(obj: Any) -> str:
    """The name of the code `obj` runs, through `functools.wraps` wrappers; "" when it has
    none (a mock, a builtin, a loop of wrappers)."""
    try:
        fn = inspect.unwrap(obj)
    except ValueError:
        return ""
    return fn.__code__.co_name if isinstance(fn, types.FunctionType) else ""


def source_digest(name: str) -> str | None:
    """SHA-256 of module `name`'s source as its loader gives it (importing its parents only);
    None when it has none to give."""
    try:
        spec = importlib.util.find_spec(name)
        text = spec.loader.get_source(name) if spec is not None and \
            isinstance(spec.loader, importlib.abc.InspectLoader) else None
    except (ImportError, OSError, ValueError):
        return None
    return hashlib.sha256(text.encode()).hexdigest() if text is not None else None


def same_sources(digests: dict[str, str]) -> None:
    """Raise ImportError unless each module's source still has the SHA-256 the R module was
    generated from (`{module: digest}`): the R module copies and stands for their code."""
    for name, digest in digests.items():
        now = source_digest(name) or "unreadable"
        if now != digest:
            raise ImportError(f"gsr-rewrite: {name} changed since this R module was generated "
                              f"from it (source {digest[:12]}, now {now[:12]}); run gsr-rewrite "
                              "on it again")
