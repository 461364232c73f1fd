#!/usr/bin/env python
"""Optimizer ``step()`` benchmark: wall and kernel time, temporaries and bandwidth per variant.

For AdamW, Lion and Adan on ViT-B/32 parameter shapes (88.2M params in 152 tensors) and on 2,000
small tensors (13.4M params), one row per implementation: the foreach original, torch's fused
AdamW, the torch.compile'd foreach original, the eager R-variant and the Triton R-variant. A row
that cannot run here is reported as skipped, with the reason.

Metrics per row (fp32 params, grads and states):

* wall time: median over ``--steps`` steps, with a device sync before and after each step;
  the grads are reset from a fixed copy before each step (outside the timed region).
* kernel time (CUDA): torch.profiler, the summed device time of every kernel, memcpy and memset
  of ``--profile-steps`` back-to-back steps, divided by the step count; launches = kernels/step.
* peak temporaries: CUDA ``max_memory_allocated`` during one step minus ``memory_allocated``
  before it; CPU: the profiler replay of ``gsr_rewrite.proof.memory``. In MB and in units of the
  total parameter size.
* bandwidth: the bytes the algorithm must move per step (AdamW 28, Lion 20, Adan 44 B/param)
  over kernel time (wall time on CPU), and that as a fraction of a device-to-device ``copy_``
  measured in the same run (read + write bytes).

GPU:        python benchmarks/step_bench.py
CPU smoke:  TRITON_INTERPRET=1 python benchmarks/step_bench.py --smoke --out /tmp/sb
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import importlib
import importlib.util
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

if importlib.util.find_spec("gsr_rewrite") is None:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gsr_rewrite import optim as gsr_optim  # noqa: E402
from gsr_rewrite.bench.output import new_results_dir  # noqa: E402
from gsr_rewrite.proof.memory import measure_step_peak_bytes  # noqa: E402
from gsr_rewrite.runtime import triton_launch  # noqa: E402

Shape = tuple[int, ...]
Make = Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer]

VARIANTS = ("foreach", "fused", "compiled", "eager_r", "triton_r")
SETS = ("vit_b32", "small_2000")
DEVICE_ACTIVITIES = {"kernel", "gpu_memcpy", "gpu_memset"}  # kineto activity types
ROW_PREFIX = "STEP_BENCH_ROW "  # a --row child prints its result on a line starting with this


# --- parameter sets -----------------------------------------------------------------------------


def vit_shapes(
    dim: int = 768, depth: int = 12, mlp: int = 3072, patch: int = 32, img: int = 224,
    classes: int = 1000, chans: int = 3,
) -> list[Shape]:
    """Parameter shapes of timm's VisionTransformer, in its ``parameters()`` order.

    Defaults are ViT-B/32 at 224 px: 152 tensors, 88,224,232 params."""
    tokens = (img // patch) ** 2 + 1  # 49 patches + the class token
    block: list[Shape] = [
        (dim,), (dim,),  # norm1
        (3 * dim, dim), (3 * dim,),  # attn.qkv
        (dim, dim), (dim,),  # attn.proj
        (dim,), (dim,),  # norm2
        (mlp, dim), (mlp,),  # mlp.fc1
        (dim, mlp), (dim,),  # mlp.fc2
    ]
    return [(1, 1, dim), (1, tokens, dim), (dim, chans, patch, patch), (dim,),
            *block * depth, (dim,), (dim,), (classes, dim), (classes,)]


def small_shapes(count: int, low: int, high: int, seed: int = 0) -> list[Shape]:
    """``count`` 1-d tensors with sizes drawn uniformly from [low, high] (deterministic)."""
    gen = torch.Generator().manual_seed(seed)
    return [(int(n),) for n in torch.randint(low, high + 1, (count,), generator=gen)]


@dataclass(frozen=True)
class ParamSet:
    name: str
    title: str
    shapes: tuple[Shape, ...]
    source: str

    @property
    def numel(self) -> int:
        return sum(torch.Size(s).numel() for s in self.shapes)


def _timm_vit_b32() -> list[Shape] | None:
    try:
        timm = importlib.import_module("timm")
    except ImportError:
        return None
    model = timm.create_model("vit_base_patch32_224", pretrained=False)
    return [tuple(p.shape) for p in model.parameters()]


def param_sets(smoke: bool) -> dict[str, ParamSet]:
    """The two benchmark sets; ``smoke`` shrinks both to a few thousand elements."""
    if smoke:
        vit = ParamSet("vit_b32", "ViT (smoke: dim 16, 1 block)",
                       tuple(vit_shapes(16, 1, 64, 4, 8, 10)), "built-in")
        small = ParamSet("small_2000", "small tensors (smoke: 16 of 64-512)",
                         tuple(small_shapes(16, 64, 512)), "built-in")
        return {s.name: s for s in (vit, small)}
    timm_shapes = _timm_vit_b32()
    vit = ParamSet("vit_b32", "ViT-B/32", tuple(timm_shapes or vit_shapes()),
                   "timm vit_base_patch32_224" if timm_shapes else "built-in (timm not installed)")
    small = ParamSet("small_2000", "2,000 small tensors (1k-12k)",
                     tuple(small_shapes(2000, 1024, 12288)), "built-in")
    return {s.name: s for s in (vit, small)}


# --- optimizers and variants --------------------------------------------------------------------


@dataclass(frozen=True)
class OptimizerCase:
    name: str  # CLI name
    title: str  # class name in torch / timm / gsr_rewrite.optim
    bytes_per_param: int  # fp32: param, grad and states read; param and states written
    hyper: dict[str, Any]  # the same for every variant


OPTIMIZERS = {c.name: c for c in (
    OptimizerCase("adamw", "AdamW", 28, {"lr": 1e-3, "weight_decay": 1e-2}),
    OptimizerCase("lion", "Lion", 20, {"lr": 1e-4, "weight_decay": 1e-2}),
    OptimizerCase("adan", "Adan", 44, {"lr": 1e-3, "weight_decay": 2e-2}),
)}


@dataclass(frozen=True)
class Impl:
    """How to build one row's optimizer, or why it cannot run here (``skip``)."""

    label: str
    make: Make | None = None
    compiled: bool = False
    skip: str = ""
    note: str = ""


