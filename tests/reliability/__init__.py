"""Reliability findings, one test per finding (each failed before its fix)."""
