"""Render memory-benchmark rows: a markdown table, a per-model verdict, and JSON."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gsr_rewrite.bench.memory import Row, optimizer_is_peak

__all__ = ["markdown_report", "markdown_table", "model_verdicts", "rows_json"]

_STATUS_CELL = {
    "oom": "did not fit",
    "timeout": "timeout",
    "error": "error",
    "unavailable": "unavailable",
}


def _mb(nbytes: int) -> str:
    return f"{nbytes / 2**20:,.1f}"


def _peak_cell(result: dict[str, Any], key: str = "peak_allocated") -> str:
    if result.get("status") == "ok":
        return _mb(int(result[key]))
    return _STATUS_CELL.get(str(result.get("status")), "error")


def _yes_no(value: bool | None) -> str:
    return "—" if value is None else ("yes" if value else "no")


def _savings_cell(row: Row) -> str:
    if row.savings_pct is not None:
        return f"{row.savings_pct:.1f}"
    if row.original.get("status") == "oom" and row.variant.get("status") == "ok":
        return "fits only as variant"
    return "—"


def markdown_table(rows: Sequence[Row], reserved: bool) -> str:
    """One line per row; ``reserved`` adds the allocator's reserved peaks (CUDA only)."""
    head = [
        "model",
        "params (M)",
        "checkpointing",
        "optimizer",
        "original MB",
        "R MB",
        "savings %",
        "optimizer phase is peak (orig / R)",
    ]
    if reserved:
        head += ["original reserved MB", "R reserved MB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        params = f"{row.params / 1e6:,.2f}" if row.params is not None else "—"
        peaks = f"{_yes_no(optimizer_is_peak(row.original))} / "
        peaks += _yes_no(optimizer_is_peak(row.variant))
        cells = [
            row.model,
            params,
            "on" if row.checkpointing else "off",
            row.pair.label,
            _peak_cell(row.original),
            _peak_cell(row.variant),
            _savings_cell(row),
            peaks,
        ]
        if reserved:
            cells += [
                _peak_cell(row.original, "peak_reserved"),
                _peak_cell(row.variant, "peak_reserved"),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _peak_phrase(rows: Sequence[Row], ckpt: bool) -> str:
    measured = [r for r in rows if r.checkpointing == ckpt and r.original.get("status") == "ok"]
    opt_peak = [r.pair.name for r in measured if optimizer_is_peak(r.original)]
    fb_peak = [r.pair.name for r in measured if not optimizer_is_peak(r.original)]
    where = "with" if ckpt else "without"
    if not measured:
        return f"{where} checkpointing nothing was measured"
    text = (
        f"{where} checkpointing the optimizer step is the peak for {', '.join(opt_peak) or 'none'}"
    )
    if fb_peak:
        text += (
            f"; forward+backward is the peak for {', '.join(fb_peak)} (a variant cannot go lower)"
        )
    return text


def model_verdicts(rows: Sequence[Row]) -> list[str]:
    """Per model: is the optimizer phase the peak, and the saving without vs with checkpointing."""
    lines = []
    for model in dict.fromkeys(r.model for r in rows):
        mine = [r for r in rows if r.model == model]
        params = next((r.params for r in mine if r.params is not None), None)
        size = f" ({params / 1e6:,.2f} M params)" if params is not None else ""
        settings = sorted({r.checkpointing for r in mine})
        phrases = [_peak_phrase(mine, ckpt) for ckpt in settings]
        savings = []
        for name in dict.fromkeys(r.pair.name for r in mine):
            by_ckpt = {r.checkpointing: r.savings_pct for r in mine if r.pair.name == name}
            off, on = by_ckpt.get(False), by_ckpt.get(True)
            if off is not None and on is not None:
                delta = round(on - off, 1) + 0.0  # no "-0.0"
                savings.append(f"{name} {off:.1f} % → {on:.1f} % ({delta:+.1f} points)")
            elif off is not None or on is not None:
                value = off if off is not None else on
                savings.append(f"{name} {value:.1f} %")
        text = f"- **{model}**{size}: " + "; ".join(phrases) + "."
        if savings:
            label = "without → with checkpointing" if len(settings) == 2 else "saving"
            text += f" Saving ({label}): " + ", ".join(savings) + "."
        lines.append(text)
    return lines


def _problems(rows: Sequence[Row]) -> list[str]:
    """Failed measurements grouped by optimizer and reason, each with the configurations hit."""
    groups: dict[tuple[str, str, str], list[str]] = {}
    for row in rows:
        for spec, result in ((row.pair.original, row.original), (row.pair.variant, row.variant)):
            status = str(result.get("status"))
            if status == "ok":
                continue
            what = _STATUS_CELL.get(status, status)
            where = f"{row.model} (checkpointing {'on' if row.checkpointing else 'off'})"
            hits = groups.setdefault((spec.label, what, str(result.get("error", ""))), [])
            if where not in hits:
                hits.append(where)
    return [
        f"- {label}: {what} in {', '.join(hits)}" + (f" — {error}" if error else "")
        for (label, what, error), hits in groups.items()
    ]


def markdown_report(rows: Sequence[Row], meta: dict[str, Any]) -> str:
    """The whole markdown file: how it was measured, the table, verdicts, and failed rows."""
    cuda = meta.get("device") == "cuda"
    memory = (
        "CUDA caching allocator, `max_memory_allocated` (reserved peaks in the last columns)"
        if cuda
        else "CPU profiler `[memory]` events replayed in time order; the CPU allocator caches "
        "nothing, so reserved = allocated"
    )
    out = [
        "# Training-step peak memory: original optimizer vs R-variant",
        "",
        f"- device: {meta.get('device_name', meta.get('device'))}; torch {meta.get('torch')}; "
        f"{meta.get('date')}",
        f"- batch 1, {meta.get('iters')} iterations of zero_grad → forward → backward → step, "
        "fp32; peak over the whole run; each configuration in a fresh process",
        f"- memory: {memory}",
        "- optimizer phase is peak: the step reaches higher than forward+backward",
        f"- command: `{meta.get('command', '')}`",
        "",
        markdown_table(rows, reserved=cuda),
        "",
        "## Per model",
        "",
        *model_verdicts(rows),
    ]
    problems = _problems(rows)
    if problems:
        out += ["", "## Did not fit or failed", "", *problems]
    return "\n".join(out) + "\n"


def rows_json(rows: Sequence[Row], meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "meta": meta,
        "rows": [
            {
                "model": r.model,
                "params": r.params,
                "checkpointing": r.checkpointing,
                "pair": r.pair.name,
                "optimizer": r.pair.label,
                "savings_pct": r.savings_pct,
                "optimizer_is_peak": [optimizer_is_peak(r.original), optimizer_is_peak(r.variant)],
                "original": r.original,
                "variant": r.variant,
            }
            for r in rows
        ],
    }
