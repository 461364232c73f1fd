"""Long commands (`gsr-rewrite corpus`, `python -m gsr_rewrite.bench memory`): where they write by
default, their progress bars, and their --help. The heavy work is faked or tiny: these test the
command-line plumbing, not the measurements."""

from __future__ import annotations

import functools
import io
import re
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import gsr_rewrite.bench.__main__ as bench_cli
from gsr_rewrite.bench.measure import PHASE_FB, PHASE_OPT, RunConfig
from gsr_rewrite.bench.memory import run_benchmark
from gsr_rewrite.cli.main import main as cli_main
from gsr_rewrite.corpus.command import main as corpus_main
from tests.bench.test_bench_memory import _fake_result

STAMPED = r"\d{8}-\d{6}(-\d+)?"


class _Terminal(io.StringIO):
    """A captured stderr that says it is a terminal, so progress bars draw."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty directory that holds a committed-looking results file, with a private
    rewrite cache."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GSR_REWRITE_CACHE_DIR", str(tmp_path / ".cache"))
    committed = tmp_path / "benchmarks" / "results"
    committed.mkdir(parents=True)
    (committed / "corpus.md").write_text("committed\n")
    return tmp_path


@pytest.fixture
def two_optimizers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A package with two optimizer classes that the corpus only records (they need a closure)."""
    pkg = tmp_path / "pkgs" / "closure_optims"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent("""
        from torch.optim import Optimizer

        class First(Optimizer):
            def __init__(self, params, lr=0.1):
                super().__init__(params, dict(lr=lr))

            def step(self, closure):
                return closure()

        class Second(First):
            def step(self, closure):
                return closure()
    """))
    monkeypatch.syspath_prepend(str(pkg.parent))
    monkeypatch.delitem(sys.modules, "closure_optims", raising=False)
    return "closure_optims"


def _last_line(text: str) -> str:
    return text.rstrip("\n").splitlines()[-1]


def _stamped_dirs(root: Path, prefix: str) -> list[Path]:
    return [p for p in root.iterdir() if re.fullmatch(f"{prefix}-{STAMPED}", p.name)]


