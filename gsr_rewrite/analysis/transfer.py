"""What one node of the control-flow graph does (the transfer function of the analyses): its
statement evaluated by the `Evaluator` under the node's points-to map, with assignments, tuple
unpacking and loop targets bound; and which parts of a statement it reads."""

from __future__ import annotations

import libcst as cst

from gsr_rewrite.analysis.cfg import Node
from gsr_rewrite.frontend.effects import (
    EMPTY,
    LOCAL_DICT,
    OPAQUE,
    Effects,
    Evaluator,
    Value,
    buffers,
    store_in_state,
)
from gsr_rewrite.frontend.expressions import is_sequence
from gsr_rewrite.frontend.values import LIST, PART, element, flat, is_role, is_structured, item


def node_effects(n: Node, ev: Evaluator) -> Effects:
    s = n.node
    if n.kind in ("stmt", "return", "raise") and s is not None:
        ev.raising = n.kind == "raise"  # `raise E(str(self))`: see Evaluator._call
        _small_statement(s, ev)
        ev.raising = False
    elif n.kind == "test" and isinstance(s, cst.BaseExpression):
        ev.read(s)  # `if g[0]:`, `while t:`: a tensor's truth is its contents
    elif n.kind == "for" and isinstance(s, cst.For):
        _bind_for(s, ev)
    elif n.kind == "with" and isinstance(s, cst.With):
        for item in s.items:
            v = ev.value(item.item)
            if OPAQUE in flat(v) or "%self" in v:  # its __enter__/__exit__: code not seen
                ev.code_run_here(item.item, "a context manager the analysis does not model")
            if item.asname is not None:
                _assign(item.asname.name, v, ev)
    elif n.kind == "def" and isinstance(s, (cst.FunctionDef, cst.ClassDef)):
        ev.define(s)
    return ev.eff


#: why a buffer a function returns escapes it (a temporary whose storage outlives the function)
RETURNED = "returned from the function"


def _small_statement(s: cst.CSTNode, ev: Evaluator) -> None:
    if isinstance(s, cst.Assign):
        v = ev.value(s.value)
        for t in s.targets:
            _assign(t.target, v, ev, s.value)
    elif isinstance(s, cst.AnnAssign) and s.value is not None:
        _assign(s.target, ev.value(s.value), ev, s.value)
    elif isinstance(s, cst.AugAssign):
        rhs = ev.read(s.value)
        target = ev.read(s.target)
        name = s.target.value if isinstance(s.target, cst.Name) else "@expr"
        for b in ev.touched(target):
            ev.eff.writes.append((name, b))
        if not buffers(target) and isinstance(s.target, cst.Name) and buffers(rhs):
            ev.eff.assigns[s.target.value] = rhs
        elif buffers(rhs) and (_may_be_container(target, s.target, ev) or
                               is_sequence(s.value, rhs)):
            _extend(s.target, rhs, ev)  # `xs += [g]`, `xs += g` (its rows): xs holds g now
    elif isinstance(s, cst.Expr):
        ev.value(s.value)
    elif isinstance(s, cst.Return) and s.value is not None:
        for b in buffers(ev.read(s.value)):
            # a helper's caller is analysed: the params, gradients and state it gets back are
            # followed there (and are live at the helper's exit while it reads them); a
            # temporary would outlive the helper's plan
            if not (ev.unknowns.returns_to_caller and is_role(b)):
                ev.eff.escapes.append((b, RETURNED, s))
    elif isinstance(s, cst.Assert):
        ev.read(s.test)
        if s.msg is not None:
            ev.value(s.msg)
    elif isinstance(s, cst.Del):
        for gone in _targets(s.target):
            if isinstance(gone, cst.Name):
                ev.eff.assigns[gone.value] = EMPTY
            elif isinstance(gone, cst.Subscript):  # `del xs[0]`: the items after it move
                _positions_lost(gone, ev)
    else:
        for child in s.children:
            if isinstance(child, cst.BaseExpression):
                ev.value(child)


