"""Driftwarden benchmarks; `make bench` runs them all (never part of CI)."""
