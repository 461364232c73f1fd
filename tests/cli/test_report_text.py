"""The rewrite report as people read it (gsr_rewrite/cli/report.py): one line per fact, fixed-width
columns, plurals, distinct run names, and the time that strip-mining costs next to the memory it
saves."""

from __future__ import annotations

import collections
import textwrap
from pathlib import Path

import pytest
import torch

from gsr_rewrite.cli.report import (
    CODE_WIDTH,
    GLOSSARY_NOTE,
    HOW_WIDTH,
    LIVES_WIDTH,
    TEXT_WIDTH,
    one_line,
    to_json,
    to_text,
)
from gsr_rewrite.corpus.report import summary
from gsr_rewrite.corpus.runner import CorpusRow
from gsr_rewrite.outcome import ClassOutcome, RewriteResult, Temporary
from gsr_rewrite.pipeline import rewrite_source
from gsr_rewrite.proof.check import CheckResult, run_checks, stress_matrix
from gsr_rewrite.proof.memory import StepMemory, StepTimes
from gsr_rewrite.proof.validate import ClassCheck, check_class, load_module, plural, prove_class
from gsr_rewrite.runtime.strip_runs import strip_floor_bytes

# RMSprop-like: `denom` needs the gradient alive when it is used, so it is strip-mined
SOURCE = '''
import torch
from torch.optim import Optimizer


class Opt(Optimizer):
    def __init__(self, params, lr=0.01, alpha=0.9, eps=1e-8{extra}):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if len(state) == 0:
                    state["avg"] = torch.zeros_like(p)
                grad, avg = p.grad, state["avg"]
                avg.mul_(group["alpha"]).addcmul_(grad, grad, value=1 - group["alpha"])
                denom = avg.sqrt().add_(group["eps"])
                p.addcdiv_(grad, denom, value=-group["lr"])
'''


def _compile(extra: str, directory: Path) -> tuple[RewriteResult, type, type]:
    result = rewrite_source(textwrap.dedent(SOURCE.format(extra=extra)), "opt.py")
    assert result.code is not None, [c.reason for c in result.classes]
    file = directory / f"opt_r{len(extra)}.py"
    file.write_text(result.code)
    module = load_module(file, f"report_text_{len(extra)}")
    return result, module.Opt, module.OptR


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> tuple[RewriteResult, type, type]:
    """The class without a `foreach` option."""
    return _compile("", tmp_path_factory.mktemp("plain"))


@pytest.fixture(scope="module")
def with_foreach(tmp_path_factory: pytest.TempPathFactory) -> tuple[RewriteResult, type, type]:
    """The same class with a `foreach` option (which it ignores)."""
    return _compile(", foreach=None", tmp_path_factory.mktemp("foreach"))


def _temporary(code: str, how: str, **kw: object) -> Temporary:
    fields: dict[str, object] = {"function": "_multi_tensor_rmsprop", "line": 442, "code": code,
                                 "op": "addcmul", "placed": False, "lives_in": "1/128 strips",
                                 "how": how, "is_list": True, "strips": 128, **kw}
    return Temporary(**fields)  # type: ignore[arg-type]


def _result(*classes: ClassOutcome) -> RewriteResult:
    return RewriteResult("opt.py", "code", list(classes))


MULTI_LINE = "torch._foreach_addcmul(  # type: ignore[assignment]\n    grouped_square_avgs,\n" \
             "    grouped_grads,\n    grouped_grads,\n    value=1 - alpha,\n)"
LONG_HOW = ("strip-mined: the 2 statement(s) from line 439 run on 1/128 of the elements at a time\n"
            "(no dead buffer: state buffer 'square_avg' is still needed (through "
            "`state:square_avg`); the gradient buffer is still needed (through `grads`))")


def test_multi_line_code_and_how_stay_in_their_fixed_width_columns() -> None:
    temps = [_temporary(MULTI_LINE, LONG_HOW),
             _temporary("-grad", "in place on operand 1, which dies here", placed=True,
                        lives_in="gradient", strips=0, line=7, function="f"),
             _temporary("x * y", "the gradient buffer escapes", strips=0, lives_in="", line=9)]
    outcome = ClassOutcome("RMSprop", "rewritten", temporaries=temps)
    lines = to_text(_result(outcome), {}, None).splitlines()
    rows = [line for line in lines if line.startswith(("    _multi", "    f:"))]
    assert len(rows) == 3, lines  # one line per temporary
    lives = [row.index(t) for row, t in zip(rows, ("1/128 strips", "gradient", "a new tensor"),
                                             strict=True)]
    assert len(set(lives)) == 1, rows  # the "lives in" column starts at one offset
    cell = "torch._foreach_addcmul(grouped_square_avgs, "[: CODE_WIDTH - 1] + "… "
    assert cell in rows[0]  # comment and newlines gone
    assert max(map(len, rows)) <= lives[0] + LIVES_WIDTH + 1 + HOW_WIDTH, rows