def _may_be_container(v: Value, target: cst.BaseExpression, ev: Evaluator) -> bool:
    """May an augmented assignment to `target` (of value v) extend a list or a dict in place?"""
    return "%list" in flat(v) or OPAQUE in flat(v) or is_structured(v) or (
        isinstance(target, cst.Subscript) and LOCAL_DICT <= ev.peek(target.value))


def _extend(target: cst.BaseExpression, v: Value, ev: Evaluator) -> None:
    """`target += v` where target may be a container: it holds what v holds from here on."""
    if isinstance(target, cst.Name):
        ev.eff.weak[target.value] = ev.eff.weak.get(target.value, EMPTY) | flat(v)
        held = ev.peek(target)
        if target.value not in ev.unknowns.local_lists or OPAQUE in flat(held) or \
                any(is_role(b) for b in buffers(held)):  # a list kept in state, on self, ...
            for b in buffers(v):
                ev.eff.escapes.append((b, f"added to `{target.value}`, which may be a list "
                                       "kept outside the function", target))
    elif isinstance(target, cst.Subscript) and isinstance(target.value, cst.Name) and \
            LOCAL_DICT <= ev.peek(target.value):
        ev.store_in_dict(target.value.value, flat(v), target)
    else:
        for b in buffers(v):
            ev.eff.escapes.append((b, "added in place to a container", target))


def _positions_lost(target: cst.Subscript, ev: Evaluator) -> None:
    """An item of a tuple-like list of known positions (values.py) was replaced or removed:
    its name keeps every item at every position, and what it held escapes (another name may
    still hold it with the old positions)."""
    for index in target.slice:
        if isinstance(index.slice, cst.Index):
            ev.read(index.slice.value)
    base = ev.peek(target.value)
    if not is_structured(base):
        return
    if isinstance(target.value, cst.Name):
        ev.eff.assigns[target.value.value] = flat(base)
    for b in buffers(base):
        ev.eff.escapes.append((b, "its container's items moved (`del` or an item assigned)",
                               target))


def _targets(t: cst.BaseExpression) -> list[cst.BaseExpression]:
    if isinstance(t, (cst.Tuple, cst.List)):
        return [x for el in t.elements for x in _targets(el.value)]
    if isinstance(t, cst.StarredElement):
        return _targets(t.value)
    return [t]


def _assign(target: cst.BaseExpression, v: Value, ev: Evaluator,
            value: cst.BaseExpression | None = None) -> None:
    if isinstance(target, cst.Name) and target.value in ev.unknowns.outer_names:
        for b in buffers(v):  # `global HISTORY; HISTORY = grad`
            ev.eff.escapes.append((b, f"stored in `{target.value}`, declared global or "
                                   "nonlocal", target))
    elif isinstance(target, cst.Name) and target.value in ev.unknowns.local_dicts and \
            value is not None:
        ev.eff.assigns[target.value] = ev.new_dict(value)  # (bound to nothing else)
    elif isinstance(target, cst.Name):
        ev.eff.assigns[target.value] = v
    elif isinstance(target, (cst.Tuple, cst.List)):
        for el, sub in zip(target.elements, _unpack(target, value, v, ev), strict=True):
            _assign(el.value, sub, ev)
    elif isinstance(target, cst.Subscript) and is_structured(ev.peek(target.value)):
        _positions_lost(target, ev)  # `xs[0] = g`, `xs[1:] = []`: what sits where changed
        for b in buffers(v):
            ev.eff.escapes.append((b, "stored into a container or tensor", target))
    elif isinstance(target, cst.Subscript):
        key = EMPTY  # `t[t.gt(0)] = c` reads t to build its mask
        for index in target.slice:
            if isinstance(index.slice, cst.Index):
                key |= ev.read(index.slice.value)
        base = ev.peek(target.value)
        if "%pstate" in base:  # state["k"] = v: v becomes persistent optimizer state
            store_in_state(ev, v, target)
        elif LOCAL_DICT <= base and isinstance(target.value, cst.Name):
            ev.store_in_dict(target.value.value, flat(key) | flat(v), target)
        elif "%list" in base and isinstance(target.value, cst.Name):
            # `lst[i] = view_as_real(lst[i])`: the list now holds v (a tensor would copy it)
            lst = target.value.value
            ev.eff.weak[lst] = ev.eff.weak.get(lst, EMPTY) | flat(v) | LIST
            ev.eff.writes.extend(("@expr", b) for b in ev.touched(base))
            ev.eff.reads.extend(("@expr", b, target) for b in buffers(v))
        else:
            for b in ev.touched(base):
                ev.eff.writes.append(("@expr", b))
            for b in buffers(v):
                ev.eff.escapes.append((b, "stored into a container or tensor", target))
    elif isinstance(target, cst.Attribute):
        for b in buffers(v):
            ev.eff.escapes.append((b, f"stored on attribute `.{target.attr.value}`", target))
        # `p.grad = state["m"]`, `g.data = x`: the object's buffers change identity
        for b in buffers(ev.peek(target.value)) | ({"grad"} if target.attr.value == "grad"
                                                    else set()):
            ev.eff.escapes.append((b, f"its `.{target.attr.value}` is reassigned", target))


