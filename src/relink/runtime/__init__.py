"""Runtime layer: the native-only parts (host provider, executors, TLS, trampolines).

The package also keeps the registry of live module states behind
`relink.loaded_modules()` and the gdb manifest: `track` is all a load needs, so it
lives here (imported with every load) while the listing and gdb code stay in
`relink.runtime.debug`, imported when asked for (or at start-up with ``RELINK_GDB=1``).
"""

from __future__ import annotations

import os
import weakref
from typing import Any

__all__ = ["track"]

_live: weakref.WeakSet[Any] = weakref.WeakSet()
_order: dict[int, int] = {}  # id(state) -> registration sequence (stable listing order)
_seq = [0]
_gdb: dict[str, str] = {}  # "dir" -> manifest directory, when enabled


def track(state: Any) -> None:
    """Register a freshly created module state (called by ModuleState / ObjectState)."""
    # No lock: a GC finalizer (relink leases release contexts) must never find this
    # held; set/dict updates are atomic under the GIL.
    _seq[0] += 1
    _order[id(state)] = _seq[0]
    _live.add(state)
    ref = weakref.ref(state)
    state.extras.insert(0, lambda: _untrack(ref))  # runs last, after the other releases
    if _gdb:
        _manifest_changed()


def _untrack(ref: weakref.ref[Any]) -> None:
    state = ref()
    if state is not None:
        _live.discard(state)
        _order.pop(id(state), None)
    if _gdb:
        _manifest_changed()


def _manifest_changed() -> None:
    from relink.runtime.debug import _write_manifest

    _write_manifest()


if os.environ.get("RELINK_GDB", "") not in ("", "0"):
    import importlib

    importlib.import_module("relink.runtime.debug")  # its import enables the gdb manifest
