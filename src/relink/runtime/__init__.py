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
_ref = weakref.ref

# The registry: a weak reference to each registered state -> its registration number
# (listing order, and a name no other state ever gets). Keyed by the reference itself:
# its hash is the state's, computed at registration (so the collected state's callback
# still finds it), and a new reference to a live state compares equal to it, so a
# release finds its entry without the state keeping its reference. One plain weak
# reference per loaded module.
_live: dict[weakref.ref[Any], int] = {}


def _collected(ref: weakref.ref[Any]) -> None:
    """Weak-reference callback: a state collected without being released."""
    _live.pop(ref, None)


class _Untrack:
    """Release hook that takes a state out of the registry (`track` with `hook`)."""

    __slots__ = ("ref",)

    def __init__(self, ref: weakref.ref[Any]) -> None:
        self.ref = ref

    def __call__(self) -> None:
        _live.pop(self.ref, None)
        if _gdb:
            _manifest_changed()


def track(state: Any, hook: bool = True) -> None:
    """Register a freshly created module state (called by ModuleState / ObjectState).

    With `hook`, the state leaves the registry through a release hook that runs last
    (first in ``state.extras``); without it, its release calls `untrack` itself (one
    object and one list insertion less per load: ModuleState).
    """
    # No lock: a GC finalizer (relink leases release contexts) must never find this
    # held; dict updates are atomic under the GIL.
    ref = _ref(state, _collected)
    _live[ref] = next(_seq)
    if hook:
        state.extras.insert(0, _Untrack(ref))  # runs last, after the other releases
    if _gdb:
        _manifest_changed()


def untrack(state: Any) -> None:
    """`state` leaves the registry (its release)."""
    _live.pop(_ref(state), None)
    if _gdb:
        _manifest_changed()


def live_states() -> list[tuple[int, Any]]:
    """(registration number, state) of every registered state still alive, in
    registration order."""
    refs = sorted(list(_live.items()), key=lambda item: item[1])
    return [(seq, s) for r, seq in refs if (s := r()) is not None]


def _manifest_changed() -> None:
    from relink.runtime.debug import _write_manifest

    _write_manifest()


if os.environ.get("RELINK_GDB", "") not in ("", "0"):
    import importlib

    importlib.import_module("relink.runtime.debug")  # its import enables the gdb manifest
