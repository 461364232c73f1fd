"""What the abstract evaluation records about one statement (`Effects`, `Alloc`), and how it
stands for what it cannot see (`Unknowns` and the opaque, local and shaped markers)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import libcst as cst

from gsr_rewrite.frontend.values import Buf, Value

OPAQUE = "%opaque"  # an object the analysis does not model: it may be or hold any buffer
#: a dict or set made by the analysed code: what goes in escapes, what comes out is opaque
LOCAL: Value = frozenset({"%local"})
#: a dict only its own name reaches (analysis/local_dicts.py): beside this marker, the value is
#: a container of everything put in it, keys and values (what goes in still escapes)
LOCAL_DICT: Value = frozenset({"%dict"})

#: a state entry under a key the analysis cannot name; among what an opaque object may be
UNNAMED_STATE = "state:?"

#: beside a buffer: the value may be a view of only some of its elements (`g[0]`, `g.narrow(...)`)
#: or a copy of it (`g.float()` of a float64 `g`, `g.reshape(...)` of a strided one): writing
#: every element of it need not overwrite the buffer, so it is no kill (tensor_ops._overwrite)
PARTIAL = "%partial"

#: a tensor of unknown shape that aliases nothing (a reduction over some dims): the analysis
#: does not count it as a buffer, but it is a tensor operand (guards check it) and never a host
#: scalar of a strip-mined run
SHAPED = "%shaped"


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
    roles: Value = frozenset({"grad", "param", UNNAMED_STATE})
    #: self.ATTR that only ever holds data (a number, a string): every binding is data (in
    #: `__init__`, of its arguments too; elsewhere literals, or `self.ATTR += 1`)
    self_constants: frozenset[str] = frozenset()
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
    #: names of the function that hold a dict only they reach (analysis/local_dicts.py)
    local_dicts: frozenset[str] = frozenset()
    #: names the function declares `global` or `nonlocal`: they live outside it (opaque; what is
    #: stored in them escapes)
    outer_names: frozenset[str] = frozenset()
    #: what each analysed helper returns, so far (see Evaluator._helper_call)
    helper_returns: Mapping[str, Value] = field(default_factory=dict)
    #: the buffers each analysed helper reads through a root (`q.grad` of the params it was
    #: given, `state[...]`) before anything it does overwrites them, so far: its entry's live
    #: ("@b", b) facts; its call reads them
    helper_reads: Mapping[str, frozenset[str]] = field(default_factory=dict)
    #: the function is a helper: what it returns goes to code the analysis follows (`step`
    #: returns to the user: what it returns escapes)
    returns_to_caller: bool = False
    #: self_constants that hold data only where the R step's start checks it (checked_data.py)
    checked_data: frozenset[str] = frozenset()
    #: functions a call would follow (module functions, `self.m` methods) whose calls are taken
    #: for unknown calls instead, and why (scopes.why_not_followed)
    not_followed: Mapping[str, str] = field(default_factory=dict)
    #: helpers with *args or **kwargs, followed only where a call fills no `**kwargs` (and
    #: `*args` with plain positional arguments only): their named positional parameters (self
    #: not counted), the names a keyword may give, and whether they take `*args`
    star_helpers: Mapping[str, tuple[int, frozenset[str], bool]] = field(default_factory=dict)
    #: a method of the class hands `self` to other code (`helpers.register(self)`): any unknown
    #: function may reach the optimizer through what that code kept
    self_handed_away: bool = False



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
    #: `self.x` read (not a method of the class): on the class it may be a property or another
    #: descriptor (runtime.r_step checks that none of them runs code: `class_attrs=`)
    class_attrs: set[str] = field(default_factory=set)
    # reaches buffers of other parameters than a per-element loop's own: 1 through its group's
    # params list (`group["params"][i - 1]`), 2 through anything else (self.param_groups, an
    # opaque object, an unknown call)
    foreign: int = 0
