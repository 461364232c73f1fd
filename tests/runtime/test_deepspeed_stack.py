"""`gsr_rewrite.install()` under DeepSpeed ZeRO stage 2, two CPU ranks (gloo), without
`zero_allow_untested_optimizer`: DeepSpeed checks `type(optimizer)` against its list of tested
optimizers, and an installed torch AdamW is still a `torch.optim.AdamW`.

ZeRO-2 hands the wrapped optimizer flat fp32 partitions of the params (one per param group and
rank) whose gradients are flat partitions of the reduced gradients: the R step must run its
rewritten statements on them (no fallback), match torch's AdamW bitwise, and keep its
temporaries ≤ 0.05 of the partition size, where torch's own step allocates about 1 (foreach) or
2 (for-loop: `sqrt` and the division are both alive for the one big tensor)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.common import REPO

pytest.importorskip("deepspeed", reason="DeepSpeed is not installed (pip install deepspeed)")



@pytest.mark.deepspeed
def test_zero2_two_ranks_installed_adamw(tmp_path: Path) -> None:
    out = tmp_path / "ranks.json"
    env = {**os.environ, "DS_ACCELERATOR": "cpu"}
    worker = str(REPO / "tests" / "deepspeed_worker.py")
    run = subprocess.run([sys.executable, worker, "deepspeed", "2", str(out)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = json.loads(out.read_text())
    assert len(ranks) == 2
    for rank in ranks:
        assert set(rank) == {"loop", "foreach"}
        for path, seen in rank.items():
            assert seen["bitwise"] and seen["moved"], (path, seen)
            for who in ("original", "r"):
                assert seen[f"{who}_zero"] == "DeepSpeedZeroOptimizer", seen
                assert seen[f"{who}_stage"] == 2 and not seen[f"{who}_untested_allowed"], seen
                assert seen[f"{who}_wraps_ours"] and seen[f"{who}_type"] == "AdamW", seen
                assert len(seen[f"{who}_flat"]) == 2, seen  # one flat partition per group
                assert seen[f"{who}_lr"] == pytest.approx(1e-2 / 5)  # the LR scheduler ran
            assert seen["original_guard_hits"] == 0 and seen["original_fallbacks"] == 0
            assert seen["r_guard_hits"] > 0, seen  # the rewritten statements ran
            assert seen["r_fallbacks"] == 0, seen  # no step took torch's path
            assert seen["original_units"] >= (1.9 if path == "loop" else 0.9), seen
            assert seen["r_units"] <= 0.05, seen
