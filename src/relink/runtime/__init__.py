"""Runtime layer: the native-only parts (host provider, executors, TLS, trampolines)."""
