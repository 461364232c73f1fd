"""benchmarks/step_bench.py on CPU: one ``--smoke`` run (Triton interpreter) in a subprocess.

The run takes about 15-20 s: 2 sets x 3 optimizers x 5 variants, a few thousand elements each.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import subprocess
import sys
from types import ModuleType
from typing import Any

import pytest

from tests.common import REPO

SCRIPT = REPO / "benchmarks" / "step_bench.py"


def load_step_bench() -> ModuleType:
    """The benchmark script as a module (not part of the package); the GPU tests use it too."""
    if "step_bench" in sys.modules:
        return sys.modules["step_bench"]
    spec = importlib.util.spec_from_file_location("step_bench", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["step_bench"] = module  # dataclasses look their module up while being created
    spec.loader.exec_module(module)
    return module


bench = load_step_bench()


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    pytest.importorskip("triton")
    out = tmp_path_factory.mktemp("step_bench")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--device", "cpu", "--out", str(out)],
        env={**os.environ, "TRITON_INTERPRET": "1"},  # before triton is imported in the child
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (json_path,) = out.glob("step_bench_*.json")
    (md_path,) = out.glob("step_bench_*.md")
    return {"json": json.loads(json_path.read_text()), "md": md_path.read_text()}


def _rows(smoke: dict[str, Any], **match: str) -> list[dict[str, Any]]:
    return [r for r in smoke["json"]["rows"] if all(r[k] == v for k, v in match.items())]


def test_builtin_vit_b32_shapes_match_the_architecture() -> None:
    shapes = bench.vit_shapes()
    assert len(shapes) == 152
    assert sum(bench.torch.Size(s).numel() for s in shapes) == 88_224_232


def test_small_tensor_set_is_deterministic_and_about_13m_params() -> None:
    shapes = bench.small_shapes(2000, 1024, 12288)
    assert shapes == bench.small_shapes(2000, 1024, 12288)
    assert all(1024 <= s[0] <= 12288 for s in shapes)
    assert 12e6 < sum(s[0] for s in shapes) < 14.5e6


def test_a_row_per_set_optimizer_and_variant(smoke: dict[str, Any]) -> None:
    keys = [(r["set"], r["optimizer"], r["variant"]) for r in smoke["json"]["rows"]]
    assert sorted(keys) == sorted(itertools.product(bench.SETS, bench.OPTIMIZERS, bench.VARIANTS))
    table_rows = [line for line in smoke["md"].splitlines()
                  if line.startswith("| ") and not line.startswith("| optimizer")]
    assert len(table_rows) == len(keys)


def test_header_names_device_versions_command_and_date(smoke: dict[str, Any]) -> None:
    meta = smoke["json"]["meta"]
    for key in ("device_name", "torch", "triton", "python", "command", "date"):
        assert meta[key], key
        assert str(meta[key]) in smoke["md"], key
    assert smoke["json"]["copy"]["gbs"] > 0


def test_triton_rows_launch_one_kernel_per_step_and_never_fall_back(
    smoke: dict[str, Any],
) -> None:
    rows = _rows(smoke, variant="triton_r")
    assert len(rows) == len(bench.SETS) * len(bench.OPTIMIZERS)
    for r in rows:
        assert r["reason"] == "", r
        assert r["triton_launches_per_step"] == 1.0, r  # one group, one dtype signature
        assert r["eager_groups_per_step"] == 0.0, r


def test_skipped_rows_carry_a_reason_and_measured_rows_have_metrics(
    smoke: dict[str, Any],
) -> None:
    assert _rows(smoke, variant="compiled"), "compiled rows are CUDA only: expected skips on CPU"
    for r in smoke["json"]["rows"]:
        if r["reason"]:
            assert r["wall_ms"] is None
            assert f"skipped: {r['reason']}" in smoke["md"]
        else:
            assert r["wall_ms"] > 0 and r["peak_bytes"] is not None and r["bandwidth_gbs"] > 0, r
    assert {r["variant"] for r in smoke["json"]["rows"] if r["reason"]} <= {"fused", "compiled"}


def test_r_variants_have_no_param_sized_temporaries(smoke: dict[str, Any]) -> None:
    for r in smoke["json"]["rows"]:
        if r["variant"] in ("eager_r", "triton_r"):
            assert r["peak_units"] < 0.05, r  # measured 0.001-0.002: 12-40 B of scalars
        if r["variant"] == "foreach":
            assert r["peak_units"] > 0.9, r  # the foreach originals hold >= 1 full copy
