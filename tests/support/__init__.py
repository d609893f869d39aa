"""Helpers shared by test modules (imported as ``support.*``; tests/ is on sys.path)."""
