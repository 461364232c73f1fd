"""The evaluator's first layer: names, attributes, subscripts, operators and comprehensions.
`ExpressionEvaluator` holds what the whole evaluator is given (points-to map, op catalog,
helpers, ...) and the effects it accumulates; calls are `TensorOpEvaluator` (tensor_ops.py) and
`Evaluator` (calls.py)."""

from __future__ import annotations

from collections.abc import Mapping

import libcst as cst

from gsr_rewrite.frontend.catalog import OpCatalog
from gsr_rewrite.frontend.closures import Closures
from gsr_rewrite.frontend.records import (
    LOCAL,
    LOCAL_DICT,
    OPAQUE,
    PARTIAL,
    SHAPED,
    Alloc,
    Effects,
    Unknowns,
)
from gsr_rewrite.frontend.scopes import loaded_names
from gsr_rewrite.frontend.syntax import (
    adds_axis,
    const_index,
    const_key,
    dotted,
    for_ins,
    reads_attributes_by_name,
    target_names,
    tuple_leaves,
)
from gsr_rewrite.frontend.values import (
    EMPTY,
    LIST,
    Value,
    buffers,
    container,
    element,
    exact_items,
    flat,
    is_role,
    is_structured,
    item,
    structured,
)

#: attributes of a tensor that are not tensors (metadata); any other attribute may be a view
TENSOR_METADATA = {"shape", "dtype", "device", "ndim", "is_cuda", "requires_grad", "layout",
                   "is_sparse", "is_leaf", "grad_fn", "itemsize", "nbytes", "names", "is_meta",
                   "is_quantized", "is_mps", "is_complex"}

#: tensor attributes that are views of all of a tensor's elements (a write to every element of
#: one overwrites the tensor); any other attribute of a tensor may be a view of some (`.real`)
_WHOLE_VIEWS = frozenset({"data", "T", "mT", "H", "mH"})

#: builtins that consume a generator expression given to them before they return
_CONSUMERS = frozenset({"sum", "any", "all", "min", "max", "list", "tuple", "sorted", "set",
                        "frozenset", "dict", "torch.stack", "torch.cat", "math.fsum"})

_BINOPS: dict[type, str] = {cst.Add: "add", cst.Subtract: "sub", cst.Multiply: "mul",
                            cst.Divide: "div", cst.Power: "pow"}


