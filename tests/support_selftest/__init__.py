"""Self-tests of the shared test support code (tests/support)."""
