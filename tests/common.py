"""What every test folder shares: paths (tests are one folder per sub-package of gsr_rewrite/), and
the certified rewrite of a fixture module."""

import functools
from pathlib import Path

from gsr_rewrite.outcome import RewriteResult
from gsr_rewrite.pipeline import compile_source

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
EXAMPLES = REPO / "examples"


@functools.cache
def compiled_fixture(package: str, name: str, importable: bool) -> RewriteResult:
    """compile_source (rewrite, then certify each class) of `<package>.<name>`, a module of a
    fixture package under tests/: as an importable module, or as a file whose package is known
    (a copy of the module is emitted)."""
    path = TESTS.joinpath(*package.split(".")[1:], f"{name}.py")
    return compile_source(path.read_text(), str(path), package,
                          f"{package}.{name}" if importable else None)
