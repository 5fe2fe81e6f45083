"""Relocation layer: symbol binding and the generic relocation loop."""