def _foreach_original(case: OptimizerCase) -> tuple[str, type[torch.optim.Optimizer], str]:
    """(label, class, note) of the foreach original: torch AdamW, timm Lion / Adan."""
    if case.name == "adamw":
        return "torch AdamW foreach", torch.optim.AdamW, ""
    try:
        return (f"timm {case.title} foreach",
                getattr(importlib.import_module("timm.optim"), case.title), "")
    except ImportError:
        return (f"reference {case.title} foreach", getattr(gsr_optim, case.title),
                f"timm not installed: gsr_rewrite.optim.{case.title}")


def _maker(cls: type[torch.optim.Optimizer], case: OptimizerCase, **flags: Any) -> Make:
    return lambda params: cls(params, **case.hyper, **flags)


def resolve(case: OptimizerCase, variant: str, device: torch.device) -> Impl:
    """The implementation behind row ``(case, variant)`` on ``device``."""
    if variant in ("foreach", "compiled"):
        label, cls, note = _foreach_original(case)
        if variant == "foreach":
            return Impl(label, _maker(cls, case, foreach=True), note=note)
        label = f"torch.compile({label})"
        if device.type != "cuda":
            return Impl(label, skip="compiled rows run on CUDA only", note=note)
        return Impl(label, _maker(cls, case, foreach=True), compiled=True, note=note)
    if variant == "fused":
        if case.name != "adamw":
            return Impl(f"fused {case.title}", skip=f"torch has no fused {case.title}")
        return Impl("torch AdamW fused", _maker(torch.optim.AdamW, case, fused=True))
    if variant == "eager_r":
        return Impl(f"{case.title}R foreach",
                    _maker(getattr(gsr_optim, f"{case.title}R"), case, foreach=True))
    label = f"{case.title}RTriton"
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        return Impl(label, skip="CPU tensors need TRITON_INTERPRET=1 set before triton is imported")
    try:
        cls = getattr(gsr_optim, label)  # imports triton and the generated module
    except Exception as exc:  # noqa: BLE001 - reported in the row
        return Impl(label, skip=f"cannot import {label}: {_reason(exc)}")
    return Impl(label, _maker(cls, case, foreach=True))


# --- measuring ----------------------------------------------------------------------------------


@dataclass
class Problem:
    """Params with grads, and a fixed copy of the grads to reset them from before each step
    (an R-variant leaves scratch in ``p.grad``)."""

    params: list[torch.nn.Parameter]
    grads: list[torch.Tensor]

    def reset_grads(self) -> None:
        torch._foreach_copy_([_grad(p) for p in self.params], self.grads)