def test_one_line_drops_comments_and_collapses_whitespace() -> None:
    assert one_line(MULTI_LINE) == ("torch._foreach_addcmul(grouped_square_avgs, grouped_grads, "
                                    "grouped_grads, value=1 - alpha)")
    assert one_line("a(  # open\n b") == "a(b"  # an unbalanced fragment
    assert one_line("s.replace('#', '')") == "s.replace('#', '')"  # not a comment


def test_long_reasons_are_one_line_unless_verbose() -> None:
    reason = "the gradient escapes: " + "passed to `record` (before.py:20:24); " * 10
    evidence = ("proved equal by symbolic execution (3 configurations, 3 steps, both paths, params "
                "of ranks 1-3 in two groups, attributes on self); passed the stress matrix (50 "
                "runs, bitwise)")
    outcome = ClassOutcome("Opt", "refused", reason=reason.strip(), validation=evidence,
                           temporaries=[_temporary("p.grad * lr", LONG_HOW)])
    text = to_text(_result(outcome), {}, None)
    head = text.splitlines()[1]
    assert head.startswith("Opt: refused -- the gradient escapes: passed to `record`;")
    assert head.endswith("…") and len(head) <= len("Opt: refused -- ") + TEXT_WIDTH
    assert "  evidence: proved equal by symbolic execution; passed the stress matrix\n" in text
    assert "strip-mined: the 2 statement(s) from line 439 run on 1/128 of the…" in text
    assert "--verbose" in text  # says where the rest is
    full = to_text(_result(outcome), {}, None, verbose=True)
    assert reason.strip() in full and evidence in full and " ".join(LONG_HOW.split()) in full
    assert "--verbose" not in full
    assert to_json(_result(outcome), {}, None)["classes"][0]["reason"] == reason.strip()


def test_counts_are_plural_only_when_not_one(plain: tuple[RewriteResult, type, type]) -> None:
    assert [plural(n, "run") for n in (0, 1, 2)] == ["0 runs", "1 run", "2 runs"]
    assert plural(1, "class", "classes") == "1 class"
    _, original, rewritten = plain
    proof = prove_class(original, rewritten)  # defaults only: no option is off by default
    assert proof.proved, proof.detail
    assert "(1 configuration, 3 steps," in proof.detail
    outcome = ClassOutcome("Opt", "rewritten", temporaries=[_temporary("a", "b")],
                           predicted_before={"lists": 1, "tensors": 2},
                           predicted_after={"lists": 0, "tensors": 0})
    run = CheckResult("Opt->OptR stress bf16 (defaults)", {}, "cpu", 8, "bitwise", 0.0, True)
    text = to_text(_result(outcome), {"Opt": ClassCheck("Opt", "bitwise", [run])}, None)
    assert "before 1 list of all params + 2 single tensors; after none" in text
    assert "check: 1/1 run passed (bitwise)" in text
    reordered = ClassOutcome("Opt", "rewritten", equivalence="tolerance", rules=["lerp-swap"])
    assert "(arithmetic changed by rule lerp-swap: tolerance)" in to_text(_result(reordered), {},
                                                                         None)


def test_corpus_summary_counts_are_plural_only_when_not_one() -> None:
    row = CorpusRow("AdamW", "m", "rewritten", before_units=1.0, after_units=0.0,
                    equivalence="bitwise")
    assert summary([row]).startswith(
        "1 class: 1 rewritten, 0 unchanged, 0 refused, 0 errors. Of the 1 class whose ")
    assert summary([row, row]).startswith("2 classes: 2 rewritten")


