"""Toy components registered by tests/test_extending.py, one per extension point (EXTENDING.md)."""
