"""The rule book: shipped rules prove, wrong or unsafe rules are rejected, proofs are cached."""

from __future__ import annotations

import ast
import builtins
import importlib.resources
import json
import operator
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mpmath
import pytest
import sympy as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gsr_rewrite import rulebook
from gsr_rewrite.rulebook import (
    RuleBookError,
    RuleError,
    cache,
    check_rulebook,
    format_rules_table,
    load_rulebook,
    parser,
    prover,
)
from tests.common import REPO, TESTS

RULES_BAD = TESTS / "fixtures" / "rules_bad"

# The shipped book: id -> (condition as written, exact). Adding a rule means adding it here.
SHIPPED = {
    "lion-reorder": ("b2 != 0", False),
    "lion-reorder-lerp": ("b2 != 0", False),
    "lion-reorder-sign": ("b2 > 0", False),
    "ema-recover-old": ("b != 0", False),
    "lerp-as-weighted-sum": ("true", False),
    "lerp-as-add-scaled-diff": ("true", False),
    "ema-as-lerp": ("true", False),
    "addcmul-expand": ("true", False),
    "addcdiv-expand": ("true", False),
    "sub-as-neg-reversed": ("true", True),
    "sub-as-add-neg": ("true", True),
    "neg-into-mul": ("true", True),
    "neg-into-div": ("b != 0", True),
    "div-as-mul-reciprocal": ("s != 0", False),
    "div-chain": ("a != 0 and b != 0", False),
    "clamp-min-as-maximum": ("true", True),
    "sqrt-of-quotient": ("true", False),
    "bias-correction-fold": ("bc1 != 0", False),
    "adam-step-as-addcdiv": ("bc1 != 0", False),
    "adam-eps-hat": ("bc1 != 0", False),
    "decoupled-weight-decay": ("true", False),
}

LION = """
[[rule]]
id = "{id}"
summary = "Lion reorder"
exact = false
condition = "{condition}"
before = "{before}"
after = "{after}"
[rule.symbols]
m = "real"
g = "real"
b1 = {{ assume = "real", range = [0.0, 1.0] }}
b2 = {{ assume = "real", range = [0.0, 1.0] }}
[rule.substitute]
m_new = "b2*m + (1 - b2)*g"
"""


