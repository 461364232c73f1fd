"""Replay signed allocation events into live bytes: peaks per phase and a timeline to plot.

Both measurements feed this: the CPU profiler's ``[memory]`` events (``nbytes`` is +size on
allocation, -size on free) and the CUDA caching allocator's trace (``alloc`` / ``free_completed``).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MAX_TIMELINE_POINTS", "Replay", "downsample", "replay_memory_events", "timeline_json"]

MAX_TIMELINE_POINTS = 4000  # per curve; downsampling keeps each bucket's min and max


@dataclass
class Replay:
    """Live bytes replayed from signed allocation events, with peaks per phase."""

    peak: int = 0  # over all windows of every phase
    phase_peaks: dict[str, int] = field(default_factory=dict)
    timeline: list[tuple[int, int]] = field(default_factory=list)  # (t_ns, bytes) in `window`


def replay_memory_events(
    events: Iterable[tuple[int, int]],
    phases: dict[str, Sequence[tuple[int, int]]],
    timeline_window: tuple[int, int] | None = None,
    start_level: int = 0,
) -> Replay:
    """Replay ``(t_ns, signed_bytes)`` events in time order from ``start_level``.

    A phase's peak is the highest level inside any of its ``(start, end)`` windows, the level on
    entry included (what the phase inherits is live during it). Events sharing a timestamp keep
    their recording order (stable sort), so an allocation is counted before its own free.
    """
    ordered = sorted(events, key=lambda e: e[0])
    times = [t for t, _ in ordered]
    levels = list(itertools.accumulate((nbytes for _, nbytes in ordered), initial=start_level))
    # levels[k] = live bytes after the first k events; windows may overlap or nest.
    out = Replay(phase_peaks={name: 0 for name in phases})
    for name, windows in phases.items():
        for w_start, w_end in windows:
            first = bisect.bisect_left(times, w_start)
            last = bisect.bisect_right(times, w_end)
            peak = max(levels[first : last + 1])  # the level on entry, then after each event
            out.phase_peaks[name] = max(out.phase_peaks[name], peak)
            out.peak = max(out.peak, peak)
    if timeline_window is not None:
        t0, t1 = timeline_window
        first, last = bisect.bisect_left(times, t0), bisect.bisect_right(times, t1)
        out.timeline = [(t0, levels[first])]
        out.timeline += [(times[k], levels[k + 1]) for k in range(first, last)]
        out.timeline.append((t1, levels[last]))
    return out


def downsample(points: Sequence[tuple[int, int]], max_points: int) -> list[tuple[int, int]]:
    """At most ~``max_points`` points; each bucket keeps its min and max (the peak survives)."""
    if len(points) <= max_points:
        return list(points)
    size = -(-len(points) // max(1, max_points // 2))  # ceil division
    out: list[tuple[int, int]] = []
    for start in range(0, len(points), size):
        bucket = range(start, min(start + size, len(points)))
        lo = min(bucket, key=lambda k: points[k][1])
        hi = max(bucket, key=lambda k: points[k][1])
        out += [points[k] for k in sorted({lo, hi})]
    return out


def timeline_json(
    points: Sequence[tuple[int, int]], phases: dict[str, tuple[int, int]], unit: str
) -> dict[str, Any]:
    """Times relative to the first point; ns -> ms when ``unit == "ms"``."""
    t0, scale = points[0][0], (1e-6 if unit == "ms" else 1.0)
    pts = downsample(points, MAX_TIMELINE_POINTS)
    return {
        "time_unit": unit,
        "t": [round((t - t0) * scale, 4) for t, _ in pts],
        "bytes": [b for _, b in pts],
        "phases": {
            k: [round((a - t0) * scale, 4), round((b - t0) * scale, 4)]
            for k, (a, b) in phases.items()
        },
    }
