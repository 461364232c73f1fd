"""Data shipped with gsr-rewrite: the op catalog and the rule book (installed as gsr_rewrite.rules)."""
