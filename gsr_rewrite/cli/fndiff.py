"""`gsr-rewrite --diff`: each rewritten function against the function it replaces.

The emitted module is the original plus `<Name>R(<Name>)` classes that override the methods the
rewrite changed, and `<helper>_gsr` copies of the module-level helpers it changed
(`pipeline.emit_module`). Each of those functions is diffed against its original: the method of
the same name in `<Name>` (or in a base class defined in the module), or `<helper>`.
"""

from __future__ import annotations

import ast
import difflib
import io

Function = ast.FunctionDef | ast.AsyncFunctionDef

HELPER_SUFFIX = "_gsr"  # pipeline.emit_module names a rewritten helper F as F_gsr
CLASS_SUFFIX = "R"  # and the R-variant of class C as CR (pipeline.ClassOutcome.r_name)


def _functions(body: list[ast.stmt]) -> dict[str, Function]:
    return {s.name: s for s in body if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))}


def _lines(text: str) -> list[str]:
    """The lines as Python counts them (str.splitlines would also split at \\f and \\v)."""
    return [line.rstrip("\n") for line in io.StringIO(text, newline=None)]


def _text(lines: list[str], fn: Function) -> list[str]:
    """The function's lines, decorators included, moved left by the indentation of its `def`
    (a method then lines up with a module-level helper)."""
    start = min([fn.lineno, *(d.lineno for d in fn.decorator_list)])
    indent = lines[start - 1][:fn.col_offset]  # whitespace: as many bytes as characters
    return [line.removeprefix(indent) + "\n"
            for line in lines[start - 1:fn.end_lineno]]


def _defining_class(classes: dict[str, ast.ClassDef], name: str, method: str
                    ) -> ast.ClassDef | None:
    """The class of the module that defines `method` for class `name`: itself or a base."""
    todo, seen = [name], set()
    while todo:
        cls = classes.get(todo.pop(0))
        if cls is None or cls.name in seen:
            continue
        seen.add(cls.name)
        if method in _functions(cls.body):
            return cls
        todo += [b.id for b in cls.bases if isinstance(b, ast.Name)]
    return None


def function_diff(original: str, emitted: str, filename: str) -> str:
    """Unified diffs of every rewritten function of `emitted` against its original in `original`
    (the source read from `filename`), in the order the emitted module defines them."""
    old_tree, new_tree = ast.parse(original), ast.parse(emitted)
    old_lines, new_lines = _lines(original), _lines(emitted)
    old_functions = _functions(old_tree.body)
    old_classes = {s.name: s for s in old_tree.body if isinstance(s, ast.ClassDef)}
    pairs: list[tuple[str, Function | None, str, Function]] = []  # from, old, to, new
    for stmt in new_tree.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) and \
                stmt.name.endswith(HELPER_SUFFIX) and stmt.name not in old_functions:
            base = stmt.name.removesuffix(HELPER_SUFFIX)
            pairs.append((base, old_functions.get(base), stmt.name, stmt))
        elif isinstance(stmt, ast.ClassDef) and stmt.name not in old_classes and \
                stmt.name.removesuffix(CLASS_SUFFIX) in old_classes:
            base = stmt.name.removesuffix(CLASS_SUFFIX)
            for fn in _functions(stmt.body).values():
                owner = _defining_class(old_classes, base, fn.name)
                old = _functions(owner.body)[fn.name] if owner is not None else None
                pairs.append((f"{owner.name if owner else base}.{fn.name}", old,
                              f"{stmt.name}.{fn.name}", fn))
    return "".join(
        line
        for from_name, old, to_name, new in pairs
        for line in difflib.unified_diff(
            _text(old_lines, old) if old is not None else [], _text(new_lines, new),
            fromfile=f"{filename}:{from_name}", tofile=to_name))
