"""The package's layout in figures: modules per folder, the longest modules, import cycles.

    python scripts/layout_stats.py [PACKAGE_DIR]     (default: gsr_rewrite/ beside this script)

An import is any `import`/`from ... import` of a gsr_rewrite module anywhere in a module (also
inside functions), so a cycle broken only by a late import still counts. Generated modules
(gsr_rewrite/optim/) are listed apart: their length is the emitter's, not a person's.
"""

from __future__ import annotations

import ast
import sys
from collections import Counter
from pathlib import Path

GENERATED = "optim"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(tree: ast.AST, name: str, known: set[str]) -> set[str]:
    """gsr_rewrite modules that the module `name` imports (`from pkg import mod` counts mod)."""
    out: set[str] = set()
    package = name if name in known and _is_package(name, known) else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for a in node.names:  # `from pkg import mod` imports mod; `from pkg import f`, pkg
                sub = f"{base}.{a.name}"
                if sub in known:
                    out.add(sub)
                elif base in known:
                    out.add(base)
    out.discard(name)
    return out


def _is_package(name: str, known: set[str]) -> bool:
    return any(k.startswith(name + ".") for k in known)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def main(argv: list[str]) -> int:
    root = Path(argv[0]) if argv else Path(__file__).resolve().parents[1] / "gsr_rewrite"
    files = sorted(root.rglob("*.py"))
    names = {module_name(f, root): f for f in files}
    known = set(names)
    lines = {n: len(f.read_text().splitlines()) for n, f in names.items()}
    graph = {n: imported(ast.parse(f.read_text()), n, known) for n, f in names.items()}

    folders = Counter(str(f.parent.relative_to(root.parent)) for f in files)
    print(f"{len(files)} modules, {sum(lines.values())} lines under {root.name}/")
    print("\nmodules per folder:")
    for folder, count in sorted(folders.items()):
        total = sum(lines[n] for n, f in names.items() if str(f.parent.relative_to(root.parent))
                    == folder)
        print(f"  {folder + '/':32} {count:3} modules {total:6} lines")
    written = {n: k for n, k in lines.items() if f".{GENERATED}." not in f".{n}."}
    print("\nlongest written modules:")
    for n, k in sorted(written.items(), key=lambda t: -t[1])[:12]:
        print(f"  {k:5}  {n}")
    over = [n for n, k in written.items() if k > 400]
    print(f"\nwritten modules over 400 lines: {len(over)}")
    print("\ngenerated modules (gsr_rewrite/optim/):")
    for n, k in sorted(lines.items()):
        if f".{GENERATED}." in f".{n}." and n.count(".") > 1:
            print(f"  {k:5}  {n}")
    found = cycles(graph)
    print(f"\nimport cycles: {len(found)}")
    for c in found:
        print("  " + " <-> ".join(c))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