def _grad(p: torch.Tensor) -> torch.Tensor:
    assert p.grad is not None
    return p.grad


def make_problem(shapes: Sequence[Shape], device: torch.device, seed: int = 0) -> Problem:
    gen = torch.Generator(device=device).manual_seed(seed)

    def randn(shape: Shape) -> torch.Tensor:
        return torch.randn(shape, device=device, generator=gen)

    params = [torch.nn.Parameter(randn(s)) for s in shapes]
    grads = [randn(s) for s in shapes]
    for p, g in zip(params, grads, strict=True):
        p.grad = g.clone()
    return Problem(params, grads)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def wall_ms(fn: Callable[[], object], device: torch.device, calls: int,
            before: Callable[[], None] | None = None) -> float:
    """Median wall time of ``fn`` in ms, synced before and after each call."""
    times = []
    for _ in range(calls):
        if before is not None:
            before()
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


@dataclass(frozen=True)
class DeviceTime:
    ms: float  # summed device time of kernels, memcpys and memsets per call
    kernels: float  # kernel launches per call


def device_time(fn: Callable[[], object], calls: int) -> DeviceTime:
    """CUDA only: torch.profiler over ``calls`` back-to-back calls of ``fn``."""
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    assert prof.profiler is not None and prof.profiler.kineto_results is not None
    events = [ev for ev in prof.profiler.kineto_results.events()
              if ev.activity_type() in DEVICE_ACTIVITIES]
    total_ns = sum(ev.duration_ns() for ev in events)
    kernels = sum(ev.activity_type() == "kernel" for ev in events)
    return DeviceTime(total_ns / 1e6 / calls, kernels / calls)


@dataclass(frozen=True)
class CopyBandwidth:
    gbs: float  # (read + write bytes) / time
    ms: float
    nbytes: int  # bytes of the source tensor
    basis: str


def copy_bandwidth(device: torch.device, nbytes: int, calls: int = 20) -> CopyBandwidth:
    """Device-to-device ``dst.copy_(src)`` of ``nbytes``: the practical bandwidth ceiling."""
    src = torch.rand(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)  # warm-up
    if device.type == "cuda":
        ms, basis = device_time(lambda: dst.copy_(src), calls).ms, "kernel time (torch.profiler)"
    else:
        ms, basis = wall_ms(lambda: dst.copy_(src), device, calls), "wall time"
    return CopyBandwidth(2 * src.nbytes / ms / 1e6, ms, src.nbytes, basis)


def peak_temporaries(opt: torch.optim.Optimizer, step: Callable[[], object],
                     device: torch.device) -> int:
    """Bytes allocated by one ``step()`` above the level before it."""
    if device.type != "cuda":
        return measure_step_peak_bytes(opt)  # CPU profiler replay (compiled rows are CUDA only)
    sync(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    step()
    sync(device)
    return max(0, torch.cuda.max_memory_allocated(device) - before)


@dataclass(frozen=True)
class Settings:
    device: torch.device
    smoke: bool = False
    steps: int = 50
    warmup: int = 10  # >= 2: a Triton variant's first step per group is eager
    profile_steps: int = 10
    compile_timeout: float = 300.0


@dataclass(frozen=True)
class Row:
    set: str
    optimizer: str
    variant: str
    label: str
    reason: str = ""  # why the row was skipped; empty when measured
    note: str = ""
    wall_ms: float | None = None
    kernel_ms: float | None = None
    kernels_per_step: float | None = None  # CUDA: profiler
    triton_launches_per_step: float | None = None  # triton_launch.COUNTS
    eager_groups_per_step: float | None = None  # Triton rows: groups that fell back to eager
    peak_bytes: int | None = None
    peak_units: float | None = None  # peak_bytes / total param bytes
    bytes_moved: int | None = None  # per step, by the algorithm
    bandwidth_gbs: float | None = None
    bandwidth_basis: str = ""  # "kernel" or "wall"
    copy_fraction: float | None = None  # bandwidth_gbs / copy bandwidth, filled by main

    @property
    def skipped(self) -> bool:
        return bool(self.reason)


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"


def _counts() -> tuple[int, int]:
    return triton_launch.COUNTS["launches"], triton_launch.COUNTS["eager_groups"]


def _measure_here(case: OptimizerCase, variant: str, impl: Impl, pset: ParamSet,
                  cfg: Settings) -> Row:
    assert impl.make is not None
    device = cfg.device
    problem = make_problem(pset.shapes, device)
    opt = impl.make(problem.params)
    step: Callable[[], object] = torch.compile(opt.step) if impl.compiled else opt.step
    for _ in range(cfg.warmup):
        problem.reset_grads()
        step()
    launches0, eager0 = _counts()
    wall = wall_ms(step, device, cfg.steps, before=problem.reset_grads)
    launches1, eager1 = _counts()
    dev = device_time(step, cfg.profile_steps) if device.type == "cuda" else None
    problem.reset_grads()
    peak = peak_temporaries(opt, step, device)
    param_bytes = 4 * pset.numel
    moved = case.bytes_per_param * pset.numel
    basis_ms = dev.ms if dev is not None else wall
    is_triton = variant == "triton_r"
    return Row(
        pset.name, case.name, variant, impl.label, note=impl.note,
        wall_ms=wall,
        kernel_ms=dev.ms if dev else None,
        kernels_per_step=dev.kernels if dev else None,
        triton_launches_per_step=(launches1 - launches0) / cfg.steps if is_triton else None,
        eager_groups_per_step=(eager1 - eager0) / cfg.steps if is_triton else None,
        peak_bytes=peak, peak_units=peak / param_bytes, bytes_moved=moved,
        bandwidth_gbs=moved / basis_ms / 1e6, bandwidth_basis="kernel" if dev else "wall",
    )


def _child_argv(key: str, cfg: Settings) -> list[str]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--row", key,
            "--device", cfg.device.type, "--steps", str(cfg.steps), "--warmup", str(cfg.warmup),
            "--profile-steps", str(cfg.profile_steps)]
    return argv + (["--smoke"] if cfg.smoke else [])


