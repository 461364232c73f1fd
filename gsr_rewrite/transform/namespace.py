"""Stage 5, assemble: the names code copied from other modules needs in the emitted module.

A method or helper copied into the R-variant module must mean there what it meant in the module
whose source defines it: every global name it reads is imported from that module (the import
statement itself when the module binds the name by one import; else `from <module> import
name`). A name two modules bind to different things, or that the emitted module already binds to
something else, is refused: nothing is renamed on a guess."""

from __future__ import annotations

import builtins
import importlib.util
from dataclasses import dataclass, field

import libcst as cst

from gsr_rewrite.errors import RewriteError
from gsr_rewrite.frontend.scopes import bound_names, loaded_names
from gsr_rewrite.frontend.source import SourceModule

STAR = "*"  # the key under which a module's star imports are noted


@dataclass(frozen=True)
class Import:
    """One name bound by an import: `import {module} as {name}` or `from {module} import
    {attr} as {name}` (attr empty: the first form). `origin` says what it is."""

    name: str
    module: str
    attr: str = ""

    @property
    def origin(self) -> str:
        return f"{self.module}.{self.attr}" if self.attr else self.module

    def statement(self) -> str:
        if not self.attr:
            plain = self.module == self.name or (self.module.split(".")[0] == self.name)
            return f"import {self.module}" if plain else f"import {self.module} as {self.name}"
        alias = "" if self.attr == self.name else f" as {self.name}"
        return f"from {self.module} import {self.attr}{alias}"


def _bindings(src: SourceModule) -> dict[str, list[Import | None]]:
    """Each top-level name of src: the import that binds it, or None for any other binding
    (def, class, assignment, or a binding inside a compound statement)."""
    found: dict[str, list[Import | None]] = {}
    package = src.package
    if package is None and src.name is not None:
        package = src.name if src.filename.endswith("__init__.py") else \
            src.name.rpartition(".")[0]
    for stmt in src.module.body:
        if isinstance(stmt, (cst.FunctionDef, cst.ClassDef)):
            found.setdefault(stmt.name.value, []).append(None)
            continue
        if not isinstance(stmt, cst.SimpleStatementLine):  # `if`/`try`/`with`/loops
            # `import torch.x` binds the package `torch`, run or not, as `import torch` does
            packages = _plain_imports(stmt) - bound_names(stmt, imports=False)
            for n in bound_names(stmt):
                found.setdefault(n, []).append(Import(n, n) if n in packages else None)
            continue
        for small in stmt.body:
            if isinstance(small, cst.ImportFrom) and isinstance(small.names, cst.ImportStar):
                found.setdefault(STAR, []).append(None)
            for name, imp in _imports(small, package):
                found.setdefault(name, []).append(imp)
            if not isinstance(small, (cst.Import, cst.ImportFrom)):  # assignments, walrus, del
                for n in bound_names(small):
                    found.setdefault(n, []).append(None)
    for n in _declared_global(src.module):  # rebound whenever a function declaring it runs
        found.setdefault(n, []).append(None)
    return found


def _plain_imports(stmt: cst.CSTNode) -> set[str]:
    """The packages `import a.b` binds in stmt's scope, where nothing else there binds them
    (`import a.b as c`, `from m import a`)."""
    plain: set[str] = set()
    other: set[str] = set()

    class _Imports(cst.CSTVisitor):
        def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
            return False

        def visit_ClassDef(self, node: cst.ClassDef) -> bool:
            return False

        def visit_Import(self, node: cst.Import) -> None:
            for a in node.names:
                if a.asname is None:
                    plain.add(_dotted(a.name).split(".")[0])
                else:
                    other.add(_dotted(a.asname.name))

        def visit_ImportFrom(self, node: cst.ImportFrom) -> None:
            if not isinstance(node.names, cst.ImportStar):
                other.update(_dotted(a.asname.name if a.asname else a.name) for a in node.names)

    stmt.visit(_Imports())
    return plain - other


def _annotation_names(node: cst.CSTNode) -> set[str]:
    """Names read by the annotations in node (`def f(p: Tensor) -> None`): evaluated when the
    copied function is defined."""
    names: set[str] = set()

    class _Annotations(cst.CSTVisitor):
        def visit_Annotation(self, a: cst.Annotation) -> None:
            names.update(loaded_names(a.annotation))

    node.visit(_Annotations())
    return names


def _declared_global(module: cst.Module) -> set[str]:
    names: set[str] = set()

    class _Globals(cst.CSTVisitor):
        def visit_Global(self, node: cst.Global) -> None:
            names.update(n.name.value for n in node.names)

    module.visit(_Globals())
    return names


def _dotted(e: cst.BaseExpression) -> str:
    if isinstance(e, cst.Attribute):
        return f"{_dotted(e.value)}.{e.attr.value}"
    return e.value if isinstance(e, cst.Name) else ""


def _imports(small: cst.BaseSmallStatement, package: str | None
             ) -> list[tuple[str, Import | None]]:
    """(name, the import binding it) for an import statement; None where a relative import
    cannot be made absolute."""
    out: list[tuple[str, Import | None]] = []
    if isinstance(small, cst.Import):
        for a in small.names:
            full = _dotted(a.name)
            if a.asname is not None:
                out.append((_dotted(a.asname.name), Import(_dotted(a.asname.name), full)))
            else:
                first = full.split(".")[0]
                out.append((first, Import(first, first)))
    elif isinstance(small, cst.ImportFrom) and not isinstance(small.names, cst.ImportStar):
        module = "." * len(small.relative) + (_dotted(small.module) if small.module else "")
        if small.relative:
            try:
                module = importlib.util.resolve_name(module, package) if package else ""
            except (ImportError, ValueError):
                module = ""
        for a in small.names:
            attr = _dotted(a.name)
            local = _dotted(a.asname.name) if a.asname else attr
            out.append((local, Import(local, module, attr) if module else None))
    return out


