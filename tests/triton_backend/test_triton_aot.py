"""The emitted kernels compiled ahead of time for an H100 (sm_90a), on this GPU-less machine.

What can be known about their speed without a GPU: no register spills (a spilling kernel ran
~10x slower on H100) and 128-bit vectorized global loads on the unmasked path.  Triton compiles
real kernels only outside its interpreter, so this runs in a subprocess without TRITON_INTERPRET.
The kernels are made as the run time makes them on first use (``KernelCache.spec_for``): the
defaults of each shipped optimizer and LAMB, and AdamW with four options off their defaults.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.common import REPO

pytest.importorskip("triton")

SCRIPT = r'''
import json, sys, tempfile, torch
from pathlib import Path
from gsr_rewrite.pipeline import rewrite_source
from gsr_rewrite.triton_backend.generate import triton_classes
from gsr_rewrite.triton_backend.check import compile_for_h100
from gsr_rewrite.proof.validate import load_module
from gsr_rewrite.optim import adamw_triton, adan_triton, lion_triton

tmp = Path(tempfile.mkdtemp()) / "lamb_r.py"  # two passes: LAMB's trust ratio
tmp.write_text(rewrite_source(Path(sys.argv[1]).read_text(), "lamb.py").code)
text, _ = triton_classes(load_module(tmp, "lamb_eager"), [("Lamb", "LambR")])
tmp.write_text(tmp.read_text() + text)
lamb = load_module(tmp, "lamb_triton")
out = []
# made through the run time's path (trace, emit, disk cache, import), without TRITON_INTERPRET
many = {"amsgrad": True, "maximize": True, "weight_decay": 0.0, "foreach": False}
for kernels, config in ((adamw_triton._ADAMW_KERNELS, {}), (adamw_triton._ADAMW_KERNELS, many),
                        (adan_triton._ADAN_KERNELS, {}), (lion_triton._LION_KERNELS, {}),
                        (lamb._LAMB_KERNELS, {})):
    spec = kernels.spec_for(config)
    for low in (torch.float32, torch.bfloat16):  # bf16 params and grads, fp32 states
        dtypes = tuple(low if r in ("param", "grad") else torch.float32 for r in spec.roles)
        for kernel in spec.kernels:
            r = compile_for_h100(kernel, spec.roles, dtypes, spec.reductions)
            out.append([r.kernel, str(low), r.registers, r.spill_bytes, r.vector_loads])
json.dump(out, sys.stdout)
'''


def test_shipped_kernels_compile_for_h100_without_spills() -> None:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    lamb = REPO / "examples" / "lamb.py"
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(lamb)], capture_output=True,
                         text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    reports = json.loads(run.stdout)
    assert len(reports) == 12  # 4 one-pass kernels + LAMB's two passes, fp32 and bf16
    print("\n".join(map(str, reports)))
    for kernel, dtype, registers, spills, vector_loads in reports:
        assert spills == 0, f"{kernel} ({dtype}): {spills} bytes of spills, {registers} registers"
        assert vector_loads > 0, f"{kernel} ({dtype}): no 128-bit loads"
