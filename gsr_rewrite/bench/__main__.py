"""``python -m gsr_rewrite.bench memory ...``: the command line of the memory benchmark.

Examples::

    python -m gsr_rewrite.bench memory --device cpu --out benchmarks/results/memory_cpu.md
    python -m gsr_rewrite.bench memory --device cuda --models vit_b_32,gpt2 --checkpointing both
    python -m gsr_rewrite.bench memory --pair ref=torch.optim:AdamW,torch.optim:AdamW \\
        --r-kwargs 'ref={"fused": true}' --models tiny_vit --checkpointing off

Without ``--out``, ``memory.md``, ``memory.json`` and ``memory.png`` go into a new directory
``./gsr-bench-<time>/``; the last line of stdout names them. Progress is drawn on stderr when it
is a terminal.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from gsr_rewrite.bench import models as model_registry
from gsr_rewrite.bench.memory import (
    DEFAULT_PAIRS,
    OptimizerPair,
    Plan,
    Row,
    parse_pair,
    run_benchmark,
)
from gsr_rewrite.bench.output import new_results_dir, wrote
from gsr_rewrite.bench.plot import plot_timeline
from gsr_rewrite.bench.report import markdown_report, rows_json

COMMANDS = ("memory",)


def _parse_kwargs(text: str) -> tuple[str, dict[str, Any]]:
    name, sep, payload = text.partition("=")
    kwargs = json.loads(payload) if sep else None
    if not isinstance(kwargs, dict):
        raise ValueError(f"expected name={{json object}}, got {text!r}")
    return name.strip(), kwargs


def _select_pairs(args: argparse.Namespace) -> list[OptimizerPair]:
    custom = {p.name: p for p in map(parse_pair, args.pair)}
    available = DEFAULT_PAIRS | custom
    names = args.pairs.split(",") if args.pairs else (list(custom) or list(DEFAULT_PAIRS))
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ValueError(f"unknown pair(s) {unknown}; known: {', '.join(available)}")
    pairs = {n: available[n] for n in names}
    for flag, side in ((args.orig_kwargs, "original"), (args.r_kwargs, "variant")):
        for name, kwargs in map(_parse_kwargs, flag):
            if name not in pairs:
                raise ValueError(f"kwargs given for pair {name!r}, which is not selected")
            spec = replace(getattr(pairs[name], side), kwargs=kwargs)
            pairs[name] = replace(pairs[name], **{side: spec})
    return list(pairs.values())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gsr_rewrite.bench memory",
        description="Peak memory of a whole training step (batch 1) for original optimizers and "
        "their R-variants; each configuration in a fresh process.",
    )
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default=None,
        help="default: cuda when available, else cpu (tiny models)",
    )
    parser.add_argument(
        "--models",
        default=None,
        help="comma-separated; default: tiny_vit,tiny_gpt on cpu, all timm and "
        "transformers models on cuda; 'list' prints them",
    )
    parser.add_argument("--checkpointing", choices=("off", "on", "both"), default="both")
    parser.add_argument(
        "--pairs",
        default=None,
        help=f"comma-separated pair names; default: {','.join(DEFAULT_PAIRS)}, "
        "or only the --pair ones when given",
    )
    parser.add_argument(
        "--pair",
        action="append",
        default=[],
        metavar="NAME=MOD:ORIG,MOD:R",
        help="an extra pair; both sides get foreach=True unless overridden",
    )
    parser.add_argument(
        "--orig-kwargs",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="replace the original's constructor kwargs of pair NAME",
    )
    parser.add_argument(
        "--r-kwargs",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="replace the variant's constructor kwargs of pair NAME",
    )
    parser.add_argument("--iters", type=int, default=5, help="training iterations (default 5)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per configuration")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="markdown file; the JSON goes next to it (.json). Default: memory.md in a new "
        "directory ./gsr-bench-YYYYmmdd-HHMMSS",
    )
    parser.add_argument(
        "--plot",
        type=Path,
        default=None,
        help="PNG of memory over one iteration, first measured row (needs matplotlib). "
        "Default: next to --out (.png)",
    )
    return parser


def memory_main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.models == "list":
        for name, spec in model_registry.MODELS.items():
            print(f"{name:14s} {spec.family:9s} {spec.description}")
        return 0
    device = args.device or _default_device()
    if device == "cuda" and _default_device() != "cuda":
        parser.error("--device cuda, but torch sees no CUDA device")
    default = (
        model_registry.CUDA_DEFAULT_MODELS
        if device == "cuda"
        else model_registry.CPU_DEFAULT_MODELS
    )
    models = args.models.split(",") if args.models else list(default)
    try:  # bad names and malformed --pair / --*-kwargs fail before any process starts
        for name in models:
            model_registry.get_model(name)
        pairs = _select_pairs(args)
    except ValueError as exc:
        parser.error(str(exc))
    ckpt = {"off": [False], "on": [True], "both": [False, True]}[args.checkpointing]
    plotting = _have_matplotlib()
    if not plotting:
        print("matplotlib is not installed (pip install matplotlib): no plot", file=sys.stderr)
    plan = Plan(models, ckpt, pairs, device, args.iters, timeline=plotting)
    rows = run_benchmark(plan, timeout_s=args.timeout)
    meta = _meta(rows, device, args.iters, argv)
    text = markdown_report(rows, meta)
    print(text)
    out: Path = args.out or new_results_dir("gsr-bench") / "memory.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps(rows_json(rows, meta), indent=1) + "\n")
    written = [out, out.with_suffix(".json")]
    plot: Path = args.plot or out.with_suffix(".png")
    if plotting and any(plot_timeline(row, plot, device) for row in rows if row.ok):
        written.append(plot)
    elif plotting:
        print("no plot: no row of the first model was measured", file=sys.stderr)
    print(wrote(written))
    return 0


def _have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _meta(
    rows: Sequence[Row], device: str, iters: int, argv: Sequence[str] | None
) -> dict[str, Any]:
    import datetime

    import torch

    names = [r.get("device_name") for row in rows for r in (row.original, row.variant)]
    return {
        "device": device,
        "device_name": next((n for n in names if n), device),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "iters": iters,
        "batch": 1,
        "command": "python -m gsr_rewrite.bench memory "
        + shlex.join(sys.argv[2:] if argv is None else argv),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in COMMANDS:
        return memory_main(args[1:])
    parser = argparse.ArgumentParser(
        prog="python -m gsr_rewrite.bench", description="Benchmarks of gsr-rewrite."
    )
    commands = parser.add_subparsers(metavar="COMMAND", required=True)
    commands.add_parser("memory", help="peak memory of a whole training step (memory --help)")
    parser.parse_args(args)  # --help: usage, exit 0; no or an unknown command: exit 2
    parser.error("COMMAND must be the first argument")  # e.g. `-- memory`


if __name__ == "__main__":
    sys.exit(main())
