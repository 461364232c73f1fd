"""Stage 1, locate: a parsed module (`SourceModule`) and its optimizer classes (`OptimizerClass`);
`locate.parse` is the whole stage (bases.py finds the classes)."""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass, field

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

from gsr_rewrite.errors import RewriteError


@dataclass
class OptimizerClass:
    name: str
    node: cst.ClassDef
    methods: dict[str, cst.FunctionDef]  # along the method resolution order, bases included
    bases: list[str] = field(default_factory=list)
    #: the module whose source defines each method (this module, or a base's module)
    origin: dict[str, SourceModule] = field(default_factory=dict)
    defined_by: dict[str, str] = field(default_factory=dict)  # method -> class defining it
    unresolved: str = ""  # why its bases (and so its methods) are not all known
    #: methods of bases that a method of the same name overrides (reached only by `super()`)
    overridden: list[cst.FunctionDef] = field(default_factory=list)


@dataclass
class SourceModule:
    filename: str
    source: str
    module: cst.Module
    positions: dict[cst.CSTNode, tuple[int, int]]
    functions: dict[str, cst.FunctionDef]
    classes: list[OptimizerClass]
    imports: dict[str, str] = field(default_factory=dict)  # local name -> where it comes from
    name: str | None = None  # the dotted module name, when it is importable
    package: str | None = None  # where its relative imports are resolved, when known
    #: modules whose methods the class analysed here inherits (their nodes have their positions)
    others: list[SourceModule] = field(default_factory=list)
    #: functions imported from other modules that the analysis follows (frontend/imported.py):
    #: local name -> (the function, the module defining it; it is also among `others`)
    imported: dict[str, tuple[cst.FunctionDef, SourceModule]] = field(default_factory=dict)
    #: classes that may be optimizers but whose bases could not be resolved: (class, base, why)
    unresolved: list[tuple[str, str, str]] = field(default_factory=list)

    def owner(self, node: cst.CSTNode) -> SourceModule:
        """The module whose source holds `node`."""
        if node not in self.positions:
            for m in self.others:
                if node in m.positions:
                    return m
        return self

    def position(self, node: cst.CSTNode) -> tuple[int, int]:
        return self.owner(node).positions.get(node, (0, 0))

    def where(self, node: cst.CSTNode) -> str:
        owner = self.owner(node)
        line, col = owner.positions.get(node, (0, 0))
        return f"{owner.filename}:{line}:{col + 1}"

    def line_of(self, node: cst.CSTNode) -> int:
        return self.position(node)[0]


def _dotted(node: cst.BaseExpression) -> str:
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        return f"{_dotted(node.value)}.{node.attr.value}"
    return ""


def parse_module(source: str, filename: str) -> SourceModule:
    """Parse a module: its positions, functions and imports (no classes)."""
    try:
        module = cst.parse_module(source)
    except cst.ParserSyntaxError as e:
        raise RewriteError(f"{filename}:{e.raw_line}:{e.raw_column + 1}",
                           f"syntax error: {e.message}") from None
    wrapper = MetadataWrapper(module, unsafe_skip_copy=True)
    ranges = wrapper.resolve(PositionProvider)
    positions = {n: (r.start.line, r.start.column) for n, r in ranges.items()}
    functions = {s.name.value: s for s in module.body if isinstance(s, cst.FunctionDef)}
    return SourceModule(filename, source, module, positions, functions, [],
                        module_imports(module))


def same_module(a: SourceModule, b: SourceModule) -> bool:
    """One module: one parse, or two parses of one file (the pipeline parses again after a
    failed certification, and reorders statements in a parsed copy)."""
    return a.module is b.module or a.filename == b.filename


def class_view(src: SourceModule, cls: OptimizerClass) -> SourceModule:
    """The module the analysis of `cls` works in: the module whose source defines its `step`
    (the module-level helpers step calls by name are that module's), knowing the positions of
    the methods the class inherits from other modules. `src` itself when all are defined here."""
    modules = {id(m.module): m for m in cls.origin.values()}
    if all(m.module is src.module for m in modules.values()):
        return src
    home = cls.origin.get("step", src)
    others = [m for m in {id(src.module): src, **modules}.values() if m.module is not home.module]
    return dataclasses.replace(home, others=others,
                               classes=src.classes if home.module is src.module else [cls])


def module_imports(module: cst.Module) -> dict[str, str]:
    """Top-level imports: `from .optimizer import Optimizer as O` -> {"O": ".optimizer.Optimizer"},
    `import torch.nn` -> {"torch": "torch"}; also those of an optional import (`try: from m
    import f` / `except ImportError: f = None`): the name is the import's or None."""
    found: dict[str, str] = {}
    statements: list[cst.CSTNode] = list(module.body)
    for t in module.body:
        if isinstance(t, cst.Try) and _optional_import(t):
            statements += t.body.body
    for stmt in statements:
        if not isinstance(stmt, cst.SimpleStatementLine):
            continue
        for s in stmt.body:
            if isinstance(s, cst.Import):
                for a in s.names:
                    full = _dotted(a.name)
                    local = _dotted(a.asname.name) if a.asname else full.split(".")[0]
                    found[local] = full if a.asname else local
            elif isinstance(s, cst.ImportFrom) and not isinstance(s.names, cst.ImportStar):
                base = "." * len(s.relative) + (_dotted(s.module) if s.module else "")
                for a in s.names:
                    name = _dotted(a.name)
                    local = _dotted(a.asname.name) if a.asname else name
                    found[local] = f"{base}.{name}" if not base.endswith(".") else base + name
    return found


def absolute_origin(origin: str, package: str | None) -> str:
    """An origin of `module_imports` made absolute against `package` when it is relative and the
    package is known (`.optimizer._get_value` -> `torch.optim.optimizer._get_value`); left as it
    is otherwise, or where it reaches beyond the top-level package (then nothing is known of
    it)."""
    if origin.startswith(".") and package:
        try:
            return importlib.util.resolve_name(origin, package)
        except (ImportError, ValueError):
            return origin
    return origin


def _optional_import(stmt: cst.CSTNode) -> bool:
    """`try:` with only imports in its body, whose handlers only bind names to None or pass, with
    no `else` or `finally`: each name it binds is what the import binds, or None."""
    if not isinstance(stmt, cst.Try) or stmt.orelse is not None or stmt.finalbody is not None:
        return False
    if not all(isinstance(s, cst.SimpleStatementLine) and
               all(isinstance(x, (cst.Import, cst.ImportFrom)) for x in s.body)
               for s in stmt.body.body):
        return False
    for h in stmt.handlers:
        for s in h.body.body:
            if not isinstance(s, cst.SimpleStatementLine):
                return False
            for x in s.body:
                if isinstance(x, cst.Pass):
                    continue
                if not (isinstance(x, cst.Assign) and isinstance(x.value, cst.Name) and
                        x.value.value == "None" and
                        all(isinstance(t.target, cst.Name) for t in x.targets)):
                    return False
    return True