def _measure_in_child(key: str, cfg: Settings) -> Row | str:
    """A compiled row runs in a fresh process, so a compile warm-up can be cut off at
    ``compile_timeout`` (timm Adan's had not finished after 400 s on an H100)."""
    try:
        done = subprocess.run(_child_argv(key, cfg), capture_output=True, text=True,
                              timeout=cfg.compile_timeout, check=False)
    except subprocess.TimeoutExpired:
        return f"compile + warm-up did not finish in {cfg.compile_timeout:g} s"
    for line in done.stdout.splitlines():
        if line.startswith(ROW_PREFIX):
            return Row(**json.loads(line[len(ROW_PREFIX):]))
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return f"child exited {done.returncode}: {tail[:200]}"


def measure_row(optimizer: str, variant: str, pset: ParamSet, cfg: Settings,
                in_child: bool = False) -> Row:
    """Measure one row; never raises for a row that cannot run (it comes back skipped)."""
    case = OPTIMIZERS[optimizer]
    impl = resolve(case, variant, cfg.device)
    if impl.skip:
        return Row(pset.name, optimizer, variant, impl.label, reason=impl.skip, note=impl.note)
    try:
        if impl.compiled and not in_child:
            got = _measure_in_child(f"{pset.name}:{optimizer}:{variant}", cfg)
        else:
            got = _measure_here(case, variant, impl, pset, cfg)
    except Exception as exc:  # noqa: BLE001 - a failing row is reported, not fatal
        got = _reason(exc)
    finally:
        gc.collect()  # a compiled step's caches can keep the optimizer alive
        if cfg.device.type == "cuda":
            torch.cuda.empty_cache()
    if isinstance(got, str):
        return Row(pset.name, optimizer, variant, impl.label, reason=got, note=impl.note)
    return got


# --- report -------------------------------------------------------------------------------------


def _num(x: float | None, fmt: str) -> str:
    return "–" if x is None else format(x, fmt)


def _launches(row: Row) -> float | None:
    return row.kernels_per_step if row.kernels_per_step is not None \
        else row.triton_launches_per_step


def _note(row: Row) -> str:
    notes = [f"skipped: {row.reason}"] if row.skipped else []
    if row.eager_groups_per_step:
        notes.append(f"{row.eager_groups_per_step:g} groups/step took the eager path")
    return "; ".join([*notes, row.note] if row.note else notes)