@dataclass
class Namespace:
    """The names the emitted module binds, and the imports added to it for copied code."""

    here: dict[str, str | None] = field(default_factory=dict)  # name -> origin (None: unknown)
    emitted: set[str] = field(default_factory=set)  # names the emitter defines (helpers, _gsr)
    added: dict[str, Import] = field(default_factory=dict)
    cache: dict[int, dict[str, list[Import | None]]] = field(default_factory=dict)
    #: per tag (a class): module -> the globals of it that code copied for the tag reads
    reads: dict[str, dict[str, set[str]]] = field(default_factory=dict)

    def copy_of(self, src: SourceModule) -> None:
        """The emitted module is a copy of src: it binds what src binds."""
        for name, bs in self._of(src).items():
            self.here[name] = _origin(src, name, bs)

    def _of(self, src: SourceModule) -> dict[str, list[Import | None]]:
        if id(src.module) not in self.cache:
            self.cache[id(src.module)] = _bindings(src)
        return self.cache[id(src.module)]

    def globals_read(self, node: cst.CSTNode, src: SourceModule
                     ) -> list[tuple[str, list[Import | None] | None]]:
        """The globals of src that `node` (code copied from src) reads, with their bindings
        there (None: a builtin of src, or a name it never binds)."""
        bindings = self._of(src)
        local = bound_names(node) if isinstance(node, cst.FunctionDef) else frozenset()
        found: list[tuple[str, list[Import | None] | None]] = []
        for name in sorted((loaded_names(node) | _annotation_names(node)) - local -
                           self.emitted):
            bs = bindings.get(name)
            if not bs and STAR in bindings and not hasattr(builtins, name):
                bs = [None]  # what a star import of src binds: src's attribute
            found.append((name, bs or None))
        return found

    def note(self, node: cst.CSTNode, src: SourceModule, tag: str,
             read: list[tuple[str, list[Import | None] | None]] | None = None) -> None:
        """Note under `tag` the globals of src (by its module name) that `node` reads (`read`:
        `globals_read(node, src)`, when the caller has it)."""
        if src.name is not None:
            self.reads.setdefault(tag, {}).setdefault(src.name, set()).update(
                name for name, bs in (read or self.globals_read(node, src)) if bs is not None)

    def need(self, node: cst.CSTNode, src: SourceModule, what: str, tag: str = "") -> None:
        """`node` (code copied from `src`) reads globals of src: bind each one here (and note
        them under `tag`)."""
        read = self.globals_read(node, src)
        self.note(node, src, tag, read)
        for name, bs in read:
            if bs is None:  # a builtin of src (or a name it never binds)
                if name in self.here or name in self.added:
                    raise RewriteError(what, f"`{name}` is a builtin in {src.filename} but the "
                                       "emitted module binds it; split the module")
                continue
            origin = _origin(src, name, bs)
            if name in self.added or name in self.here:
                current = self.added[name].origin if name in self.added else self.here[name]
                if origin is None or current != origin:
                    raise RewriteError(what, f"`{name}` means one thing in {src.filename} and "
                                       "another in the emitted module; gsr-rewrite does not "
                                       "rename it (split the module)")
                continue
            if STAR in self.here:  # the copied module's star import may bind it too
                raise RewriteError(what, f"`{name}` of {src.filename} would be imported beside "
                                   "a star import that may bind it; split the module")
            only = bs[0] if len(set(bs)) == 1 else None
            self.added[name] = only if only is not None else _import_from(src, name, what)

    def statements(self) -> list[cst.BaseStatement]:
        """The added imports: `import m` ones, then one `from m import ...` per module."""
        plain = sorted({imp.statement() for imp in self.added.values() if not imp.attr})
        by_module: dict[str, set[str]] = {}
        for imp in self.added.values():
            if imp.attr:
                alias = "" if imp.attr == imp.name else f" as {imp.name}"
                by_module.setdefault(imp.module, set()).add(imp.attr + alias)
        lines = [*plain, *(f"from {m} import {', '.join(sorted(names))}" if len(names) < 3 else
                           f"from {m} import (\n" + "".join(f"    {n},\n" for n in sorted(names))
                           + ")" for m, names in sorted(by_module.items()))]
        return [cst.parse_statement(line + "  # added by gsr-rewrite\n") for line in lines]


def _origin(src: SourceModule, name: str, bs: list[Import | None] | None) -> str | None:
    """What `name` is in src: an import's origin, or src's own global (None when src cannot be
    imported by name: then it is known only by being the same copy)."""
    if bs and len(set(bs)) == 1 and bs[0] is not None:  # one import (maybe repeated)
        return bs[0].origin
    return f"{src.name}.{name}" if src.name is not None else None


def _import_from(src: SourceModule, name: str, what: str) -> Import:
    if src.name is None:
        raise RewriteError(what, f"it needs `{name}` of {src.filename}, which cannot be imported "
                           "by name; give gsr-rewrite the dotted module name (or put its "
                           "package on the import path)")
    return Import(name, src.name, name)
