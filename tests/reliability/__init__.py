"""Reliability: bad input, corrupt files, killed runs."""
