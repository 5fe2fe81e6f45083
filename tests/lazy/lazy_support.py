"""Helpers shared by the lazy-binding tests and their conftest (CPU feature flags)."""

from __future__ import annotations

from pathlib import Path


def cpu_flags() -> set[str]:
    """The CPU feature flags the kernel reports (empty when unknown)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


HAVE_AVX = "avx" in cpu_flags()
HAVE_AVX512 = "avx512f" in cpu_flags()
VECTOR_FLAGS = (["-mavx"] if HAVE_AVX else []) + (["-mavx512f"] if HAVE_AVX512 else [])
