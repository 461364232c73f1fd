"""Stage 1, locate: parse the module, find optimizer classes, their `step` and its helpers."""

from __future__ import annotations

from dataclasses import dataclass, field

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

from gsr_rewrite.errors import RewriteError

OPTIMIZER_BASES = {"Optimizer", "torch.optim.Optimizer", "optim.Optimizer",
                   "torch.optim.optimizer.Optimizer"}


@dataclass
class OptimizerClass:
    name: str
    node: cst.ClassDef
    methods: dict[str, cst.FunctionDef]  # own methods, then those inherited within the module
    bases: list[str] = field(default_factory=list)


@dataclass
class SourceModule:
    filename: str
    source: str
    module: cst.Module
    positions: dict[cst.CSTNode, tuple[int, int]]
    functions: dict[str, cst.FunctionDef]
    classes: list[OptimizerClass]
    imports: dict[str, str] = field(default_factory=dict)  # local name -> where it comes from

    def where(self, node: cst.CSTNode) -> str:
        line, col = self.positions.get(node, (0, 0))
        return f"{self.filename}:{line}:{col + 1}"

    def line_of(self, node: cst.CSTNode) -> int:
        return self.positions.get(node, (0, 0))[0]


def _dotted(node: cst.BaseExpression) -> str:
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        return f"{_dotted(node.value)}.{node.attr.value}"
    return ""


def parse(source: str, filename: str) -> SourceModule:
    try:
        module = cst.parse_module(source)
    except cst.ParserSyntaxError as e:
        raise RewriteError(f"{filename}:{e.raw_line}:{e.raw_column + 1}",
                           f"syntax error: {e.message}") from None
    wrapper = MetadataWrapper(module, unsafe_skip_copy=True)
    ranges = wrapper.resolve(PositionProvider)
    positions = {n: (r.start.line, r.start.column) for n, r in ranges.items()}
    functions = {s.name.value: s for s in module.body if isinstance(s, cst.FunctionDef)}
    class_defs = {s.name.value: s for s in module.body if isinstance(s, cst.ClassDef)}
    src = SourceModule(filename, source, module, positions, functions, [], module_imports(module))
    src.classes = _optimizer_classes(class_defs)
    return src


def module_imports(module: cst.Module) -> dict[str, str]:
    """Top-level imports: `from .optimizer import Optimizer as O` -> {"O": ".optimizer.Optimizer"},
    `import torch.nn` -> {"torch": "torch"}."""
    found: dict[str, str] = {}
    for stmt in module.body:
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


def _optimizer_classes(class_defs: dict[str, cst.ClassDef]) -> list[OptimizerClass]:
    """Classes deriving from torch's Optimizer, directly or through another class here."""
    found: dict[str, OptimizerClass] = {}
    changed = True
    while changed:
        changed = False
        for name, node in class_defs.items():
            if name in found:
                continue
            bases = [_dotted(b.value) for b in node.bases]
            if any(b in OPTIMIZER_BASES or b in found for b in bases):
                methods = {s.name.value: s for s in node.body.body
                           if isinstance(s, cst.FunctionDef)}
                for b in bases:  # inherit methods from optimizer bases in this module
                    for k, v in (found[b].methods.items() if b in found else []):
                        methods.setdefault(k, v)
                found[name] = OptimizerClass(name, node, methods, bases)
                changed = True
    order = list(class_defs)
    return sorted(found.values(), key=lambda c: order.index(c.name))
