"""Stage 4, plan: give each temporary a dead buffer to live in, or say why none is free.

Candidates, in order: an operand that dies in this very op (an in-place chain), then dead
buffers named by a variable in scope: optimizer state first (Adan's previous gradient), then the
gradient, then storage of earlier temporaries. A buffer S may host temporary t when, at every
point where t is alive, no other contents of S are (liveness facts of S are allowed only through
variables that may themselves hold t, e.g. `grad = grad if ... else -grad`), nothing else writes
S, and within t's own statement S is read only by t's operands.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import libcst as cst

from gsr_rewrite.analysis.dataflow import Node, assigned_names, must_reach, preds_of
from gsr_rewrite.analysis.interprocedural import ClassAnalysis, FunctionAnalysis
from gsr_rewrite.analysis.transfer import RETURNED
from gsr_rewrite.frontend.catalog import OpCatalog
from gsr_rewrite.frontend.effects import OPAQUE, SHAPED, Alloc, buffers, flat, is_buffer, is_role
from gsr_rewrite.frontend.syntax import subtree_ids
from gsr_rewrite.frontend.values import is_structured
from gsr_rewrite.transform.options import Live, Options

#: where a caller's temporary lives, seen from a helper it is live across or passed to, when the
#: caller is not planned yet: its plan may put it in any buffer (the gradient, say)
ELSEWHERE = "?elsewhere"
#: why nothing in a `@torch.compile`d function is rewritten (analysis/decorators.py)
COMPILED = "inside a `@torch.compile`d function, whose memory Inductor plans: not rewritten"


@dataclass
class Placement:
    function: str
    alloc: Alloc
    node: Node
    storage: str | None = None  # buffer the result lives in; None: it still allocates
    form: str = ""  # inplace | swap | out | into | foreach_out | creation
    chain: int | None = None  # operand index whose buffer is reused
    host: cst.BaseExpression | None = None  # expression naming the host, when not chained
    reason: str = ""
    tensor_operands: list[bool] = field(default_factory=list)
    nested_operands: list[bool] = field(default_factory=list)
    strips: int = 0  # strip-mined (stripmine/): computed 1/strips of its tensors at a time
    condition: str = ""  # code of the options it holds under (options.py); "" always

    @property
    def placed(self) -> bool:
        return self.storage is not None


@dataclass
class FunctionPlan:
    name: str
    analysis: FunctionAnalysis
    placements: list[Placement] = field(default_factory=list)


class _FunctionPlanner:
    def __init__(self, fa: FunctionAnalysis, cat: OpCatalog, escaped: dict[str, str],
                 planned: dict[str, str], unplaceable: set[str], returned: set[str]) -> None:
        self.fa, self.cat, self.escaped = fa, cat, escaped
        self.storage: dict[str, str] = {}  # tmp site -> buffer holding it
        self.own = fa.sites
        self.planned = planned  # the other functions' temporaries planned so far -> storage
        self.unplaceable = unplaceable  # temporaries of any function apart from all else
        self.returned = returned  # temporaries whose only escape is being returned
        self.persistent = {b for n in fa.flow.nodes for b in n.eff.persistent}
        self.defined = _must_defined(fa)
        # per-element loops and the names each binds: inside one, a name bound outside it holds
        # other parameters' buffers (or all of them), never a host for this iteration
        self.loops = [(n.node, assigned_names(n.node)) for n in fa.flow.nodes
                      if n.kind == "latch" and n.per_element and isinstance(n.node, cst.For)]
        self.options = Options(fa)
        self.conditional: dict[str, Live] = {}  # tmp site -> liveness of the paths it is placed

    def storage_of(self, b: str, at: Node) -> str:
        """The buffer b's contents live in, seen from node `at`: a temporary placed only under
        options (options.py) that rule `at` out is in its own storage there. (Where `at` is on
        paths both ways, the placed storage: its checks then count b's own facts as its.)"""
        if is_buffer(b) and not is_role(b) and b not in self.own:
            return self.planned.get(b, b if b in self.unplaceable else ELSEWHERE)
        if b in self.conditional and id(at) not in self.conditional[b]:
            return b
        return self.storage.get(b, b)

    def _fresh(self, s: str) -> bool:
        """Is s a temporary of this function's own, made by this call and kept nowhere?"""
        return s in self.own and s not in self.unplaceable

    def _holds(self, b: str, at: Node, s: str) -> bool:
        """May b's contents be in s, seen from `at`?"""
        return self.storage_of(b, at) in (s, ELSEWHERE)

    def plan(self) -> FunctionPlan:
        out = FunctionPlan(self.fa.name, self.fa)
        for n in self.fa.flow.nodes:
            allocs = n.eff.allocs
            if not allocs:
                continue
            single = n.line is not None and len(n.line.body) == 1
            busy: set[str] = set()
            sites = {id(a.node): a for a in allocs}
            for a in allocs:
                p = Placement(self.fa.name, a, n)
                out.placements.append(p)
                if a.in_comprehension or a.site in self.persistent:
                    p.reason = "inside a comprehension" if a.in_comprehension else "kept as state"
                    continue
                if self.fa.compiled:
                    p.reason = COMPILED
                    continue
                if not single:
                    p.reason = "not a statement of its own line"
                    continue
                self._place(p, sites, busy)
                if p.placed:
                    self.storage[a.site] = p.storage  # type: ignore[assignment]
                for op in a.operands:  # consumed nested temporaries free their buffers
                    inner = sites.get(id(op))
                    if inner is not None:
                        busy.discard(self.storage_of(inner.site, n))
                busy.add(self.storage_of(a.site, n))
        return out

    def _place(self, p: Placement, sites: dict[int, Alloc], busy: set[str]) -> None:
        a, n = p.alloc, p.node
        p.nested_operands = [id(op) in sites for op in a.operands]
        p.tensor_operands = [id(op) in sites or bool(buffers(_value_at(n, op)))
                             or bool({OPAQUE, SHAPED} & flat(_value_at(n, op)))
                             for op in a.operands]
        escapes = a.site in self.escaped
        if escapes and a.site not in self.returned:  # kept somewhere: it must own its storage
            p.reason = f"the temporary escapes: {self.escaped[a.site]}"
            return
        if not _emittable(a):
            p.reason = ("its form cannot be computed into a buffer exactly (`x.where(c, y)`, "
                        "a creation op with keyword arguments)")
            return
        why: list[str] = []
        for k, op in enumerate(a.operands):  # 1. in-place chains on dying operands
            inner = sites.get(id(op))
            vals = {self.storage_of(inner.site, n)} if inner else \
                {self.storage_of(b, n) for b in buffers(_value_at(n, op))}
            if len(vals) != 1 or ELSEWHERE in vals:
                continue
            s = vals.pop()
            if escapes and not self._fresh(s):
                continue
            form = self._chain_form(a, k, nested=inner is not None, op=op)
            if form and self._free(s, a, n, busy - ({s} if inner else set()), why):
                p.storage, p.chain, p.form = s, k, form
                p.reason = f"in place on operand {k + 1}, which dies here"
                return
        if escapes:  # returned: only the storage of a dying temporary of its own is as new
            p.reason = f"the temporary escapes: {self.escaped[a.site]}"
            return
        hosts = [(s, host, self._host_form(a, s, n))
                 for s, host in self._dead_hosts(n, a.form == "foreach")]
        for s, host, form in hosts:  # 2. dead named buffers
            if form and s not in busy and self._free(s, a, n, busy, why):
                p.storage, p.host, p.form = s, host, form
                p.reason = f"in `{_code(host)}` ({_describe(s)}), dead here"
                return
        for s, host, form in hosts:  # 3. ... dead when an option is off (options.py)
            if not form or s in busy or s in self.escaped or s == "param":
                continue
            def fits(live: Live, s: str = s) -> bool:
                return self._free(s, a, n, busy, [], live)

            found = self.options.freeing(fits)
            if found is not None:
                p.storage, p.host, p.form, p.condition = s, host, form, found[1]
                self.conditional[a.site] = found[0]
                p.reason = f"in `{_code(host)}` ({_describe(s)}), dead here when " \
                    f"`{found[1]}`"
                return
        p.reason = "; ".join(dict.fromkeys(why)) if why else \
            "no dead buffer of this size is named at this point"

    # -- forms ---------------------------------------------------------------------------
    def _chain_form(self, a: Alloc, k: int, nested: bool, op: cst.BaseExpression) -> str:
        spec = self.cat.elementwise.get(a.op)
        if a.form in ("creation", "method") and a.op in self.cat.creation:
            return "creation" if a.op == "clone" and k == 0 else ""
        if spec is None:
            return ""
        if a.form == "foreach":
            if not spec.foreach:
                return ""
            if k == 0:
                return "inplace"
            if k == 1 and spec.commutative and _plain_binary(a):
                return "swap"
            return "foreach_out" if spec.out and isinstance(op, cst.Name) and \
                len(a.operands) <= spec.arity else ""
        if k == 0 and spec.inplace and a.form in ("method", "function", "operator"):
            return "inplace"
        if k == 1 and a.form == "operator" and spec.commutative and spec.inplace:
            return "swap"
        return "out" if spec.out and isinstance(op, cst.Name) else ""

    def _host_form(self, a: Alloc, s: str, n: Node) -> str:
        if a.op in self.cat.creation:
            return "creation" if a.form in ("creation", "method") else ""
        spec = self.cat.elementwise.get(a.op)
        if spec is None:
            return ""
        if a.form != "foreach":
            return "out" if spec.out else ""
        if not spec.foreach:
            return ""
        reads_host = any(self._holds(b, n, s) and not _within(e, a.operands[0])
                         for _, b, e in n.eff.reads)
        if not reads_host:
            return "into"
        return "foreach_out" if spec.out and len(a.operands) <= spec.arity else ""

    # -- legality ------------------------------------------------------------------------
    def _free(self, s: str, a: Alloc, n: Node, busy: set[str], why: list[str],
              live: Live | None = None) -> bool:
        """May s hold a's result at n? `live`: live_out by node id, where only some paths are
        taken (options.py); the solved liveness when None."""
        if live is not None and id(n) not in live:
            return False  # the options rule out the statement itself
        if s == "param" or s in self.escaped:
            why.append(f"{_describe(s)} escapes: {self.escaped[s]}" if s in self.escaped
                       else "params stay live")
            return False
        if s in busy:
            why.append(f"{_describe(s)} already holds another temporary of this statement")
            return False
        subtree = subtree_ids(a.node)
        for _, b, e in n.eff.reads:
            if self._holds(b, n, s) and id(e) not in subtree:
                why.append(f"{_describe(s)} is read elsewhere in this statement")
                return False
        local_sites = {x.site for x in n.eff.allocs}
        for _, b in n.eff.writes:
            if b not in local_sites and self._holds(b, n, s):
                why.append(f"{_describe(s)} is written in this statement")
                return False
        for m in self.fa.flow.nodes:
            if live is not None and id(m) not in live:
                continue  # on a path the options rule out
            live_out = m.live_out if live is None else live[id(m)]
            alive = any(b == a.site for _, b in live_out)
            if m is not n and not alive:
                continue
            pt = m.pt_out()
            holders = {var for var, b in live_out if b == a.site}
            # a variable that holds either this temporary or b, never both, may keep b
            needed = [var for var, b in live_out if self._holds(b, n, s) and b != a.site
                      and not (a.site in buffers(pt.get(var, frozenset())) and holders <= {var})]
            if needed:  # the first name in order: reports do not depend on set order
                why.append(f"{_describe(s)} is still needed (through `{min(needed).lstrip('@')}`)")
                return False
            if m is not n:
                for var, b in m.eff.writes:
                    if self._holds(b, n, s) and \
                            a.site not in buffers(m.pt_in.get(var, frozenset())):
                        why.append(f"{_describe(s)} is written while the temporary is alive")
                        return False
                if any(self._holds(b, n, s) for b in m.eff.kills):
                    why.append(f"{_describe(s)} is overwritten while the temporary is alive")
                    return False
        return True

    def _dead_hosts(self, n: Node, lists: bool) -> list[tuple[str, cst.BaseExpression]]:
        by_storage: dict[str, str] = {}
        bound_here = [names for loop, names in self.loops
                      if n.node is not None and _within(n.node, loop)]
        defined = {v for v in self.defined.get(id(n), set())
                   if all(v in names for names in bound_here)}
        # prefer the variable that names the buffer itself (`prev_grads`) over aliases (`diffs`)
        for var, v in sorted(n.pt_in.items(), key=lambda kv: (not is_role_only(kv[1]), kv[0])):
            bufs = {self.storage_of(b, n) for b in buffers(v)}
            if ("%list" in v) != lists or is_structured(v):  # a tuple is no host
                continue
            if len(bufs) == 1 and var in defined and ELSEWHERE not in bufs:
                by_storage.setdefault(bufs.pop(), var)
        hosts: dict[str, cst.BaseExpression] = {s: cst.Name(v) for s, v in by_storage.items()}
        if not lists and "grad" not in hosts:  # `p.grad` names this parameter's gradient
            for var, v in sorted(n.pt_in.items()):
                if v == frozenset({"param"}) and var in defined:
                    hosts["grad"] = cst.Attribute(cst.Name(var), cst.Name("grad"))
                    break
        order = sorted(hosts, key=lambda s: (0 if s.startswith("state:") else
                                             1 if s == "grad" else 2, s))
        return [(s, hosts[s]) for s in order if s != "param"]


def _code(node: cst.CSTNode) -> str:
    return cst.Module([]).code_for_node(node)


def is_role_only(v: frozenset[str]) -> bool:
    bufs = buffers(v)
    return bool(bufs) and all(is_role(b) for b in bufs)


def _emittable(a: Alloc) -> bool:
    """Forms emit.py rewrites exactly: not the method form of `where` (its receiver is the
    second operand of torch.where), not a creation op given dtype=, device=, fill_value=, ...
    (the host would keep its own dtype)."""
    if a.op == "where" and a.form == "method":
        return False
    if a.op.endswith(("_like", "clone")) or a.form == "creation":
        return not (isinstance(a.node, cst.Call) and any(
            x.keyword is not None and x.keyword.value != "memory_format" for x in a.node.args))
    return True


def _plain_binary(a: Alloc) -> bool:
    node = a.node
    if isinstance(node, cst.Call):
        return len(node.args) == 2 and all(x.keyword is None for x in node.args)
    return True


def _value_at(n: Node, op: cst.BaseExpression) -> frozenset[str]:
    if isinstance(op, cst.Name):
        return n.pt_in.get(op.value, frozenset())
    reads = [b for _, b, e in n.eff.reads if e is op]
    return frozenset(reads)


def _within(e: cst.CSTNode, root: cst.CSTNode) -> bool:
    return id(e) in subtree_ids(root)


def _describe(s: str) -> str:
    if s == "grad":
        return "the gradient buffer"
    if s.startswith("state:"):
        return f"state buffer '{s[6:]}'"
    return f"the buffer of temporary {s}" if not is_role(s) else s


def _must_defined(fa: FunctionAnalysis) -> dict[int, set[str]]:
    """Names definitely bound before each node in the current loop iteration."""
    flow = fa.flow
    params = {p.name.value for p in (*fa.func.params.posonly_params, *fa.func.params.params,
                                      *fa.func.params.kwonly_params)}
    return must_reach(flow.nodes, flow.entry, params, _def_out, preds_of(flow.nodes))


def _def_out(n: Node, din: set[str]) -> set[str]:
    out = din | set(n.eff.assigns)
    if n.kind == "latch" and isinstance(n.node, cst.For):
        out -= assigned_names(n.node)  # the next iteration starts without this one's names
    return out


def plan_class(ca: ClassAnalysis, cat: OpCatalog) -> list[FunctionPlan]:
    escaped: dict[str, str] = {}
    for b, why, where in ca.escapes:
        escaped.setdefault(b, f"{why} ({where})")
    # a temporary whose only escape is being returned may take over the storage of a dying
    # temporary its function made (as new); any other escaping one, and state kept, own theirs.
    # Seen from another function, neither shares storage with anything it can name.
    returned = set(escaped) - {b for b, why, _ in ca.escapes if why != RETURNED}
    unplaceable = set(escaped) | {b for fa in ca.functions.values() for n in fa.flow.nodes
                                  for b in n.eff.persistent}
    planned: dict[str, str] = {}
    plans = []
    for fa in ca.functions.values():  # step first: callers are mostly planned before callees
        planner = _FunctionPlanner(fa, cat, escaped, planned, unplaceable, returned)
        plans.append(planner.plan())
        planned.update({site: planner.storage.get(site, site) for site in planner.own})
    return plans