def markdown_table(rows: Sequence[Row]) -> list[str]:
    lines = ["| optimizer | implementation | wall ms | kernel ms | launches/step | peak temp MB "
             "| × params | GB/s | % of copy | note |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        peak_mb = None if r.peak_bytes is None else r.peak_bytes / 2**20
        pct = None if r.copy_fraction is None else 100 * r.copy_fraction
        lines.append(
            f"| {OPTIMIZERS[r.optimizer].title} | {r.label} | {_num(r.wall_ms, '.3f')} "
            f"| {_num(r.kernel_ms, '.3f')} | {_num(_launches(r), '.1f')} | {_num(peak_mb, '.3f')} "
            f"| {_num(r.peak_units, '.3f')} | {_num(r.bandwidth_gbs, '.4g')} | {_num(pct, '.1f')} "
            f"| {_note(r)} |")
    return lines


def _meta(cfg: Settings, argv: Sequence[str]) -> dict[str, Any]:
    try:
        triton_version = importlib.import_module("triton").__version__
    except ImportError:
        triton_version = "not installed"
    name = torch.cuda.get_device_name(cfg.device) if cfg.device.type == "cuda" \
        else platform.processor() or platform.machine()
    return {
        "device": cfg.device.type, "device_name": name, "torch": torch.__version__,
        "triton": triton_version, "python": platform.python_version(),
        "command": shlex.join(["python", "benchmarks/step_bench.py", *argv]),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "triton_interpret": os.environ.get("TRITON_INTERPRET") == "1",
        "smoke": cfg.smoke, "steps": cfg.steps, "warmup": cfg.warmup,
        "profile_steps": cfg.profile_steps, "compile_timeout_s": cfg.compile_timeout,
        "chunk": triton_launch.CHUNK, "block": triton_launch.BLOCK,
        "num_warps": triton_launch.NUM_WARPS,
    }


def markdown(meta: dict[str, Any], copy: CopyBandwidth, sets: Sequence[ParamSet],
             rows: Sequence[Row]) -> str:
    kernel = ("torch.profiler: summed device time of kernels, memcpys and memsets over "
              f"{meta['profile_steps']} back-to-back steps" if meta["device"] == "cuda"
              else "n/a on CPU (bandwidth uses wall time)")
    out = [
        "# Optimizer step benchmark (`benchmarks/step_bench.py`)", "",
        f"- device: {meta['device_name']} ({meta['device']}); torch {meta['torch']}, "
        f"triton {meta['triton']}, Python {meta['python']}; {meta['date']}",
        f"- command: `{meta['command']}`"
        + (" (TRITON_INTERPRET=1)" if meta["triton_interpret"] else ""),
        f"- copy bandwidth: {copy.gbs:.4g} GB/s (`copy_` of {copy.nbytes / 2**20:.0f} MiB, "
        f"{copy.ms:.4g} ms {copy.basis}, read + write bytes)",
        f"- wall time: median of {meta['steps']} steps after {meta['warmup']} warm-up, synced; "
        f"kernel time: {kernel}",
        "- peak temp: allocated during one step above the level before it "
        + ("(max_memory_allocated)" if meta["device"] == "cuda" else "(CPU profiler replay)")
        + "; × params: in units of the total fp32 param size",
        "- GB/s: bytes the algorithm moves (AdamW 28, Lion 20, Adan 44 B/param) / time; "
        f"Triton: CHUNK {meta['chunk']}, BLOCK {meta['block']}, {meta['num_warps']} warps",
    ]
    for pset in sets:
        out += ["", f"## {pset.title}: {len(pset.shapes)} tensors, {pset.numel:,} params "
                f"(shapes: {pset.source})", ""]
        out += markdown_table([r for r in rows if r.set == pset.name])
    return "\n".join(out) + "\n"


def _stem(meta: dict[str, Any], sets: Sequence[ParamSet]) -> str:
    """``step_bench_<device>[_<set>...][_smoke]``: a run of one set does not overwrite another."""
    device = "cpu" if meta["device"] == "cpu" else re.sub(r"[^a-z0-9]+", "_",
                                                          meta["device_name"].lower()).strip("_")
    names = [] if len(sets) == len(SETS) else [s.name for s in sets]
    return "_".join(["step_bench", device, *names] + (["smoke"] if meta["smoke"] else []))


# --- command line -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="GPU: python benchmarks/step_bench.py | CPU smoke: TRITON_INTERPRET=1 python "
               "benchmarks/step_bench.py --smoke --out /tmp/sb")
    p.add_argument("--device", choices=("cuda", "cpu"),
                   default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--smoke", action="store_true",
                   help="tiny sets and few steps (CPU + TRITON_INTERPRET=1 in ~30 s)")
    p.add_argument("--sets", default=",".join(SETS), help=f"comma-separated of {', '.join(SETS)}")
    p.add_argument("--optimizers", default=",".join(OPTIMIZERS),
                   help=f"comma-separated of {', '.join(OPTIMIZERS)}")
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help=f"comma-separated of {', '.join(VARIANTS)}")
    p.add_argument("--steps", type=int, help="timed steps per row (default 50; smoke 3)")
    p.add_argument("--warmup", type=int, help="untimed steps first (default 10; smoke 2)")
    p.add_argument("--profile-steps", type=int, help="profiled steps (default 10; smoke 2)")
    p.add_argument("--compile-timeout", type=float, default=300.0,
                   help="seconds for a compiled row, compile included (default 300)")
    p.add_argument("--copy-mb", type=int, help="size of the copy_ reference (default 512; smoke 4)")
    p.add_argument("--out", type=Path, help="output directory (default: a new ./gsr-step-bench-"
                                            "<time>/; smoke: a temporary directory)")
    p.add_argument("--row", help=argparse.SUPPRESS)  # SET:OPTIMIZER:VARIANT, for compiled rows
    return p


