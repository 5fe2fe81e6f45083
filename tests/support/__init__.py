"""Shared test support: cached fixture compiler (build) and test-only ELF writer (elfgen)."""
