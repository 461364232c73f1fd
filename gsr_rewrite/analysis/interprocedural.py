"""Stage 3, analyse: points-to, escapes and liveness over `step` and every helper it reaches.

`step` is solved first; each helper is then solved with what its call sites pass in (entry
points-to) and with what the callers still need after the call (exit liveness). Escapes found in
any of them apply to the whole class: a gradient that escapes anywhere is never used as scratch.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import libcst as cst

from gsr_rewrite.analysis.dataflow import (
    Fact,
    FunctionFlow,
    Node,
    PointsTo,
    build_flow,
    solve_liveness,
    solve_points_to,
)
from gsr_rewrite.analysis.decorators import decorator_kind
from gsr_rewrite.analysis.local_dicts import local_dicts
from gsr_rewrite.analysis.local_lists import declared_outer, local_lists
from gsr_rewrite.analysis.transfer import RETURNED
from gsr_rewrite.analysis.unknowns import (
    ForeignModules,
    class_unknowns,
    opaque_globals,
    param_names,
)
from gsr_rewrite.errors import AnalysisLimit
from gsr_rewrite.frontend.catalog import OpCatalog
from gsr_rewrite.frontend.closures import Closures
from gsr_rewrite.frontend.effects import (
    EMPTY,
    OPAQUE,
    Evaluator,
    Value,
    buffers,
    is_role,
    scalar_state_keys,
)
from gsr_rewrite.frontend.locate import OptimizerClass, SourceModule
from gsr_rewrite.frontend.scopes import bound_names, star_params, why_not_followed
from gsr_rewrite.frontend.self_helpers import (
    IMPLICIT_DUNDERS,
    bound_self_helpers,
    checkable_rebound_methods,
    first_handing_self_away,
    implicit_self_use,
    self_attr_targets,
    self_bound_methods,
)
from gsr_rewrite.frontend.syntax import subtree_ids
from gsr_rewrite.frontend.values import structured
from gsr_rewrite.runtime.step import ATTRIBUTE_HOOKS


@dataclass
class FunctionAnalysis:
    name: str
    func: cst.FunctionDef
    is_method: bool
    flow: FunctionFlow
    entry_pt: PointsTo = field(default_factory=dict)
    exit_live: frozenset[Fact] = frozenset()
    free: tuple[str, ...] = ()  # a nested function: the caller's variables it reads
    parent: str | None = None  # a nested function: the function whose body defines it
    #: decorated by `torch.compile`: analysed, never rewritten (analysis/decorators.py)
    compiled: bool = False

    @functools.cached_property
    def sites(self) -> frozenset[str]:
        """The temporaries its own statements allocate (set once its flow is solved)."""
        return frozenset(a.site for n in self.flow.nodes for a in n.eff.allocs)


@dataclass
class ClassAnalysis:
    cls: OptimizerClass
    functions: dict[str, FunctionAnalysis]  # step first, then helpers in call order
    escapes: list[tuple[str, str, str]]  # (buffer, reason, file:line:col)
    self_helpers: dict[str, str] = field(default_factory=dict)  # self.ATTR -> module function
    #: followed functions imported from other modules -> the module that defines each
    imported: dict[str, SourceModule] = field(default_factory=dict)
    #: self.ATTR taken for data that the R step checks at its start (checked_data.py)
    checked_data: frozenset[str] = frozenset()
    #: self.ATTR the step reads: the R step runs only while none is a descriptor of the class
    class_attrs: frozenset[str] = frozenset()
    #: state keys taken for host scalars (host_scalars.py): the R step runs only while each
    #: holds a number or a one-element tensor
    scalar_state: frozenset[str] = frozenset()


class _Sites(Mapping[cst.CSTNode, str]):
    """Maps an allocating expression to its buffer name, tmp@LINE:COL (names made on demand)."""

    def __init__(self, src: SourceModule) -> None:
        self.src = src
        self.names: dict[int, str] = {}
        self.taken: set[str] = set()

    def __getitem__(self, node: cst.CSTNode) -> str:
        if id(node) not in self.names:
            line, col = self.src.position(node)
            name, k = f"tmp@{line}:{col + 1}", 1
            while name in self.taken:  # nested nodes may start at the same column
                k += 1
                name = f"tmp@{line}:{col + 1}#{k}"
            self.taken.add(name)
            self.names[id(node)] = name
        return self.names[id(node)]

    def __iter__(self) -> Iterator[cst.CSTNode]:
        return iter(())

    def __len__(self) -> int:
        return len(self.names)


def analyse_class(src: SourceModule, cls: OptimizerClass, catalog: OpCatalog) -> ClassAnalysis:
    """`src`: the module whose source defines `step` (locate.class_view); methods the class
    inherits from other modules are analysed with their own module's names
    (`unknowns.ForeignModules`)."""
    helpers = set(src.functions) | set(src.imported)
    # self.m(...) runs method m, unless some method also binds self.m to something else
    # (or, where no code the step can run binds it: the R step checks that the object does not)
    checkable = checkable_rebound_methods(src, cls)
    methods = {m for m in cls.methods if m != "step"} - (self_bound_methods(cls) - checkable)
    sites = _Sites(src)
    every = [src.module, *(m.module for m in src.others)]
    combined = every[0] if len(every) == 1 else cst.Module([s for m in every for s in m.body])
    scalar_keys = scalar_state_keys(combined)
    appends: dict[str, tuple[list[str], dict[str, Value]]] = {}  # out-parameter lists
    funcs: dict[str, FunctionAnalysis] = {}
    closures = Closures()
    foreign = ForeignModules(src, cls)
    init = cls.methods.get("__init__")
    if init is not None and foreign.of(init) is not None:  # its names are another module's
        self_helpers: dict[str, str] = {}
        unfollowed = {a: "bound by `__init__` of another module" for a, _ in
                      self_attr_targets(init)}
    else:
        self_helpers, unfollowed = bound_self_helpers(src, cls)
    enclosing: dict[str, frozenset[str]] = {}  # names the functions around a nested one bind

    def add(name: str, func: cst.FunctionDef, is_method: bool) -> FunctionAnalysis:
        nested = closures.by_key.get(name)
        fa = FunctionAnalysis(name, func, is_method, build_flow(func, src.where),
                              free=nested.free if nested else (),
                              parent=nested.parent if nested else None)
        kwargs = func.params.star_kwarg  # filled by no followed call: an empty dict, whose
        if isinstance(kwargs, cst.Param):  # uses are assumed the worst of (`*args`: the tuple
            fa.entry_pt[kwargs.name.value] = frozenset({OPAQUE})  # of what calls give, _bind)
        outer = enclosing.get(nested.parent, frozenset()) if nested else frozenset()
        enclosing[name] = outer | bound_names(func)
        closures.add(name, func, outer, src.where)
        funcs[name] = fa
        return fa

    def lookup(name: str) -> tuple[cst.FunctionDef, bool] | None:
        if name in closures.by_key:
            return closures.by_key[name].node, False
        if name.startswith("self."):  # self.m(...) is a method; never a module function
            return (cls.methods[name[5:]], True) if name[5:] in cls.methods else None
        if name in src.imported:
            return src.imported[name][0], False
        return (src.functions[name], False) if name in src.functions else None

    defined = [*src.functions.items(), *((f, node) for f, (node, _) in src.imported.items()),
               *(("self." + m, node) for m, node in cls.methods.items())]
    unknowns = dataclasses.replace(class_unknowns(src, cls, scalar_keys, combined), not_followed={
        f: why for f, node in defined if (why := why_not_followed(node)) is not None},
        star_helpers={f: _star_signature(node, f.startswith("self.")) for f, node in defined
                      if star_params(node)})
    foreign_reach: dict[str, int] = {}  # helper -> how far it reaches (Effects.foreign), so far
    returns: dict[str, Value] = {}  # helper -> what it returns, so far
    rooted: dict[str, frozenset[str]] = {}  # helper -> what it reads through roots, so far

    def foreign_home(fa: FunctionAnalysis) -> SourceModule | None:
        """The other module whose names fa's body uses (nested functions: their root's)."""
        return foreign.of(fa.func) or foreign.of(funcs[_root(fa, funcs)].func)

    def make_evaluator(fa: FunctionAnalysis) -> Callable[[PointsTo], Evaluator]:
        pos, kw = param_names(fa.func, fa.is_method)
        local = set(pos) | set(kw) | set(star_params(fa.func))
        other = foreign_home(fa)
        names, imports = helpers, src.imports
        known = dataclasses.replace(unknowns, foreign_helpers=dict(foreign_reach),
                                    helper_returns=dict(returns),
                                    helper_reads=dict(rooted),
                                    local_lists=local_lists(fa.func, fa.free),
                                    local_dicts=local_dicts(fa.func, (other or src).imports),
                                    outer_names=declared_outer(fa.func),
                                    returns_to_caller=fa.name != "step")
        if other is not None:  # a base's method, an imported function: its globals are there
            names, imports = set(), other.imports  # (its module's functions are not followed)
            known = dataclasses.replace(known, opaque_globals=opaque_globals(other),
                                        class_names=frozenset())

        def make_eval(pt: PointsTo) -> Evaluator:
            return Evaluator(pt, catalog, names, sites, local, scalar_keys, methods, appends,
                             imports, closures, self_helpers, unfollowed, known)
        return make_eval

    def solve(fa: FunctionAnalysis, own_roles: bool = False) -> frozenset[Fact]:
        """Solve fa; the params and optimizer state it names, as facts live after the step.
        They are live at the exit of `step` (they outlive it; gradients do not). A helper's
        exit has what its callers need after the call (`_bind`), which is them unless a caller
        overwrites them first (Mars' `state["last_grad"].copy_(grad)` after its helper);
        `own_roles`: at its own exit too (a helper no caller was solved with)."""
        solve_points_to(fa.flow, fa.entry_pt, make_evaluator(fa))
        seen: set[str] = set()
        for n in fa.flow.nodes:  # bound to names, read, written or passed to a helper
            seen |= {b for v in n.pt_out().values() for b in buffers(v)}
            seen |= {b for _, b, _ in n.eff.reads} | {b for _, b in n.eff.writes}
            for _, pos_v, kw_v, _ in n.eff.calls:
                seen |= {b for v in [*pos_v, *kw_v.values()] for b in buffers(v)}
        roles = frozenset(("@" + b, b) for b in seen if is_role(b) and b != "grad") | \
            {("@param", "param")}
        exit_live = fa.exit_live | (roles if own_roles or fa.name == "step" else frozenset())
        # a temporary stored into optimizer state (`state["m"] = m.mul(b)`) IS state from then on
        kept = {b for n in fa.flow.nodes for b in n.eff.persistent}
        exit_live = exit_live | frozenset(("@" + b, b) for b in kept)
        solve_liveness(fa.flow, exit_live)
        return roles

    order = ["step"]
    add("step", cls.methods["step"], True)
    solved_with: dict[str, object] = {}  # the inputs each function was last solved with
    for _ in range(10):  # helpers of helpers; stops early once nothing changes
        changed = False
        for name in list(order):
            fa = funcs[name]
            inputs = (sorted(fa.entry_pt.items()), fa.exit_live)
            if solved_with.get(name) != inputs:
                outliving = solve(fa) - funcs["step"].exit_live
                solved_with[name] = inputs
                if outliving:  # state only a helper names is live after the step all the same
                    funcs["step"].exit_live |= outliving
                    changed = True
                reach = max((n.eff.foreign for n in fa.flow.nodes), default=0)
                ret = _returned(fa, make_evaluator)
                reads = rooted.get(name, frozenset()) | _rooted_reads(fa)
                if reach > foreign_reach.get(name, 0) or returns.get(name) != ret or \
                        rooted.get(name) != reads:
                    foreign_reach[name] = max(reach, foreign_reach.get(name, 0))  # solve callers
                    returns[name] = returns.get(name, EMPTY) | ret
                    rooted[name] = reads
                    solved_with.clear()
                    changed = True
                pos, kw = param_names(fa.func, fa.is_method)
                added = {p: frozenset().union(*(n.eff.weak.get(p, EMPTY) for n in fa.flow.nodes))
                         for p in [*pos, *kw, *fa.free]}
                summary = ([*pos], {p: v for p, v in added.items() if v})
                if appends.get(name, ([], {}))[1] != summary[1]:
                    appends[name] = summary  # callers see the lists it fills: solve them again
                    solved_with.clear()
                    changed = True
            for n in fa.flow.nodes:
                for callee, pos_v, kw_v, _call in n.eff.calls:
                    found = lookup(callee)
                    if found is None:
                        continue
                    if callee not in funcs:
                        add(callee, found[0], found[1])
                        order.append(callee)
                    target = funcs[callee]
                    changed |= _bind(target, pos_v, kw_v, n.live_out | _read_beside(n, _call))
        if not changed:
            break
    else:  # what the helpers return, append or reach might still grow: nothing is proved
        raise AnalysisLimit(src.where(cls.node), "the interprocedural analysis did not settle "
                           "in 10 rounds (helpers calling helpers too deep); not rewritten")
    hooks = sorted(m for m in cls.methods if m in ATTRIBUTE_HOOKS)
    if hooks:
        raise AnalysisLimit(src.where(cls.methods[hooks[0]]), f"the class defines `{hooks[0]}`, "
                            "which runs on every attribute of the optimizer the step names")
    implicit = sorted(m for m in cls.methods if m in IMPLICIT_DUNDERS)
    for fa in funcs.values() if implicit else ():
        use = implicit_self_use(fa.func)
        if use is not None:
            raise AnalysisLimit(src.where(use), "the step uses the optimizer object itself, and "
                                f"its class defines `{implicit[0]}`, which Python may call "
                                "there without naming it; not followed")
    if any(n.startswith("self.") for n in funcs):  # followed as the class's methods, which
        for fa in funcs.values():  # the R step checks when it starts (runtime.r_step) only
            away = first_handing_self_away(fa.func)
            if away is not None:
                raise AnalysisLimit(src.where(away), "the optimizer is given to code that may "
                                    "bind its methods while the step runs; the analysis "
                                    "followed calls of them as the class's methods")
    for name in order:  # a callee found in the last round has not been solved yet
        if solved_with.get(name) != (sorted(funcs[name].entry_pt.items()),
                                     funcs[name].exit_live):
            solve(funcs[name], own_roles=True)
    escapes = [(b, why, src.where(node)) for fa in funcs.values() for n in fa.flow.nodes
               for b, why, node in n.eff.escapes if not _handed_back(b, why, fa)]
    for fa in funcs.values():  # a wrapper that may read gradients after the step returns
        home = foreign_home(fa) or src
        kinds = [decorator_kind(d.decorator, home) for d in fa.func.decorators]
        fa.compiled = "compile" in kinds
        for d, kind in zip(fa.func.decorators, kinds, strict=True):
            if kind is None:
                escapes.append(("grad", f"`{fa.name}` is decorated by "
                                f"`{cst.Module([]).code_for_node(d.decorator)}`, which may use "
                                "the gradients after it returns", src.where(d)))
    return ClassAnalysis(cls, {k: funcs[k] for k in order}, escapes, self_helpers,
                         {k: owner for k, (_, owner) in src.imported.items() if k in funcs},
                         unknowns.checked_data,
                         frozenset(a for fa in funcs.values() for n in fa.flow.nodes
                                   for a in n.eff.class_attrs), scalar_keys)


def _star_signature(func: cst.FunctionDef, is_method: bool
                    ) -> tuple[int, frozenset[str], bool]:
    """What a call may fill of a function with *args or **kwargs without filling `**kwargs`:
    its named positional parameters (self not counted), the parameters a keyword can name, and
    whether it takes `*args` (positional arguments past the named ones)."""
    pos, kw = param_names(func, is_method)
    posonly = {p.name.value for p in func.params.posonly_params}
    return len(pos), frozenset(p for p in [*pos, *kw] if p not in posonly), \
        isinstance(func.params.star_arg, cst.Param)


def _handed_back(b: str, why: str, fa: FunctionAnalysis) -> bool:
    """A helper returns a temporary its caller made (`return x` of an argument, as Muon's
    Newton-Schulz may): the caller follows what it gets back, so it is no escape. (One the
    helper made itself outlives the helper's plan: that one escapes.)"""
    return why == RETURNED and fa.name != "step" and b not in fa.sites


def _read_beside(n: Node, call: cst.Call) -> frozenset[Fact]:
    """What n reads that may be read after `call` returns: outside the call's own expression
    (`_scale(grad) * grad`: the order within a statement is not modelled), and everything n
    reads when the call sits in a comprehension or lambda, which may run it again."""
    repeating: list[cst.CSTNode] = []

    class _Repeating(cst.CSTVisitor):
        def on_visit(self, node: cst.CSTNode) -> bool:
            if isinstance(node, (cst.ListComp, cst.SetComp, cst.DictComp, cst.GeneratorExp,
                                 cst.Lambda)):
                repeating.append(node)
                return False
            return True

    if n.node is not None:
        n.node.visit(_Repeating())
    if any(id(call) in subtree_ids(r) for r in repeating):
        return frozenset((v, b) for v, b, _ in n.eff.reads)
    inside = subtree_ids(call)
    return frozenset((v, b) for v, b, r in n.eff.reads if id(r) not in inside)


def _root(fa: FunctionAnalysis, funcs: Mapping[str, FunctionAnalysis]) -> str:
    """The function whose body (nested) defines fa; fa's own name when it is not nested."""
    name = fa.name
    while funcs[name].parent is not None and funcs[name].parent in funcs:
        name = funcs[name].parent or name
    return name


def _bind(fa: FunctionAnalysis, pos_v: list[Value], kw_v: dict[str, Value],
          live_after: frozenset[Fact]) -> bool:
    pos, kw = param_names(fa.func, fa.is_method)
    before = (dict(fa.entry_pt), fa.exit_live)
    for name, v in [*zip(pos, pos_v, strict=False), *kw_v.items()]:
        if name in pos or name in kw or name in fa.free:
            fa.entry_pt[name] = fa.entry_pt.get(name, EMPTY) | v
    star = fa.func.params.star_arg
    if isinstance(star, cst.Param) and len(pos_v) > len(pos):  # `*tensors`: the tuple of the
        extra = structured(pos_v[len(pos):])  # positional arguments past the named ones
        fa.entry_pt[star.name.value] = fa.entry_pt.get(star.name.value, EMPTY) | extra
    needed = {b for _, b in live_after}
    fa.exit_live = fa.exit_live | frozenset(("@" + b, b) for b in needed)
    return (dict(fa.entry_pt), fa.exit_live) != before


def _rooted_reads(fa: FunctionAnalysis) -> frozenset[str]:
    """The buffers a function reads through a root (`q.grad` of params it was given,
    `state[...]`) whose contents on entry may be what it reads: live ("@b", b) at its entry
    (not every such fact: state its callers need after it is live at its exit too)."""
    read = {b for n in fa.flow.nodes for v, b, _ in n.eff.reads if v == "@" + b}
    return frozenset(b for v, b in fa.flow.entry.live_in if v == "@" + b and b in read)


def _returned(fa: FunctionAnalysis,
              make_evaluator: Callable[[FunctionAnalysis], Callable[[PointsTo], Evaluator]]
              ) -> Value:
    """Every buffer a function may return (its callers bind the call's value to it)."""
    make = make_evaluator(fa)
    out = EMPTY
    for n in fa.flow.nodes:
        if n.kind == "return" and isinstance(n.node, cst.Return) and n.node.value is not None:
            out |= make(n.pt_in).value(n.node.value)
    return out
