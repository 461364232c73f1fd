"""Regenerate the shipped R-variants in gsr_rewrite/optim/ from examples/ (never edit them)."""

from pathlib import Path

from gsr_rewrite.optim.shipped import SHIPPED, SHIPPED_TRITON, generate

repo = Path(__file__).resolve().parent.parent
for module in [*SHIPPED, *SHIPPED_TRITON]:  # eager first: Triton modules import them
    target = repo / "gsr_rewrite" / "optim" / module
    target.write_text(generate(repo, module))
    print(f"wrote {target.relative_to(repo)}")
