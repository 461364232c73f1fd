"""Data shipped with gsr-rewrite: the op catalog and the rule book (package gsr_rewrite.rules)."""
