"""Stage 1, locate: which classes are optimizers, decided by what they are, not by their bases'
names. A class's bases are resolved through its module's bindings (its `class` statements and its
imports, absolute and relative) to `class` statements in source files that can be read,
recursively, with Python's `ast` (fast; nothing is imported or run). A class is an optimizer when
torch's `Optimizer` (the class of torch/optim/optimizer.py) is in its method resolution order.

Default-deny: a name bound more than once at module level, or inside an `if`/`try`, or that a
star import may bind, a base that is not a name, a metaclass other than `abc.ABCMeta`: each is
`Unresolved`, with the base's name and why; nothing is guessed.
"""

from __future__ import annotations

import ast
import builtins
import importlib.machinery
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path

_DEPTH = 40  # imports followed through re-exports before giving up (an import cycle)


@dataclass(frozen=True)
class Binding:
    """How a module binds a name at its top level."""

    kind: str  # "class" | "function" (a top-level `def`) | "module" (`import a.b as x`) |
    #            "from" (`from m import n`) | "other"
    node: ast.ClassDef | None = None
    module: str = ""  # "module": the absolute name; "from": the module as written
    name: str = ""  # "from": the name imported
    level: int = 0  # "from": how many leading dots


@dataclass(eq=False)
class ModuleFile:
    """A module's source found on disk (or given as text): its top-level bindings."""

    path: Path | None  # None: source given as text, not a file
    name: str | None  # the dotted module name, when known
    package: str | None  # the package relative imports are resolved in, when known
    is_package: bool
    bindings: dict[str, list[Binding]]
    star: bool  # a star import may bind any name


@dataclass(eq=False)
class ClassRef:
    """A `class` statement at the top level of a module."""

    module: ModuleFile
    name: str
    node: ast.ClassDef


@dataclass(eq=False)
class FunctionRef:
    """A plain `def` statement at the top level of a module (bound by nothing else there)."""

    module: ModuleFile
    name: str


@dataclass(frozen=True)
class Terminal:
    """A class whose source is not read: torch's Optimizer, `object`, other builtins."""

    name: str


OPTIMIZER = Terminal("torch.optim.Optimizer")
OBJECT = Terminal("object")
ABC = Terminal("abc.ABC")


@dataclass(frozen=True)
class Unresolved:
    base: str  # the base as written (or the name that could not be followed)
    why: str


Ref = ClassRef | FunctionRef | Terminal | Unresolved | ModuleFile


@dataclass
class Lineage:
    """What the resolver found of one class."""

    mro: list[ClassRef | Terminal] | None  # None when some base is unresolved
    unresolved: Unresolved | None = None
    optimizer: bool = False  # torch's Optimizer is an ancestor (through a resolved base)


#: the top-level bindings of each file read, by (file, mtime, size)
_BINDINGS: dict[tuple[Path, int, int], tuple[dict[str, list[Binding]], bool]] = {}


def bindings_of(tree: ast.Module) -> tuple[dict[str, list[Binding]], bool]:
    """Every name the module binds outside functions and classes, and how; and whether a star
    import may bind others. Only plain top-level `class`/`def`/`import` statements are precise: a
    name bound inside `if`/`try`/`with`/loops, by an assignment or by `global`, is "other"."""
    found: dict[str, list[Binding]] = {}
    star = False
    other = Binding("other")

    def add(name: str, b: Binding) -> None:
        found.setdefault(name, []).append(b)

    def nested(node: ast.AST) -> None:
        nonlocal star
        # `import torch.backends.x` inside `try`: binds `torch` to the package `torch` whether it
        # runs or not, as a top-level `import torch` does (timm's kron.py)
        packages = {id(a) for n in ast.walk(node) if isinstance(n, ast.Import)
                    for a in n.names if a.asname is None}
        for n in ast.walk(node):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                add(n.name, other)
            elif isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)):
                add(n.id, other)
            elif isinstance(n, ast.alias) and id(n) in packages:
                first = n.name.split(".")[0]
                add(first, Binding("module", module=first))
            elif isinstance(n, ast.alias):
                star |= n.name == "*"
                add(n.asname or n.name.split(".")[0], other)

    for s in tree.body:
        if isinstance(s, ast.ClassDef):
            add(s.name, Binding("class", s))
            for e in [*s.bases, *(k.value for k in s.keywords), *s.decorator_list]:
                nested(e)
        elif isinstance(s, ast.FunctionDef):
            add(s.name, Binding("function", name=s.name))
            for d in [*s.decorator_list, *s.args.defaults, *s.args.kw_defaults]:
                if d is not None:
                    nested(d)
        elif isinstance(s, ast.AsyncFunctionDef):
            add(s.name, other)
        elif isinstance(s, ast.Import):
            for a in s.names:
                if a.asname:
                    add(a.asname, Binding("module", module=a.name))
                else:
                    first = a.name.split(".")[0]
                    add(first, Binding("module", module=first))
        elif isinstance(s, ast.ImportFrom):
            for a in s.names:
                if a.name == "*":
                    star = True
                else:
                    add(a.asname or a.name, Binding("from", module=s.module or "", name=a.name,
                                                    level=s.level))
        else:
            nested(s)
    for n in ast.walk(tree):  # `global f` in a function: f may be rebound whenever it runs
        if isinstance(n, ast.Global):
            for g in n.names:
                add(g, other)
    return found, star


