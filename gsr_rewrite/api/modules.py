"""Rewriting a whole module for the Python API: its source found from an imported class, the
emitted module cached on disk (keyed by every input, the tool included) and imported."""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import ModuleType

import torch

from gsr_rewrite.errors import RewriteError
from gsr_rewrite.outcome import ClassOutcome, RewriteResult
from gsr_rewrite.pipeline import compile_source
from gsr_rewrite.version import __version__


def rewrite_text(source: str, filename: str = "<string>",
                 package: str | None = None) -> RewriteResult:
    """Rewrite an optimizer module given as text (`package` makes relative imports absolute).
    Only classes that `validate.certify` accepted are in the emitted code."""
    return compile_source(source, filename, package)


def cache_dir() -> Path:
    root = os.environ.get("GSR_REWRITE_CACHE_DIR") or Path.home() / ".cache" / "gsr-rewrite"
    return Path(root) / "generated"


@functools.lru_cache(maxsize=1)
def tool_fingerprint() -> str:
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
    h = hashlib.sha256(tool_fingerprint().encode() + b"\0" + torch.__version__.encode())
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
    key = _cache_key(str(path), package or "", module_name, source)
    stem = module_name.replace(".", "_")
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    code_path, meta_path = folder / f"{stem}_{key}.py", folder / f"{stem}_{key}.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
    else:
        # certified classes only; by its name, the R module watches the module's globals that
        # the original step reads when it runs (runtime/patches.py)
        result = compile_source(source, str(path), package, module_name)
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
    """Why a rewritten class still allocates: its first temporaries left in place; with none
    listed, code the analysis did not follow (which allocates what it allocates), as the
    escape of the gradient it causes (`self._step_foreach` rebound elsewhere)."""
    kept = [t for t in c.temporaries if not t.placed and not t.strips]
    text = "; ".join(f"`{t.code}` ({t.function}:{t.line}) stays: {_last_word(t.how)}"
                     for t in kept[:2])
    if not kept and c.analysis is not None:
        unfollowed = [(why, where) for b, why, where in c.analysis.escapes
                      if b == "grad" and "can reach every gradient" in why]
        if unfollowed:
            why, where = unfollowed[0]
            return f"code the analysis does not follow: {why} ({where.rpartition('/')[2]})"
    return text + (f"; and {len(kept) - 2} more" if len(kept) > 2 else "")


def _last_word(how: str) -> str:
    """The most specific part of a temporary's reason: why strip-mining, the last resort, was
    refused (the dead-buffer reasons come first and are longer)."""
    mark = "cannot be strip-mined: "
    return how[how.rindex(mark):] if mark in how else how
