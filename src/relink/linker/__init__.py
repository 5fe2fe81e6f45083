"""The linker layer: dependency resolution, contexts, scopes, lifetimes.

Pipeline position: … -> relocation -> image -> **linker**. `Linker` loads a root and its
DT_NEEDED graph into a `LinkContext` in stages (prepare, relocate, publish, initialize)
with complete rollback; `relink.linker.resolvers` says who provides each dependency
(custom resolvers, the host policy, `SearchPathResolver` with ld.so's search order and
/etc/ld.so.cache); `relink.linker.context` owns keys, identities, scopes, leases and
unloading. See docs/linker.md.
"""

from __future__ import annotations

from typing import Any

# Lazy: relink.module imports relink.linker.callbacks, and the modules below import
# relink.module, so nothing is imported eagerly here.
_LAZY = {
    "Existing": "relink.linker.resolvers",
    "LinkContext": "relink.linker.context",
    "LinkContextError": "relink.linker.context",
    "Linker": "relink.linker.linker",
    "ModuleSearchInfo": "relink.linker.search",
    "PreparedLoad": "relink.linker.linker",
    "ResolveRequest": "relink.linker.resolvers",
    "SearchPathResolver": "relink.linker.search",
    "Unresolved": "relink.linker.resolvers",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'relink.linker' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(target), name)
    globals()[name] = value
    return value
