"""What one statement or expression does to tensor buffers: the abstract semantics of the analysis.

Values are sets of abstract buffers. Element roles name one parameter's buffers: "param", "grad",
"state:KEY"; every allocating tensor op is its own buffer "tmp@LINE:COL". Values that are not
tensors but lead to them carry a "%" marker: "%self", "%statedict", "%pstate" (self.state[p]),
"%groups", "%group". Scalars are the empty set. Tuples and grouped tensor lists keep their
positions (values.py), so `for (ps, gs), _ in grouped.values()` binds `gs` to the gradients only.

Reads are recorded as (variable, buffer) pairs: the variable through which the buffer's *contents*
are read. Root accesses such as `p.grad` or `state["exp_avg"]` read through the pseudo-variables
"@grad", "@state:exp_avg".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import libcst as cst

from gsr_rewrite.frontend.catalog import KnownFunction, OpCatalog
from gsr_rewrite.frontend.closures import Closures, loaded_names
from gsr_rewrite.frontend.values import (
    EMPTY,
    LIST,
    PART,
    Buf,
    Value,
    buffers,
    container,
    element,
    flat,
    is_buffer,
    is_container,
    is_role,
    is_structured,
    item,
    structured,
)

__all__ = ["EMPTY", "LIST", "Alloc", "Buf", "Effects", "Evaluator", "Value", "buffers", "dotted",
           "element", "flat", "is_buffer", "is_role", "item", "scalar_state_keys"]

BUILTIN_CONTAINERS = {"zip", "enumerate", "list", "tuple", "reversed", "sorted", "iter",
                      "filter"}
HARMLESS_BUILTINS = {"len", "isinstance", "range", "float", "int", "bool", "str", "abs", "print",
                     "any", "all", "type", "id", "hasattr", "round", "RuntimeError",
                     "ValueError", "TypeError", "NotImplementedError"}
#: builtins whose result may be (an element of) one of their arguments
RETURNS_AN_ARGUMENT = {"max", "min", "next", "sum", "map", "functools.reduce", "copy.copy"}
#: attributes of a tensor that are not tensors (metadata); any other attribute may be a view
TENSOR_METADATA = {"shape", "dtype", "device", "ndim", "is_cuda", "requires_grad", "layout",
                   "is_sparse", "is_leaf", "grad_fn", "itemsize", "nbytes", "names", "is_meta",
                   "is_quantized", "is_mps", "is_complex"}
#: torch namespaces of functions of tensor data only (no `.grad`, no module state)
DATA_NAMESPACES = ("linalg.", "special.", "fft.", "_C._linalg.", "ops.aten.")
OPAQUE = "%opaque"  # an object the analysis does not model: it may be or hold any buffer
#: a dict or set made by the analysed code: what goes in escapes, what comes out is opaque
LOCAL: Value = frozenset({"%local"})


@dataclass(frozen=True)
class Unknowns:
    """How the analysis stands for what it cannot see (DESIGN.md section 3, default-deny).

    An object it does not model (an attribute of `self` that is not a constant from `__init__`,
    a module global, the result of an unknown call) is `opaque`: it may be any param, gradient
    or state tensor of any parameter. An unknown call that can reach the optimizer (its receiver
    or arguments hold `self`, a group, params, state or an opaque object) may read and write all
    of them, and may keep the gradients it reaches (they escape)."""

    #: the buffers an opaque object may be (any param, gradient or state tensor); reading it
    #: reads all of them, writing it writes all of them (`Evaluator.touched`); storing it
    #: somewhere makes none of them escape: it was reachable from outside already
    roles: Value = frozenset({"grad", "param", "state:?"})
    self_constants: frozenset[str] = frozenset()  # self.ATTR bound once in __init__ to data
    opaque_globals: frozenset[str] = frozenset()  # module globals that are not constants
    harmless_self_methods: frozenset[str] = frozenset()  # Optimizer methods that touch nothing
    foreign_helpers: Mapping[str, int] = field(default_factory=dict)  # see Effects.foreign
    #: the class and its bases in the module, and its static and class methods: `Cls.m(...)`,
    #: `type(self).m(...)` and `self.__class__.m(...)` call them as `self.m(...)` does
    class_names: frozenset[str] = frozenset()
    class_callables: frozenset[str] = frozenset()
    #: names of the function being analysed that only ever hold a list it made itself (`xs =
    #: []`, `[f(x) for ...]`, `list(...)`) or that are its parameters (what a helper appends to
    #: a parameter is handed back to its callers); `.append` on any other name is unknown
    local_lists: frozenset[str] = frozenset()
    #: names the function declares `global` or `nonlocal`: they live outside it (opaque; what is
    #: stored in them escapes)
    outer_names: frozenset[str] = frozenset()
    #: what each analysed helper returns, so far (see Evaluator._helper_call)
    helper_returns: Mapping[str, Value] = field(default_factory=dict)


def dotted(node: cst.BaseExpression) -> str | None:
    """`torch._foreach_add_` -> "torch._foreach_add_"; None unless names and attributes."""
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        base = dotted(node.value)
        return None if base is None else f"{base}.{node.attr.value}"
    return None


@dataclass
class Alloc:
    """A tensor op that allocates a parameter-sized result: a temporary."""

    node: cst.BaseExpression
    site: Buf
    op: str  # catalog name: "sqrt", "add", ... or creation "clone", "zeros_like"
    form: str  # "operator" | "method" | "function" | "foreach" | "creation"
    operands: list[cst.BaseExpression]
    in_comprehension: bool = False


@dataclass
class Effects:
    reads: list[tuple[str, Buf, cst.CSTNode]] = field(default_factory=list)
    writes: list[tuple[str, Buf]] = field(default_factory=list)  # read-modify-write, via variable
    kills: set[Buf] = field(default_factory=set)  # every element overwritten, contents not read
    allocs: list[Alloc] = field(default_factory=list)
    escapes: list[tuple[Buf, str, cst.CSTNode]] = field(default_factory=list)
    assigns: dict[str, Value] = field(default_factory=dict)  # strong updates
    weak: dict[str, Value] = field(default_factory=dict)  # list.append / extend
    calls: list[tuple[str, list[Value], dict[str, Value], cst.Call]] = field(default_factory=list)
    persistent: set[Buf] = field(default_factory=set)  # temporaries stored into state
    partition: bool = False  # a for-loop over disjoint subsets of the parameters (device groups)
    rooted: set[Buf] = field(default_factory=set)  # reached from a root: p.grad, state["k"], ...
    # reaches buffers of other parameters than a per-element loop's own: 1 through its group's
    # params list (`group["params"][i - 1]`), 2 through anything else (self.param_groups, an
    # opaque object, an unknown call)
    foreign: int = 0


class Evaluator:
    """Abstract evaluation of expressions under a points-to map; effects accumulate in `eff`."""

    def __init__(self, pt: Mapping[str, Value], catalog: OpCatalog, helpers: set[str],
                 site_of: Mapping[cst.CSTNode, str], local_callables: set[str],
                 scalar_keys: frozenset[str] = frozenset(),
                 methods: frozenset[str] | set[str] = frozenset(),
                 appends: Mapping[str, tuple[list[str], dict[str, Value]]] | None = None,
                 imports: Mapping[str, str] | None = None,
                 closures: Closures | None = None,
                 self_helpers: Mapping[str, str] | None = None,
                 unfollowed: Mapping[str, str] | None = None,
                 unknowns: Unknowns | None = None) -> None:
        self.pt = pt
        self.cat = catalog
        self.helpers = helpers  # module functions the analysis follows (called by plain name)
        self.methods = methods  # methods of the class (called as self.m)
        # per helper: its parameter names, and what it appends to each (out-parameter lists)
        self.appends = appends or {}
        self.site_of = site_of
        self.local_callables = local_callables
        self.scalar_keys = scalar_keys  # state entries that only ever hold scalars ("step")
        self.imports = imports or {}  # module-level imports: local name -> where it comes from
        self.closures = closures or Closures()  # functions defined inside analysed functions
        self.self_helpers = self_helpers or {}  # self.ATTR -> module function __init__ binds
        self.unfollowed = unfollowed or {}  # self.ATTR -> why it is not followed
        self.unknowns = unknowns or Unknowns()
        self.eff = Effects()
        self._comprehension = 0

    # -- reading -----------------------------------------------------------------------------
    def read(self, node: cst.BaseExpression) -> Value:
        """Evaluate `node` as a consumed operand: its buffers' contents are read."""
        return self._note_read(node, self.value(node))

    def _note_read(self, node: cst.BaseExpression, v: Value) -> Value:
        var = self._var_of(node, v)
        for b in buffers(v):
            self.eff.reads.append((var, b, node))
        if OPAQUE in flat(v):  # an object the analysis does not model may be any buffer
            for b in self.unknowns.roles - buffers(v):
                self.eff.reads.append(("@expr", b, node))
        return v

    def _var_of(self, node: cst.BaseExpression, v: Value) -> str:
        if isinstance(node, cst.Name):
            return node.value
        roles = [b for b in buffers(v) if is_role(b)]
        return "@" + roles[0] if len(roles) == 1 else "@expr"

    def peek(self, node: cst.BaseExpression) -> Value:
        """Evaluate without reading contents (metadata, `is None`, targets of overwrites)."""
        return self.value(node)

    # -- values ------------------------------------------------------------------------------
    def value(self, node: cst.BaseExpression) -> Value:
        if isinstance(node, cst.Name):
            if node.value == "self":
                return frozenset({"%self"})
            if node.value not in self.pt and node.value in self.helpers:
                return frozenset({"%fn:" + node.value})  # a helper function used as a value
            if node.value in self.unknowns.outer_names or (
                    node.value not in self.pt and node.value in self.unknowns.opaque_globals):
                return self._opaque()
            return self.pt.get(node.value, EMPTY)
        if isinstance(node, cst.Attribute):
            name = dotted(node)
            if name is not None and name.startswith("torch.") and "torch" not in self.pt:
                return frozenset({"%torch:" + name[len("torch."):]})  # a torch function as a value
            return self._attribute(node)
        if isinstance(node, cst.Subscript):
            return self._subscript(node)
        if isinstance(node, cst.Call):
            return self._call(node)
        if isinstance(node, cst.BinaryOperation):
            left, right = self.read(node.left), self.read(node.right)
            return self._alloc(node, _BINOPS.get(type(node.operator), "?"), "operator",
                               [node.left, node.right], left | right)
        if isinstance(node, cst.UnaryOperation):
            v = self.read(node.expression)
            if isinstance(node.operator, cst.Minus):
                return self._alloc(node, "neg", "operator", [node.expression], v)
            return EMPTY
        if isinstance(node, cst.IfExp):
            self.peek(node.test)
            return self.value(node.body) | self.value(node.orelse)
        if isinstance(node, cst.Comparison):
            ident = all(isinstance(c.operator, (cst.Is, cst.IsNot, cst.In, cst.NotIn))
                        for c in node.comparisons)
            (self.peek if ident else self.read)(node.left)
            for c in node.comparisons:
                (self.peek if ident else self.read)(c.comparator)
            return EMPTY
        if isinstance(node, cst.BooleanOperation):
            return self.value(node.left) | self.value(node.right)
        if isinstance(node, (cst.Tuple, cst.List)):
            items = [self.value(el.value) for el in node.elements]
            if not any(isinstance(el, cst.StarredElement) for el in node.elements):
                return structured(items)
            out = frozenset().union(*map(flat, items))  # positions after a *star are unknown
            return out | LIST if buffers(out) else out
        if isinstance(node, (cst.ListComp, cst.GeneratorExp)):
            return self._comprehension_value(node)
        if isinstance(node, cst.Lambda):
            own = {x.name.value for x in (*node.params.posonly_params, *node.params.params,
                                          *node.params.kwonly_params)}
            self._capture(node.body, "captured by a lambda", own)  # `lambda n: 1 - n`
            return EMPTY
        if isinstance(node, cst.NamedExpr):
            v = self.value(node.value)
            if isinstance(node.target, cst.Name):
                self.eff.assigns[node.target.value] = v
            return v
        if isinstance(node, (cst.Dict, cst.Set, cst.DictComp, cst.SetComp)):
            self._capture(node, "stored in a container the analysis does not follow")
            return LOCAL
        for child in node.children:  # constants, f-strings, ...
            if isinstance(child, cst.BaseExpression):
                self.peek(child)
        return EMPTY

    def _attribute(self, node: cst.Attribute) -> Value:
        base = self.peek(node.value)
        attr = node.attr.value
        if "%self" in base:
            if attr == "param_groups":
                self.eff.foreign = 2  # every group: not only a loop's own
                return frozenset({"%groups"})
            if attr == "state":
                return frozenset({"%statedict"})
            if attr == "defaults" or attr in self.unknowns.self_constants:
                return EMPTY
            return self._opaque()
        if attr == "grad" and ("param" in base or OPAQUE in base):
            self.eff.rooted.add("grad")
            if OPAQUE in base:  # some parameter's gradient, not necessarily a loop's own
                self.eff.foreign = 2
            return frozenset({"grad"}) | (base & {OPAQUE})
        if attr in TENSOR_METADATA:
            return EMPTY
        return base  # .data, .T, .mH, a view the catalog does not know: the same buffers

    def _opaque(self) -> Value:
        return frozenset({OPAQUE})

    def touched(self, v: Value) -> Value:
        """The buffers a read or a write through a value of `v` may touch."""
        return buffers(v) | (self.unknowns.roles if OPAQUE in flat(v) else EMPTY)

    def _subscript(self, node: cst.Subscript) -> Value:
        base = self.peek(node.value)
        key = _const_key(node)
        for el in node.slice:
            if isinstance(el.slice, cst.Index):
                self.peek(el.slice.value)
        if "%statedict" in base:
            return frozenset({"%pstate"})
        if "%pstate" in base:
            if key in self.scalar_keys:
                return EMPTY
            if key is None:  # a computed key may be any of them
                found_all = frozenset(b for b in self.unknowns.roles if b.startswith("state:"))
                self.eff.rooted |= found_all
                return found_all
            self.eff.rooted.add(f"state:{key}")
            return frozenset({f"state:{key}"})
        if "%groups" in base:
            return frozenset({"%group"})
        if "%group" in base:
            if key != "params":
                return EMPTY
            self.eff.rooted.add("param")
            self.eff.foreign = max(self.eff.foreign, 1)
            return frozenset({"param"}) | LIST
        if OPAQUE in base:  # an element of an unknown object, or of what else it may be
            return self._opaque() | element(base)
        index = _const_index(node)
        if index is not None and is_structured(base):
            return item(base, index)
        return element(base)  # element of a tensor list, or a view into a tensor

    def _comprehension_value(self, node: cst.ListComp | cst.GeneratorExp) -> Value:
        saved = dict(self.pt)
        scope = dict(self.pt)
        for f in _for_ins(node.for_in):
            it = element(self.value(f.iter))
            for name in _target_names(f.target):
                scope[name] = it if isinstance(f.target, cst.Name) else flat(it)
        self.pt = scope
        self._comprehension += 1
        try:
            v = self.read(node.elt)
            return v | LIST if buffers(v) else v
        finally:
            self._comprehension -= 1
            self.pt = saved

    def _capture(self, node: cst.CSTNode, why: str, own: set[str] | None = None) -> None:
        # variables only: `p.grad` in `lambda p: p.grad is not None` captures no `grad`
        for name in sorted(loaded_names(node) - (own or set())):
            for b in buffers(self.pt.get(name, EMPTY)):
                self.eff.escapes.append((b, f"`{name}` {why}", node))

    # -- calls -------------------------------------------------------------------------------
    def _call(self, node: cst.Call) -> Value:
        func = node.func
        name = dotted(func)
        if isinstance(func, cst.Name) and func.value in self.pt:
            bound = self.pt[func.value]
            targets = sorted(b[len("%fn:"):] for b in bound if b.startswith("%fn:"))
            ops = sorted(b[len("%torch:"):] for b in bound if b.startswith("%torch:"))
            if targets or ops:  # `func = _multi if foreach else _single; func(...)`
                for t in targets:
                    self._helper_call(t, node)
                return frozenset().union(*(self._torch(node, op) for op in ops))
        if isinstance(func, cst.Attribute) and func.attr.value in self.unknowns.class_callables \
                and func.attr.value in self.methods and self._names_the_class(func.value):
            return self._helper_call("self." + func.attr.value, node)
        known = self._known(name)
        if known is not None:
            return self._known_call(node, known)
        if isinstance(func, cst.Attribute) and (name is None or not name.startswith("torch.")):
            if func.attr.value in ("values", "items", "keys") and not node.args and \
                    is_container(self.peek(func.value)):
                return _dict_view(self.peek(func.value), func.attr.value)
            if func.attr.value in ("append", "extend") and isinstance(func.value, cst.Name) \
                    and len(node.args) == 1:
                v = flat(self.value(node.args[0].value))
                lst = func.value.value
                self.eff.weak[lst] = self.eff.weak.get(lst, EMPTY) | v | LIST
                if lst not in self.unknowns.local_lists or OPAQUE in self.peek(func.value):
                    # maybe a list kept in state or on self: what it is given stays there
                    for b in buffers(v):
                        self.eff.escapes.append((b, f"appended to `{lst}`, which may be a list "
                                                 "kept outside the function", node.args[0]))
                return EMPTY
            recv = self.peek(func.value)
            if "%self" in recv and func.attr.value in self.methods:
                return self._helper_call("self." + func.attr.value, node)
            if "%self" in recv and func.attr.value in self.self_helpers:
                return self._helper_call(self.self_helpers[func.attr.value], node)
            if "%self" in recv and func.attr.value in self.unknowns.harmless_self_methods:
                for a in node.args:
                    self.peek(a.value)
                return EMPTY
            if "%self" in recv:  # a method of a base class, or a callable kept on self
                attr = func.attr.value
                why = f" ({self.unfollowed[attr]})" if attr in self.unfollowed else ""
                return self._unknown_call(node, f"unknown function `self.{attr}`{why}", recv,
                                          [(a, self.read(a.value)) for a in node.args])
            if recv == LOCAL:
                for a in node.args:
                    for b in buffers(self.read(a.value)):
                        self.eff.escapes.append((b, "stored in a container the analysis does "
                                                 "not follow", a))
                return self._opaque()
            if recv & {"%statedict", "%pstate", "%group"}:
                got = self._dict_method(node, func, recv)
                if got is not None:
                    return got
            if buffers(recv) or name is None or any(not is_buffer(b) for b in flat(recv)):
                return self._method(node, func, recv)
        if name is not None and name.startswith("torch."):
            return self._torch(node, name[len("torch."):])
        if name in self.helpers:
            return self._helper_call(name, node)
        if name == "getattr" and len(node.args) >= 2 and \
                isinstance(node.args[1].value, cst.SimpleString):  # getattr(p, "grad", None)
            attr = str(node.args[1].value.evaluated_value)
            got = self.value(cst.Attribute(node.args[0].value, cst.Name(attr))) \
                if attr.isidentifier() else self._opaque()
            return got | frozenset().union(*(self.value(a.value) for a in node.args[2:]))
        args = [self.read(a.value) for a in node.args]
        if name in BUILTIN_CONTAINERS:
            return frozenset().union(*args) if args else EMPTY
        if name in RETURNS_AN_ARGUMENT:
            return frozenset().union(*map(element, args), *args) if args else EMPTY
        if name in HARMLESS_BUILTINS or (name or "").startswith("math."):
            return EMPTY
        if name in self.local_callables:  # e.g. closure(): runs arbitrary code on params/grads
            self.eff.reads.append(("@grad", "grad", node))
            self.eff.writes.append(("@grad", "grad"))
            # (an R step given a closure runs the original step: runtime.r_step)
            return EMPTY
        attr = name[5:] if name is not None and name.startswith("self.") else ""
        why = f" ({self.unfollowed[attr]})" if attr in self.unfollowed else ""
        got = self._unknown_call(node, f"unknown function `{name}`{why}", EMPTY,
                                 list(zip(node.args, args, strict=True)))
        if isinstance(func, cst.Attribute) and not self.peek(func.value):
            # a method of a host value or a function of an imported module (no buffer, no
            # marker; also a name whose value is not known yet while the fixpoint grows): it
            # was given no access to the optimizer; its result holds no buffer of the step (what
            # it was given escaped above). Returning none keeps the fixpoint monotone: once
            # the receiver is known to hold a buffer, the call is a tensor method instead.
            module_function = isinstance(func.value, cst.Name) and \
                func.value.value in self.imports and func.value.value not in self.pt
            return got - self._opaque() if module_function else got & {SHAPED}
        return got

    def _names_the_class(self, e: cst.BaseExpression) -> bool:
        """`Cls`, `type(self)`, `self.__class__` (the static or class method they reach is the
        class's own, as `self.m` is)."""
        if isinstance(e, cst.Name):
            return e.value in self.unknowns.class_names and e.value not in self.pt
        if isinstance(e, cst.Call):
            return dotted(e.func) == "type" and len(e.args) == 1 and \
                isinstance(e.args[0].value, cst.Name) and e.args[0].value.value == "self"
        return dotted(e) == "self.__class__"

    def _dict_method(self, node: cst.Call, func: cst.Attribute, recv: Value) -> Value | None:
        """`state.get("k", d)`, `state.setdefault("k", v)`, `self.state.get(p)`, `group.get("lr")`
        read like subscripts; None for any other method (then it is an unknown method)."""
        m = func.attr.value
        args = [a for a in node.args if a.keyword is None]
        if m not in ("get", "setdefault") or not args or len(args) > 2 or \
                len(args) != len(node.args):
            return None
        default = self.value(args[1].value) if len(args) > 1 else EMPTY
        got = self._subscript(cst.Subscript(func.value, [cst.SubscriptElement(
            cst.Index(args[0].value))]))
        if m == "setdefault" and "%pstate" in recv:
            store_in_state(self, default, node)
        return got | default

    def _unknown_call(self, node: cst.Call, what: str, recv: Value,
                      args: list[tuple[cst.Arg, Value]]) -> Value:
        """Default-deny: what it is given escapes; when it can reach the optimizer's buffers it
        may read and write all of them and keep the gradients; its result may be anything it
        was given, or anything at all."""
        reach = recv.union(*(v for _, v in args))
        for a, v in args:
            for b in buffers(v):
                self.eff.escapes.append((b, f"passed to {what}", a))
        if reach & {"%self", "%group", "%groups", "%statedict", "%pstate", OPAQUE, "param",
                    "grad"} or any(b.startswith("state:") for b in reach):
            self._touch_all(node, f"{what} can reach every gradient")
        return self._opaque() | flat(reach)

    def _touch_all(self, node: cst.CSTNode, why: str) -> None:
        """Code the analysis cannot see, run here with access to the optimizer: it may read and
        write every param, gradient and state tensor, and keep the gradients."""
        for b in self.unknowns.roles:
            self.eff.reads.append(("@expr", b, node))
            self.eff.writes.append(("@expr", b))
        self.eff.escapes.append(("grad", why, node))
        self.eff.foreign = 2

    def _known(self, name: str | None) -> KnownFunction | None:
        """The catalog entry of an imported function (`_get_value`, `typing.cast`), or None."""
        if name is None or name in self.helpers:
            return None
        first, _, rest = name.partition(".")
        origin = self.imports.get(first)
        if origin is None or first in self.pt or first in self.local_callables:
            return None
        return self.cat.function(f"{origin}.{rest}" if rest else origin)

    def _known_call(self, node: cst.Call, fn: KnownFunction) -> Value:
        if fn.effect in ("metadata", "group"):  # device, dtype, shape: no contents read
            for a in node.args:
                self.peek(a.value)
            first = node.args[0].value if node.args and not node.args[0].star else None
            if fn.effect == "group" and first is not None:  # {key: (lists, indices)}
                return container(structured([self.peek(first), EMPTY]), partition=True)
            return EMPTY
        values = [self.read(a.value) for a in node.args]
        if fn.effect == "fresh":
            return EMPTY
        pos = [v for a, v in zip(node.args, values, strict=True) if a.keyword is None]
        if any(a.star for a in node.args) or fn.arg >= len(pos):
            return frozenset().union(*map(flat, values))
        return pos[fn.arg]

    def _helper_call(self, name: str, node: cst.Call) -> Value:
        self.eff.foreign = max(self.eff.foreign, self.unknowns.foreign_helpers.get(name, 0))
        nested = self.closures.by_key.get(name)
        free = nested.free if nested is not None else ()
        if any(a.star for a in node.args):  # f(*xs, **kw): which parameter gets what is unknown
            for a in node.args:
                for b in buffers(self.read(a.value)):
                    self.eff.escapes.append((b, f"passed to `{name}` through *args", a))
            for var in free:
                for b in buffers(self.read(cst.Name(var))):
                    self.eff.writes.append(("@call", b))
                    self.eff.escapes.append((b, f"`{var}` read by `{name}` called with *args",
                                             node))
            return self._opaque()
        pos = [self.read(a.value) for a in node.args if a.keyword is None]
        kw = {a.keyword.value: self.read(a.value) for a in node.args if a.keyword is not None}
        for var in free:  # a closure reads the caller's variables when it runs: here
            kw[var] = self.read(cst.Name(var))
        for v in [*pos, *kw.values()]:
            for b in buffers(v):
                self.eff.writes.append(("@call", b))
        self.eff.calls.append((name, pos, kw, node))
        params, added = self.appends.get(name, ([], {}))
        bound = [*zip(params, [a for a in node.args if a.keyword is None], strict=False),
                 *((a.keyword.value, a) for a in node.args if a.keyword is not None)]
        for param, arg in bound:  # `self._init_group(group, params, grads)` fills the lists
            if added.get(param):
                self._filled(arg.value, added[param], name)
        for var in free:  # and a closure the caller's own lists
            if added.get(var):
                self._filled(cst.Name(var), added[var], name)
        # a helper the analysis follows: what it returns so far (the analysis iterates until
        # these stop growing, so starting from nothing reaches the least sound answer)
        return self.unknowns.helper_returns.get(name, EMPTY)

    def _filled(self, lst: cst.BaseExpression, added: Value, helper: str) -> None:
        """A helper appended `added` to the list `lst` the caller gave it: a list of the caller's
        own holds them from now on; any other container keeps them (they escape)."""
        if isinstance(lst, cst.Name) and lst.value in self.unknowns.local_lists:
            self.eff.weak[lst.value] = self.eff.weak.get(lst.value, EMPTY) | added
            return
        for b in buffers(added):
            self.eff.escapes.append((b, f"appended by `{helper}` to a container the analysis "
                                     "does not follow", lst))

    def define(self, node: cst.FunctionDef | cst.ClassDef) -> None:
        """A `def` or `class` statement inside the analysed function."""
        nested = self.closures.by_node.get(id(node))
        if nested is not None and not nested.reason:
            self.eff.assigns[nested.name] = frozenset({"%fn:" + nested.key})
            return
        why = (f"captured by a nested function that is not analysed: {nested.reason}"
               if nested is not None else "captured by a nested function or class")
        self._capture(node, why)

    def _method(self, node: cst.Call, func: cst.Attribute, recv: Value) -> Value:
        m = func.attr.value
        cat = self.cat
        if m in cat.metadata or m in cat.constructor:  # x.new_zeros(n): only metadata of x
            for a in node.args:
                self.read(a.value)
            return EMPTY
        if m in cat.view:
            return self._note_read(func.value, recv) if m == "contiguous" else recv
        if m in cat.reduce:
            self._note_read(func.value, recv)
            for a in node.args:
                self.read(a.value)
            if m in ("max", "min") and len(node.args) == 1 and not _is_int(node.args[0].value) \
                    and node.args[0].keyword is None:  # `x.max(y)`: elementwise
                return self._alloc(node, m + "imum", "method", [func.value, node.args[0].value],
                                   recv | self.value(node.args[0].value))
            return _reduced(node, 0)
        if m in cat.inplace_kill:
            for a in node.args:
                self.read(a.value)
            self._overwrite(func.value, recv)
            return recv
        if m in cat.creation:  # x.clone()
            self._note_read(func.value, recv)
            return self._alloc(node, m, "method", [func.value], recv)
        if m in cat.elementwise:
            operands = [func.value, *[a.value for a in node.args if a.keyword is None]]
            v = self._note_read(func.value, recv)
            for a in node.args:
                v |= self.read(a.value)
            return self._alloc(node, m, "method", operands, v)
        if m.endswith("_") and (cat.inplace_base(m) or m[:-1] in cat.elementwise):
            self._note_read(func.value, recv)
            for a in node.args:
                self.read(a.value)
            var = func.value.value if isinstance(func.value, cst.Name) else "@expr"
            for b in self.touched(recv):
                self.eff.writes.append((var, b))
            return recv
        self._note_read(func.value, recv)
        args = [(a, self.read(a.value)) for a in node.args]
        for b in buffers(recv):
            self.eff.escapes.append((b, f"method `.{m}()` is not in the op catalog", node))
        return self._unknown_call(node, f"method `.{m}()`, which is not in the op catalog,",
                                  recv, args)

    def _torch(self, node: cst.Call, fn: str) -> Value:
        cat = self.cat
        pos = [a.value for a in node.args if a.keyword is None]
        out_arg = next((a.value for a in node.args if a.keyword and a.keyword.value == "out"), None)
        if fn.startswith("_foreach_"):
            base = fn[len("_foreach_"):]
            if base in cat.inplace_kill or fn in cat.inplace_kill:  # _foreach_copy_, _foreach_zero_
                for a in pos[1:]:
                    self.read(a)
                self._overwrite(pos[0], self.peek(pos[0]))
                return EMPTY
            if base.endswith("_"):
                target = self.read(pos[0])
                for arg in node.args[1:]:
                    self.read(arg.value)
                var = pos[0].value if isinstance(pos[0], cst.Name) else "@expr"
                for b in self.touched(target):
                    self.eff.writes.append((var, b))
                return EMPTY
            v = EMPTY
            for arg in node.args:
                v |= self.read(arg.value)
            if base in cat.elementwise:
                return self._alloc(node, base, "foreach", pos, v)
            return EMPTY  # _foreach_norm and friends: not parameter-sized
        args_v = EMPTY
        for arg in node.args:
            if out_arg is None or arg.value is not out_arg:
                args_v |= self.read(arg.value)
        if out_arg is not None:
            target = self.peek(out_arg)
            var = out_arg.value if isinstance(out_arg, cst.Name) else "@expr"
            for b in self.touched(target):
                self.eff.writes.append((var, b))
            return target
        if fn in cat.creation:
            return self._alloc(node, fn, "creation", pos[:1], args_v)
        if fn in cat.elementwise:
            return self._alloc(node, fn, "function", pos, args_v)
        if fn in ("max", "min") and len(pos) == 2 and not _is_int(pos[1]):
            # `torch.max(a, b)`: the elementwise maximum (torch.maximum), parameter-sized
            return self._alloc(node, fn + "imum", "function", pos, args_v)
        if fn in cat.reduce or fn.startswith("linalg."):
            return _reduced(node, 1)  # a reduction: 0-d without dims, else of unknown shape
        if fn in cat.metadata or fn.startswith("is_"):
            return EMPTY  # not a tensor of the step: a bool (`torch.is_complex(p)`), a shape
        if fn.endswith("_"):  # unknown in-place torch function (`torch._fused_adam_`)
            for b in buffers(args_v):
                self.eff.writes.append(("@expr", b))
        if "." in fn and not fn.startswith(DATA_NAMESPACES) and args_v & {
                "param", OPAQUE, "%self", "%group", "%groups", "%statedict", "%pstate"}:
            # `torch.nn.utils.clip_grad_norm_(params)` reads and writes the params' .grad (the
            # ops of `torch.` itself see the data of the tensors they are given, never .grad)
            self._touch_all(node, f"`torch.{fn}` is given params and may use their gradients")
        return args_v  # unknown torch function: its result may alias its arguments

    def _overwrite(self, target: cst.BaseExpression, v: Value) -> None:
        bufs = self.touched(v)
        if len(bufs) == 1 and OPAQUE not in v:
            self.eff.kills |= bufs
        var = target.value if isinstance(target, cst.Name) else "@expr"
        for b in bufs:
            self.eff.writes.append((var, b))

    def _alloc(self, node: cst.BaseExpression, op: str, form: str,
               operands: list[cst.BaseExpression], inputs: Value) -> Value:
        if not buffers(inputs):  # scalar arithmetic, or a new object made from unknown ones
            return flat(inputs) & {OPAQUE, SHAPED}
        site = self.site_of[node]
        self.eff.allocs.append(Alloc(node, site, op, form, operands, self._comprehension > 0))
        return frozenset({site}) | (LIST if form == "foreach" else EMPTY)