def _unpack(target: cst.Tuple | cst.List, value: cst.BaseExpression | None, v: Value,
            ev: Evaluator) -> list[Value]:
    """What each element of `a, b, c = x, *ys, z` receives: pairs from both ends; elements that
    meet a starred value get the union of everything starred; `a, b = t` takes t's positions
    when t is structured (see values.py), and anything unknown gets all of v."""
    n = len(target.elements)
    if any(isinstance(el, cst.StarredElement) for el in target.elements):
        return [flat(v)] * n
    if not isinstance(value, (cst.Tuple, cst.List)):
        return [item(v, k) for k in range(n)]
    vals = value.elements
    star = next((k for k, el in enumerate(vals) if isinstance(el, cst.StarredElement)), None)
    if star is None:
        return [ev.value(el.value) for el in vals] if len(vals) == n else [flat(v)] * n
    head = [ev.value(el.value) for el in vals[:star]]
    tail = [ev.value(el.value) for el in vals[star + 1:]]
    middle = n - len(head) - len(tail)
    if middle < 0:
        return [flat(v)] * n
    starred = EMPTY
    for el in vals[star:len(vals) - len(tail)]:
        starred |= ev.value(el.value)
    return [*head, *[starred] * middle, *tail]


def _bind_for(s: cst.For, ev: Evaluator) -> None:
    it = s.iter
    if isinstance(it, cst.Call) and isinstance(it.func, cst.Name) and \
            it.func.value in ("zip", "enumerate") and isinstance(s.target, cst.Tuple):
        vals = [ev.value(a.value) for a in it.args if a.keyword is None]
        if it.func.value == "enumerate":
            vals = [EMPTY, *vals[:1]]
        vals = [element(v) for v in vals]
        for el, v in zip(s.target.elements, vals, strict=False):
            _assign(el.value, v, ev)
        return
    v = ev.value(it)
    ev.eff.partition = PART in v
    _assign(s.target, element(v), ev)


def read_parts(s: cst.CSTNode, unpack: bool = False) -> list[cst.CSTNode]:
    """The parts of a flow node's statement that it reads: a loop's header reads its iterable,
    `x = y` reads y (a name that is only assigned to held nothing read here); with `unpack`,
    `a, b = ...` reads neither a nor b either."""
    if isinstance(s, cst.For):
        return [s.iter]
    if isinstance(s, cst.While):  # a while loop's latch: its body's statements are nodes too
        return [s.test]
    if isinstance(s, cst.With):
        return [item.item for item in s.items]
    if isinstance(s, (cst.Assign, cst.AnnAssign)) and s.value is not None:
        targets: list[cst.BaseExpression] = [t.target for t in s.targets] \
            if isinstance(s, cst.Assign) else [s.target]
        if unpack:
            targets = [x for t in targets for x in _targets(t)]
        return [s.value, *[t for t in targets if not isinstance(t, cst.Name)]]
    return [s]


def target_names(t: cst.BaseExpression) -> list[str]:
    """The names an assignment target binds: `a, (b, *c)` -> a, b, c."""
    return [x.value for x in _targets(t) if isinstance(x, cst.Name)]
