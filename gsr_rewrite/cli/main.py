"""`gsr-rewrite SRC -o OUT [--report PATH] [--check] [--diff] [--backend triton] [--force] [-v]`,
`gsr-rewrite rules ...` and `gsr-rewrite corpus ...`.

Everything that can stop a rewrite (a missing SRC, a syntax error, an OUT that is a source or a
file gsr-rewrite did not write, a missing directory) is found before the pipeline and torch are
imported, and reported on one line each."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import click

from gsr_rewrite.cli.fndiff import function_diff
from gsr_rewrite.cli.paths import Job, file_mode, plan_jobs
from gsr_rewrite.errors import RewriteError
from gsr_rewrite.version import __version__

if TYPE_CHECKING:
    from gsr_rewrite.outcome import RewriteResult


class _DefaultGroup(click.Group):
    """`gsr-rewrite SRC ...` means `gsr-rewrite rewrite SRC ...`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h",
                                                                     "--version"):
            args = ["rewrite", *args]
        return super().parse_args(ctx, args)

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_usage(ctx.command_path, "SRC... -o OUT [OPTIONS]")
        formatter.write_usage(ctx.command_path, "COMMAND [ARGS]...", prefix="   or: ")


@click.group(cls=_DefaultGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="gsr-rewrite")
def main() -> None:
    """Rewrite PyTorch optimizers so that step() keeps its temporaries in dead gradient buffers.

    \b
    Main use (the `rewrite` command, whose name may be left out):
      gsr-rewrite SRC... -o OUT [--check] [--report PATH] [--diff] [-v] [--force]
    Example:
      gsr-rewrite examples/adamw.py -o adamw_r.py --check

    SRC is a .py file or an importable module (torch.optim.adam); the source is never written
    to. `gsr-rewrite rewrite --help` lists every option.
    """


@main.command()
@click.argument("sources", nargs=-1, required=True, metavar="SRC...")
@click.option("-o", "--output", "out", type=click.Path(),
              help="Where to write the R-variant module (a directory when there are several "
              "SRC, or when OUT is an existing directory or ends in /: each SRC becomes "
              "DIR/<name>_r.py). Default: print it.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False),
              help="Also write the report as JSON here.")
@click.option("--check", is_flag=True, help="Run original vs R-variant and measure memory; "
              "write nothing and exit 1 if any check fails.")
@click.option("--diff", "show_diff", is_flag=True,
              help="Print a unified diff of each rewritten function against its original.")
@click.option("--backend", type=click.Choice(["eager", "triton"]), default="eager",
              show_default=True, help="triton: also emit <Name>RTriton classes whose step runs "
              "fused Triton kernels (eager R step where a kernel does not apply).")
@click.option("--force", is_flag=True, help="Replace an existing OUT file that gsr-rewrite did "
              "not write (a source is never replaced).")
@click.option("-v", "--verbose", is_flag=True, help="A more detailed report.")
def rewrite(sources: tuple[str, ...], out: str | None, report_path: str | None, check: bool,
            show_diff: bool, backend: str, force: bool, verbose: bool) -> None:
    """Rewrite the optimizer classes in each SRC (a .py file or an importable module)."""
    # several SRC, an existing directory or a path ending in a separator: OUT is a directory
    out_dir = out if out is not None and (len(sources) > 1 or Path(out).is_dir()
                                          or out.endswith(("/", os.sep))) else None
    jobs, problems = plan_jobs(sources, out, out_dir, report_path, force)
    if not problems and out_dir is not None:
        try:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            problems.append(f"{out_dir}: cannot create the directory: {e.strerror}")
    if problems:  # all found before the pipeline (libcst, sympy, torch) is imported
        for p in problems:
            click.echo(f"error: {p}", err=True)
        sys.exit(1)
    if backend == "triton" and check:
        import torch

        if not torch.cuda.is_available():  # check the kernels in Triton's CPU interpreter; it
            os.environ.setdefault("TRITON_INTERPRET", "1")  # is read when triton is imported
    reports = []
    status = 0
    for job in jobs:
        code, report = _rewrite_one(job, check, show_diff, backend, verbose)
        status = max(status, code)
        if report is not None:
            reports.append(report)
    if report_path:
        data = reports[0] if len(reports) == 1 else {"tool": f"gsr-rewrite {__version__}",
                                                     "sources": reports}
        try:
            Path(report_path).write_text(json.dumps(data, indent=2))
        except OSError as e:
            click.echo(f"error: {report_path}: cannot write the report: {e.strerror}", err=True)
            status = 1
    sys.exit(status)


