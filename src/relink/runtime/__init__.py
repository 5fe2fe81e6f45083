"""Runtime layer: the native-only parts (host provider, executors, TLS, trampolines).

The package also keeps the registry of live module states behind
`relink.loaded_modules()` and the gdb manifest: `track` is all a load needs, so it
lives here (imported with every load) while the listing and gdb code stay in
`relink.runtime.debug`, imported when asked for (or at start-up with ``RELINK_GDB=1``).
"""

from __future__ import annotations

import itertools
import os
import weakref
from typing import Any

__all__ = ["live_states", "track", "untrack"]

_gdb: dict[str, str] = {}  # "dir" -> manifest directory, when enabled
_seq = itertools.count(1)  # registration numbers (next() is atomic under the GIL)


class _Tracked(weakref.ref):
    """The registry's weak reference to a module state, with what listing it needs:
    `key` (its ``id``, the registry key) and `seq` (registration number: listing order,
    and a name no other state ever gets). One small object per loaded module."""

    __slots__ = ("key", "seq")
    key: int
    seq: int

    def untrack(self) -> None:
        """The state's release hook: it leaves the registry."""
        if _live.get(self.key) is self:
            del _live[self.key]
        if _gdb:
            _manifest_changed()


def _collected(ref: _Tracked) -> None:
    """Weak-reference callback: a state collected without being released."""
    if _live.get(ref.key) is ref:
        del _live[ref.key]


_live: dict[int, _Tracked] = {}  # id(state) -> its reference, in registration order


def track(state: Any, hook: bool = True) -> None:
    """Register a freshly created module state (called by ModuleState / ObjectState).

    With `hook`, the state leaves the registry through a release hook that runs last
    (first in ``state.extras``); without it, its release calls `untrack` itself (one
    bound method and one list insertion less per load: ModuleState).
    """
    # No lock: a GC finalizer (relink leases release contexts) must never find this
    # held; dict updates are atomic under the GIL.
    ref = _Tracked(state, _collected)
    ref.key = key = id(state)
    ref.seq = next(_seq)
    _live[key] = ref
    if hook:
        state.extras.insert(0, ref.untrack)  # runs last, after the other releases
    if _gdb:
        _manifest_changed()


def untrack(state: Any) -> None:
    """`state` leaves the registry (its release). While a state is alive, the entry
    under its ``id`` can only be its own."""
    _live.pop(id(state), None)
    if _gdb:
        _manifest_changed()


def live_states() -> list[tuple[int, Any]]:
    """(registration number, state) of every registered state still alive, in
    registration order."""
    refs = sorted(list(_live.values()), key=lambda r: r.seq)
    return [(r.seq, s) for r in refs if (s := r()) is not None]


def _manifest_changed() -> None:
    from relink.runtime.debug import _write_manifest

    _write_manifest()


if os.environ.get("RELINK_GDB", "") not in ("", "0"):
    import importlib

    importlib.import_module("relink.runtime.debug")  # its import enables the gdb manifest
