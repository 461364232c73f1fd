"""Kernels specialized on first use: a param group's configuration traced, emitted, cached on disk.

A generated Triton class holds one :class:`KernelCache` for the optimizer class it traces.  The
first time ``fused_step`` meets a param group that no known specialization covers,
:meth:`KernelCache.specialize` looks the group's configuration up on disk, else traces it
(:func:`~gsr_rewrite.triton_backend.trace.trace_program`), emits its kernel module
(:func:`trace_entry`), writes it and imports it: Triton's JIT needs the source in a real file, and
caches the compiled binary itself.  A configuration the tracer refuses is remembered the same way
(a ``.refused`` entry holding the reason); its groups run the eager R step.

* **Configuration**: the group's values of the class's constructor arguments.  Its key keeps what
  the tracer treats as structure (bools, ints, strings, None, zeros) and only the kind of a nonzero
  float: those are host scalars the kernel reads at run time, so a schedule never traces again
  (``KernelSpec.fixed`` and its guard still decide whether a specialization applies).
* **Disk**: ``cache_dir()/triton/<class>-<key>/<configuration key>.py``; the folder's key hashes
  the source file of the traced class's module, the tool's own code and rules
  (`api.modules.tool_fingerprint`) and the torch and Triton versions, so an edited class or tool
  never reuses a stale kernel.  Entries are written to a temporary
  file and moved into place (``os.replace``): processes writing the same entry at once never leave
  a partial one.  In a process, one trace runs at a time (the tracer patches ``math``).

Why one kernel module per configuration rather than one kernel with ``tl.constexpr`` flags: the
tracer runs ``step()``'s Python control flow on concrete option values, so it sees one
straight-line program per configuration, never the branches themselves.  Joining them under
constexpr flags would need every configuration ahead of time (what this replaces) or a module
rewritten whenever a new one appears (new source for every kernel: Triton recompiles them all).
Triton compiles one binary per kernel and constexpr values either way.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import os
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, NamedTuple

from gsr_rewrite.runtime import triton_launch
from gsr_rewrite.runtime.triton_launch import KernelSpec

_LOCK = threading.RLock()  # one trace at a time: the tracer patches `math`, keeps module state

ENTRY_HEADER = '''"""Triton kernel of {origin} for one configuration, made on first use.

A disk cache entry of gsr_rewrite.triton_backend.specialize (gsr-rewrite --backend triton);
never edit."""
# configuration: {config}

import math  # host scalar functions

import triton
import triton.language as tl

from gsr_rewrite.runtime import triton_launch as _gsr_triton
from gsr_rewrite.runtime.triton_lib import host_sign as _sign
from gsr_rewrite.runtime.triton_lib import sign, store_cast
'''


class Entry(NamedTuple):
    """The module text of one configuration's cache entry."""

    text: str
    kernels: str  # the kernel sources alone: equal for configurations sharing a kernel


def trace_entry(cls: type, config: dict[str, Any]) -> Entry:
    """Trace ``cls(params, **config).step()`` and emit its cache entry: the kernels (one per
    pass), the host functions (slots, guard, scalar updates) and ``SPEC``, the
    :class:`KernelSpec` that drives them.  Raises ``KernelTraceError`` with the reason."""
    from gsr_rewrite.triton_backend.emit import (
        driver_text,
        guard_text,
        host_function,
        kernel_text,
        updates_text,
    )
    from gsr_rewrite.triton_backend.trace import KernelTraceError, trace_program

    program = trace_program(cls, config)
    if not all(_literal(v) for v in program.fixed.values()):
        raise KernelTraceError("a fixed group value has no literal")
    k = kernel_text(program, "_math")
    names = tuple("_kernel" + (f"_{j}" if len(k.passes) > 1 else "")
                  for j in range(len(k.passes)))
    kernels: list[str] = []
    for name, p in zip(names, k.passes, strict=True):
        kernels += ["", "", "@triton.jit", p.math, driver_text(name, p, k)]
    fixed = {key: (v,) for key, v in program.fixed.items()}
    lines = [ENTRY_HEADER.format(origin=f"{cls.__module__}.{cls.__qualname__}", config=config),
             *kernels, "", host_function("_slots", k.slots_fn),
             host_function("_guard", guard_text(program)),
             host_function("_updates", updates_text(program)),
             "SPEC = _gsr_triton.KernelSpec(",
             f"    kernels={_tuple(names)},",
             f"    reductions={len(program.reductions)},",
             f"    roles={k.roles!r},",
             f"    fixed={fixed!r},",
             f"    scalars={program.scalars!r},",
             "    guard=_guard,",
             "    slots=_slots,",
             "    updates=_updates,",
             f"    state_keys=frozenset({sorted(program.state_keys)!r}),",
             ")", ""]
    return Entry("\n".join(lines), "\n".join(kernels))


def _tuple(names: tuple[str, ...]) -> str:
    return "(" + ", ".join(names) + ("," if len(names) == 1 else "") + ")"