def test_run_names_are_distinct_and_mention_only_options_the_class_has(
        plain: tuple[RewriteResult, type, type],
        with_foreach: tuple[RewriteResult, type, type]) -> None:
    _, original, rewritten = with_foreach
    runs = stress_matrix(original, rewritten, steps=2)
    runs += run_checks(original, rewritten, [{}, {"alpha": 0.5}], steps=2)
    names = collections.Counter(r.name for r in runs)
    assert all(names.values()) and max(names.values()) == 1, names.most_common(3)
    assert "Opt->OptR state_dict swap (defaults, foreach=True)" in names
    assert "Opt->OptR stress state_dict swap (defaults, foreach=True)" in names
    assert "Opt->OptR trajectory, dense, no 0-size param (alpha=0.5, foreach=False)" in names
    _, original, rewritten = plain
    names = collections.Counter(r.name for r in stress_matrix(original, rewritten, steps=2))
    assert max(names.values()) == 1 and "Opt->OptR stress state_dict swap (defaults)" in names
    assert not any("foreach" in name for name in names)


def test_failed_runs_are_printed_once_with_their_message() -> None:
    run = CheckResult("Opt->OptR stress bf16 (defaults)", {}, "cpu", 8, "bitwise", 0.5, False,
                      message="after step 3: param 0 differs")
    text = to_text(_result(ClassOutcome("Opt", "rewritten")),
                   {"Opt": ClassCheck("Opt", "bitwise", [run])}, None)
    assert ("    FAIL Opt->OptR stress bf16 (defaults): max|diff|=0.5; after step 3: param 0 "
            "differs\n") in text
    assert text.count("after step 3") == 1


def test_check_measures_time_beside_memory_per_path(
        plain: tuple[RewriteResult, type, type],
        with_foreach: tuple[RewriteResult, type, type]) -> None:
    result, original, rewritten = plain
    threads = torch.get_num_threads()
    chk = check_class(original, rewritten, results=[])  # no stress matrix: memory and time
    assert torch.get_num_threads() == threads
    assert list(chk.memory) == list(chk.times) == ["cpu"]  # no foreach option, no foreach path
    (times,) = chk.times.values()
    assert 5 <= times.steps <= 7 and 0 < times.original_s and 0 < times.rewritten_s
    (outcome,) = result.classes
    assert any(t.strips for t in outcome.temporaries)
    text = to_text(result, {"Opt": chk}, None)
    assert "foreach" not in text
    (line,) = [x for x in text.splitlines() if "time per step" in x]
    assert line.startswith("    cpu  time per step: original ")
    assert f"x) for {chk.memory['cpu'][0].units - chk.memory['cpu'][1].units:.3f} " \
           "parameter-sizes less" in line
    # the strip floor that bounds the temporaries at run time is stated, with its setting
    floor = f"{strip_floor_bytes() / 2**20:g} MiB (GSR_STRIP_FLOOR_MB)"
    assert f"at run time: strip-mined runs keep their temporaries within the strip floor, {floor}" \
        in text
    step_time = to_json(result, {"Opt": chk}, None)["classes"][0]["check"]["step_time"]
    assert step_time["cpu"]["ratio"] == pytest.approx(times.rewritten_s / times.original_s)
    _, original, rewritten = with_foreach
    chk = check_class(original, rewritten, results=[])
    assert list(chk.memory) == list(chk.times) == ["cpu foreach=False", "cpu foreach=True"]


def test_time_line_says_what_the_memory_costs() -> None:
    mem = StepMemory(131072, 131072, 16384)
    r_mem = StepMemory(4096, 131072, 16384)
    chk = ClassCheck("Opt", "bitwise", memory={"cpu": (mem, r_mem)},
                     times={"cpu": StepTimes(0.0012, 0.0034, 7)})
    text = to_text(_result(ClassOutcome("Opt", "rewritten")), {"Opt": chk}, None)
    assert ("    cpu  time per step: original 1.20 ms, OptR 3.40 ms (2.83x) for 0.969 "
            "parameter-sizes less\n") in text
    assert "time: median of 7 steps" in text
    assert "strip floor" not in text  # nothing strip-mined: no floor to state


def test_last_line_points_to_the_glossary() -> None:
    text = to_text(_result(ClassOutcome("Opt", "unchanged", reason="nothing")), {}, None)
    assert text.splitlines()[-1] == GLOSSARY_NOTE == "terms: see README.md, Glossary"


def test_code_cells_are_cut_to_their_width() -> None:
    long = "torch._foreach_lerp(exp_avgs, grads, 1 - beta1) + " * 3
    row = to_text(_result(ClassOutcome("Opt", "rewritten",
                                       temporaries=[_temporary(long, "x")])), {}, None)
    (line,) = [x for x in row.splitlines() if x.startswith("    _multi")]
    assert line[31:31 + CODE_WIDTH].endswith("…")
