"""Errors the user sees: each names file:line:col and what to do."""


class RewriteError(Exception):
    """Bad input: a syntax error, no optimizer class, an unsupported construct, a missing file."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


class AnalysisLimit(RewriteError):
    """The analysis of one class could not finish soundly (it is refused; the module goes on)."""