class ExpressionEvaluator:
    """What an evaluation is given and what it found (`eff`); expressions other than calls."""

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
        self.raising = False  # evaluating a `raise` statement: the step ends there, raising
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
        self._eager: set[int] = set()  # generator expressions a builtin consumes at once

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
            if dotted(node.func) in _CONSUMERS:  # `sum(q.grad.norm() for q in ps)`: run now
                self._eager |= {id(a.value) for a in node.args
                                if isinstance(a.value, cst.GeneratorExp)}
            return self._call(node)
        if isinstance(node, cst.BinaryOperation):
            left, right = self.read(node.left), self.read(node.right)
            if isinstance(node.operator, (cst.Add, cst.Multiply)) and (
                    is_sequence(node.left, left) or is_sequence(node.right, right)):
                both = flat(left) | flat(right)  # `grads + []`, `[g] * 2`: the same tensors
                return both | LIST if buffers(both) else both
            return self._alloc(node, _BINOPS.get(type(node.operator), "?"), "operator",
                               [node.left, node.right], left | right)
        if isinstance(node, cst.UnaryOperation):
            v = self.read(node.expression)
            if isinstance(node.operator, cst.Minus):
                return self._alloc(node, "neg", "operator", [node.expression], v)
            if isinstance(node.operator, cst.Plus):  # `+t` is `t` itself (torch.positive)
                return v
            if isinstance(node.operator, cst.BitInvert):  # `~mask`: a new tensor
                return self._alloc(node, "bitwise_not", "operator", [node.expression], v)
            return EMPTY  # `not x`: a bool
        if isinstance(node, cst.IfExp):  # the test's truth, a tensor's: its contents
            self.read(node.test)
            return self.value(node.body) | self.value(node.orelse)
        if isinstance(node, cst.Comparison):
            return self._comparison(node)
        if isinstance(node, cst.BooleanOperation):  # `a and b` tests a's truth
            return self.read(node.left) | self.value(node.right)
        if isinstance(node, (cst.Tuple, cst.List)):
            items = [self.value(el.value) for el in node.elements]
            stars = [isinstance(el, cst.StarredElement) for el in node.elements]
            if not any(stars):
                return structured(items)
            spliced = exact_items(items[-1]) if stars[-1] and not any(stars[:-1]) else None
            if spliced is not None:  # `(param, *tensors)` of a tuple of known positions
                return structured([*items[:-1], *spliced])
            out = frozenset().union(*map(flat, items))  # positions after a *star are unknown
            return out | LIST if buffers(out) else out
        if isinstance(node, (cst.ListComp, cst.GeneratorExp)):
            return self._comprehension_value(node)
        if isinstance(node, cst.Lambda):
            own = {x.name.value for x in (*node.params.posonly_params, *node.params.params,
                                          *node.params.kwonly_params)}
            self._capture(node.body, "captured by a lambda", own)  # `lambda n: 1 - n`
            self.keep_defaults(node, "a lambda")
            # `lambda q: q.grad.norm()`, called by code not seen, reads its argument's gradient
            return self._opaque() if reads_attributes_by_name(node.body) else EMPTY
        if isinstance(node, cst.FormattedString):  # f"{p.grad[0].item()}": its parts run now
            for part in node.parts:
                if isinstance(part, cst.FormattedStringExpression):
                    self.read(part.expression)
                    if part.format_spec:
                        self.value(cst.FormattedString(parts=part.format_spec))
            return EMPTY
        if isinstance(node, cst.NamedExpr):
            v = self.value(node.value)
            if isinstance(node.target, cst.Name):
                self.eff.assigns[node.target.value] = v
            return v
        if isinstance(node, (cst.Dict, cst.Set, cst.DictComp, cst.SetComp)):
            self._capture(node, "stored in a container the analysis does not follow")
            if isinstance(node, (cst.DictComp, cst.SetComp)):
                self._comprehension_value(node)  # what it reads (`{k: q.grad for ...}`)
            for el in node.elements if isinstance(node, (cst.Dict, cst.Set)) else ():
                for item in (getattr(el, "key", None), el.value):  # `**{"other": q.grad}` too
                    if isinstance(item, cst.BaseExpression):
                        for b in buffers(self.read(item)):
                            self.eff.escapes.append((b, "stored in a container the analysis "
                                                     "does not follow", item))
            return LOCAL
        if isinstance(node, cst.Imaginary):
            return frozenset({SHAPED})  # `0.3 + 0j`: a complex factor, guarded as one
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
            if attr == "defaults":
                return EMPTY
            if attr in self.methods:  # not called: a property's getter runs here (it may read
                self.code_run_here(node, f"`self.{attr}`, a method of the class not called "
                                   "(a property runs code)")  # any gradient)
            elif not (attr.startswith("__") and attr.endswith("__")):  # (`__dict__`: Python's)
                # a class attribute (a base's `hidden = property(f)`) may be a descriptor, a
                # data descriptor even where a method binds the name (`scale = property(get,
                # set)` and `self.scale = 1.0`): checked at run time (runtime.r_step)
                self.eff.class_attrs.add(attr)
            if attr in self.unknowns.self_constants:
                return EMPTY
            return self._opaque()
        if attr in ("grad", "_grad") and ("param" in base or OPAQUE in base):
            self.eff.rooted.add("grad")
            if OPAQUE in base:  # some parameter's gradient, not necessarily a loop's own
                self.eff.foreign = 2
            return frozenset({"grad"}) | (base & {OPAQUE})
        if attr in TENSOR_METADATA:
            return EMPTY
        if attr in _WHOLE_VIEWS:
            return base
        if attr in ("real", "imag"):
            return base | {PARTIAL} if buffers(base) else base  # some of its elements
        # any other attribute of a tensor is the user's (`p.main_grad`: maybe the gradient)
        return base | {PARTIAL, OPAQUE} if buffers(base) else base

    def _opaque(self) -> Value:
        return frozenset({OPAQUE})

    def code_run_here(self, node: cst.CSTNode, why: str) -> None:
        """Code the analysis does not see runs here with access to the optimizer (tensor_ops:
        it may read and write every buffer)."""
        raise NotImplementedError

    def touched(self, v: Value) -> Value:
        """The buffers a read or a write through a value of `v` may touch."""
        return buffers(v) | (self.unknowns.roles if OPAQUE in flat(v) else EMPTY)

    def _subscript(self, node: cst.Subscript) -> Value:
        base = self.peek(node.value)
        key = const_key(node)
        keyed = bool(base & {"%statedict", "%pstate", "%groups", "%group", "%dict", "%local"})
        for el in node.slice:  # a tensor indexing anything but a dict is read (`lut[g.long()]`)
            if isinstance(el.slice, cst.Index):
                (self.peek if keyed else self.read)(el.slice.value)
        if "%statedict" in base:
            return frozenset({"%pstate"})
        if LOCAL_DICT <= base:  # `d[k]` of a dict the analysis follows: anything put in it
            return element(base)
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
        index = const_index(node)
        if index is not None and is_structured(base):
            return item(base, index)
        if "%list" in base or not buffers(base):
            return element(base) | ({SHAPED} if adds_axis(node) else EMPTY)  # `t0d[None]`
        return element(base) | {PARTIAL}  # a view into a tensor: maybe some of its elements

    def new_dict(self, node: cst.BaseExpression) -> Value:
        """The value of a dict the analysis follows (records.LOCAL_DICT), made by `node`: `{}`,
        `{k: v}` of names and constants, `dict(k=v)`, `defaultdict(list)`; other entries (and
        `**other`) may be anything (opaque)."""
        entries: list[cst.BaseExpression] = []
        if isinstance(node, cst.Dict):
            for el in node.elements:
                if not isinstance(el, cst.DictElement):  # `**other`: whatever `other` holds
                    return LOCAL_DICT | container(frozenset({OPAQUE}))
                entries += [el.key, el.value]
        elif isinstance(node, cst.Call) and dotted(node.func) == "dict":
            entries = [a.value for a in node.args]
        contents = EMPTY
        for e in entries:
            if not all(isinstance(x, (cst.Name, cst.BaseNumber, cst.BaseString, cst.Tuple))
                       for x in tuple_leaves(e)):
                return LOCAL_DICT | container(frozenset({OPAQUE}))
            contents |= flat(self.value(e))
        return LOCAL_DICT | container(contents)

    def _comprehension_value(self, node: cst.ListComp | cst.GeneratorExp | cst.DictComp |
                             cst.SetComp) -> Value:
        """The value of what the comprehension yields; a `for` clause's iterable is evaluated
        where the earlier clauses' targets are bound, and every `if` is read. A generator
        expression runs when it is iterated, which may be later: its value carries all it
        reads (using it reads them), unless a builtin consumes it at once (`sum(...)`)."""
        saved, first_read, inside = self.pt, len(self.eff.reads), False
        self.pt = dict(self.pt)
        clauses = for_ins(node.for_in)
        try:
            for f in clauses:
                iterated = self.value(f.iter)
                it = element(iterated)
                if not inside:  # the first iterable runs once, in the enclosing scope
                    self._comprehension, inside = self._comprehension + 1, True
                for name in target_names(f.target):
                    self.pt[name] = it if isinstance(f.target, cst.Name) else flat(it)
                for cond in f.ifs:
                    self.value(cond.test)
            elts = [node.key, node.value] if isinstance(node, cst.DictComp) else [node.elt]
            v = frozenset().union(*(self.read(e) for e in elts))
            v = v | LIST if buffers(v) else v
            # positions: a list, or a generator a builtin consumes at once (one iterated
            # later may have been advanced: `next(gen)` before `(p, *gen)`)
            eager = isinstance(node, cst.ListComp) or id(node) in self._eager
            if isinstance(node, (cst.ListComp, cst.GeneratorExp)) and eager and \
                    len(clauses) == 1 and not clauses[0].ifs and \
                    isinstance(clauses[0].target, cst.Name):
                v = self._positional(node.elt, clauses[0].target.value, iterated) or v
            if isinstance(node, cst.GeneratorExp) and id(node) not in self._eager:
                v |= self.lazy_reads(first_read)
            return v
        finally:
            self._comprehension -= inside
            self.pt = saved

    def _positional(self, elt: cst.BaseExpression, name: str, iterated: Value) -> Value:
        """`tuple(view(s) for s in tensors)` over a tuple of known positions (values.exact_items):
        the element evaluated for each item, at its position; EMPTY for any other iterable. Its
        effects were recorded by the evaluation for all items at once: these are not kept."""
        items = exact_items(iterated)
        if items is None:
            return EMPTY
        saved, scope, out = (self.eff, self.pt), dict(self.pt), []
        self.pt = scope
        try:
            for v in items:
                self.eff, scope[name] = Effects(), v
                out.append(self.value(elt))
        finally:
            self.eff, self.pt = saved
        return structured(out)

    def lazy_reads(self, first_read: int) -> Value:
        """The buffers read since `first_read`, as what a value that reads them when used later
        holds (not a kill target: a write through it may be to any part of them)."""
        lazy = frozenset(b for _, b, _ in self.eff.reads[first_read:])
        return lazy | {PARTIAL} if lazy else EMPTY

    def keep_defaults(self, node: cst.Lambda | cst.FunctionDef, what: str) -> None:
        """Default arguments are evaluated once, where the function is made, and kept by it."""
        for param in (*node.params.posonly_params, *node.params.params,
                      *node.params.kwonly_params):
            if param.default is not None:
                for b in buffers(self.read(param.default)):
                    self.eff.escapes.append((b, f"kept as a default argument of {what}",
                                             param.default))

    def _capture(self, node: cst.CSTNode, why: str, own: set[str] | None = None) -> None:
        # variables only: `p.grad` in `lambda p: p.grad is not None` captures no `grad`
        for name in sorted(loaded_names(node) - (own or set())):
            for b in buffers(self.pt.get(name, EMPTY)):
                self.eff.escapes.append((b, f"`{name}` {why}", node))

    def _alloc(self, node: cst.BaseExpression, op: str, form: str,
               operands: list[cst.BaseExpression], inputs: Value) -> Value:
        if not buffers(inputs):  # scalar arithmetic, or a new object made from unknown ones
            return flat(inputs) & {OPAQUE, SHAPED}
        site = self.site_of[node]
        self.eff.allocs.append(Alloc(node, site, op, form, operands, self._comprehension > 0))
        return frozenset({site}) | (LIST if form == "foreach" else EMPTY)

    # -- calls -------------------------------------------------------------------------------
    def _call(self, node: cst.Call) -> Value:
        """A call's value; its effects go to `eff`. Defined by `Evaluator` (calls.py)."""
        raise NotImplementedError

    def _comparison(self, node: cst.Comparison) -> Value:
        """`a > b`'s value (tensor_ops.py)."""
        raise NotImplementedError


def is_sequence(node: cst.BaseExpression, v: Value) -> bool:
    """May `node` (of value v) be a list or tuple, so that `+` and `*` concatenate or repeat it
    (its items stay the same objects) rather than compute a new tensor?"""
    return isinstance(node, (cst.List, cst.Tuple, cst.ListComp)) or "%list" in flat(v) or \
        is_structured(v) or any(b.startswith("%*:") for b in v) or "%local" in v
