"""The evaluator's last layer, `Evaluator`: calls. Which function a call reaches (a helper the
analysis follows, a method of the class, a function kept on `self`, an imported function the
catalog knows, a builtin, a tensor method or torch function) and what that does to the buffers."""

from __future__ import annotations

import libcst as cst

from gsr_rewrite.frontend.catalog import KnownFunction
from gsr_rewrite.frontend.records import LOCAL, LOCAL_DICT, OPAQUE, SHAPED
from gsr_rewrite.frontend.scopes import STAR_FILLED, fills_star_params, why_not_followed
from gsr_rewrite.frontend.syntax import dotted
from gsr_rewrite.frontend.tensor_ops import TensorOpEvaluator
from gsr_rewrite.frontend.values import (
    EMPTY,
    LIST,
    PART,
    Value,
    buffers,
    container,
    element,
    flat,
    is_buffer,
    is_container,
    is_role,
    structured,
)

BUILTIN_CONTAINERS = {"zip", "enumerate", "list", "tuple", "reversed", "sorted", "iter",
                      "filter"}
#: containers whose items are the argument's in another order, or some of them
REORDERING = {"reversed", "sorted", "filter"}
HARMLESS_BUILTINS = {"len", "isinstance", "range", "float", "int", "bool", "str", "abs", "print",
                     "any", "all", "type", "id", "hasattr", "round"}
#: builtins that read no tensor's contents: a list's length, a tensor's first dimension, types
METADATA_BUILTINS = {"len", "isinstance", "type", "id"}
#: exceptions keep their arguments (`err.args`): what they are given escapes
EXCEPTIONS = {"RuntimeError", "ValueError", "TypeError", "NotImplementedError", "AssertionError",
              "KeyError", "IndexError", "Exception"}
#: builtins whose result may be (an element of) one of their arguments
RETURNS_AN_ARGUMENT = {"max", "min", "next", "sum", "map", "functools.reduce", "copy.copy",
                       "math.prod"}  # (`math.prod([t])` is `1 * t`: a tensor)


