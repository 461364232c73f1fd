"""`_Checker`, the abstract evaluation of one flow node of a run: which expressions are strips
(tensors of the run), and the first use that would differ between a strip and its whole tensor
(a reduction, a reshape, a tensor-dependent branch, a mutation that would run once per strip).
Also the small CST helpers (`_flat_targets`, `_code`, ...) that `aliases` and `region_checks`
use too."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

import libcst as cst

from gsr_rewrite.analysis.dataflow import Node, PointsTo
from gsr_rewrite.frontend.catalog import OpCatalog
from gsr_rewrite.frontend.effects import EMPTY, buffers
from gsr_rewrite.frontend.scopes import loaded_names
from gsr_rewrite.frontend.syntax import dotted, for_ins
from gsr_rewrite.transform.stripmine.region import _Refuse

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


class _Checker:
    """Abstract evaluation of one flow node: is each expression a tensor of the run (a strip)?

    Raises _Refuse at the first use that would differ between a strip and the whole tensor."""

    def __init__(self, pt: PointsTo, cat: OpCatalog, strip_names: set[str],
                 positions: frozenset[str] = frozenset(),
                 hoisted: dict[str, str] | None = None,
                 helpers: Collection[str] = frozenset(),
                 closures: Mapping[str, tuple[str, ...]] | None = None) -> None:
        self.pt = pt
        self.helpers = helpers  # helpers that may run once per strip (helpers.py)
        self.closures = closures or {}  # ... nested ones, by local name: their free variables
        self.closure_reads: set[str] = set()  # what the nested functions called here read
        self.hoisted = hoisted or {}  # `p.grad` -> the placeholder of its hoisted read (hoist.py)
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
            self._message(s.msg)
        elif isinstance(s, cst.Raise):
            self._message(s.exc)
            self._message(s.cause.item if s.cause is not None else None)
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

    def _message(self, x: cst.BaseExpression | None) -> None:
        """What a raise or an assert raises: region_checks lets it run only where the run has
        changed nothing yet, so it runs once, in the first strip, as in the original; it may
        read no tensor (a strip there, whole in the original)."""
        read = loaded_names(x) if x is not None else frozenset()
        if any(v in self.strip_names or buffers(self.pt.get(v, EMPTY)) for v in read):
            raise _Refuse("the exception it raises reads a tensor of the run")

    def expr(self, e: cst.BaseExpression) -> bool:
        if isinstance(e, cst.Name):
            return self.name_is_tensor(e.value)
        if self.hoisted and isinstance(e, (cst.Attribute, cst.Subscript)) and \
                _code(e) in self.hoisted:
            self.loads.append(self.hoisted[_code(e)])  # read before the run, then sliced
            self.strip = True
            return True
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
            del self.scope[-len(for_ins(e.for_in)):]

    def call(self, e: cst.Call) -> bool:
        name = dotted(e.func)
        args = [a.value for a in e.args]
        out_arg = next((a.value for a in e.args if a.keyword and a.keyword.value == "out"), None)
        if name is not None and name in self.helpers:  # per element: a strip out if one in
            return self.exprs(args)
        if name is not None and name in self.closures:  # ... reading its free variables now
            if any(v in frame for frame in self.scope for v in self.closures[name]):
                raise _Refuse(f"`{name}` reads a name a comprehension of the run rebinds")
            free = [v for v in self.closures[name] if self.name_is_tensor(v)]
            self.closure_reads.update(free)
            return self.exprs(args) or bool(free)
        if name == "hasattr" and len(args) == 2 and isinstance(args[0], cst.Name) and \
                self._is_module(args[0].value):  # `hasattr(torch, "_foreach_lerp_")`
            return False
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
            if _elementwise_bound(fn, e, tensors):
                return True
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
        if m in cat.elementwise or m in cat.creation or m in ("detach", "contiguous") or \
                _elementwise_bound(m, e, [True, *tensors]):
            return True
        if m in cat.inplace_kill or (m.endswith("_") and (cat.inplace_base(m) is not None
                                                          or m[:-1] in cat.elementwise)):
            return True
        if m in _SAME_ON_STRIPS:
            return False
        raise _Refuse(f"`.{m}()` is not per-element")


def _elementwise_bound(fn: str, e: cst.Call, tensors: list[bool]) -> bool:
    """`torch.min(a, b)`, `a.max(b)`: of two tensors of the run, the element-wise minimum or
    maximum (with one tensor, or a dimension, a reduction). `tensors`: which of the operands,
    the receiver first, are tensors of the run."""
    return fn in ("min", "max") and len(tensors) == 2 and all(tensors) and \
        all(a.keyword is None and not a.star for a in e.args)


def _item_of_list(e: cst.Subscript) -> tuple[str, str] | None:
    """`xs[i]` with plain names: (xs, i)."""
    if isinstance(e.value, cst.Name) and len(e.slice) == 1 and \
            isinstance(e.slice[0].slice, cst.Index) and \
            isinstance(e.slice[0].slice.value, cst.Name):
        return e.value.value, e.slice[0].slice.value.value
    return None


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
