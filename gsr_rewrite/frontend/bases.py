"""Stage 1, locate: the optimizer classes of a module and the methods each one has.

A class is an optimizer when torch's `Optimizer` is among its ancestors, found by resolving its
bases through imports to source files (`resolve.py`). Its methods are those Python would find:
along its method resolution order, from its own module or from the modules of its bases (parsed
with libcst here, once per file). A base that cannot be resolved is reported with its name: its
methods could override any helper `step` calls, so such a class is refused, never guessed at.
"""

from __future__ import annotations

import ast
from pathlib import Path

import libcst as cst

from gsr_rewrite.frontend.resolve import ClassRef, ModuleFile, Resolver
from gsr_rewrite.frontend.scopes import target_names
from gsr_rewrite.frontend.source import OptimizerClass, SourceModule, _dotted, parse_module

#: libcst-parsed modules of base classes, by (file, mtime, size, dotted name)
_PARSED: dict[tuple[Path, int, int, str | None], SourceModule] = {}


def optimizer_classes(src: SourceModule
                      ) -> tuple[list[OptimizerClass], list[tuple[str, str, str]]]:
    """The optimizer classes of `src`, in source order, and the (class, base, why) of the
    classes whose ancestry could not be decided because a base could not be resolved."""
    try:
        tree = ast.parse(src.source)
    except (SyntaxError, ValueError) as e:
        return [], [("", "", f"Python's parser rejects the source ({e})")]
    path = Path(src.filename)
    file = path.resolve() if path.suffix == ".py" and path.is_file() else None
    resolver = Resolver()
    here = resolver.add(tree, file, src.name, src.package)
    parsed: dict[int, SourceModule] = {id(here): src}
    nodes = {s.name: s for s in tree.body if isinstance(s, ast.ClassDef)}
    found: list[OptimizerClass] = []
    unresolved: list[tuple[str, str, str]] = []
    for stmt in src.module.body:
        if not isinstance(stmt, cst.ClassDef) or stmt.name.value not in nodes or \
                any(c.name == stmt.name.value for c in found):
            continue
        name = stmt.name.value
        ref = resolver.classes.setdefault((id(here), name), ClassRef(here, name, nodes[name]))
        lineage = resolver.lineage(ref)
        if not lineage.optimizer:
            if lineage.unresolved is not None and all(u[0] != name for u in unresolved):
                unresolved.append((name, lineage.unresolved.base, lineage.unresolved.why))
            continue
        cls = OptimizerClass(name, _last_class(src.module, name) or stmt, {},
                             [_dotted(b.value) for b in stmt.bases])
        chain = [c for c in lineage.mro or [ref] if isinstance(c, ClassRef)]
        if len(here.bindings.get(name, [])) > 1:  # `X = wrap(X)`: what the module exports
            cls.unresolved = f"`{name}` is bound more than once in the module, so which " \
                             "class it names is not known"
            chain = []
        if lineage.mro is None:
            assert lineage.unresolved is not None
            u = lineage.unresolved
            cls.unresolved = f"`{u.base}` cannot be resolved ({u.why}), so the methods it " \
                             "inherits are not known"
        shadowed: set[str] = set()
        for c in chain:
            home = parsed.get(id(c.module)) or parse_module_file(c.module)
            node = _last_class(home.module, c.name) if home is not None else None
            if home is None or node is None:
                cls.unresolved = cls.unresolved or f"the source of base `{c.name}` cannot be read"
                break
            parsed[id(c.module)] = home
            patched = _patched(home.module, c.name)
            if patched is None:
                cls.unresolved = cls.unresolved or f"`setattr` or `delattr` in {home.filename} " \
                    f"may change the methods of `{c.name}`"
                break
            members = _members(node)
            members.update(dict.fromkeys(patched))  # `C.m = ...` at module level: not followed
            for method, func in members.items():
                if method in cls.methods or method in shadowed:
                    if func is not None:
                        cls.overridden.append(func)
                    continue
                if func is None:  # bound by something else than `def` (it is not followed)
                    shadowed.add(method)
                    continue
                cls.methods[method] = func
                cls.origin[method] = home
                cls.defined_by[method] = c.name
        found.append(cls)
    return found, unresolved