def _literal(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


# -- configurations and their keys --------------------------------------------------------------


def _structure(v: Any) -> Any:
    """``v`` as the tracer sees it: structure kept, a nonzero float only as its kind."""
    if isinstance(v, (tuple, list)):
        return (type(v).__name__, *map(_structure, v))
    if isinstance(v, float) and v != 0:
        return "<float>"
    return v


def config_key(config: dict[str, Any]) -> str:
    """The key of ``config``'s specialization (see module docstring)."""
    text = repr(sorted((k, _structure(v)) for k, v in config.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _is_literal_value(v: Any) -> bool:
    if isinstance(v, (tuple, list)):
        return all(map(_is_literal_value, v))
    return _literal(v)


def class_folder(cls: type) -> Path | None:
    """The cache folder of ``cls``'s entries; None when its module has no source file."""
    try:
        source = Path(inspect.getfile(cls)).read_bytes()
    except (OSError, TypeError):
        return None
    import torch
    import triton

    from gsr_rewrite.api.modules import cache_dir, tool_fingerprint

    h = hashlib.sha256()
    for part in (cls.__module__, cls.__qualname__, tool_fingerprint(), torch.__version__,
                 triton.__version__):
        h.update(part.encode() + b"\0")
    h.update(source)
    return cache_dir() / "triton" / f"{cls.__qualname__}-{h.hexdigest()[:20]}"


def write_atomic(path: Path, text: str) -> None:
    """Write ``path`` so that a reader sees the whole old or the whole new text, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load_spec(path: Path) -> KernelSpec | None:
    """``SPEC`` of the entry at ``path``, or None when it cannot be imported."""
    name = "gsr_triton_entry_" + hashlib.sha256(str(path).encode()).hexdigest()[:16]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # Triton resolves a kernel's globals through its module
    try:
        spec.loader.exec_module(module)
    except Exception:  # noqa: BLE001 - a damaged entry is traced again and rewritten
        sys.modules.pop(name, None)
        return None
    found = getattr(module, "SPEC", None)
    return found if isinstance(found, KernelSpec) else None


# -- the cache -----------------------------------------------------------------------------------


class KernelCache:
    """The specializations of one optimizer class, each made the first time it is needed.

    ``cls`` is the class whose ``step`` is traced (the original, not the R-variant: registers
    need no reformulation); ``label`` names the Triton class in messages."""

    def __init__(self, cls: type, label: str) -> None:
        self.cls, self.label = cls, label
        self._specs: list[KernelSpec] = []
        self._met: dict[str, KernelSpec | str] = {}  # config key -> its spec, or the refusal
        self._folder: Path | None = None
        self._private: Path | None = None  # entries of a class without a source file
        init = inspect.signature(cls.__init__).parameters  # type: ignore[misc]
        self._args = [n for n, p in init.items() if n not in ("self", "params")
                      and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]

    @property
    def specs(self) -> list[KernelSpec]:
        """Every specialization made or loaded so far, in that order."""
        return self._specs

    @property
    def refused(self) -> dict[str, str]:
        """Configuration key -> why the tracer refused it."""
        return {k: v for k, v in self._met.items() if isinstance(v, str)}

    def config_of(self, group: dict[str, Any]) -> dict[str, Any] | None:
        """``group``'s constructor arguments; None when one is not a literal (a tensor ``lr``)."""
        config = {n: group[n] for n in self._args if n in group}
        return config if all(map(_is_literal_value, config.values())) else None

    def specialize(self, group: dict[str, Any]) -> list[KernelSpec]:
        """The specialization of ``group``'s configuration when it is met for the first time
        (loaded from disk or traced now); [] when met before or refused."""
        config = self.config_of(group)
        if config is None:
            return []
        with _LOCK:
            if config_key(config) in self._met:
                return []
            found = self._get(config)
        return [found] if isinstance(found, KernelSpec) else []

    def spec_for(self, config: dict[str, Any]) -> KernelSpec:
        """The specialization of ``config`` (from memory, from disk or traced now); raises
        ``KernelTraceError`` with the reason when the tracer refuses it."""
        with _LOCK:
            found = self._get(config)
        if isinstance(found, str):
            from gsr_rewrite.triton_backend.trace import KernelTraceError

            raise KernelTraceError(found)
        return found

    def _get(self, config: dict[str, Any]) -> KernelSpec | str:
        key = config_key(config)
        found = self._met.get(key)
        if found is None:
            found = self._met[key] = self._load_or_trace(config, key)
            if isinstance(found, KernelSpec):
                self._specs.append(found)
        return found

    def _entry(self, key: str) -> Path:
        if self._folder is None:
            folder = class_folder(self.cls)
            if folder is None:
                self._private = self._private or Path(tempfile.mkdtemp(prefix="gsr-triton-"))
                folder = self._private
            self._folder = folder
        return self._folder / key

    def _load_or_trace(self, config: dict[str, Any], key: str) -> KernelSpec | str:
        from gsr_rewrite.triton_backend.trace import KernelTraceError

        entry = self._entry(key)
        refusal, source = entry.with_suffix(".refused"), entry.with_suffix(".py")
        if refusal.exists():
            return refusal.read_text()
        if source.exists() and (spec := _load_spec(source)) is not None:
            return spec
        triton_launch.COUNTS["traces"] += 1
        try:
            text = trace_entry(self.cls, config).text
        except Exception as e:  # inside the user's step(): a tracer crash only costs the kernel
            why = str(e) if isinstance(e, KernelTraceError) else \
                f"the tracer raised {type(e).__name__}: {e}"
            reason = f"{config} -> {why}"
            write_atomic(refusal, reason)
            return reason
        write_atomic(source, text)
        spec = _load_spec(source)  # None: a bug of the emitter; the group stays on the eager path
        return spec or f"{config} -> the emitted kernel module {source} does not import"