#: a tensor of unknown shape that aliases nothing (a reduction over some dims): the analysis
#: does not count it as a buffer, but it is a tensor operand (guards check it) and never a host
#: scalar of a strip-mined run
SHAPED = "%shaped"


def _is_int(e: cst.BaseExpression) -> bool:
    return isinstance(e, cst.Integer) or (isinstance(e, cst.UnaryOperation)
                                          and isinstance(e.expression, cst.Integer))


def _reduced(node: cst.Call, first: int) -> Value:
    """A reduction's result: a 0-d tensor (a host scalar to the analysis, it broadcasts like
    one) when it is given no dimension, else SHAPED."""
    dims = [a for a in node.args[first:] if a.keyword is None or a.keyword.value in ("dim", "axis")]
    return frozenset({SHAPED}) if dims else EMPTY


def store_in_state(ev: Evaluator, v: Value, where: cst.CSTNode) -> None:
    """`state["k"] = v`: v becomes persistent optimizer state (a role stored there escapes)."""
    for b in buffers(v):
        if is_role(b):
            ev.eff.escapes.append((b, "stored in optimizer state", where))
        else:
            ev.eff.persistent.add(b)


_BINOPS: dict[type, str] = {cst.Add: "add", cst.Subtract: "sub", cst.Multiply: "mul",
                            cst.Divide: "div", cst.Power: "pow"}


