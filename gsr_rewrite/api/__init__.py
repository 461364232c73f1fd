"""Python API: rewrite source text, or turn an optimizer class into its R-variant at run time.

    >>> from gsr_rewrite.api import reduce
    >>> AdamWR = reduce(my_optim.AdamW)  # same constructor and state; p.grad is scratch after step

`reduce` reads the source of the module that defines the class, rewrites the whole module (with
relative imports made absolute), writes the emitted module to a private cache, imports it under a
unique name and returns its `<Name>R` class. The module's top level runs once more under that
name. The class returned derives from the very class passed in: the R methods are moved onto a
subclass of it when the class's code equals its file's (not edited since import), no moved method
calls super(), and that subclass passes certification against it (cached); otherwise it derives
from the class regenerated from the file. Only certified classes are emitted
(`validate.certify`, cached with the module).

Cache: ``$GSR_REWRITE_CACHE_DIR/generated/`` (default ``~/.cache/gsr-rewrite/generated/``), one
``<stem>_<hash>.py`` per module plus ``<stem>_<hash>.json`` with the per-class outcome, and
``certified_<Name>_<hash>.json`` with the verdict for a subclass that runs its base's step
(AdamW(Adam)). The hash covers the sources, their file names and package, torch's version, the
tool version and the tool's own code and rules, so a changed optimizer, torch or rewriter never
reuses a stale module or verdict. A cached class comes back in a fresh process in about 0.3 s.

Parts: modules.py (a module rewritten and cached), classes.py (`reduce`), in_place.py
(`install`, `uninstall`).
"""

from gsr_rewrite.api.classes import inherit_variant, reduce, step_owner
from gsr_rewrite.api.in_place import install, uninstall
from gsr_rewrite.api.modules import (
    EmittedModuleError,
    ModuleRewrite,
    cache_dir,
    defining_module,
    rewrite_module,
    rewrite_text,
)

__all__ = ["EmittedModuleError", "ModuleRewrite", "cache_dir", "defining_module",
           "inherit_variant", "install", "reduce", "rewrite_module", "rewrite_text",
           "step_owner", "uninstall"]
