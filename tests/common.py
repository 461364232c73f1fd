"""Paths every test folder shares (tests are one folder per sub-package of gsr_rewrite/)."""

from pathlib import Path

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
EXAMPLES = REPO / "examples"