def _dict_view(v: Value, method: str) -> Value:
    """`d.values()` / `d.items()` / `d.keys()` of a container whose elements are d's values."""
    if method == "keys":
        return EMPTY
    if method == "values":
        return v
    return container(structured([EMPTY, element(v)]), partition=PART in v)


def _const_index(node: cst.Subscript) -> int | None:
    if len(node.slice) == 1 and isinstance(node.slice[0].slice, cst.Index):
        v = node.slice[0].slice.value
        if isinstance(v, cst.Integer):
            return int(v.evaluated_value)
    return None


def _const_key(node: cst.Subscript) -> str | None:
    if len(node.slice) == 1 and isinstance(node.slice[0].slice, cst.Index):
        v = node.slice[0].slice.value
        if isinstance(v, cst.SimpleString):
            return str(v.evaluated_value)
    return None


def _for_ins(f: cst.CompFor) -> list[cst.CompFor]:
    out = [f]
    while f.inner_for_in is not None:
        f = f.inner_for_in
        out.append(f)
    return out


def _target_names(t: cst.BaseExpression) -> list[str]:
    if isinstance(t, cst.Name):
        return [t.value]
    if isinstance(t, (cst.Tuple, cst.List)):
        return [n for el in t.elements for n in _target_names(el.value)]
    return []


