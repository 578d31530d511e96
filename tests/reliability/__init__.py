"""Reliability: bad input, corrupt files, foreign checkpoints; one test per finding (each failed before its fix)."""