# -- where results go -----------------------------------------------------------------------------
def test_new_results_dir_never_reuses_an_existing_path(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from gsr_rewrite.bench.output import new_results_dir

    monkeypatch.chdir(tmp_path)
    now = time.time()
    taken = {f"run-{time.strftime('%Y%m%d-%H%M%S', time.localtime(now + k))}" for k in range(3)}
    for name in taken:
        (tmp_path / name).mkdir()
        (tmp_path / name / "keep.md").write_text("old")
    first, second = new_results_dir("run"), new_results_dir("run")
    assert first != second
    for made in (first, second):
        assert made.is_dir() and not any(made.iterdir())
        assert made.name not in taken and re.fullmatch(f"run-{STAMPED}", made.name)
    assert all((tmp_path / name / "keep.md").read_text() == "old" for name in taken)


def test_corpus_writes_into_a_new_directory_and_says_where(
        in_tmp: Path, two_optimizers: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert corpus_main([two_optimizers, "--steps", "2"]) == 0
    assert corpus_main([two_optimizers, "--steps", "2"]) == 0  # same second: another directory
    assert (in_tmp / "benchmarks" / "results" / "corpus.md").read_text() == "committed\n"
    assert not (in_tmp / "benchmarks" / "results" / "corpus.json").exists()
    made = _stamped_dirs(in_tmp, "gsr-corpus")
    assert len(made) == 2
    for d in made:
        assert sorted(p.name for p in d.iterdir()) == ["corpus.json", "corpus.md"]
        assert "| First | closure_optims | " in (d / "corpus.md").read_text()
    last = _last_line(capsys.readouterr().out)
    assert re.search(rf"gsr-corpus-{STAMPED}/corpus\.md", last), last


def test_corpus_writes_where_out_says(in_tmp: Path, two_optimizers: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = in_tmp / "mine" / "table.md"
    assert corpus_main([two_optimizers, "--out", str(out)]) == 0
    assert "| Second | closure_optims | " in out.read_text()
    assert out.with_suffix(".json").is_file()
    assert _stamped_dirs(in_tmp, "gsr-corpus") == []
    assert str(out) in _last_line(capsys.readouterr().out)


# -- progress -------------------------------------------------------------------------------------
def test_corpus_progress_only_on_a_terminal(in_tmp: Path, two_optimizers: str,
                                            monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert corpus_main([two_optimizers, "--out", "a.md"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""  # not a terminal: logs stay clean
    assert "closure_optims.First" not in captured.out  # results only: the summary, the paths

    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert corpus_main([two_optimizers, "--out", "b.md"]) == 0
    drawn = terminal.getvalue()
    assert "2/2" in drawn and "class" in drawn  # a bar counting classes
    assert "closure_optims.First" in drawn and "closure_optims.Second" in drawn
    assert "b.md" not in drawn and "b.md" in _last_line(capsys.readouterr().out)


def _fake_runner(config: RunConfig, timeout_s: float) -> dict[str, Any]:
    result = _fake_result(config, 12 if config.target.endswith("R") else 15)
    timeline = {"time_unit": "ms", "t": [0.0, 1.0, 2.0, 3.0], "bytes": [0, 10 * 2**20, 0, 5],
                "phases": {PHASE_FB: [0.0, 1.0], PHASE_OPT: [2.0, 3.0]}}
    return result | ({"timeline": timeline} if config.timeline else {})


@pytest.fixture
def fake_bench(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The memory benchmark's command line with every measurement faked (no child processes)."""
    argv = ["--device", "cpu", "--models", "tiny_vit", "--checkpointing", "off", "--pairs",
            "adamw,lion"]
    monkeypatch.setattr(bench_cli, "run_benchmark",
                        functools.partial(run_benchmark, runner=_fake_runner))
    return argv


def test_bench_writes_table_and_plot_into_a_new_directory(
        in_tmp: Path, fake_bench: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    assert bench_cli.memory_main(fake_bench) == 0
    (made,) = _stamped_dirs(in_tmp, "gsr-bench")
    assert sorted(p.name for p in made.iterdir()) == ["memory.json", "memory.md", "memory.png"]
    assert (made / "memory.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "| tiny_vit |" in (made / "memory.md").read_text()
    last = _last_line(printed)
    for name in ("memory.md", "memory.json", "memory.png"):
        assert f"{made.name}/{name}" in last, last


def test_bench_out_and_plot_override_the_directory(
        in_tmp: Path, fake_bench: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    out, png = in_tmp / "r" / "t.md", in_tmp / "p" / "m.png"
    assert bench_cli.memory_main([*fake_bench, "--out", str(out), "--plot", str(png)]) == 0
    assert out.is_file() and out.with_suffix(".json").is_file() and png.is_file()
    assert _stamped_dirs(in_tmp, "gsr-bench") == []
    last = _last_line(capsys.readouterr().out)
    assert str(out) in last and str(png) in last


def test_bench_without_matplotlib_says_so_once_and_writes_the_table(
        in_tmp: Path, fake_bench: list[str], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises
    assert bench_cli.memory_main(fake_bench) == 0
    (made,) = _stamped_dirs(in_tmp, "gsr-bench")
    assert sorted(p.name for p in made.iterdir()) == ["memory.json", "memory.md"]
    captured = capsys.readouterr()
    notes = [line for line in captured.err.splitlines() if "matplotlib" in line]
    assert len(notes) == 1 and "no plot" in notes[0]
    assert f"{made.name}/memory.md" in _last_line(captured.out)


def test_bench_progress_only_on_a_terminal(in_tmp: Path, fake_bench: list[str],
                                           monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = ["--out", "t.md", "--plot", "t.png"]
    assert bench_cli.memory_main([*fake_bench, *out]) == 0
    assert capsys.readouterr().err == ""

    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert bench_cli.memory_main([*fake_bench, *out]) == 0
    drawn = terminal.getvalue()
    # adamw and lion: 4 optimizer runs, one bar step each, each named when it is done
    assert "4/4" in drawn and "run" in drawn
    for label in ("AdamW[foreach]", "AdamWR[foreach]", "Lion[foreach]", "LionR[foreach]"):
        assert f"tiny_vit ckpt=off {label}: ok" in drawn, drawn


# -- --help ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv", [["--help"], ["-h"], ["memory", "--help"]])
def test_bench_help_exits_0(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        bench_cli.main(argv)
    assert exit_.value.code == 0
    printed = capsys.readouterr().out
    assert printed.startswith("usage: python -m gsr_rewrite.bench")
    assert ("--models" if "memory" in argv else "memory") in printed


def test_bench_without_a_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        bench_cli.main([])
    assert exit_.value.code == 2
    assert "usage: python -m gsr_rewrite.bench" in capsys.readouterr().err


def test_corpus_help_lists_the_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # argparse wraps help at hyphens on narrow terminals
    result = CliRunner().invoke(cli_main, ["corpus", "--help"])
    assert result.exit_code == 0, result.output
    for option in ("--out", "--steps", "--quick", "--classes", "--time-limit", "gsr-corpus-"):
        assert option in result.output
