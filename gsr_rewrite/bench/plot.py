"""One picture: allocated memory over the last training iteration, original vs variant, with the
optimizer step shaded. matplotlib is imported lazily (``pip install matplotlib``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from gsr_rewrite.bench.measure import PHASE_FB, PHASE_OPT
from gsr_rewrite.bench.memory import Row

__all__ = ["phase_axis", "plot_timeline"]


def plot_timeline(row: Row, path: str | Path, device: str) -> bool:
    """Write the PNG; False (and nothing written) without matplotlib or without timelines."""
    curves = [
        (result["timeline"], spec.label, color)
        for result, spec, color in (
            (row.original, row.pair.original, "tab:red"),
            (row.variant, row.pair.variant, "tab:blue"),
        )
        if result.get("timeline")
    ]
    if not curves:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for timeline, label, color in curves:
        mb = [b / 2**20 for b in timeline["bytes"]]
        x = phase_axis(timeline["t"], timeline["phases"][PHASE_FB], timeline["phases"][PHASE_OPT])
        ax.plot(
            x,
            mb,
            color=color,
            drawstyle="steps-post",
            lw=1.2,
            label=f"{label}: peak {max(mb):,.1f} MB",
        )
    ax.axvspan(1.0, 2.0, color="0.85", alpha=0.5, lw=0, label="optimizer.step")
    ax.set_xticks([0.0, 0.5, 1.0, 1.5, 2.0], ["", "forward + backward", "", "optimizer.step", ""])
    profiled = ", CPU under the profiler" if device == "cpu" else ""
    ax.set_xlabel(f"each phase stretched to the same width (durations in the JSON{profiled})")
    ax.set_ylabel("allocated MB")
    ckpt = "checkpointing on" if row.checkpointing else "checkpointing off"
    ax.set_title(
        f"{row.model}, batch 1, {ckpt}, one training iteration: {row.pair.label}", fontsize=10
    )
    ax.set_xlim(0.0, 2.0)
    ax.set_ylim(bottom=0)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def phase_axis(times: Sequence[float], fb: Sequence[float], opt: Sequence[float]) -> list[float]:
    """Map times piecewise-linearly: forward+backward to [0, 1], optimizer step to [1, 2], so runs
    of different speed line up phase by phase; the gap between the phases collapses onto 1."""

    def scale(t: float, start: float, end: float) -> float:
        return min(1.0, max(0.0, (t - start) / (end - start))) if end > start else 1.0

    return [scale(t, fb[0], fb[1]) if t < opt[0] else 1.0 + scale(t, opt[0], opt[1]) for t in times]
