"""Regenerate the shipped R-variants in gsr_rewrite/optim/ from examples/ (never edit them)."""

from pathlib import Path

from gsr_rewrite.shipped import SHIPPED, generate

repo = Path(__file__).resolve().parent.parent
for module in SHIPPED:
    target = repo / "gsr_rewrite" / "optim" / module
    target.write_text(generate(repo, module))
    print(f"wrote {target.relative_to(repo)}")
