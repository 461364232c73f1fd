"""Proofs and checks: symbolic translation validation, run-time equivalence, measured memory."""