class Evaluator(TensorOpEvaluator):
    """Abstract evaluation of expressions under a points-to map; effects accumulate in `eff`.

    The layers: expressions (ExpressionEvaluator), tensor ops (TensorOpEvaluator), calls (here).
    """

    def _call(self, node: cst.Call) -> Value:
        func = node.func
        name = dotted(func)
        if not isinstance(func, (cst.Name, cst.Attribute)):  # `getattr(grad, stat)()`, `fs[0]()`
            callee = self.value(func)  # (its own calls and reads happen first)
            return self._unknown_call(node, "a computed callable", callee,
                                      [(a, self.read(a.value)) for a in node.args])
        if isinstance(func, cst.Name) and func.value in self.pt:
            bound = self.pt[func.value]
            targets = sorted(b[len("%fn:"):] for b in bound if b.startswith("%fn:"))
            ops = sorted(b[len("%torch:"):] for b in bound if b.startswith("%torch:"))
            if targets or ops:  # `func = _multi if foreach else _single; func(...)`: what
                # any of them returns (`h = lambda_like_helper; a = h(g)`: a is g)
                return frozenset().union(*(self._helper_call(t, node) for t in targets),
                                         *(self._torch(node, op) for op in ops))
        if isinstance(func, cst.Attribute) and func.attr.value in self.unknowns.class_callables \
                and func.attr.value in self.methods and self._names_the_class(func.value):
            return self._helper_call("self." + func.attr.value, node)
        known = self._known(name)
        if known is not None:
            return self._known_call(node, known)
        if isinstance(func, cst.Attribute) and (name is None or not name.startswith("torch.")):
            if isinstance(func.value, cst.Name) and LOCAL_DICT <= self.peek(func.value):
                return self._local_dict_method(node, func.value.value, func.attr.value)
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
        if name in ("getattr", "hasattr") and len(node.args) >= 2 and \
                isinstance(node.args[1].value, cst.SimpleString) and \
                str(node.args[1].value.evaluated_value).isidentifier():
            # `getattr(p, "grad", None)`, `hasattr(self, "_cuda_graph_capture_health_check")`:
            # the attribute is read as `p.grad` is (a property of the class runs code there)
            attr = str(node.args[1].value.evaluated_value)
            got = self.value(cst.Attribute(node.args[0].value, cst.Name(attr)))
            if name == "hasattr":
                return EMPTY
            return got | frozenset().union(*(self.value(a.value) for a in node.args[2:]))
        if name in ("map", "filter") and node.args and isinstance(node.args[0].value, cst.Lambda):
            return _lazy_lambda_value(self, name, node)  # (filter is a container too: first)
        called = _called_back(name, node)
        if called is not None and not (isinstance(called, cst.Name) and called.value in
                                       HARMLESS_BUILTINS | BUILTIN_CONTAINERS):
            # `map(operator.attrgetter("grad"), [p])`, `sorted(ps, key=self._norm)`: it calls
            # code the analysis does not follow on what it is given (params: their gradients)
            return self._unknown_call(node, f"`{name}` given a callable", EMPTY,
                                      [(a, self.read(a.value)) for a in node.args])
        args = [self._builtin_argument(name, a.value) for a in node.args]
        if name == "type" and len(args) == 1 and "%self" in args[0]:
            return self._opaque()  # the class: its attributes are what anyone put there
        if name not in ("id", "super", "type") and any("%self" in v for v in args) and \
                not self.raising:
            # `len(self)`, `print(self)`, `isinstance(self, C)`: dunders of the object, its class
            # or C's metaclass run here (in `raise E(str(self))` the step ends raising: what a
            # step that raises leaves may differ from the original's anyway, README)
            self._touch_all(node, f"the optimizer given to `{name}`, which may call its methods")
        if name in BUILTIN_CONTAINERS:
            got = frozenset().union(*args) if args else EMPTY
            # `reversed((g, m))`, `sorted(...)`, `filter(...)`: not the tuple's order
            return flat(got) if name in REORDERING else got
        if name in EXCEPTIONS or name in ("set", "frozenset"):
            # `set(xs)` as `{x, y}` is: what goes in escapes, what comes out is opaque
            kept = f"kept in the arguments of `{name}`" if name in EXCEPTIONS else \
                "stored in a container the analysis does not follow"
            for a, v in zip(node.args, args, strict=True):
                for b in buffers(v):
                    self.eff.escapes.append((b, kept, a))
            return EMPTY if name in EXCEPTIONS else LOCAL
        if name in RETURNS_AN_ARGUMENT:
            return frozenset().union(*map(element, args), *args) if args else EMPTY
        if name in ("abs", "round") and args and (buffers(args[0]) or SHAPED in args[0]):
            return frozenset({SHAPED})  # `abs(t)`: a new tensor of t's shape (Tensor.__abs__)
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

    def _builtin_argument(self, name: str | None, e: cst.BaseExpression) -> Value:
        """An argument of a call by name: read, but for the builtins that look at what they
        are given only as objects (`len(group["params"])`, `isinstance(x, T)`), which read no
        tensor's contents (an object the analysis does not model may run code there: read)."""
        if name not in METADATA_BUILTINS:
            return self.read(e)
        reach = self.eff.foreign
        v = self.peek(e)
        if OPAQUE in flat(v):
            return self._note_read(e, v)
        if _access_path(e):  # `len(group["params"])` reaches no other param's buffers
            self.eff.foreign = reach
        return v

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

    def _local_dict_method(self, node: cst.Call, d: str, method: str) -> Value:
        """`d.get(k, v)`, `d.setdefault(k, v)`, `d.values()`, ... of a dict only the name `d`
        reaches (analysis/local_dicts.py): what comes out is what was put in."""
        held = element(self.pt.get(d, EMPTY))
        args = [self.value(a.value) for a in node.args]
        if method in ("setdefault", "update"):
            given = [element(v) if method == "update" and a.keyword is None else flat(v)
                     for a, v in zip(node.args, args, strict=True)]
            self.store_in_dict(d, frozenset().union(*given), node)
        if method in ("get", "setdefault", "pop"):
            return held | frozenset().union(*args[1:])
        if method in ("values", "keys"):
            return container(held)
        if method == "items":
            return container(structured([held, held]))
        return EMPTY  # update, clear

    def store_in_dict(self, d: str, v: Value, where: cst.CSTNode) -> None:
        """`d[k] = v` into a dict only `d` reaches: it holds v from here on (a tensor put in
        a dict escapes all the same: its reads and writes through the dict are followed, but
        the planner does not rely on that yet)."""
        self.eff.weak[d] = self.eff.weak.get(d, EMPTY) | container(v)
        for b in buffers(v):
            self.eff.escapes.append((b, f"stored in the dict `{d}`", where))

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
        why = self.unknowns.not_followed.get(name) or \
            (why_not_followed(nested.node) if nested is not None else None)
        stars = self.unknowns.star_helpers.get(name)
        if why is None and stars is not None and fills_star_params(node, *stars):
            why = STAR_FILLED
        if why is not None:
            args = [(a, self.read(a.value)) for a in node.args] + \
                [(cst.Arg(cst.Name(v)), self.read(cst.Name(v))) for v in free]
            method = name.startswith("self.") and name[5:] not in self.unknowns.class_callables
            return self._unknown_call(node, f"`{name}` ({why})", EMPTY, args, given_self=method)
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
        for b in sorted(self.unknowns.helper_reads.get(name, ())):  # what it reads through roots
            self.eff.reads.append(("@" + b, b, node))
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
        if isinstance(node, cst.FunctionDef):
            self.keep_defaults(node, f"`{node.name.value}`")
        nested = self.closures.by_node.get(id(node))
        if nested is not None and not nested.reason:
            self.eff.assigns[nested.name] = frozenset({"%fn:" + nested.key})
            return
        why = (f"captured by a nested function that is not analysed: {nested.reason}"
               if nested is not None else "captured by a nested function or class")
        self._capture(node, why)