def module_path(name: str) -> tuple[Path, bool] | None:
    """The source file of the module `name` and whether it is a package, found without importing
    anything (an imported module's own `__file__` first); None when there is no .py file."""
    mod = sys.modules.get(name)
    file = getattr(mod, "__file__", None)
    if isinstance(file, str) and file.endswith(".py"):
        return Path(file).resolve(), hasattr(mod, "__path__")
    parts = name.split(".")
    search: list[str] | None = None
    spec = None
    for i in range(len(parts)):
        sub = ".".join(parts[: i + 1])
        loaded = sys.modules.get(sub)
        if loaded is not None and i < len(parts) - 1 and hasattr(loaded, "__path__"):
            search = list(loaded.__path__)
            continue
        try:
            spec = importlib.machinery.PathFinder.find_spec(sub, search)
        except (ImportError, ValueError):
            return None
        if spec is None:
            return None
        locations = spec.submodule_search_locations
        search = list(locations) if locations is not None else None
        if search is None and i < len(parts) - 1:
            return None
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin).resolve(), spec.submodule_search_locations is not None


@dataclass
class Resolver:
    """Resolves names to classes across modules; each file is read and parsed once."""

    files: dict[Path, ModuleFile] = field(default_factory=dict)
    classes: dict[tuple[int, str], ClassRef] = field(default_factory=dict)
    lineages: dict[int, Lineage] = field(default_factory=dict)
    _torch_optimizer: Path | None = None

    def add(self, tree: ast.Module, path: Path | None, name: str | None,
            package: str | None) -> ModuleFile:
        """Register a module given as text (the one being rewritten)."""
        bindings, star = bindings_of(tree)
        is_package = path is not None and path.name == "__init__.py"
        if package is None and name is not None:
            package = name if is_package else name.rpartition(".")[0] or None
        mf = ModuleFile(path, name, package, is_package, bindings, star)
        if path is not None:
            self.files[path] = mf
        return mf

    def load(self, path: Path, name: str | None, is_package: bool) -> ModuleFile | Unresolved:
        path = path.resolve()
        if path in self.files:
            mf = self.files[path]
            if mf.name is None and name is not None:
                mf.name = name
                mf.package = name if is_package else name.rpartition(".")[0] or None
            return mf
        try:
            stat = path.stat()
            key = (path, stat.st_mtime_ns, stat.st_size)
            if key not in _BINDINGS:
                _BINDINGS[key] = bindings_of(ast.parse(path.read_bytes(), str(path)))
        except (OSError, SyntaxError, ValueError) as e:
            return Unresolved(str(path), f"cannot be read or parsed ({type(e).__name__})")
        package = None if name is None else (name if is_package else
                                              name.rpartition(".")[0] or None)
        bindings, star = _BINDINGS[key]
        mf = ModuleFile(path, name, package, is_package, bindings, star)
        self.files[path] = mf
        return mf

    def module(self, name: str) -> ModuleFile | Unresolved:
        found = module_path(name)
        if found is None:
            return Unresolved(name, f"module `{name}` has no Python source that can be found")
        return self.load(found[0], name, found[1])

    def relative(self, mf: ModuleFile, module: str, level: int) -> ModuleFile | Unresolved:
        """`from .module import ...` in mf: by the package's name when known, else by
        directory (the source file's own folder is level 1)."""
        written = "." * level + module
        if mf.package is not None:
            try:
                absolute = importlib.util.resolve_name(written, mf.package)
            except (ImportError, ValueError):
                return Unresolved(written, "relative import beyond the top-level package")
            return self.module(absolute)
        if mf.path is None:
            return Unresolved(written, "relative import in a source given as text, with no "
                              "file or package to resolve it in")
        folder = mf.path.parent
        for _ in range(level - 1):
            folder = folder.parent
        target = folder.joinpath(*module.split(".")) if module else folder
        if (target / "__init__.py").is_file():
            return self.load(target / "__init__.py", None, True)
        if module and target.with_suffix(".py").is_file():
            return self.load(target.with_suffix(".py"), None, False)
        return Unresolved(written, f"no module file for it next to {mf.path}")

    def torch_optimizer(self) -> Path | None:
        if self._torch_optimizer is None:
            found = module_path("torch.optim.optimizer")
            self._torch_optimizer = found[0] if found else None
        return self._torch_optimizer

    def attribute(self, mf: ModuleFile, name: str, depth: int = 0) -> Ref:
        """What `name` is in module mf (a class, a module or a terminal), following imports."""
        where = mf.path.name if mf.path is not None else "the source"
        if depth > _DEPTH:
            return Unresolved(name, "imports followed too deep (an import cycle?)")
        bound = mf.bindings.get(name, [])
        if len(set(bound)) == 1 and bound[0].kind in ("module", "from"):
            bound = bound[:1]  # the same import twice (`import torch` and `import torch.nn`)
        if not bound:
            if mf.star:
                return Unresolved(name, f"may come from a star import in {where}")
            sub = self._submodule(mf, name) if mf.is_package else None
            if sub is not None:
                return sub
            if hasattr(builtins, name) and isinstance(getattr(builtins, name), type):
                return OBJECT if name == "object" else Terminal(name)
            return Unresolved(name, f"not bound in {where}")
        if len(bound) > 1 or bound[0].kind == "other":
            how = "more than once" if len(bound) > 1 else "by something other than a `class`, " \
                "`def` or `import` statement at the top level"
            return Unresolved(name, f"bound {how} in {where}")
        b = bound[0]
        if b.kind == "function":
            return FunctionRef(mf, name)
        if b.kind == "class":
            assert b.node is not None
            if mf.path is not None and mf.path == self.torch_optimizer() and name == "Optimizer":
                return OPTIMIZER
            if mf.name == "abc" and name == "ABC":  # no methods; its metaclass ABCMeta finds
                return ABC  # an instance's methods as `type` does
            key = (id(mf), name)
            if key not in self.classes:
                self.classes[key] = ClassRef(mf, name, b.node)
            return self.classes[key]
        if b.kind == "module":
            return self.module(b.module)
        source = self.relative(mf, b.module, b.level) if b.level else self.module(b.module)
        if not isinstance(source, ModuleFile):
            return source
        if source is mf and mf.is_package:  # `from torch import optim` in torch/__init__.py
            return self._submodule(mf, b.name) or Unresolved(name, f"no submodule of {where}")
        got = self.attribute(source, b.name, depth + 1)
        if isinstance(got, Unresolved) and got.base == b.name:
            return Unresolved(name, f"imported from {b.module or '.'}: {got.why}")
        return got

    def _submodule(self, mf: ModuleFile, name: str) -> ModuleFile | None:
        sub = self.module(f"{mf.name}.{name}") if mf.name is not None else \
            self.relative(mf, name, 1)
        return sub if isinstance(sub, ModuleFile) else None

    def expression(self, mf: ModuleFile, e: ast.expr) -> Ref:
        if isinstance(e, ast.Name):
            return self.attribute(mf, e.id)
        if isinstance(e, ast.Attribute):
            owner = self.expression(mf, e.value)
            if isinstance(owner, ModuleFile):
                got = self.attribute(owner, e.attr)
                if isinstance(got, Unresolved) and got.base == e.attr:
                    return Unresolved(ast.unparse(e), got.why)
                return got
            if isinstance(owner, Unresolved):
                return Unresolved(ast.unparse(e), f"`{owner.base}`: {owner.why}")
            return Unresolved(ast.unparse(e), "an attribute of a class, not a module")
        return Unresolved(ast.unparse(e), "not a name the resolver can follow")

    def lineage(self, c: ClassRef | Terminal, depth: int = 0) -> Lineage:
        """The method resolution order of `c` (C3, as Python computes it), or the first base
        that could not be resolved; and whether torch's Optimizer is an ancestor."""
        if isinstance(c, Terminal):
            chain: list[ClassRef | Terminal] = [c] if c == OBJECT else [c, OBJECT]
            return Lineage(chain, optimizer=c == OPTIMIZER)
        if id(c) in self.lineages:
            return self.lineages[id(c)]
        if depth > _DEPTH:
            return Lineage(None, Unresolved(c.name, "inherits from itself"))
        self.lineages[id(c)] = Lineage(None, Unresolved(c.name, "inherits from itself"))
        bases: list[ClassRef | Terminal] = []
        first: Unresolved | None = None
        optimizer = False
        for e in c.node.bases:
            got = self.expression(c.module, e)
            if isinstance(got, (ModuleFile, FunctionRef)):
                what = "a module" if isinstance(got, ModuleFile) else "a function"
                got = Unresolved(ast.unparse(e), f"{what}, not a class")
            if isinstance(got, Unresolved):
                first = first or (got if got.base == ast.unparse(e)
                                  else Unresolved(ast.unparse(e), f"`{got.base}`: {got.why}"))
                continue
            sub = self.lineage(got, depth + 1)
            optimizer |= sub.optimizer
            if sub.mro is None:
                first = first or sub.unresolved
            bases.append(got)
        for d in c.node.decorator_list:
            first = first or Unresolved(f"@{ast.unparse(d)}", "a class decorator may replace "
                                        "the class or its methods")
        for k in c.node.keywords:
            if k.arg != "metaclass" or not _is_abcmeta(c.module, k.value):
                first = first or Unresolved(f"{k.arg}={ast.unparse(k.value)}", "a class keyword "
                                            "(a metaclass may change how methods are found)")
        found = Lineage(None, first, optimizer)
        if first is None:
            heads: list[list[ClassRef | Terminal]] = [[c]]
            merged = _c3(heads + [self.lineage(b).mro or [] for b in bases or [OBJECT]] +
                         [bases or [OBJECT]])
            if merged is None:
                found.unresolved = Unresolved(c.name, "its bases have no consistent method "
                                              "resolution order")
            else:
                found.mro = merged
        self.lineages[id(c)] = found
        return found


def _c3(seqs: list[list[ClassRef | Terminal]]) -> list[ClassRef | Terminal] | None:
    """C3 linearization; None where Python would raise TypeError."""
    seqs = [list(s) for s in seqs if s]
    out: list[ClassRef | Terminal] = []
    while seqs:
        head = next((s[0] for s in seqs if not any(s[0] in t[1:] for t in seqs)), None)
        if head is None:
            return None
        out.append(head)
        seqs = [s[1:] if s[0] == head else s for s in seqs]
        seqs = [s for s in seqs if s]
    return out


def _is_abcmeta(mf: ModuleFile, e: ast.expr) -> bool:
    """`ABCMeta` imported from abc, or `abc.ABCMeta` (it finds methods as `type` does)."""
    if isinstance(e, ast.Name):
        bound = mf.bindings.get(e.id, [])
        return len(bound) == 1 and bound[0].kind == "from" and bound[0].module == "abc" and \
            bound[0].name == "ABCMeta" and not bound[0].level
    if isinstance(e, ast.Attribute) and isinstance(e.value, ast.Name) and e.attr == "ABCMeta":
        bound = mf.bindings.get(e.value.id, [])
        return len(bound) == 1 and bound[0].kind == "module" and bound[0].module == "abc"
    return False