def _rewrite_one(job: Job, check: bool, show_diff: bool, backend: str = "eager",
                 verbose: bool = False) -> tuple[int, dict[str, object] | None]:
    """Rewrite one source; returns (exit status, JSON report). Never leaves a partial OUT."""
    from gsr_rewrite.cli.report import to_json, to_text
    from gsr_rewrite.pipeline import compile_source

    out = job.out
    try:
        result = compile_source(job.source, job.label, job.package, job.module,
                                import_originals=True)  # an importable module: imported
    except RewriteError as e:
        click.echo(f"error: {e}", err=True)
        return 1, None
    checks = {}
    failed = False
    written = None
    if result.code is not None:
        target_dir = Path(out).resolve().parent if out else Path(tempfile.gettempdir())
        fd, name = tempfile.mkstemp(suffix=".py", prefix=".gsr_", dir=target_dir)
        tmp = Path(name)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(result.code)
            from gsr_rewrite.proof.validate import check_class, load_module

            module = load_module(tmp, f"gsr_generated_{tmp.stem.strip('.')}")
            if check:
                for c in result.classes:
                    if c.status == "rewritten":
                        chk = check_class(getattr(module, c.name), getattr(module, c.r_name),
                                          mode="bitwise" if c.equivalence == "bitwise"
                                          else "tolerance", results=c.checks)
                        checks[c.name] = chk
                        failed |= not chk.passed
            if backend == "triton":
                failed |= _add_triton(result, module, tmp, check)
            if out and not failed:
                tmp.chmod(file_mode())
                os.replace(tmp, out)  # atomic: no partial output, ever
                written = out
            elif not out and not failed and not show_diff:
                sys.stdout.write(result.code)
        finally:
            tmp.unlink(missing_ok=True)
    if show_diff and result.code is not None:
        sys.stdout.write(function_diff(job.source, result.code, job.label))
    click.echo(to_text(result, checks, written, verbose=verbose), err=not out)
    if result.code is None:
        click.echo(f"{job.label}: nothing was rewritten; no output written", err=True)
    if failed:
        click.echo(f"error: {job.label}: an R-variant failed its check; no output written",
                   err=True)
    return int(failed), to_json(result, checks, written)


def _add_triton(result: RewriteResult, module: ModuleType, tmp: Path, check: bool) -> bool:
    """Append the Triton classes to ``result.code`` (and ``tmp``); True if a check failed."""
    from gsr_rewrite.triton_backend.generate import triton_classes

    names = [(c.name, c.r_name) for c in result.classes if c.status == "rewritten"]
    text, outcomes = triton_classes(module, names)
    result.code = (result.code or "") + text
    tmp.write_text(result.code)
    failed = False
    for o in outcomes:
        click.echo(f"{o.name}: {o.specs} configurations traced ahead of time ({o.kernels} "
                   "kernels), any other on first use"
                   + "".join(f"\n  not traced: {r}" for r in o.refused), err=True)
    if check and outcomes:
        import torch

        if importlib.util.find_spec("triton") is None:
            click.echo("triton check skipped: Triton is not installed", err=True)
            return False
        if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
            click.echo("triton check skipped: no GPU and TRITON_INTERPRET is not 1", err=True)
            return False
        from gsr_rewrite.proof.validate import load_module
        from gsr_rewrite.triton_backend.check import check_triton

        triton_module = load_module(tmp, f"gsr_triton_{tmp.stem.strip('.')}")
        for (original, _), o in zip(names, outcomes, strict=True):
            if not o.specs:
                continue
            for dtype in (torch.float32, torch.bfloat16):
                chk = check_triton(getattr(triton_module, original),
                                   getattr(triton_module, o.name), {}, dtype)
                ok = "passed" if chk.passed else "FAILED"
                click.echo(f"{o.name} vs {original} ({str(dtype)[6:]}, 7 steps, sizes 0..chunk+5):"
                           f" {ok}, worst {chk.worst:.3g} of the tolerance at {chk.where or '-'}, "
                           f"{chk.launches} launches", err=True)
                failed |= not chk.passed
    return failed


@main.command(context_settings={"ignore_unknown_options": True, "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def corpus(args: tuple[str, ...]) -> None:
    """Rewrite, check and measure every optimizer class of installed packages
    (gsr-rewrite corpus PACKAGE... [--out PATH] [--quick]; --help for all options)."""
    from gsr_rewrite.corpus.command import main as corpus_main

    sys.exit(corpus_main(list(args)))


@main.group()
def rules() -> None:
    """Show or re-prove the rule book (sympy-checked reformulations)."""


@rules.command("list")
def rules_list() -> None:
    """List the rules that load (each proved when loaded)."""
    from gsr_rewrite.rulebook import format_rules_table, load_rulebook

    book = load_rulebook()
    click.echo(format_rules_table(book))
    for f in book.failures:
        click.echo(f"REJECTED {f}", err=True)


@rules.command("check")
def rules_check() -> None:
    """Re-prove every rule without the cache; exit 1 if one fails."""
    from gsr_rewrite.rulebook import check_rulebook

    ok, text = check_rulebook()
    click.echo(text)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
