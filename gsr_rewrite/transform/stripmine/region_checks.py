"""What a run of statements may do to be strip-mined, checked over the whole region: one
entry, no return/raise/loop other than over list positions, statements `_Checker` accepts,
host lines that change objects run once (in the first strip), nothing read before the run
assigns it, nothing assigned in it read after it. `_check_region` returns the variables to
slice or raises `_Refuse`."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from collections.abc import Set as AbstractSet

import libcst as cst

from gsr_rewrite.analysis.dataflow import Node, must_reach, preds_of, read_parts
from gsr_rewrite.frontend.catalog import OpCatalog
from gsr_rewrite.frontend.effects import (
    EMPTY,
    OPAQUE,
    SHAPED,
    UNNAMED_STATE,
    buffers,
    dotted,
    names_in,
)
from gsr_rewrite.frontend.scopes import loaded_names
from gsr_rewrite.transform.plan import FunctionPlan
from gsr_rewrite.transform.stripmine.aliases import _host_aliases
from gsr_rewrite.transform.stripmine.checker import _Checker, _code
from gsr_rewrite.transform.stripmine.chunks import chunk_blocker
from gsr_rewrite.transform.stripmine.hoist import hoisted_reads, is_placeholder
from gsr_rewrite.transform.stripmine.raising import raises_unchanged, unbound_read_raises
from gsr_rewrite.transform.stripmine.region import (
    StripRegion,
    _anchor,
    _contains,
    _Refuse,
    _region_nodes,
)


def _check_region(r: StripRegion, fp: FunctionPlan, cat: OpCatalog,
                  parents: dict[int, cst.CSTNode],
                  helpers: Collection[str] = frozenset(),
                  closures: Mapping[str, tuple[str, ...]] | None = None,
                  chunked: AbstractSet[str] = frozenset()) -> list[str]:
    """The variables to slice, or _Refuse with the first thing that is not per-element.
    `helpers`: those the run may call once per strip (helpers.py), by the analysis's names;
    `closures`: the nested ones among them, by the name the function calls them, with the
    variables each reads; `chunked`: those a run over chunks may call (helpers.position_wise)."""
    fa = fp.analysis
    _check_enclosing(r.block, parents)
    nodes = _region_nodes(r, fa.flow.nodes, parents)
    inside = {id(n) for n in nodes}
    preds = preds_of(fa.flow.nodes)
    entries = [n for n in nodes if any(id(q) not in inside for q in preds[id(n)])]
    if len(entries) != 1:
        raise _Refuse("the run of statements has more than one entry")
    entry = entries[0]
    # raising paths: allowed where they raise before the run changes anything (raising.py)
    raising = [n for n in nodes if isinstance(n.node, cst.Assert) or (
        n.kind == "raise" and all(m is fa.flow.exit for m in n.succ))]
    for n in nodes:
        if n.kind in ("return", "raise", "jump", "def", "with") and n not in raising:
            what = {"return": "returns", "raise": "raises", "jump": "breaks or continues",
                    "def": "defines a function", "with": "enters a context manager"}[n.kind]
            raise _Refuse(f"the run of statements {what}")
        if n.kind == "test" and not isinstance(parents.get(id(n.node)), cst.If):
            raise _Refuse("the run of statements loops")
        unknown = [c[0] for c in n.eff.calls if c[0] not in helpers]
        if unknown:
            raise _Refuse(f"it calls `{unknown[0]}`, which may do anything per call")
        if n.eff.escapes:
            raise _Refuse(f"a tensor escapes: {n.eff.escapes[0][1]}")
        if n.eff.weak:
            raise _Refuse(f"it appends to `{min(n.eff.weak)}` once per strip")
        if n.eff.persistent:
            raise _Refuse("a tensor it allocates is kept as optimizer state")
        if reads_unmodelled(n):
            raise _Refuse("it reads an object the analysis does not model (an attribute of "
                          "self, a global, a call's result): its shape is unknown")
    # `p.grad` and `state["k"]` read in the run: read once before it, into names it slices
    hoisted, roots = hoisted_reads(nodes, {id(st) for st in r.block.body[r.start:r.end]})
    assigned = _assigned_before(nodes, entry, preds, inside)
    region_assigned = {k for n in nodes for k in n.eff.assigns}
    if roots & region_assigned:
        raise _Refuse(f"the run reads `{min(hoisted)}` and rebinds "
                      f"`{min(roots & region_assigned)}`")
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
            checker = checked[id(n)] = _Checker(n.pt_in, cat, strip_names, positions, hoisted,
                                                   helpers, closures)
            checker.statement(n)
            for xs, i in checker.items:
                if items.setdefault(xs, i) != i or xs in region_assigned or \
                        i in region_assigned:
                    raise _Refuse(f"`{xs}[{i}]`: the run changes the list or its index, or "
                                  "reads more than one item")
            for name in checker.loads:
                if name not in assigned[id(n)] and (is_placeholder(name) or
                                                    buffers(entry.pt_in.get(name, EMPTY))):
                    sliced[name] = None
        if len(strip_names) == before:
            break
    changed = {root for c in checked.values() for root, _ in c.mutated} | \
        {x for c in checked.values() for x in c.deleted}
    if roots & changed:
        raise _Refuse(f"the run reads `{min(hoisted)}` and changes `{min(roots & changed)}`")
    r.once, r.after = _run_once(r, nodes, checked, inside, fp, cat)
    for n in raising:
        if not raises_unchanged(n, inside, preds, checked):
            raise _Refuse("the run of statements raises after it writes" if n.kind == "raise"
                          else "an assert of the run follows a write")
    defined = _defined_at(fp, entry)
    once_assigned = {k for n in nodes if n.line is not None and id(n.line) in r.once
                     for k in n.eff.assigns}
    r.restored = set()
    for n in nodes:
        if n.line is not None and id(n.line) in r.once:
            continue  # runs in the first strip only: it sees what the original sees
        for name in checked[id(n)].loads:
            if name not in assigned[id(n)] and name in region_assigned and \
                    not buffers(entry.pt_in.get(name, EMPTY)) and not unbound_read_raises(
                        name, n, entry, inside, preds, checked, fa.func):
                if name not in defined or name in once_assigned:
                    raise _Refuse(f"`{name}` is read before the run assigns it: each strip "
                                  "would see the previous strip's value")
                r.restored.add(name)  # each strip starts from the value the run starts with
    exits = [m for n in nodes for m in n.succ if id(m) not in inside]
    late = _read_after(strip_names | region_assigned, exits, inside)
    if late is not None:
        raise _Refuse(f"`{late[0]}` is assigned inside the run and may be read after it", late[1])
    _check_loops(nodes, checked, strip_names, parents, preds)
    if set(items) & set(sliced):
        raise _Refuse(f"`{min(set(items) & set(sliced))}` is read both whole and by index")
    r.items = sorted(items.items())
    # a nested function reads its tensors by name: bound to the strips while the run runs
    r.rebound = {v for c in checked.values() for v in c.closure_reads if v in sliced}
    if r.rebound & region_assigned:
        raise _Refuse(f"`{min(r.rebound & region_assigned)}`, which a nested function it calls "
                      "reads, is assigned in the run")
    for name in [*(x for x in sliced if not is_placeholder(x)), *roots, *items, *items.values()]:
        if name not in defined:
            raise _Refuse(f"`{name}` may be unbound where the run starts")
    if not sliced and not items:
        raise _Refuse("it reads no tensor that could be sliced")
    why, r.strip_values = chunk_blocker(nodes, sliced, bool(items), chunked)
    r.chunk_calls = frozenset(chunked)
    r.chunks = why is None and not hoisted  # chunk_blocker reads names, not hoisted reads
    return sorted(sliced)


def reads_unmodelled(n: Node) -> bool:
    """The node reads an object the analysis does not model, which may be a whole tensor of
    any shape: a variable bound to one, a module global (not a variable of the function: seen
    as a read of the opaque roles, `Unknowns.roles`), `state[key]` under a key it cannot name,
    or buffers of other parameters."""
    used = set().union(*(names_in(x) for x in read_parts(n.node, unpack=True))) \
        if n.node is not None else set()
    return bool(n.eff.foreign) or any({OPAQUE, SHAPED} & n.pt_in.get(x, EMPTY) for x in used) \
        or any(var == "@expr" and b == UNNAMED_STATE for var, b, _ in n.eff.reads)


#: context managers that never swallow an exception (the rest may: `contextlib.suppress`)
_TRANSPARENT_CONTEXTS = frozenset({
    "torch.no_grad", "torch.enable_grad", "torch.inference_mode", "torch.set_grad_enabled",
    "torch.autograd.no_grad", "torch.autograd.enable_grad", "torch.autocast",
    "torch.profiler.record_function", "torch.autograd.profiler.record_function"})


def _check_enclosing(block: cst.CSTNode, parents: dict[int, cst.CSTNode]) -> None:
    """_Refuse a run inside a `try` with handlers or a `with` that may swallow an exception: a
    strip that raises midway leaves the earlier strips written, where the original's whole-tensor
    op raised before writing; caught, the step would go on from a state the original never has."""
    node = parents.get(id(block))
    while node is not None and not isinstance(node, cst.FunctionDef):
        if isinstance(node, (cst.Try, cst.TryStar)) and node.handlers:
            raise _Refuse("it sits in a `try` with `except`: an exception in a later strip would "
                          "be caught after earlier strips were written")
        if isinstance(node, cst.With):
            for item in node.items:
                call = item.item
                name = dotted(call.func) if isinstance(call, cst.Call) else None
                if name not in _TRANSPARENT_CONTEXTS:
                    raise _Refuse(f"it sits in `with {_code(call)}`, which may swallow an "
                                  "exception raised after earlier strips were written")
        node = parents.get(id(node))


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
                      not is_placeholder(x) and not buffers(t.pt_in.get(x, EMPTY))}
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


def _assigned_before(nodes: list[Node], entry: Node, preds: dict[int, list[Node]],
                     inside: set[int]) -> dict[int, set[str]]:
    """Names assigned on every path from the run's entry to each node (before it runs)."""
    inner = {id(n): [q for q in preds[id(n)] if id(q) in inside] for n in nodes}
    return must_reach(nodes, entry, set(), lambda q, names: names | set(q.eff.assigns), inner)


def _defined_at(fp: FunctionPlan, entry: Node) -> set[str]:
    from gsr_rewrite.transform.plan import _must_defined

    return _must_defined(fp.analysis).get(id(entry), set())
