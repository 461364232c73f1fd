"""The rule book: algebraic rewrite rules as data (rules/*.toml), proved with sympy when loaded.

A rule claims `before == after` per element wherever its symbols' assumptions and its `condition`
hold. Rule text is parsed with `ast` and translated to sympy through a whitelist, never eval'd.
A rule loads only if (1) sympy reduces before - after to 0 with the condition's sign facts added
to the assumptions, (2) every division, sqrt and log that `after` adds is defined there, and
(3) both sides agree at >= 20 points (random and edge values in the declared ranges; points that
break the condition are skipped) evaluated in mpmath at 40 digits. Results are cached per rule.

The parts: parser.py (TOML table -> Rule), prover.py (the proof of one rule), cache.py (proof
results kept between runs). This module loads whole books and reports on them.
"""

from __future__ import annotations

import time
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

import sympy as sp

from gsr_rewrite.rulebook.cache import (
    CACHE_MAX,
    PROOF_VERSION,
    cache_key,
    cache_path,
    read_cache,
    write_cache,
)
from gsr_rewrite.rulebook.parser import ProofReport, Rule, RuleError, SymbolSpec, parse_rule
from gsr_rewrite.rulebook.prover import MIN_POINTS, RTOL, prove

__all__ = ["MIN_POINTS", "PROOF_VERSION", "RTOL", "ProofReport", "Rule", "RuleBook",
           "RuleBookError", "RuleError", "RuleFailure", "SymbolSpec", "cache_path",
           "check_rulebook", "format_rules_table", "load_rulebook"]


@dataclass(frozen=True)
class RuleFailure:
    rule_id: str | None  # None for a problem with the whole file
    source: str
    message: str
    residual: str | None = None  # before - after as far as sympy got, when that was the problem

    def __str__(self) -> str:
        who = f"rule '{self.rule_id}'" if self.rule_id else "file"
        return f"{self.source}: {who}: {self.message}"


class RuleBookError(ValueError):
    def __init__(self, failures: list[RuleFailure]) -> None:
        self.failures = failures
        super().__init__("rule book failed to load:\n" + "\n".join(map(str, failures)))


@dataclass
class RuleBook:
    rules: dict[str, Rule]
    failures: list[RuleFailure]

    def get(self, rule_id: str) -> Rule | None:
        return self.rules.get(rule_id)


_Paths = str | Path | Iterable[str | Path] | None  # files or folders of *.toml


def _rule_files(paths: _Paths) -> list[tuple[str, str]]:
    """(source, text) of each *.toml in `paths` (files or folders), default gsr_rewrite.rules."""
    if isinstance(paths, str | Path):
        paths = [paths]
    if paths is None:
        try:
            pkg: Any = resources.files("gsr_rewrite.rules")
        except ModuleNotFoundError:  # not installed: use the repository layout
            pkg = Path(__file__).resolve().parents[2] / "rules"
        items = sorted((e for e in pkg.iterdir() if e.name.endswith(".toml")), key=lambda e: e.name)
        return [(str(e), e.read_text(encoding="utf-8")) for e in items]
    files = [f for p in map(Path, paths) for f in (sorted(p.glob("*.toml")) if p.is_dir() else [p])]
    return [(str(f), f.read_text(encoding="utf-8")) for f in files]


def load_rulebook(
    paths: _Paths = None, *, strict: bool = False, use_cache: bool = True
) -> RuleBook:
    """Parse and prove every rule; rules that fail are left out and listed in `.failures`.

    A TOML file without a top-level `rule` key is not a rule file (e.g. the op catalog) and is
    skipped. `strict=True` raises RuleBookError listing every failure instead.
    """
    cache = read_cache() if use_cache else {}
    fresh: dict[str, dict[str, Any]] = {}
    book = RuleBook({}, [])
    for source, text in _rule_files(paths):
        try:
            tables = tomllib.loads(text).get("rule", [])
        except tomllib.TOMLDecodeError as exc:
            book.failures.append(RuleFailure(None, source, f"invalid TOML: {exc}"))
            continue
        if not (isinstance(tables, list) and all(isinstance(t, dict) for t in tables)):
            book.failures.append(RuleFailure(None, source, "`rule` must be an array of tables"))
            continue
        for raw in tables:
            try:
                rule = parse_rule(raw, source)
                if rule.id in book.rules:
                    raise RuleError(f"duplicate id (first in {book.rules[rule.id].source})")
            except RuleError as exc:
                rid = raw.get("id") if isinstance(raw.get("id"), str) else None
                book.failures.append(RuleFailure(rid, source, str(exc)))
                continue
            key = cache_key(raw)
            if (entry := cache.get(key)) is None:
                entry = fresh[key] = {"id": rule.id, **prove(rule)}
            if not entry["ok"]:
                msg, residual = str(entry.get("message")), entry.get("residual")
                book.failures.append(RuleFailure(rule.id, source, msg, residual))
                continue
            stats = {k: entry[k] for k in ("method", "checked", "skipped", "seconds")}
            proof = ProofReport(**stats, cached=key not in fresh)
            book.rules[rule.id] = replace(rule, proof=proof)
    if use_cache and fresh:
        write_cache(dict(list({**cache, **fresh}.items())[-CACHE_MAX:]))  # newest last
    if strict and book.failures:
        raise RuleBookError(book.failures)
    return book


def format_rules_table(book: RuleBook) -> str:
    """A fixed-width table for `gsr-rewrite rules list` (print `book.failures` separately)."""
    rows = [("ID", "CONDITION", "EXACT", "FILE", "SUMMARY")]
    for r in book.rules.values():
        rows.append(
            (r.id, r.text["condition"], "yes" if r.exact else "no", Path(r.source).name, r.summary)
        )
    width = [*(max(len(row[i]) for row in rows) for i in range(4)), 0]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, width, strict=True)).rstrip() for row in rows
    ]
    lines.append(f"{len(book.rules)} rules proved, {len(book.failures)} failed")
    return "\n".join(lines)


def check_rulebook(paths: _Paths = None) -> tuple[bool, str]:
    """Re-prove every rule without the cache (`gsr-rewrite rules check`): (all ok, report)."""
    t0 = time.perf_counter()
    book = load_rulebook(paths, use_cache=False)
    lines = []
    for r in book.rules.values():
        p = r.proof or ProofReport("?", 0, 0, 0.0)
        stats = f"{p.checked} points agree, {p.skipped} skipped"
        lines.append(f"ok      {r.id}  ({p.method}; {stats}; {p.seconds * 1000:.0f} ms)")
    lines += [f"FAILED  {f}" for f in book.failures]
    dt = time.perf_counter() - t0
    versions = f"sympy {sp.__version__}, proof logic v{PROOF_VERSION}"
    lines.append(
        f"{len(book.rules)} proved, {len(book.failures)} failed in {dt:.2f} s ({versions})"
    )
    return not book.failures, "\n".join(lines)
