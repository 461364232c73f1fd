"""`python -m gsr_rewrite.cli ...` is `gsr-rewrite ...`."""

from gsr_rewrite.cli.main import main

main()