def lion(
    tmp_path: Path,
    *,
    id: str = "t-lion",
    condition: str = "b2 != 0",
    before: str = "b1*m + (1 - b1)*g",
    after: str = "(b1/b2)*m_new + (1 - b1/b2)*g",
) -> Path:
    path = tmp_path / f"{id}.toml"
    text = LION.format(id=id, condition=condition, before=before, after=after)
    path.write_text(text)
    return path


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own empty proof cache."""
    path = tmp_path / "cache"
    monkeypatch.setenv("GSR_REWRITE_CACHE_DIR", str(path))
    return path


@pytest.fixture(scope="module")
def shipped() -> rulebook.RuleBook:
    """The shipped book, proved once for the read-only tests (no cache involved)."""
    return load_rulebook(use_cache=False, strict=True)


# -- the shipped book -------------------------------------------------------------------------


def test_every_shipped_rule_proves() -> None:
    book = load_rulebook(strict=True)
    assert book.failures == []
    assert set(book.rules) == set(SHIPPED)
    for rid, (condition, exact) in SHIPPED.items():
        rule = book.rules[rid]
        assert (rule.text["condition"], rule.exact) == (condition, exact), rid
        assert rule.proof is not None and rule.proof.checked >= rulebook.MIN_POINTS
        assert rule.summary and "\n" not in rule.summary
        assert Path(rule.source).name in {"reorder.toml", "identities.toml", "stepsize.toml"}


def test_rules_expose_sympy_expressions(shipped: rulebook.RuleBook) -> None:
    rule = shipped.get("lion-reorder")
    assert rule is not None
    m, g, b1, b2 = (rule.symbols[n].symbol for n in ("m", "g", "b1", "b2"))
    assert rule.condition == sp.Ne(b2, 0)
    assert rule.substitute["m_new"] == b2 * m + (1 - b2) * g
    assert sp.Symbol("m_new", real=True) in rule.after.free_symbols  # as written
    assert sp.simplify(rule.before_in_symbols - rule.after_in_symbols) == 0
    assert rule.before == b1 * m + (1 - b1) * g
    assert shipped.get("no-such-rule") is None


def test_table_lists_every_rule(shipped: rulebook.RuleBook) -> None:
    table = format_rules_table(shipped)
    assert table.splitlines()[0].split() == ["ID", "CONDITION", "EXACT", "FILE", "SUMMARY"]
    for rid, (condition, exact) in SHIPPED.items():
        line = next(ln for ln in table.splitlines() if ln.startswith(rid + " "))
        assert condition in line and ("yes" if exact else "no") in line.split()
    assert f"{len(SHIPPED)} rules proved, 0 failed" in table


def test_check_reproves_without_touching_the_cache(cache_dir: Path) -> None:
    ok, report = check_rulebook()
    assert ok and f"{len(SHIPPED)} proved, 0 failed" in report
    assert not cache_dir.exists()
    ok, report = check_rulebook([RULES_BAD])
    assert not ok and "bad-lion-reorder" in report and "ok      good-neighbour" in report


# -- wrong rules --------------------------------------------------------------------------------


def test_wrong_rule_is_rejected_with_its_residual() -> None:
    book = load_rulebook([RULES_BAD])
    assert set(book.rules) == {"good-neighbour"}  # the correct neighbour still loads
    (failure,) = book.failures
    assert failure.rule_id == "bad-lion-reorder"
    assert failure.residual is not None
    b1, b2, g = sp.symbols("b1 b2 g", real=True)
    residual = sp.sympify(failure.residual, locals={"b1": b1, "b2": b2, "g": g})  # test-side only
    assert sp.simplify(residual - b1 * g * (b2 - 1) / b2) == 0
    text = str(failure)
    assert "bad-lion-reorder" in text and "wrong_lion.toml" in text and failure.residual in text


def test_strict_mode_raises_with_every_failure() -> None:
    with pytest.raises(RuleBookError, match="bad-lion-reorder") as info:
        load_rulebook([RULES_BAD], strict=True)
    assert [f.rule_id for f in info.value.failures] == ["bad-lion-reorder"]


def test_numeric_check_catches_a_wrong_rule_on_its_own(tmp_path: Path) -> None:
    rule = parser.parse_rule(
        {**_raw(lion(tmp_path)), "after": "(b1/b2)*m_new + (1 - b1)*g"}, "x.toml"
    )
    with pytest.raises(RuleError, match="numeric check failed"):
        prover._numeric_check(rule)


BAD_CONSTRUCTS = [
    ("__import__('pathlib').Path('{sentinel}').touch()", "not whitelisted"),
    ("open('{sentinel}', 'w')", "function 'open' is not whitelisted"),
    ("eval('m')", "function 'eval' is not whitelisted"),
    ("m.real", "attribute access"),
    ("torch.sqrt(m)", "function 'torch.sqrt' is not whitelisted"),
    ("m[0]", "unsupported Subscript"),
    ("(lambda: m)()", "not whitelisted"),
    ("'m'", "non-numeric constant"),
    ("[m]", "unsupported List"),
    ("m if g else b1", "unsupported IfExp"),
    ("m @ g", "unsupported MatMult"),
    ("m // g", "unsupported FloorDiv"),
    ("f'{{m}}'", "unsupported JoinedStr"),
    ("x + m", "name 'x' is not declared"),
    ("2 ** 1000", "power too large"),
    ("(10 ** 7) ** 60", "power too large"),
    ("1 / 0", "undefined constant"),
    ("lerp(m, g)", "missing argument(s) weight"),
    ("lerp(m, g, 1, 2)", "bad arguments"),
    ("sqrt(y=m)", "bad arguments"),
    ("m + (g < 0)", "ill-formed"),
    ("m +", "syntax error"),
    ("1e999", "non-finite"),
]


@pytest.mark.parametrize(("before", "expected"), BAD_CONSTRUCTS)
def test_non_whitelisted_construct_is_rejected_without_evaluation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, before: str, expected: str
) -> None:
    sentinel = tmp_path / "pwned"
    path = lion(tmp_path, id="evil", before=before.format(sentinel=sentinel))

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("eval/exec called while loading rules")

    monkeypatch.setattr(builtins, "eval", forbidden)
    monkeypatch.setattr(builtins, "exec", forbidden)
    book = load_rulebook([path])
    (failure,) = book.failures
    assert failure.rule_id == "evil" and "evil.toml" in str(failure) and "`before`" in str(failure)
    assert expected in failure.message
    assert not sentinel.exists()
    with pytest.raises(RuleBookError, match="evil"):
        load_rulebook([path], strict=True)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="mgb12 +-*/()._,=<>!'[]aqrtsinl", max_size=30))
def test_translator_only_ever_raises_rule_error(src: str) -> None:
    names = {n: sp.Symbol(n, real=True) for n in ("m", "g", "b1", "b2")}
    try:
        parser.translate(src, "before", names)
    except RuleError:
        pass


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ({"exact": "no"}, "mistyped key(s) ['exact']"),
        ({"before": None}, "mistyped key(s) ['before']"),
        ({"colour": "red"}, "unknown key(s) ['colour']"),
        ({"symbols": {"m": "real", "g": "fuzzy", "b1": "real", "b2": "real"}}, "'fuzzy'"),
        ({"symbols": {"m": {"assume": "positive", "range": [-2, -1]}}}, "contradicts"),
        ({"symbols": {"m": {"range": [1, 0]}}}, "lo < hi"),
        ({"substitute": {"m": "g"}}, "shadows"),
        ({"condition": "b2"}, "is not a condition"),
        ({"condition": "b2 != 0 and false"}, "always false"),
        ({"condition": "b2 > 0 and b2 < 0"}, "contradicts the assumptions"),
    ],
)
def test_malformed_rule_is_a_failure_not_a_crash(
    tmp_path: Path, patch: dict[str, Any], expected: str
) -> None:
    raw = {**_raw(lion(tmp_path)), **patch}
    raw = {k: v for k, v in raw.items() if v is not None}
    book = load_rulebook([_dump(tmp_path / "bad.toml", [raw])])
    assert book.rules == {}
    (failure,) = book.failures
    assert failure.rule_id == "t-lion" and expected in failure.message, failure.message


def test_file_level_problems(tmp_path: Path) -> None:
    (tmp_path / "broken.toml").write_text("[[rule]\nid = ")
    (tmp_path / "ops.toml").write_text('[op.sqrt]\ninplace = "sqrt_"\n')  # e.g. the op catalog
    (tmp_path / "scalar.toml").write_text('rule = "x"\n')
    lion(tmp_path, id="dup")
    (tmp_path / "zdup.toml").write_text((tmp_path / "dup.toml").read_text())
    book = load_rulebook([tmp_path])
    assert set(book.rules) == {"dup"}
    messages = {Path(f.source).name: f.message for f in book.failures}
    assert set(messages) == {"broken.toml", "scalar.toml", "zdup.toml"}
    assert "invalid TOML" in messages["broken.toml"] and "duplicate id" in messages["zdup.toml"]


# -- conditions ---------------------------------------------------------------------------------


def test_numeric_check_skips_points_outside_the_condition(shipped: rulebook.RuleBook) -> None:
    rule = shipped.get("lion-reorder")
    assert rule is not None and rule.proof is not None
    points = list(prover._sample_points(rule))
    assert any(p["b2"] == 0.0 for p in points)  # the edge value is sampled ...
    assert rule.proof.skipped >= 1  # ... and skipped: b2 != 0 fails there


def test_reorder_without_its_condition_is_rejected(tmp_path: Path) -> None:
    book = load_rulebook([lion(tmp_path, condition="true")])
    (failure,) = book.failures
    assert "divides by `b2`" in failure.message and failure.residual == "b2"
    # the numeric check alone also catches it, at the sampled edge b2 = 0
    rule = parser.parse_rule({**_raw(lion(tmp_path)), "condition": "true"}, "x.toml")
    with pytest.raises(RuleError, match=r"`after` is undefined at .*'b2': 0\.0"):
        prover._numeric_check(rule)


def test_symbolic_proof_uses_the_condition(tmp_path: Path) -> None:
    # sign(b2*c) == sign(c) needs b2 > 0: proved with it, refuted without it
    sign = {"before": "sign(b1*m + (1 - b1)*g)", "after": "sign(b1*m_new + (b2 - b1)*g)"}
    assert load_rulebook([lion(tmp_path, condition="b2 > 0", **sign)]).failures == []
    (failure,) = load_rulebook([lion(tmp_path, condition="b2 != 0", **sign)]).failures
    assert "does not simplify to 0" in failure.message and failure.residual


def test_domain_check_reads_the_rule_as_written(tmp_path: Path) -> None:
    # sympy turns m*b2/b2 into m, but code emitted from `after` would still divide by b2
    path = lion(tmp_path, before="m", after="m*b2/b2", condition="true")
    (failure,) = load_rulebook([path]).failures
    assert "divides by `b2`" in failure.message
    assert load_rulebook([lion(tmp_path, before="m", after="m*b2/b2")]).failures == []
    (failure,) = load_rulebook([lion(tmp_path, before="m", after="sqrt(m)**2")]).failures
    assert "takes sqrt of `m`" in failure.message  # m may be negative


# -- where rules come from ----------------------------------------------------------------------


def test_paths_may_be_a_single_file_or_folder() -> None:
    assert set(load_rulebook(RULES_BAD).rules) == {"good-neighbour"}
    assert set(load_rulebook(str(RULES_BAD / "wrong_lion.toml")).rules) == {"good-neighbour"}


def test_falls_back_to_the_repository_rules_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    def not_installed(name: str) -> Any:
        raise ModuleNotFoundError(name)

    monkeypatch.setattr(importlib.resources, "files", not_installed)
    book = load_rulebook(use_cache=False, strict=True)
    assert set(book.rules) == set(SHIPPED)
    assert all(Path(r.source).parent.name == "rules" for r in book.rules.values())


# -- the proof cache ----------------------------------------------------------------------------


def test_cold_and_warm_load_times(cache_dir: Path) -> None:
    script = textwrap.dedent(
        """
        import json, time
        from gsr_rewrite.rulebook import load_rulebook
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            book = load_rulebook(strict=True)
            times.append(time.perf_counter() - t0)
        print(json.dumps({"times": times, "cached": [r.proof.cached for r in book.rules.values()]}))
        """
    )
    root = REPO
    cmd = [sys.executable, "-c", script]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=root)
    result = json.loads(out.stdout)
    cold, warm = result["times"]
    assert cold < 5.0, f"cold load took {cold:.2f} s"
    assert warm < 0.5, f"warm load took {warm:.2f} s"
    assert all(result["cached"]) and (cache_dir / "rule-proofs.json").exists()


def test_warm_load_proves_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    load_rulebook()

    def no_proofs(rule: Any) -> Any:
        raise AssertionError(f"re-proved {rule.id}")

    monkeypatch.setattr(rulebook, "prove", no_proofs)
    book = load_rulebook(strict=True)
    assert all(r.proof is not None and r.proof.cached for r in book.rules.values())


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"[]",
        b'{"entries": []}',
        b'{"entries": {"k": 5}}',
        b'{"entries": {"k": {"ok": true}}}',
        b"\xff\xfe\x00",
        b"",
    ],
)
def test_corrupted_cache_is_ignored_and_rebuilt(cache_dir: Path, content: bytes) -> None:
    cache_dir.mkdir()
    (cache_dir / "rule-proofs.json").write_bytes(content)
    book = load_rulebook(strict=True)
    assert set(book.rules) == set(SHIPPED)
    entries = json.loads((cache_dir / "rule-proofs.json").read_text())["entries"]
    assert len(entries) == len(SHIPPED)
    assert list(cache_dir.iterdir()) == [cache_dir / "rule-proofs.json"]  # no temp files left


def test_cache_key_covers_text_and_proof_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = lion(tmp_path)
    assert load_rulebook([path]).rules["t-lion"].proof.cached is False  # type: ignore[union-attr]
    assert load_rulebook([path]).rules["t-lion"].proof.cached is True  # type: ignore[union-attr]
    path.write_text(path.read_text().replace("Lion reorder", "Lion reorder, reworded"))
    assert load_rulebook([path]).rules["t-lion"].proof.cached is False  # type: ignore[union-attr]
    monkeypatch.setattr(cache, "PROOF_VERSION", "test")
    assert load_rulebook([path]).rules["t-lion"].proof.cached is False  # type: ignore[union-attr]


def test_failures_are_cached_too(monkeypatch: pytest.MonkeyPatch) -> None:
    first = load_rulebook([RULES_BAD]).failures
    monkeypatch.setattr(rulebook, "prove", lambda rule: pytest.fail("re-proved"))
    assert load_rulebook([RULES_BAD]).failures == first


def test_unwritable_cache_dir_is_harmless(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("GSR_REWRITE_CACHE_DIR", str(blocker / "cache"))
    assert len(load_rulebook(strict=True).rules) == len(SHIPPED)


# -- the vocabulary means what torch means ------------------------------------------------------

TORCH_OPS: dict[str, Callable[..., torch.Tensor]] = {
    "sqrt": torch.sqrt, "rsqrt": torch.rsqrt, "reciprocal": torch.reciprocal, "abs": torch.abs,
    "sign": torch.sign, "exp": torch.exp, "log": torch.log, "maximum": torch.maximum,
    "minimum": torch.minimum, "clamp": torch.clamp, "lerp": torch.lerp, "addcmul": torch.addcmul,
    "addcdiv": torch.addcdiv,
}  # fmt: skip


def torch_eval(src: str, env: dict[str, torch.Tensor]) -> torch.Tensor:
    """Evaluate rule text with torch ops, in the spelling written (test-side only)."""

    def node(n: ast.expr) -> Any:
        if isinstance(n, ast.Constant):
            return n.value
        if isinstance(n, ast.Name):
            return env[n.id]
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub):
            return -node(n.operand)
        if isinstance(n, ast.BinOp):
            ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}
            return {**ops, ast.Div: operator.truediv}[type(n.op)](node(n.left), node(n.right))
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name):
            kwargs = {str(k.arg): node(k.value) for k in n.keywords}
            return TORCH_OPS[n.func.id](*map(node, n.args), **kwargs)
        raise AssertionError(ast.dump(n))

    out: torch.Tensor = node(ast.parse(src, mode="eval").body)
    return out


CALLS = [
    "sqrt(a)", "rsqrt(a)", "reciprocal(b)", "abs(b)", "sign(b)", "exp(b)", "log(a)",
    "maximum(b, c)", "minimum(b, c)", "clamp(b, min=c)", "clamp(b, max=c)",
    "clamp(b, min=c, max=a)", "lerp(b, c, w)", "addcmul(b, c, a)", "addcmul(b, c, a, value=0.3)",
    "addcdiv(b, c, a)", "addcdiv(b, c, a, value=-0.7)",
]  # fmt: skip


@pytest.mark.parametrize("src", CALLS)
def test_function_meanings_match_torch(src: str) -> None:
    gen = torch.Generator().manual_seed(0)
    env = {
        "a": torch.rand(2000, generator=gen, dtype=torch.float64) * 3 + 0.1,
        "b": torch.randn(2000, generator=gen, dtype=torch.float64) * 2,
        "c": torch.randn(2000, generator=gen, dtype=torch.float64) * 2,
        "w": torch.rand(2000, generator=gen, dtype=torch.float64),
    }
    expected = torch_eval(src, env)
    symbols = {n: sp.Symbol(n, real=True) for n in env}
    expr = parser.translate(src, "before", symbols)
    for i in range(0, 2000, 97):
        point = {symbols[n]: mpmath.mpf(float(t[i])) for n, t in env.items()}
        value = prover._value(expr, point)
        assert float(value) == pytest.approx(float(expected[i]), rel=1e-12, abs=1e-12), (src, i)


def _rule_inputs(rule: rulebook.Rule, n: int = 50_000) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    env = {}
    for name, spec in rule.symbols.items():
        lo, hi = spec.range
        x = torch.rand(n, generator=gen, dtype=torch.float64) * (hi - lo) + lo
        env[name] = x.float()
    shared = torch.rand(n // 10, generator=gen) * 0.5 + 0.25  # inside every range used
    for x in env.values():
        x[: n // 10] = shared  # equal inputs: a - b == 0, where +0 and -0 appear
    return env


@pytest.mark.parametrize("rid", [r for r, (_, exact) in SHIPPED.items() if exact])
def test_rules_marked_exact_are_bitwise_equal_in_float32(
    shipped: rulebook.RuleBook, rid: str
) -> None:
    rule = shipped.get(rid)
    assert rule is not None
    env = _rule_inputs(rule)
    assert torch.equal(torch_eval(rule.text["before"], env), torch_eval(rule.text["after"], env))


@pytest.mark.parametrize("rid", ["div-as-mul-reciprocal", "lerp-as-add-scaled-diff", "div-chain"])
def test_rules_marked_inexact_really_differ_in_float32(
    shipped: rulebook.RuleBook, rid: str
) -> None:
    rule = shipped.get(rid)
    assert rule is not None and not rule.exact
    env = _rule_inputs(rule)
    before, after = torch_eval(rule.text["before"], env), torch_eval(rule.text["after"], env)
    assert not torch.equal(before, after)
    torch.testing.assert_close(before, after)  # float32 defaults: rtol 1.3e-6, atol 1e-5


# -- helpers ------------------------------------------------------------------------------------


def _raw(path: Path) -> dict[str, Any]:
    import tomllib

    raw: dict[str, Any] = tomllib.loads(path.read_text())["rule"][0]
    return raw


def _dump(path: Path, rules: list[dict[str, Any]]) -> Path:
    """A minimal TOML writer for rule tables (tests only)."""
    out = []
    for raw in rules:
        out.append("[[rule]]")
        tables = {k: v for k, v in raw.items() if isinstance(v, dict)}
        out += [f"{k} = {json.dumps(v)}" for k, v in raw.items() if k not in tables]
        for name, table in tables.items():
            out.append(f"[rule.{name}]")
            for k, v in table.items():
                if isinstance(v, dict):
                    inner = ", ".join(f"{ik} = {json.dumps(iv)}" for ik, iv in v.items())
                    out.append(f"{k} = {{ {inner} }}")
                else:
                    out.append(f"{k} = {json.dumps(v)}")
    path.write_text("\n".join(out) + "\n")
    return path
