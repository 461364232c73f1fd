"""Stage 7, report: what was rewritten, where each temporary now lives, and what was measured."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from gsr_rewrite import __version__
from gsr_rewrite.pipeline import CONTRACT, RewriteResult
from gsr_rewrite.validate import ClassCheck


def _units(d: dict[str, int]) -> str:
    return f"{d.get('lists', 0)} list(s) of all params + {d.get('tensors', 0)} single tensor(s)"


def to_json(result: RewriteResult, checks: dict[str, ClassCheck], out: str | None
            ) -> dict[str, Any]:
    classes = []
    for c in result.classes:
        entry: dict[str, Any] = {
            "name": c.name, "r_name": c.r_name if c.status == "rewritten" else None,
            "status": c.status, "reason": c.reason, "validation": c.validation,
            "equivalence": c.equivalence if c.status == "rewritten" else None,
            "rules": c.rules,
            "temporaries": [asdict(t) for t in c.temporaries],
            "predicted": {"before": c.predicted_before, "after": c.predicted_after,
                          "unit": "peak temporaries alive at once: a list = 1 parameter-size, "
                                  "a single tensor = one parameter's size"},
        }
        chk = checks.get(c.name)
        if chk is not None:
            entry["check"] = {
                "passed": chk.passed, "mode": chk.mode, "error": chk.error,
                "runs": [{"name": r.name, "config": r.config, "device": r.device,
                          "steps": r.steps, "passed": r.passed, "max_abs_diff": r.max_abs_diff,
                          "message": r.message} for r in chk.results],
                "measured_units": {k: {"original": a.units, "rewritten": b.units,
                                       "original_bytes": a.peak_bytes,
                                       "rewritten_bytes": b.peak_bytes,
                                       "param_bytes": a.param_bytes}
                                   for k, (a, b) in chk.memory.items()},
            }
        classes.append(entry)
    return {"tool": f"gsr-rewrite {__version__}", "source": result.filename, "output": out,
            "contract": CONTRACT, "classes": classes}


def to_text(result: RewriteResult, checks: dict[str, ClassCheck], out: str | None) -> str:
    lines = [f"gsr-rewrite {__version__}: {result.filename} -> {out or '(not written)'}"]
    for c in result.classes:
        head = f"{c.name}: {c.status}"
        if c.status == "rewritten":
            head += (f" as {c.r_name} (storage moved only: bitwise)" if c.equivalence == "bitwise"
                     else f" as {c.r_name} (arithmetic changed by rules {', '.join(c.rules)}: "
                     "tolerance)")
        if c.reason:
            head += f" -- {c.reason}"
        lines.append(head)
        if c.validation:
            lines.append(f"  evidence: {c.validation}")
        if c.temporaries:
            lines.append("  predicted temporaries alive at once: "
                         f"before {_units(c.predicted_before)}; after {_units(c.predicted_after)}")
        for t in c.temporaries:
            where = f"{t.function}:{t.line}"
            code = t.code if len(t.code) <= 44 else t.code[:41] + "..."
            target = f"-> {t.lives_in}" if t.placed or t.strips else "stays  "
            lines.append(f"    {where:28} {code:44} {target:18} {t.how}")
        chk = checks.get(c.name)
        if chk is not None:
            ok = sum(r.passed for r in chk.results)
            lines.append(f"  check: {ok}/{len(chk.results)} runs passed ({chk.mode})"
                         + (f"; ERROR {chk.error}" if chk.error else ""))
            for r in chk.results:
                if not r.passed:
                    lines.append(f"    FAIL {r.summary}: {r.message}")
            if chk.memory:
                lines.append("  measured temporaries of one step, units of the parameter size "
                             "(8 params of 64x64 fp32):")
                for k, (a, b) in chk.memory.items():
                    lines.append(f"    {k:22} original {a.units:6.3f}  ->  {c.r_name} "
                                 f"{b.units:6.3f}   ({a.peak_bytes} -> {b.peak_bytes} bytes)")
    if any(c.status == "rewritten" for c in result.classes):
        lines.append(f"Contract of the R-variants: {CONTRACT}.")
    return "\n".join(lines)
