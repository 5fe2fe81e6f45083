"""Linker layer: dependency resolution, search paths, contexts."""