def _last_class(module: cst.Module, name: str) -> cst.ClassDef | None:
    """The `class name` statement at the top level of `module` that binds the name last."""
    return next((s for s in reversed(module.body)
                 if isinstance(s, cst.ClassDef) and s.name.value == name), None)


def _patched(module: cst.Module, cls: str) -> set[str] | None:
    """The attributes of class `cls` that module-level code assigns (`Cls.m = f`); None when
    it calls setattr or delattr on anything (the name it sets is not known)."""
    found: set[str] = set()
    unknown = False

    class _Patches(cst.CSTVisitor):
        def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
            return False

        def visit_ClassDef(self, node: cst.ClassDef) -> bool:
            return False

        def visit_AssignTarget(self, node: cst.AssignTarget) -> None:
            self.written(node.target)

        def visit_AugAssign(self, node: cst.AugAssign) -> None:
            self.written(node.target)

        def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
            self.written(node.target)

        def visit_Del(self, node: cst.Del) -> None:
            self.written(node.target)

        def written(self, t: cst.BaseExpression) -> None:
            if isinstance(t, (cst.Tuple, cst.List)):
                for el in t.elements:
                    self.written(el.value)
            elif isinstance(t, cst.Attribute) and isinstance(t.value, cst.Name) and \
                    t.value.value == cls:
                found.add(t.attr.value)

        def visit_Call(self, node: cst.Call) -> None:
            nonlocal unknown
            unknown |= isinstance(node.func, cst.Name) and node.func.value in ("setattr",
                                                                              "delattr")

    for stmt in module.body:
        if not isinstance(stmt, (cst.FunctionDef, cst.ClassDef, cst.Import, cst.ImportFrom)):
            stmt.visit(_Patches())
    return None if unknown else found


def _members(node: cst.ClassDef) -> dict[str, cst.FunctionDef | None]:
    """Each name the class body binds: its last `def`, or None when the last binding is anything
    else (an assignment, a nested class, `step = wrap(step)`)."""
    found: dict[str, cst.FunctionDef | None] = {}
    if not isinstance(node.body, cst.IndentedBlock):
        return found
    for stmt in node.body.body:
        if isinstance(stmt, cst.FunctionDef):
            found[stmt.name.value] = stmt
        elif isinstance(stmt, cst.ClassDef):
            found[stmt.name.value] = None
        elif isinstance(stmt, cst.SimpleStatementLine):
            for small in stmt.body:
                targets: list[cst.BaseExpression] = []
                if isinstance(small, cst.Assign):
                    targets = [t.target for t in small.targets]
                elif isinstance(small, (cst.AnnAssign, cst.AugAssign)):
                    targets = [small.target]
                for t in targets:
                    for n in target_names(t):
                        found[n] = None
        else:  # a compound statement in a class body: whatever it binds is not followed
            for n in _stored(stmt):
                found[n] = None
    return found


def _stored(stmt: cst.CSTNode) -> set[str]:
    found: set[str] = set()

    class _Stores(cst.CSTVisitor):
        def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
            found.add(node.name.value)
            return False

        def visit_ClassDef(self, node: cst.ClassDef) -> bool:
            found.add(node.name.value)
            return False

        def visit_AssignTarget(self, node: cst.AssignTarget) -> None:
            found.update(target_names(node.target))

        def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
            found.update(target_names(node.target))

        def visit_AugAssign(self, node: cst.AugAssign) -> None:
            found.update(target_names(node.target))

        def visit_For(self, node: cst.For) -> None:
            found.update(target_names(node.target))

    stmt.visit(_Stores())
    return found


def parse_module_file(mf: ModuleFile) -> SourceModule | None:
    """The libcst parse of a module file: a base class's, an imported helper's (cached while
    the file is unchanged)."""
    if mf.path is None:
        return None
    try:
        stat = mf.path.stat()
        key = (mf.path, stat.st_mtime_ns, stat.st_size, mf.name)
        if key not in _PARSED:
            src = parse_module(mf.path.read_text(encoding="utf-8"), str(mf.path))
            src.name, src.package = mf.name, mf.package
            _PARSED[key] = src
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    except Exception:  # a syntax error of libcst's (RewriteError): not a readable source
        return None
    return _PARSED[key]
