"""Corpus tooling: rewrite every optimizer class of installed packages and tabulate."""