def names_in(node: cst.CSTNode) -> set[str]:
    found: set[str] = set()

    class _V(cst.CSTVisitor):
        def visit_Name(self, n: cst.Name) -> None:
            found.add(n.value)

    node.visit(_V())
    return found


_SCALAR_MAKERS = {"torch.tensor", "torch.zeros", "torch.ones", "torch.full", "torch.as_tensor"}


def scalar_state_keys(module: cst.Module) -> frozenset[str]:
    """State keys that every assignment in the module gives a scalar (`0`, `torch.tensor(0.)`).

    A key assigned anything else even once (`zeros_like(p)`, `grad.clone()`) is a tensor buffer.
    """
    scalar: set[str] = set()
    tensor: set[str] = set()

    def is_scalar(v: cst.BaseExpression) -> bool:
        if isinstance(v, (cst.Integer, cst.Float)):
            return True
        if isinstance(v, cst.UnaryOperation):
            return is_scalar(v.expression)
        if isinstance(v, cst.IfExp):  # `torch.zeros(()) if capturable else torch.tensor(0.0)`
            return is_scalar(v.body) and is_scalar(v.orelse)
        if isinstance(v, cst.Call) and dotted(v.func) == "torch.tensor":
            return True  # `torch.tensor(step_val)`: a copy of data, aliasing no buffer
        if isinstance(v, cst.Call) and isinstance(v.func, cst.Attribute) and \
                v.func.attr.value in ("clone", "detach", "to"):
            inner = v.func.value  # `torch.as_tensor(lr).clone()`: a fresh copy of a maker's tensor
            return is_scalar(inner) or (v.func.attr.value == "clone" and isinstance(
                inner, cst.Call) and dotted(inner.func) in _SCALAR_MAKERS)
        if isinstance(v, cst.Call) and dotted(v.func) in _SCALAR_MAKERS:
            first = v.args[0].value if v.args else None
            return first is None or isinstance(first, (cst.Integer, cst.Float, cst.Tuple,
                                                       cst.List, cst.UnaryOperation))
        return False

    class _V(cst.CSTVisitor):
        def visit_Assign(self, node: cst.Assign) -> None:
            for t in node.targets:
                if isinstance(t.target, cst.Subscript):
                    key = _const_key(t.target)
                    if key is not None:
                        (scalar if is_scalar(node.value) else tensor).add(key)

    module.visit(_V())
    return frozenset(scalar - tensor)