def _choices(text: str, allowed: Sequence[str], what: str) -> list[str]:
    picked = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in picked if t not in allowed]
    if bad:
        raise SystemExit(f"unknown {what}: {', '.join(bad)} (choose from {', '.join(allowed)})")
    return picked


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available (use --device cpu --smoke)")
    if args.device == "cuda" and os.environ.get("TRITON_INTERPRET") == "1":
        raise SystemExit("--device cuda: unset TRITON_INTERPRET, or the kernels run interpreted")
    if args.device == "cpu" and "triton" not in sys.modules:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # Triton kernels on CPU tensors
    small = args.smoke
    cfg = Settings(
        device=torch.device(args.device), smoke=args.smoke,
        steps=args.steps or (3 if small else 50), warmup=args.warmup or (2 if small else 10),
        profile_steps=args.profile_steps or (2 if small else 10),
        compile_timeout=args.compile_timeout,
    )
    all_sets = param_sets(args.smoke)
    if args.row:  # child process of a compiled row: measure it, print it, write nothing
        set_name, opt_name, variant = args.row.split(":")
        row = measure_row(opt_name, variant, all_sets[set_name], cfg, in_child=True)
        print(ROW_PREFIX + json.dumps(dataclasses.asdict(row)))
        return 0

    sets = [all_sets[s] for s in _choices(args.sets, SETS, "set")]
    opts = _choices(args.optimizers, tuple(OPTIMIZERS), "optimizer")
    variants = _choices(args.variants, VARIANTS, "variant")
    copy = copy_bandwidth(cfg.device, (args.copy_mb or (4 if small else 512)) * 2**20)
    for s in sets:
        print(f"{s.title}: {len(s.shapes)} tensors, {s.numel:,} params ({s.source})", flush=True)
    rows = []
    for pset in sets:
        for opt_name in opts:
            for variant in variants:
                row = measure_row(opt_name, variant, pset, cfg)
                if row.bandwidth_gbs is not None:
                    row = dataclasses.replace(row, copy_fraction=row.bandwidth_gbs / copy.gbs)
                rows.append(row)
                print(f"  {pset.name} {row.label}: "
                      + (f"skipped ({row.reason})" if row.skipped else f"{row.wall_ms:.3f} ms"),
                      flush=True)

    meta = _meta(cfg, argv)
    # never into the committed results unless --out says so: a new directory it names below
    out_dir = args.out or (Path(tempfile.gettempdir()) / "step_bench" if small
                           else new_results_dir("gsr-step-bench"))
    out_dir.mkdir(parents=True, exist_ok=True)
    text = markdown(meta, copy, sets, rows)
    stem = out_dir / _stem(meta, sets)
    stem.with_suffix(".md").write_text(text)
    payload = {"meta": meta, "copy": dataclasses.asdict(copy),
               "sets": {s.name: {"title": s.title, "tensors": len(s.shapes), "params": s.numel,
                                 "source": s.source} for s in sets},
               "rows": [dataclasses.asdict(r) for r in rows]}
    stem.with_suffix(".json").write_text(json.dumps(payload, indent=1) + "\n")
    print(f"\n{text}\nwritten: {stem}.md, .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
