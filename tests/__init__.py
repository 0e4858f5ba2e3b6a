"""Test package (makes `tests.support` importable)."""
