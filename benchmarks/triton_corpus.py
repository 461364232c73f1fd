#!/usr/bin/env python
"""How general the Triton backend is: every optimizer class of installed packages, through it.

For each module defining optimizer classes: the eager rewrite (gsr_rewrite.pipeline), then the
Triton classes (gsr_rewrite.triton_backend.generate) for every class that was rewritten; per class
the number of configurations traced ahead of time and their distinct kernels, the configurations
refused (with the first reason), the passes of the defaults' kernel, and a check of the Triton
class against the original (defaults, 7 steps, fp32 and bf16, sizes 0 to one chunk + 5,
gsr_rewrite.triton_backend.check) — on a GPU, or on the CPU in Triton's interpreter. Writes a
markdown table and JSON.

    TRITON_INTERPRET=1 python benchmarks/triton_corpus.py torch.optim lion_pytorch adan_pytorch
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import json
import os
import platform
import re
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from gsr_rewrite.bench.output import new_results_dir
from gsr_rewrite.corpus.runner import discover
from gsr_rewrite.pipeline import rewrite_source
from gsr_rewrite.proof.validate import load_module
from gsr_rewrite.triton_backend.check import check_triton
from gsr_rewrite.triton_backend.generate import triton_classes


@dataclass
class Row:
    name: str
    module: str
    status: str  # kernels | no kernel | not rewritten | error
    specs: int = 0
    kernels: int = 0
    passes: int = 0
    refused: int = 0
    reason: str = ""
    fp32: str = ""  # worst difference as a fraction of the tolerance; "FAILED" above 1
    bf16: str = ""
    seconds: float = 0.0


def _short(text: str) -> str:
    return re.sub(r"\S*site-packages/", "", text)[:140]


def _verdict(original: type, triton_cls: type, dtype: torch.dtype) -> str:
    try:
        res = check_triton(original, triton_cls, {}, dtype)
    except Exception as e:  # the original itself may need special inputs
        return f"n/a ({type(e).__name__}: {str(e)[:60]})"
    if res.launches == 0:
        return "no launch (defaults untraced)"
    return f"{res.worst:.3f}" + ("" if res.passed else " FAILED")


def run_module(module: str, names: list[str]) -> list[Row]:
    start = time.perf_counter()
    path = Path(inspect.getfile(sys.modules[module]))
    package = module.rsplit(".", 1)[0] if "." in module else None
    try:
        result = rewrite_source(path.read_text(), str(path), package)
    except Exception as e:
        return [Row(n, module, "error", reason=_short(f"{type(e).__name__}: {e}"))
                for n in names]
    outcome = {c.name: c for c in result.classes}
    rows = [Row(n, module, "not rewritten", reason=_short(outcome[n].reason) if n in outcome
                else "not found by the rewriter") for n in names
            if n not in outcome or outcome[n].status != "rewritten"]
    pairs = [(n, outcome[n].r_name) for n in names
             if n in outcome and outcome[n].status == "rewritten"]
    if not pairs or result.code is None:
        return rows
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / f"{module.replace('.', '_')}_r.py"
        out.write_text(result.code)
        text, outcomes = triton_classes(load_module(out, f"tc_eager_{out.stem}"), pairs)
        out.write_text(result.code + text)
        emitted = load_module(out, f"tc_triton_{out.stem}")
        for (name, _), o in zip(pairs, outcomes, strict=True):
            row = Row(name, module, "kernels" if o.specs else "no kernel", o.specs, o.kernels,
                      0, len(o.refused),
                      _short(o.refused[0].split(" -> ", 1)[-1]) if o.refused else "")
            if o.specs:
                original, triton_cls = getattr(emitted, name), getattr(emitted, o.name)
                row.fp32 = _verdict(original, triton_cls, torch.float32)
                row.bf16 = _verdict(original, triton_cls, torch.bfloat16)
                specs = getattr(emitted, f"_{name.upper()}_KERNELS").specs  # made by the checks
                row.passes = max((len(s.kernels) for s in specs), default=0)
            rows.append(row)
    for r in rows:
        r.seconds = time.perf_counter() - start
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("packages", nargs="+")
    ap.add_argument("--out", help="where to write the table (default: triton_corpus.md in a "
                    "new ./gsr-triton-corpus-<time>/)")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        ap.error("no GPU: run with TRITON_INTERPRET=1 (set before triton is imported)")
    t0 = time.perf_counter()
    found, _ = discover(args.packages)
    by_module: dict[str, list[str]] = {}
    for f in found:
        if "<locals>" not in f.cls.__qualname__:
            by_module.setdefault(f.module, []).append(f.name)
    rows = [r for module, names in by_module.items() for r in run_module(module, names)]
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu (interpreter)"
    import triton

    head = (f"gsr-rewrite Triton backend over {', '.join(args.packages)}: torch {torch.__version__}"
            f", triton {triton.__version__}, Python {platform.python_version()}, {device}, "
            f"{datetime.date.today()}; {time.perf_counter() - t0:.0f} s.")
    lines = ["# Triton backend corpus", "", head, "",
             "Check: the Triton class against the original with default arguments, 7 steps, sizes"
             " 0, 1, 7, 33, 1000 and one chunk + 5; worst difference as a fraction of the "
             "tolerance of `gsr_rewrite/triton_backend/check.py` (<= 1 passes).", "",
             "| class | module | status | configs traced ahead | kernels | passes "
             "| configs refused | first refusal | fp32 | bf16 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r.name} | {r.module} | {r.status} | {r.specs} | {r.kernels} | {r.passes} | "
              f"{r.refused} | {r.reason.replace('|', '/')} | {r.fp32} | {r.bf16} |" for r in rows]
    with_kernels = [r for r in rows if r.status == "kernels"]
    failed = [r for r in with_kernels if "FAILED" in r.fp32 + r.bf16]
    lines += ["", f"**Summary.** {len(rows)} classes: {len(with_kernels)} with kernels, "
              f"{sum(r.status == 'no kernel' for r in rows)} rewritten without a kernel, "
              f"{sum(r.status == 'not rewritten' for r in rows)} not rewritten (no R class to "
              f"derive from), {sum(r.status == 'error' for r in rows)} errors; "
              f"{len(failed)} checks failed."]
    out = Path(args.out) if args.out else new_results_dir("gsr-triton-corpus") / "triton_corpus.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps([asdict(r) for r in rows], indent=1))
    print("\n".join(lines[-1:]), f"\nwrote {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
