"""The proof cache: one JSON file of proof results keyed by each rule's table, the sympy version
and PROOF_VERSION, so a warm load proves nothing."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import sympy as sp

PROOF_VERSION = "1"  # bump whenever the proof logic or the function whitelist changes
CACHE_MAX = 2000  # proof entries kept; every edit of a rule adds one


def cache_path() -> Path:
    """$GSR_REWRITE_CACHE_DIR/rule-proofs.json, default ~/.cache/gsr-rewrite/rule-proofs.json."""
    root = os.environ.get("GSR_REWRITE_CACHE_DIR") or Path.home() / ".cache" / "gsr-rewrite"
    return Path(root) / "rule-proofs.json"


def cache_key(raw: Mapping[str, Any]) -> str:
    """The cache entry's key of one [[rule]] table as written."""
    blob = json.dumps(raw, sort_keys=True, default=str) + sp.__version__ + PROOF_VERSION
    return hashlib.sha256(blob.encode()).hexdigest()


def _entry_ok(v: dict[str, Any]) -> bool:
    """A well-formed entry: a proof's figures, or a failure's message."""
    if v.get("ok") is True:
        return {"method", "checked", "skipped", "seconds"} <= v.keys()
    return v.get("ok") is False and isinstance(v.get("message"), str)


def read_cache() -> dict[str, dict[str, Any]]:
    """The well-formed entries of the cache file; none when it is missing or unreadable."""
    try:
        entries = json.loads(cache_path().read_text())["entries"]
        return {k: v for k, v in entries.items() if isinstance(v, dict) and _entry_ok(v)}
    except (OSError, ValueError, LookupError, TypeError, AttributeError):
        return {}  # missing or corrupted: the next write replaces it


def write_cache(entries: Mapping[str, Any]) -> None:
    """Replace the cache file by `entries`; a cache that cannot be written is skipped."""
    path = cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as f:
            json.dump({"proof_version": PROOF_VERSION, "entries": entries}, f)
        os.replace(f.name, path)  # atomic: readers see the old file or the new one, never half
    except OSError:
        pass  # the cache only saves time