def _lazy_lambda_value(ev: Evaluator, name: str, node: cst.Call) -> Value:
    """`map(lambda q: q.grad, ps)`, `filter(lambda q: ..., ps)`: the lambda runs on each element
    when the result is iterated, which may be later; the value carries what it reads then."""
    lam = node.args[0].value
    assert isinstance(lam, cst.Lambda)
    ev.value(lam)  # what it captures
    items = [element(ev.value(a.value)) for a in node.args[1:]]
    saved, first_read = ev.pt, len(ev.eff.reads)
    ev.pt = dict(ev.pt)
    for param, v in zip(lam.params.params, items, strict=False):
        ev.pt[param.name.value] = v
    try:
        got = ev.read(lam.body) if name == "map" else \
            (ev.value(lam.body), frozenset().union(*items))[1]
    finally:
        ev.pt = saved
    return got | ev.lazy_reads(first_read)


def store_in_state(ev: Evaluator, v: Value, where: cst.CSTNode) -> None:
    """`state["k"] = v`: v becomes persistent optimizer state (a role stored there escapes)."""
    for b in buffers(v):
        if is_role(b):
            ev.eff.escapes.append((b, "stored in optimizer state", where))
        else:
            ev.eff.persistent.add(b)


def _dict_view(v: Value, method: str) -> Value:
    """`d.values()` / `d.items()` / `d.keys()` of a container whose elements are d's values."""
    if method == "keys":
        return EMPTY
    if method == "values":
        return v
    return container(structured([EMPTY, element(v)]), partition=PART in v)


#: builtins that call a function they are given on the items of what they are given
_CALLING_BACK = {"map": 0, "filter": 0, "functools.reduce": 0, "sorted": None, "min": None,
                 "max": None}


def _called_back(name: str | None, node: cst.Call) -> cst.BaseExpression | None:
    """The function `name` (a builtin of `_CALLING_BACK`) calls back: its first argument, or
    its `key=`; None for other calls."""
    if name not in _CALLING_BACK:
        return None
    at = _CALLING_BACK[name]
    if at is not None:
        return node.args[at].value if len(node.args) > at else None
    return next((a.value for a in node.args if a.keyword and a.keyword.value == "key"), None)


def _access_path(e: cst.BaseExpression) -> bool:
    """`x`, `x.a`, `x["k"]`, `x[0].a`: names, attributes and constant subscripts only."""
    while isinstance(e, (cst.Attribute, cst.Subscript)):
        if isinstance(e, cst.Subscript) and (
                len(e.slice) != 1 or not isinstance(e.slice[0].slice, cst.Index) or
                not isinstance(e.slice[0].slice.value, (cst.SimpleString, cst.Integer))):
            return False
        e = e.value
    return isinstance(e, cst.Name)
