"""Thread-local storage of a link unit, through relink's native TLS runtime.

Runtime part of `relink.object` (used by the relocator for TLS formulas and by
`ObjectState.symbol` for ``__thread`` variables). The unit's ``.tdata``/``.tbss``
sections form one TLS block (laid out by `layout`); the first time something needs it,
the block's relocated initialization image is handed to a glibc carrier
(`relink.runtime.tls_carrier.Carrier`, design.md §6), which gives it a glibc module id,
per-thread blocks through glibc's own ``__tls_get_addr``, and — for initial-exec and
local-exec code, which gcc emits for ``-fPIE``/non-PIC objects — a place in static TLS
(`Carrier.promote`). TLS symbols of other modules are answered by the process-wide
`NativeTls` (relink-loaded shared objects) or by the host's own blocks (glibc).
Native loads only: a foreign or buffer load raises `UnsupportedRelocationError` for TLS.
"""

from __future__ import annotations

import ctypes
from typing import Any

from relink.errors import TlsError

__all__ = ["ObjectTls"]

STT_TLS = 6


class ObjectTls:
    """The TLS block of one link unit and its answers to TLS relocations.

    Args:
        label: the unit's name for messages.
        memsz / align: the block's size and alignment.
        owner: the ObjectState (its `extras` receive release hooks).
    """

    def __init__(self, label: str, memsz: int, align: int, owner: Any) -> None:
        self.label = label
        self.memsz = memsz
        self.align = max(align, 1)
        self.owner = owner
        self.image = b""
        self._carrier: Any = None
        self._keep: list[Any] = []

    @property
    def carrier(self) -> Any:
        """The glibc carrier (created on first use from the relocated image)."""
        if self._carrier is None:
            from relink.runtime.tls_carrier import Carrier

            self._carrier = Carrier(self.label, self.image, self.memsz, self.align, 0)
            self.owner.extras.append(self._carrier.release)
            self.owner.extras.append(self._keep.clear)
        return self._carrier

    # -- this unit's own block --------------------------------------------------------

    def modid(self) -> int:
        return int(self.carrier.modid)

    def tpoff(self, offset: int) -> int:
        """Thread-pointer offset of `offset` in the block (moves it to static TLS)."""
        return int(self.carrier.promote()) + offset

    def address(self, offset: int) -> int:
        """The calling thread's address of `offset` in the block."""
        return int(self.carrier.address(offset))

    def desc(self, offset: int, static: bool = True) -> tuple[int, int]:
        """A TLS descriptor (function, argument) for `offset` in this block."""
        from relink.runtime import libc as c
        from relink.runtime.tls_carrier import tls_get_addr_address
        from relink.runtime.tls_stubs import stubs

        st = stubs(tls_get_addr_address())
        car = self.carrier
        if car.static_offset is None and static:
            try:
                car.promote()
            except TlsError:
                pass  # no static room: a dynamic descriptor works too (glibc does the same)
        if car.static_offset is not None:
            return st.static, (car.static_offset + offset) % 2**64
        index = c.TlsIndex(car.modid, offset)
        self._keep.append(index)
        return st.dynamic, ctypes.addressof(index)

    # -- another module's TLS symbol ----------------------------------------------------

    @staticmethod
    def _foreign(provider: Any, addr: int) -> tuple[Any, Any, int]:
        """(kind, provider, offset): kind 'object' / 'module' / 'host'."""
        from relink.state import ModuleState

        if isinstance(provider, ModuleState):
            return "module", provider, addr - provider.base
        if getattr(provider, "tls", None) is not None and hasattr(provider, "exports"):
            return "object", provider, addr
        return "host", provider, addr

    def ext_gd(self, provider: Any, addr: int) -> tuple[int, int]:
        """(module id, offset) of another module's TLS variable (general dynamic)."""
        from relink.runtime.tls import native_tls

        kind, prov, off = self._foreign(provider, addr)
        if kind == "object":
            return prov.tls.modid(), off
        rt = native_tls()
        return rt.dtpmod_at(prov, addr), rt.dtpoff(prov, off)

    def ext_tpoff(self, provider: Any, addr: int) -> int:
        from relink.runtime.tls import native_tls

        kind, prov, off = self._foreign(provider, addr)
        if kind == "object":
            return int(prov.tls.tpoff(off))
        return int(native_tls().tpoff(prov, off))

    def ext_desc(self, provider: Any, addr: int) -> tuple[int, int]:
        from relink.runtime.tls import native_tls

        kind, prov, off = self._foreign(provider, addr)
        if kind == "object":
            return prov.tls.desc(off)
        # The descriptor's keep-alive hangs on this unit's state (its `extras`).
        return native_tls().tlsdesc(self.owner, prov, off)
