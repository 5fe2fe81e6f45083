"""Relocation layer: symbol binding and the generic relocation loop.

The package holds what the loop needs to decide whether the numpy path
(`relink.relocation.bulk`) applies, so a load of small tables imports neither numpy nor
that module.
"""

from __future__ import annotations

from typing import Any

__all__ = ["NUMPY_THRESHOLD", "numpy_or_none"]

NUMPY_THRESHOLD = 256  # below this a Python loop beats numpy set-up (measured)

_np: list[Any] = []


def numpy_or_none() -> Any:
    """The numpy module, or None if it is not installed (imported on the first call)."""
    if not _np:
        try:
            import numpy as np_mod
        except ImportError:
            _np.append(None)
        else:
            _np.append(np_mod)
    return _np[0]
