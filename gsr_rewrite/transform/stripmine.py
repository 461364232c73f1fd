"""Stage 4c, strip-mining: bound the temporaries that found no dead buffer.

A temporary that no dead buffer can hold (RMSprop's `avg`: the gradient is still needed when it
is consumed) can still be made small. Its live range is a run of statements of one block; when
every statement in that run works element by element (catalog ops, in-place ops on the run's own
tensors, host arithmetic that does not accumulate), running the run once per *strip* of the
elements computes exactly what running it once on whole tensors does, and the temporary is only
ever one strip large:

    for grads_strip, avgs_strip, ... in _gsr.strips(64, grads, avgs, ...):
        <the statements, on strip views>

`runtime.strips` slices every tensor (or every tensor of every list, position by position) into
the same aligned, contiguous element ranges, so scalar lists keep their positions; it yields the
whole tensors once when it cannot slice them (non-contiguous, mismatched shapes). With one strip
per 1/64 of the elements per temporary, the temporaries of a run stay below 1/64 of the
parameters each (measured in tests/transform/test_stripmine.py and the corpus).

A run is refused, with its reason, when it reaches a tensor through `p.grad` or optimizer state,
calls a helper or unknown function, reduces or reshapes a tensor, branches on tensor contents,
mutates anything that is not one of its strip views (`state["step"] += 1` would run once per
strip), reads a host variable it also assigns before assigning it, or leaves a tensor variable it
assigned live after it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import cast

import libcst as cst

from gsr_rewrite.analysis.dataflow import Node, PointsTo, must_reach, preds_of, read_parts
from gsr_rewrite.frontend.catalog import OpCatalog
from gsr_rewrite.frontend.closures import loaded_names
from gsr_rewrite.frontend.effects import EMPTY, OPAQUE, SHAPED, _for_ins, buffers, dotted, names_in
from gsr_rewrite.runtime import STRIP_FRACTION
from gsr_rewrite.transform.emit import Renamer
from gsr_rewrite.transform.plan import FunctionPlan, Placement

#: each temporary of a run is at most 1/64 of its tensors (+ alignment), or the run's temporaries
#: fit under the run-time floor (runtime.strips)
STRIPS_PER_TEMPORARY = STRIP_FRACTION
MAX_STRIPS = 512
# metadata that a strip view shares with its whole tensor (shape, numel, strides differ)
_SAME_ON_STRIPS = {"dtype", "device", "is_sparse", "is_complex", "is_cuda", "is_cpu", "layout",
                   "requires_grad", "is_floating_point", "element_size", "data", "real", "imag",
                   "detach"}
_TENSOR_ATTRIBUTES = {"data", "real", "imag", "detach"}  # the others are host values
_HOST_OK_CALLS = {"len", "isinstance", "float", "int", "bool", "max", "min", "abs", "round",
                  "zip", "enumerate", "list", "tuple", "range", "reversed", "type"}
_CONTAINER_CALLS = {"zip", "enumerate", "list", "tuple", "reversed"}  # of strip lists: fine
# torch functions that commute with taking the same element range of every tensor
_STRIP_COMMUTING = {"view_as_real", "view_as_complex"}
_COMPARISONS = {"gt", "lt", "ge", "le", "eq", "ne", "isnan", "isinf", "isfinite", "signbit",
                "logical_not", "logical_and", "logical_or", "logical_xor"}  # bool, per element
_MUTATING_METHODS = {"append", "extend", "insert", "pop", "remove", "clear", "update",
                     "setdefault", "add", "discard", "sort", "reverse"}


@dataclass
class StripRegion:
    """Statements block.body[start:end] run once per strip of the tensors named in `sliced`."""

    function: str
    block: cst.IndentedBlock
    start: int
    end: int
    sliced: list[str]  # names sliced whole, then `xs` of each `xs[i]` in items
    strips: int
    temporaries: list[Placement] = field(default_factory=list)
    lines: tuple[int, int] = (0, 0)
    items: list[tuple[str, str]] = field(default_factory=list)  # (xs, i): the run reads xs[i]
    once: set[int] = field(default_factory=set)  # ids of lines that run in the first strip only
    after: set[int] = field(default_factory=set)  # ids of top-level `del` lines moved after it


class _Refuse(Exception):
    def __init__(self, why: str, read_at: Node | None = None) -> None:
        super().__init__(why)
        self.read_at = read_at  # a later statement that reads what the run binds


def strip_mine(fp: FunctionPlan, cat: OpCatalog, line_of: Callable[[cst.CSTNode], int]
               ) -> list[StripRegion]:
    """Regions for fp's unplaced temporaries; each refused temporary gets the reason appended.

    Shortest live ranges first: a range that overlaps or encloses accepted regions is accepted
    only if the union of them all passes the checks; otherwise its temporary stays, and the
    smaller regions keep theirs."""
    fa = fp.analysis
    parents = _parents(fa.func)
    candidates: dict[tuple[int, int, int], StripRegion] = {}
    for p in fp.placements:
        if p.placed or p.reason == "kept as state":
            continue
        # temporaries placed in p's buffer (in-place chains on it) extend its live range
        sites = {p.alloc.site} | {q.alloc.site for q in fp.placements
                                  if q.storage == p.alloc.site}
        try:
            block, start, end = _live_range(p, sites, fa.flow.nodes, parents)
        except _Refuse as e:
            p.reason = _join(p.reason, f"cannot be strip-mined: {e}")
            continue
        r = candidates.setdefault((id(block), start, end),
                                  StripRegion(fp.name, block, start, end, [], 0))
        r.temporaries.append(p)
    accepted: list[StripRegion] = []
    pending = sorted(candidates.values(), key=lambda r: r.end - r.start)
    refused: dict[int, str] = {}
    progress = True
    while progress:  # a range refused alone may pass joined with one accepted later
        progress = False
        for c in list(pending):
            outer = next((a for a in accepted if _encloses(a, c)), None)
            if outer is not None:
                outer.temporaries += c.temporaries
                pending.remove(c)
                continue
            joined = [a for a in accepted if _encloses(c, a) or (
                a.block is c.block and a.start < c.end and c.start < a.end)]
            same = [a for a in joined if a.block is c.block]
            union = StripRegion(fp.name, c.block, min([c.start, *(a.start for a in same)]),
                                max([c.end, *(a.end for a in same)]), [],
                                0, [*c.temporaries, *(p for a in joined for p in a.temporaries)])
            try:
                union.sliced = _check_region(union, fp, cat, parents)
            except _Refuse as e:
                refused[id(c)] = str(e)
                grown = _grown(c, e.read_at, parents)
                if grown is not None:  # `xs = list(xs)` in the run, `xs` read just after it
                    key = (id(grown.block), grown.start, grown.end)
                    if key not in candidates:
                        candidates[key] = grown
                        pending.append(grown)
                        progress = True
                continue
            accepted = [a for a in accepted if a not in joined] + [union]
            pending.remove(c)
            progress = True
    for c in pending:
        for p in c.temporaries:
            p.reason = _join(p.reason, f"cannot be strip-mined: {refused[id(c)]}")
    for r in accepted:
        sites = {a.site for n in _region_nodes(r, fa.flow.nodes, parents) for a in n.eff.allocs}
        fresh = [p for p in fp.placements if p.alloc.site in sites and not p.placed]
        r.strips = min(MAX_STRIPS, STRIPS_PER_TEMPORARY * max(1, len(fresh)))
        r.lines = (line_of(r.block.body[r.start]), line_of(r.block.body[r.end - 1]))
        r.temporaries = list({id(p): p for p in [*r.temporaries, *fresh]}.values())
        for p in r.temporaries:
            p.strips = r.strips
            p.reason = (f"strip-mined: the {r.end - r.start} statement(s) from line {r.lines[0]} "
                        f"run on 1/{r.strips} of the elements at a time"
                        + (f" (no dead buffer: {p.reason})" if p.reason else ""))
    return accepted


def _grown(r: StripRegion, read_at: Node | None, parents: dict[int, cst.CSTNode]
           ) -> StripRegion | None:
    """r extended, in its block, to the statement that holds `read_at` (None if elsewhere)."""
    anchor = _anchor(read_at) if read_at is not None else None
    if anchor is None:
        return None
    for block, i in _chain(anchor, parents):
        if block is r.block and i >= r.end:
            return StripRegion(r.function, r.block, r.start, i + 1, [], 0, list(r.temporaries))
    return None


def _encloses(a: StripRegion, b: StripRegion) -> bool:
    """b's statements are among a's, or inside one of them."""
    if a.block is b.block:
        return a.start <= b.start and b.end <= a.end
    return any(_contains(s, b.block) for s in a.block.body[a.start:a.end])


def _join(a: str, b: str) -> str:
    return f"{a}; {b}" if a else b


# -- the live range as a run of statements ---------------------------------------------------
def _parents(func: cst.FunctionDef) -> dict[int, cst.CSTNode]:
    parents: dict[int, cst.CSTNode] = {}

    class _V(cst.CSTVisitor):
        def on_visit(self, node: cst.CSTNode) -> bool:
            for child in node.children:
                parents[id(child)] = node
            return True

    func.visit(_V())
    return parents


def _anchor(n: Node) -> cst.CSTNode | None:
    """The CST statement a flow node belongs to (an If's test belongs to the If)."""
    if n.kind in ("entry", "exit", "join"):
        return None
    if n.line is not None:
        return n.line
    return n.node


def _chain(node: cst.CSTNode, parents: dict[int, cst.CSTNode]) -> list[tuple[cst.CSTNode, int]]:
    """(block, index of the statement holding node) from the function body down to node."""
    out: list[tuple[cst.CSTNode, int]] = []
    child = node
    while id(child) in parents:
        parent = parents[id(child)]
        if isinstance(parent, cst.IndentedBlock):
            out.append((parent, next(i for i, s in enumerate(parent.body) if s is child)))
        if isinstance(parent, cst.FunctionDef):
            break
        child = parent
    return out[::-1]


def _anchored(nodes: Iterable[Node], parents: dict[int, cst.CSTNode]
              ) -> list[tuple[Node, list[tuple[cst.CSTNode, int]]]]:
    """Each node that belongs to a statement, with that statement's block chain."""
    out = []
    for n in nodes:
        a = _anchor(n)
        if a is not None:
            out.append((n, _chain(a, parents)))
    return out


def _live_range(p: Placement, sites: set[str], nodes: Sequence[Node],
                parents: dict[int, cst.CSTNode]) -> tuple[cst.IndentedBlock, int, int]:
    # through variables only: "@expr" facts (reads inside one expression) never die
    live = [n for n in nodes if n is p.node or any(b in sites and not v.startswith("@")
                                                   for v, b in n.live_in | n.live_out)]
    chains = [c for _, c in _anchored(live, parents)]
    if any(not c for c in chains):
        raise _Refuse("its live range is not inside a block of statements")
    if not chains:
        raise _Refuse("no statement holds it")
    depth = 0
    while all(len(c) > depth for c in chains) and \
            all(c[depth][0] is chains[0][depth][0] for c in chains):
        depth += 1
    if depth == 0:
        raise _Refuse("its live range spans more than one block")
    level = depth - 1
    block = chains[0][level][0]
    assert isinstance(block, cst.IndentedBlock)
    idx = [c[level][1] for c in chains]
    return block, min(idx), max(idx) + 1


def _contains(root: cst.CSTNode, node: cst.CSTNode) -> bool:
    found = False

    class _V(cst.CSTVisitor):
        def on_visit(self, x: cst.CSTNode) -> bool:
            nonlocal found
            found = found or x is node
            return not found

    root.visit(_V())
    return found


def _region_nodes(r: StripRegion, nodes: Sequence[Node], parents: dict[int, cst.CSTNode]
                  ) -> list[Node]:
    stmts = {id(s) for s in r.block.body[r.start:r.end]}
    out = [n for n, c in _anchored(nodes, parents)
           if any(b is r.block and id(b.body[i]) in stmts for b, i in c)]
    ids = {id(n) for n in out}
    preds = preds_of(nodes)
    grew = True
    while grew:  # the joins after the run's ifs: every way into them is from the run
        grew = False
        for n in nodes:
            if n.kind == "join" and id(n) not in ids and preds[id(n)] and \
                    all(id(q) in ids for q in preds[id(n)]):
                out.append(n)
                ids.add(id(n))
                grew = True
    return out


# -- what the run may do ---------------------------------------------------------------------
def _check_region(r: StripRegion, fp: FunctionPlan, cat: OpCatalog,
                  parents: dict[int, cst.CSTNode]) -> list[str]:
    """The variables to slice, or _Refuse with the first thing that is not per-element."""
    fa = fp.analysis
    nodes = _region_nodes(r, fa.flow.nodes, parents)
    inside = {id(n) for n in nodes}
    preds = preds_of(fa.flow.nodes)
    entries = [n for n in nodes if any(id(q) not in inside for q in preds[id(n)])]
    if len(entries) != 1:
        raise _Refuse("the run of statements has more than one entry")
    entry = entries[0]
    for n in nodes:
        if n.kind in ("return", "raise", "jump", "def", "with"):
            what = {"return": "returns", "raise": "raises", "jump": "breaks or continues",
                    "def": "defines a function", "with": "enters a context manager"}[n.kind]
            raise _Refuse(f"the run of statements {what}")
        if n.kind == "test" and not isinstance(parents.get(id(n.node)), cst.If):
            raise _Refuse("the run of statements loops")
        if n.eff.rooted:
            raise _Refuse(f"it reaches {_role(min(n.eff.rooted))} through `p.grad` or optimizer "
                          "state inside the run; a strip view has neither")
        if n.eff.calls:
            raise _Refuse(f"it calls `{n.eff.calls[0][0]}`, which may do anything per call")
        if n.eff.escapes:
            raise _Refuse(f"a tensor escapes: {n.eff.escapes[0][1]}")
        if n.eff.weak:
            raise _Refuse(f"it appends to `{min(n.eff.weak)}` once per strip")
        if n.eff.persistent:
            raise _Refuse("a tensor it allocates is kept as optimizer state")
        used = set().union(*(names_in(x) for x in read_parts(n.node, unpack=True))) \
            if n.node is not None else set()
        if n.eff.foreign or any({OPAQUE, SHAPED} & n.pt_in.get(x, EMPTY) for x in used):
            raise _Refuse("it reads an object the analysis does not model (an attribute of "
                          "self, a global, a call's result): its shape is unknown")
    assigned = _assigned_before(nodes, entry, preds, inside)
    region_assigned = {k for n in nodes for k in n.eff.assigns}
    # names the run binds to strip-sized values (`mask = (u * g) > 0` too, which the buffer
    # analysis sees as no buffer): found by evaluating the run until no new one appears
    strip_names: set[str] = {k for n in nodes for k, v in n.eff.assigns.items() if buffers(v)}
    positions = _position_indices(nodes)
    sliced: dict[str, None] = {}
    items: dict[str, str] = {}
    checked: dict[int, _Checker] = {}
    while True:
        before = len(strip_names)
        sliced.clear()
        for n in nodes:
            checker = checked[id(n)] = _Checker(n.pt_in, cat, strip_names, positions)
            checker.statement(n)
            for xs, i in checker.items:
                if items.setdefault(xs, i) != i or xs in region_assigned or \
                        i in region_assigned:
                    raise _Refuse(f"`{xs}[{i}]`: the run changes the list or its index, or "
                                  "reads more than one item")
            for name in checker.loads:
                if name not in assigned[id(n)] and buffers(entry.pt_in.get(name, EMPTY)):
                    sliced[name] = None
        if len(strip_names) == before:
            break
    r.once, r.after = _run_once(r, nodes, checked, inside, fp, cat)
    for n in nodes:
        if n.line is not None and id(n.line) in r.once:
            continue  # runs in the first strip only: it sees what the original sees
        for name in checked[id(n)].loads:
            if name not in assigned[id(n)] and name in region_assigned and \
                    not buffers(entry.pt_in.get(name, EMPTY)):
                raise _Refuse(f"`{name}` is read before the run assigns it: each strip "
                              "would see the previous strip's value")
    exits = [m for n in nodes for m in n.succ if id(m) not in inside]
    late = _read_after(strip_names | region_assigned, exits, inside)
    if late is not None:
        raise _Refuse(f"`{late[0]}` is assigned inside the run and may be read after it", late[1])
    _check_loops(nodes, checked, strip_names, parents, preds)
    if set(items) & set(sliced):
        raise _Refuse(f"`{min(set(items) & set(sliced))}` is read both whole and by index")
    r.items = sorted(items.items())
    defined = _defined_at(fp, entry)
    for name in [*sliced, *items, *items.values()]:
        if name not in defined:
            raise _Refuse(f"`{name}` may be unbound where the run starts")
    if not sliced and not items:
        raise _Refuse("it reads no tensor that could be sliced")
    return sorted(sliced)


def _run_once(r: StripRegion, nodes: list[Node], checked: dict[int, _Checker],
              inside: set[int], fp: FunctionPlan, cat: OpCatalog) -> tuple[set[int], set[int]]:
    """(lines that run in the first strip only, top-level `del` lines moved after the run).

    A line that changes a host object (NAdam's `torch._foreach_mul_(mu_products, mus)`) must
    not run once per strip. When no such line also touches a strip, every line of the run that
    touches no strip runs in the first strip only, in its original place: the first strip sees
    what the original sees, and each later strip sees the host values the first one ended with.
    That is exact when no such line changes (rebinds, mutates or deletes) a name or object that
    a strip line or an `if` test read before it in the run; checked over the run's paths, with
    objects compared through a conservative alias relation of host names (`_host_aliases`).
    A top-level `del` of a host name a strip line reads (`del bias_correction`) moves after the
    run instead. Runs without such lines are left as they are (host lines re-run per strip)."""
    mutators = [n for n in nodes if checked[id(n)].mutated]
    if not mutators:
        return set(), set()
    lines: dict[int, list[Node]] = {}
    for n in nodes:
        if n.line is not None:
            lines.setdefault(id(n.line), []).append(n)
    once = {key for key, ns in lines.items() if not any(checked[id(n)].strip for n in ns)
            and not all(isinstance(n.node, cst.AnnAssign) and n.node.value is None for n in ns)}
    for n in mutators:
        if n.line is None or id(n.line) not in once:
            raise _Refuse(checked[id(n)].mutated[0][1])
    succ = {id(n): [m for m in n.succ if id(m) in inside] for n in nodes}
    top = {id(st) for st in r.block.body[r.start:r.end]}
    after = {key for key in once if key in top and all(
        isinstance(n.node, cst.Del) for n in lines[key])}
    for key in after:
        gone = {x for n in lines[key] for x in checked[id(n)].deleted}
        later = [m for n in lines[key] for m in _reachable(n, succ, nodes)]
        if any(gone & (set(m.eff.assigns) | set(checked[id(m)].loads)) for m in later):
            raise _Refuse(f"`{', '.join(sorted(gone))}` is deleted and bound again in the run")
    changers = [n for n in nodes if n.line is not None and id(n.line) in once - after]
    aliases = _host_aliases(fp.analysis.func, cat)
    for t in nodes:
        if t.kind in ("entry", "exit", "join") or (t.line is not None and id(t.line) in once):
            continue
        c = checked[id(t)]
        host_reads = {x for x in c.loads if x not in c.strip_names and
                      not buffers(t.pt_in.get(x, EMPTY))}
        if not host_reads:
            continue
        after_t = {id(m) for m in _reachable(t, succ, nodes)}
        for w in changers:
            if id(w) not in after_t:
                continue
            cw = checked[id(w)]
            hit = host_reads & (set(w.eff.assigns) | set(cw.deleted))
            objects = {root for root, _ in cw.mutated}
            hit |= {x for x in host_reads if aliases(x) & objects}
            if hit:
                raise _Refuse(f"`{_code(w.node).strip()}` changes `{min(hit)}` after the run "  # type: ignore[arg-type]
                              "read it: a later strip would see the changed value")
    return once - after, after


def _reachable(n: Node, succ: dict[int, list[Node]], nodes: list[Node]) -> list[Node]:
    """The nodes of the run that may execute after n in one pass (n too, if a loop returns)."""
    by_id = {id(m): m for m in nodes}
    seen: set[int] = set()
    todo = [id(m) for m in succ[id(n)]]
    while todo:
        k = todo.pop()
        if k not in seen:
            seen.add(k)
            todo += [id(m) for m in succ[k]]
    return [by_id[k] for k in seen]


def _host_aliases(func: cst.FunctionDef, cat: OpCatalog) -> Callable[[str], set[str]]:
    """May two names of `func` hold the same host object (or lists sharing items)? A
    flow-insensitive union over every binding: `a = b`, `a = [f(x) for x in b]`, `for a in b`
    join a and b; results that are always new objects (arithmetic other than `+`/`*`, torch
    ops that allocate, `float()`, out-of-place foreach) join nothing."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    def join(names: Iterable[str], sources: set[str]) -> None:
        for a in names:
            for b in sources:
                parent[find(a)] = find(b)

    class _V(cst.CSTVisitor):
        def visit_Assign(self, node: cst.Assign) -> None:
            names = [x for t in node.targets for x in _bound_names(t.target)]
            join(names, _alias_sources(node.value, cat) | set(names[:1]))  # `a = b = [..]`

        def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
            if node.value is not None:
                join(_bound_names(node.target), _alias_sources(node.value, cat))

        def visit_AugAssign(self, node: cst.AugAssign) -> None:
            join(_bound_names(node.target), _alias_sources(node.value, cat))

        def visit_For(self, node: cst.For) -> None:
            join(_bound_names(node.target), _alias_sources(node.iter, cat))

        def visit_NamedExpr(self, node: cst.NamedExpr) -> None:
            join(_bound_names(node.target), _alias_sources(node.value, cat))

    func.visit(_V())
    return lambda x: {y for y in [*parent, x] if find(y) == find(x)}


def _bound_names(t: cst.BaseExpression) -> list[str]:
    return [x.value for x in _flat_targets(t) if isinstance(x, cst.Name)]


_FRESH_BUILTINS = {"float", "int", "bool", "len", "isinstance", "str", "abs", "round", "range"}


def _alias_sources(e: cst.BaseExpression, cat: OpCatalog,
                   local: dict[str, set[str]] | None = None) -> set[str]:
    """Names whose objects the value of `e` (or its items) may be."""
    local = local or {}

    def each(es: Iterable[cst.BaseExpression]) -> set[str]:
        return set().union(*(_alias_sources(x, cat, local) for x in es))

    if isinstance(e, cst.Name):
        return local.get(e.value, {e.value})
    if isinstance(e, (cst.Attribute, cst.Subscript)):
        name = dotted(e) if isinstance(e, cst.Attribute) else None
        if name is not None and name.split(".")[0] in ("torch", "math"):
            return set()
        return _alias_sources(e.value, cat, local)
    if isinstance(e, cst.Call):
        name = dotted(e.func) or ""
        args = [a.value for a in e.args]
        fn = name[len("torch."):] if name.startswith("torch.") else None
        if fn is not None and (fn.startswith("_foreach_") or fn in cat.elementwise or
                               fn in cat.creation or fn == "tensor"):
            return set()  # a new tensor, a new list of new tensors, or None (in place)
        if name in _FRESH_BUILTINS:
            return set()
        if isinstance(e.func, cst.Attribute) and fn is None:
            m = e.func.attr.value
            if m in cat.elementwise or m in cat.creation or m in cat.reduce or \
                    m in cat.metadata:
                return set()
            return _alias_sources(e.func.value, cat, local) | each(args)
        known = cat.functions.get(name.rpartition(".")[2])
        if known is not None and known.effect in ("fresh", "metadata"):
            return set()
        if known is not None and known.effect == "alias" and known.arg < len(args):
            return _alias_sources(args[known.arg], cat, local)
        return each(args)
    if isinstance(e, cst.BinaryOperation):  # `+` and `*` of lists share their items
        return each([e.left, e.right]) if isinstance(e.operator, (cst.Add, cst.Multiply)) \
            else set()
    if isinstance(e, (cst.UnaryOperation, cst.Comparison, cst.SimpleString, cst.Integer,
                      cst.Float, cst.Imaginary, cst.FormattedString)):
        return set()
    if isinstance(e, (cst.ListComp, cst.GeneratorExp, cst.SetComp)):
        inner = dict(local)
        for f in _for_ins(e.for_in):
            src = _alias_sources(f.iter, cat, inner)
            for x in _bound_names(f.target):
                inner[x] = src
        return _alias_sources(e.elt, cat, inner)
    return each(c for c in e.children if isinstance(c, cst.BaseExpression))


def _position_indices(nodes: list[Node]) -> frozenset[str]:
    """Names that only loops of the run bind, to positions of lists: `i` of
    `for i in range(len(xs))` and of `for i, x in enumerate(xs)`."""
    found: set[str] = set()
    for n in nodes:
        if n.kind != "for" or not isinstance(n.node, cst.For):
            continue
        t, it = n.node.target, n.node.iter
        fn = dotted(it.func) if isinstance(it, cst.Call) else None
        if fn == "range" and isinstance(t, cst.Name) and isinstance(it, cst.Call) and \
                len(it.args) == 1 and isinstance(it.args[0].value, cst.Call) and \
                dotted(it.args[0].value.func) == "len":
            found.add(t.value)
        elif fn == "enumerate" and isinstance(t, cst.Tuple) and \
                isinstance(t.elements[0].value, cst.Name):
            found.add(t.elements[0].value.value)
    others = {k for n in nodes if n.kind != "for" for k in n.eff.assigns}
    return frozenset(found - others)


def _check_loops(nodes: list[Node], checked: dict[int, _Checker], strip_names: set[str],
                 parents: dict[int, cst.CSTNode], preds: dict[int, list[Node]]) -> None:
    """A loop in the run goes over list positions (`for x in xs`, `for i in range(len(xs))`);
    each strip runs it whole. Exact when no strip goes from one position to the next: the
    tensors of two positions may differ in shape, and so do their strips. Refused: nested
    loops, and strips bound in a loop body that are read before being bound again in the next
    iteration or after the loop."""
    heads = [n for n in nodes if n.kind == "for"]
    for head in heads:
        loop = head.node
        assert isinstance(loop, cst.For)
        body = [m for m in nodes if m is not head and m.kind not in ("join",) and
                _anchor(m) is not None and _contains(loop.body, _anchor(m))]  # type: ignore[arg-type]
        if any(m.kind == "for" for m in body):
            raise _Refuse("the run has a loop inside a loop")
        ids = {id(head)} | {id(m) for m in body}
        inner = {k: [q for q in preds[k] if id(q) in ids] for k in ids}
        bound = must_reach([head, *body], head, set(),
                           lambda q, names: names | set(q.eff.assigns), inner)
        in_body = {k for m in body for k in m.eff.assigns} & strip_names
        for m in body:
            carried = sorted(x for x in checked[id(m)].loads
                             if x in in_body and x not in bound[id(m)])
            if carried:
                raise _Refuse(f"`{carried[0]}` goes from one list position to the next in a "
                              "loop of the run")
        exits = [q for q in head.succ if id(q) not in ids]
        late = _read_after(in_body, exits, ids)
        if late is not None:
            raise _Refuse(f"`{late[0]}` is bound in a loop of the run and read after it")


def _item_of_list(e: cst.Subscript) -> tuple[str, str] | None:
    """`xs[i]` with plain names: (xs, i)."""
    if isinstance(e.value, cst.Name) and len(e.slice) == 1 and \
            isinstance(e.slice[0].slice, cst.Index) and \
            isinstance(e.slice[0].slice.value, cst.Name):
        return e.value.value, e.slice[0].slice.value.value
    return None


def _read_after(names: set[str], exits: Iterable[Node], inside: set[int]
                ) -> tuple[str, Node] | None:
    """A name of `names` that some path from the run's exits reads before rebinding it, and
    where."""
    for name in sorted(names):
        seen: set[int] = set()
        todo = list(exits)
        while todo:
            m = todo.pop()
            if id(m) in seen or id(m) in inside:
                continue
            seen.add(id(m))
            if name in _variables_read(m):
                return name, m
            if name not in m.eff.assigns:
                todo += m.succ
    return None


def _variables_read(n: Node) -> set[str]:
    """Variables the flow node reads: not attribute names (`g.sign()`), keywords, the names
    a statement only binds (`a, b = [], []`), or a loop's body."""
    if n.node is None:
        return set()
    return set().union(*(loaded_names(x) for x in read_parts(n.node, unpack=True)))


def _role(b: str) -> str:
    return "the gradient" if b == "grad" else "the parameter" if b == "param" else \
        f"state '{b[6:]}'" if b.startswith("state:") else b


def _assigned_before(nodes: list[Node], entry: Node, preds: dict[int, list[Node]],
                     inside: set[int]) -> dict[int, set[str]]:
    """Names assigned on every path from the run's entry to each node (before it runs)."""
    inner = {id(n): [q for q in preds[id(n)] if id(q) in inside] for n in nodes}
    return must_reach(nodes, entry, set(), lambda q, names: names | set(q.eff.assigns), inner)


def _defined_at(fp: FunctionPlan, entry: Node) -> set[str]:
    from gsr_rewrite.transform.plan import _must_defined

    return _must_defined(fp.analysis).get(id(entry), set())


class _Checker:
    """Abstract evaluation of one flow node: is each expression a tensor of the run (a strip)?

    Raises _Refuse at the first use that would differ between a strip and the whole tensor."""

    def __init__(self, pt: PointsTo, cat: OpCatalog, strip_names: set[str],
                 positions: frozenset[str] = frozenset()) -> None:
        self.pt = pt
        self.positions = positions  # `i` of `for i in range(len(xs))` in the run
        self.cat = cat
        self.strip_names = strip_names  # bound in the run to strip-sized values (grows)
        self.loads: list[str] = []
        self.items: list[tuple[str, str]] = []
        self.scope: list[dict[str, bool]] = []  # comprehension variables: tensor or not
        self.strip = False  # the statement reads or binds a strip value
        self.mutated: list[tuple[str, str]] = []  # host objects it changes: (root name, why)
        self.deleted: list[str] = []  # host names it unbinds

    def mutate(self, target: cst.BaseExpression, why: str) -> None:
        """The statement changes the host object under `target`: allowed only in a statement
        that touches no strip and runs once (in the first strip)."""
        root = _root_name(target)
        if root is None:
            raise _Refuse(why)
        self.mutated.append((root, why))

    def statement(self, n: Node) -> None:
        s = n.node
        if n.kind in ("latch", "join"):
            return
        if n.kind == "for":
            assert isinstance(s, cst.For)
            self.bind_loop(s.target, s.iter)
            return
        if n.kind == "test":
            assert isinstance(s, cst.BaseExpression)
            if self.expr(s):
                raise _Refuse("an `if` tests tensor contents")
            return
        if isinstance(s, cst.Assign):
            value = self.expr(s.value)
            for t in s.targets:
                self.target(t.target, value)
        elif isinstance(s, cst.AnnAssign):
            self.target(s.target, s.value is not None and self.expr(s.value))
        elif isinstance(s, cst.AugAssign):
            self.expr(s.value)
            if not (isinstance(s.target, cst.Name) and self.expr(s.target)):
                self.mutate(s.target, f"`{_code(s.target)} {_code(s.operator).strip()}` would "
                            "run once per strip")
        elif isinstance(s, cst.Expr):
            self.expr(s.value)
        elif isinstance(s, cst.Assert):
            if self.expr(s.test):
                raise _Refuse("an assert tests tensor contents")
        elif isinstance(s, cst.Del):
            for gone in _flat_targets(s.target):
                if not isinstance(gone, cst.Name):
                    raise _Refuse("`del` of an item or attribute")
                if not self.expr(gone):
                    self.deleted.append(gone.value)
        elif s is not None and not isinstance(s, cst.Pass):
            raise _Refuse(f"statement `{type(s).__name__}` is not supported in a strip")

    def target(self, t: cst.BaseExpression, tensor: bool) -> None:
        for x in _flat_targets(t):
            if not isinstance(x, cst.Name):
                base = x.value if isinstance(x, (cst.Subscript, cst.Attribute)) else None
                if isinstance(x, cst.Subscript) and not tensor and self.masked_fill(x):
                    continue
                if base is None or self.expr(base):
                    raise _Refuse(f"assigning `{_code(x)}` would run once per strip")
                self.mutate(x, f"assigning `{_code(x)}` would run once per strip")
                continue
            if tensor:
                self.strip_names.add(x.value)

    def bind_loop(self, target: cst.BaseExpression, it: cst.BaseExpression) -> None:
        """`for x in xs` binds a strip when xs is a list of strips; `zip` and `enumerate` keep
        what each position holds (an index of enumerate is a host int)."""
        fn = dotted(it.func) if isinstance(it, cst.Call) else None
        args = [a.value for a in it.args if a.keyword is None] if isinstance(it, cst.Call) \
            else []
        elements = [el.value for el in target.elements] \
            if isinstance(target, (cst.Tuple, cst.List)) else []
        if fn == "enumerate" and len(args) == 1 and len(elements) == 2:
            self.target(elements[0], False)
            self.bind_loop(elements[1], args[0])
        elif fn == "zip" and isinstance(it, cst.Call) and elements and \
                len(elements) == len(args) and \
                all(a.keyword is None or a.keyword.value == "strict" for a in it.args):
            for t, a in zip(elements, args, strict=True):
                self.bind_loop(t, a)
        else:
            self.target(target, self.expr(it))

    def masked_fill(self, x: cst.Subscript) -> bool:
        """`t[t.gt(0)] = c`: a strip tensor indexed by a comparison of strips, set to a host
        value: element by element (the mask has t's shape, strip for strip)."""
        if not (isinstance(x.value, cst.Name) and self.expr(x.value) and len(x.slice) == 1 and
                isinstance(x.slice[0].slice, cst.Index)):
            return False
        mask = x.slice[0].slice.value
        compares = isinstance(mask, cst.Comparison) or (
            isinstance(mask, cst.Call) and isinstance(mask.func, (cst.Attribute, cst.Name)) and
            (dotted(mask.func) or "").rpartition(".")[2] in _COMPARISONS)
        return compares and self.expr(mask)

    def name_is_tensor(self, name: str) -> bool:
        for frame in reversed(self.scope):
            if name in frame:
                return frame[name]
        self.loads.append(name)
        tensor = name in self.strip_names or bool(buffers(self.pt.get(name, EMPTY)))
        self.strip = self.strip or tensor
        return tensor

    def exprs(self, es: Iterable[cst.BaseExpression]) -> bool:
        return any([self.expr(e) for e in es])  # a list: evaluate every one

    def expr(self, e: cst.BaseExpression) -> bool:
        if isinstance(e, cst.Name):
            return self.name_is_tensor(e.value)
        if isinstance(e, cst.Attribute):
            if dotted(e) is not None and dotted(e).startswith("torch."):  # type: ignore[union-attr]
                return False
            base = self.expr(e.value)
            if base and e.attr.value not in _SAME_ON_STRIPS:
                raise _Refuse(f"`{_code(e)}` differs between a strip and its tensor")
            return base and e.attr.value in _TENSOR_ATTRIBUTES
        if isinstance(e, cst.Subscript):
            item = _item_of_list(e)
            if item is not None and "%list" in self.pt.get(item[0], EMPTY) and \
                    item[0] not in self.strip_names:
                if self.name_is_tensor(item[1]):
                    raise _Refuse(f"`{_code(e)}` indexes with a tensor")
                self.items.append(item)  # `xs[i]`: sliced as one tensor (runtime.at)
                self.strip = True
                return True
            idx = e.slice[0].slice.value if len(e.slice) == 1 and \
                isinstance(e.slice[0].slice, cst.Index) else None
            if isinstance(e.value, cst.Name) and isinstance(idx, cst.Name) and \
                    idx.value in self.positions and "%list" in self.pt.get(e.value.value, EMPTY) \
                    and self.expr(e.value):
                return True  # `xs[i]` in `for i in range(len(ys))`: one position, all lists
            if self.expr(e.value):
                raise _Refuse(f"`{_code(e)}` indexes a tensor or tensor list")
            for el in e.slice:
                if isinstance(el.slice, cst.Index) and self.expr(el.slice.value):
                    raise _Refuse(f"`{_code(e)}` indexes with a tensor")
            return False
        if isinstance(e, cst.Call):
            return self.call(e)
        if isinstance(e, cst.BinaryOperation):
            left, right = self.expr(e.left), self.expr(e.right)
            if (left or right) and isinstance(e.operator, cst.MatrixMultiply):
                raise _Refuse("a matrix product mixes elements")
            return left or right
        if isinstance(e, cst.UnaryOperation):
            v = self.expr(e.expression)
            if v and isinstance(e.operator, cst.Not):
                raise _Refuse("`not` of a tensor reads its contents")
            return v
        if isinstance(e, cst.Comparison):
            ident = all(isinstance(c.operator, (cst.Is, cst.IsNot)) for c in e.comparisons)
            vals = [self.expr(e.left), *[self.expr(c.comparator) for c in e.comparisons]]
            if any(vals) and len(e.comparisons) > 1:
                raise _Refuse("a chained comparison of tensors reads their contents")
            return any(vals) and not ident
        if isinstance(e, cst.BooleanOperation):
            if self.expr(e.left) or self.expr(e.right):
                raise _Refuse(f"`{_code(e.operator).strip()}` of a tensor reads its contents")
            return False
        if isinstance(e, cst.IfExp):
            if self.expr(e.test):
                raise _Refuse("a conditional expression tests tensor contents")
            return self.exprs([e.body, e.orelse])
        if isinstance(e, (cst.Tuple, cst.List)):
            return self.exprs(el.value for el in e.elements)
        if isinstance(e, (cst.ListComp, cst.GeneratorExp)):
            return self.comprehension(e)
        if isinstance(e, (cst.Lambda, cst.NamedExpr, cst.Dict, cst.Set, cst.DictComp,
                          cst.SetComp, cst.Await, cst.Yield)):
            raise _Refuse(f"`{type(e).__name__}` is not supported in a strip")
        for child in e.children:  # constants, f-strings
            if isinstance(child, cst.BaseExpression) and self.expr(child):
                raise _Refuse(f"`{_code(e)}` formats a tensor")
        return False

    def comprehension(self, e: cst.ListComp | cst.GeneratorExp) -> bool:
        frame: dict[str, bool] = {}
        f: cst.CompFor | None = e.for_in
        while f is not None:
            tensor = self.expr(f.iter)
            for x in _flat_targets(f.target):
                if not isinstance(x, cst.Name):
                    raise _Refuse("a comprehension assigns an item or attribute")
                frame[x.value] = tensor
            self.scope.append(frame)
            for cond in f.ifs:
                if self.expr(cond.test):
                    raise _Refuse("a comprehension filters on tensor contents")
            f = f.inner_for_in
        try:
            return self.expr(e.elt)
        finally:
            del self.scope[-len(_for_ins(e.for_in)):]

    def call(self, e: cst.Call) -> bool:
        name = dotted(e.func)
        args = [a.value for a in e.args]
        out_arg = next((a.value for a in e.args if a.keyword and a.keyword.value == "out"), None)
        if name is not None and name.startswith("torch."):
            fn = name[len("torch."):]
            tensors = [self.expr(a) for a in args]
            if out_arg is not None and not (isinstance(out_arg, cst.Name) and
                                            self.expr(out_arg)):
                raise _Refuse(f"`{name}(out=...)` writes outside the strip")
            if fn.startswith("_foreach_"):
                base = fn[len("_foreach_"):]
                if base.endswith("_") or fn in self.cat.inplace_kill:
                    if not (args and isinstance(args[0], cst.Name) and tensors[0]):
                        if any(tensors) or not args:
                            raise _Refuse(f"`{name}` updates `{_code(args[0])}` once per strip")
                        self.mutate(args[0], f"`{name}` updates `{_code(args[0])}` once per strip")
                        return False
                    base = base.rstrip("_")
                if base not in self.cat.elementwise and f"{base}_" not in self.cat.inplace_kill \
                        and fn not in self.cat.inplace_kill:
                    if any(tensors):
                        raise _Refuse(f"`{name}` is not per-element")
                    return False
                return any(tensors)
            if fn in ("is_complex", "is_floating_point", "is_tensor"):
                return False
            if fn in self.cat.elementwise or fn in self.cat.creation or fn in _STRIP_COMMUTING:
                return any(tensors)
            if any(tensors):
                raise _Refuse(f"`{name}` is not a per-element op")
            if fn.endswith("_"):
                if not args:
                    raise _Refuse(f"`{name}` would run once per strip")
                self.mutate(args[0], f"`{name}` would run once per strip")
            return False
        if isinstance(e.func, cst.Attribute) and (name is None or not self._is_module(name)):
            return self.method(e, e.func, args)
        tensors = [self.expr(a) for a in args]
        fn_name = name or ""
        if fn_name in _CONTAINER_CALLS:
            return any(tensors)
        if fn_name == "len":
            return False  # strips keep every list's length
        if fn_name in _HOST_OK_CALLS and not any(tensors):
            return False
        known = self.cat.functions.get(fn_name.rpartition(".")[2])
        if known is not None and known.effect == "alias" and known.arg < len(args):
            return tensors[known.arg]  # `cast(list[Tensor], xs)` is xs
        if known is not None and known.effect in ("fresh", "metadata") and not any(tensors):
            return False
        if any(tensors):
            raise _Refuse(f"`{fn_name or _code(e.func)}` is called on a tensor of the run")
        if fn_name in _HOST_OK_CALLS or fn_name.startswith("math."):
            return False
        raise _Refuse(f"`{fn_name or _code(e.func)}` may change state once per strip")

    def _is_module(self, name: str) -> bool:
        first = name.split(".")[0]
        return first in ("math", "torch", "typing") and first not in self.pt

    def method(self, e: cst.Call, func: cst.Attribute, args: list[cst.BaseExpression]) -> bool:
        m = func.attr.value
        recv = self.expr(func.value)
        tensors = [self.expr(a) for a in args]
        if not recv:
            if any(tensors):
                raise _Refuse(f"`.{m}()` of a host value takes a tensor of the run")
            if m in _MUTATING_METHODS or m.endswith("_"):
                self.mutate(func.value, f"`.{m}()` on `{_code(func.value)}` would run once per "
                            "strip")
            return False
        cat = self.cat
        if m in cat.elementwise or m in cat.creation or m in ("detach", "contiguous"):
            return True
        if m in cat.inplace_kill or (m.endswith("_") and (cat.inplace_base(m) is not None
                                                          or m[:-1] in cat.elementwise)):
            return True
        if m in _SAME_ON_STRIPS:
            return False
        raise _Refuse(f"`.{m}()` is not per-element")


def _flat_targets(t: cst.BaseExpression | cst.BaseDelTargetExpression) -> list[cst.BaseExpression]:
    if isinstance(t, (cst.Tuple, cst.List)):
        return [x for el in t.elements for x in _flat_targets(el.value)]
    if isinstance(t, cst.StarredElement):
        return _flat_targets(t.value)
    return [t]


def _root_name(e: cst.BaseExpression) -> str | None:
    """The variable an item or attribute chain starts from: `state` of `state["k"].x`."""
    base: cst.BaseExpression = e
    while isinstance(base, (cst.Subscript, cst.Attribute)):
        base = base.value
    return base.value if isinstance(base, cst.Name) else None


def _code(node: cst.CSTNode) -> str:
    return cst.Module([]).code_for_node(node)


# -- emission ---------------------------------------------------------------------------------
class StripRenamer(Renamer):
    """Inside a strip loop, the sliced variables are read through their strip views (keyword
    argument names stay)."""

    def leave_Arg(self, original: cst.Arg, updated: cst.Arg) -> cst.Arg:
        return updated.with_changes(keyword=original.keyword)


def wrap_region(r: StripRegion, originals: Sequence[cst.BaseStatement],
                body: Sequence[cst.BaseStatement], taken: set[str], runtime: str,
                flag: str = "") -> list[cst.BaseStatement]:
    """`for a_strip, b_strip in _gsr.strips(K, a, b): <body with a, b renamed>`; with `flag`
    (the run has lines that run once), `for flag, (a_strip, ...) in enumerate(...)`, and the
    `del` lines of r.after follow the loop. `originals[i]` is the source line of `body[i]`."""
    names = {v: fresh_name(f"{v}_strip", taken) for v in [*r.sliced, *(xs for xs, _ in r.items)]}
    renamer = StripRenamer(names)
    moved = [s for o, s in zip(originals, body, strict=True) if id(o) in r.after]
    kept = [(o, s) for o, s in zip(originals, body, strict=True) if id(o) not in r.after]
    renamed = [cast(cst.BaseStatement, s.visit(renamer)) for _, s in kept]
    inner = guard_once([o for o, _ in kept], renamed, dict.fromkeys(r.once, flag))
    lead = _take_leading_lines(inner)
    temps = ", ".join(sorted({p.alloc.op for p in r.temporaries}))
    args = [*r.sliced, *(f"{runtime}.at({xs}, {i})" for xs, i in r.items)]
    target = ", ".join(names.values()) if len(names) > 1 else f"({next(iter(names.values()))},)"
    strips = f"{runtime}.strips({r.strips}, {', '.join(args)})"
    loop = f"for {flag}, ({target}) in enumerate({strips})" if flag else \
        f"for {target} in {strips}"
    header = cst.parse_statement(f"{loop}:\n    pass\n")
    assert isinstance(header, cst.For)
    comment = cst.EmptyLine(comment=cst.Comment(
        f"# gsr-rewrite: strip-mined; the {temps} temporaries are 1/{r.strips} of their tensors"))
    return [header.with_changes(body=cst.IndentedBlock(inner), leading_lines=[*lead, comment]),
            *moved]


def fresh_name(base: str, taken: set[str]) -> str:
    """base, or base2, base3, ...: the first not in `taken` (which then holds it)."""
    new, k = base, 1
    while new in taken:
        k += 1
        new = f"{base}{k}"
    taken.add(new)
    return new


def guard_once(originals: Sequence[cst.BaseStatement], body: Sequence[cst.BaseStatement],
               once: dict[int, str]) -> list[cst.BaseStatement]:
    """body with each run of consecutive lines whose original is in `once` (id -> the strip
    counter of its loop) under `if counter == 0:`."""
    out: list[cst.BaseStatement] = []
    group: list[cst.BaseStatement] = []
    flag = ""

    def flush() -> None:
        if group:
            lead = _take_leading_lines(group)
            test = cst.parse_expression(f"{flag} == 0")
            note = cst.EmptyLine(comment=cst.Comment(
                "# gsr-rewrite: host statements, once per step: in the first strip"))
            out.append(cst.If(test=test, body=cst.IndentedBlock(list(group)),
                              leading_lines=[*lead, note]))
            group.clear()

    for o, s in zip(originals, body, strict=True):
        f = once.get(id(o), "")
        if not f or f != flag:
            flush()
        if f:
            group.append(s)
            flag = f
        else:
            out.append(s)
    flush()
    return out


def _take_leading_lines(stmts: list[cst.BaseStatement]) -> Sequence[cst.EmptyLine]:
    """The first statement's leading blank lines and comments, removed from it."""
    first = stmts[0]
    if not isinstance(first, (cst.SimpleStatementLine, cst.If)):
        return ()
    stmts[0] = first.with_changes(leading_lines=[])
    return first.leading_lines
