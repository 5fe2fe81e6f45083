"""Repair unwind tables of a moved module: ``.eh_frame`` pointers and ``.eh_frame_hdr``.

Plan layer, part of the section-region repair (plan/repair.py). GNU ld writes FDEs for
its own PLT stubs and the binary-search table of ``.eh_frame_hdr`` without retained
relocations, so the tables are parsed instead (DWARF CFI as extended by the LSB: CIE
augmentations ``z``, ``P``, ``L``, ``R``, ``S``, ``B``, ``G``; pointer encodings absptr
and pcrel over udata2/4/8 and sdata2/4/8, optionally indirect). Every pointer into the
module is re-targeted through the section address map; the header's table is rebuilt and
re-sorted by start address, since functions may now be in another order. An encoding
relink cannot rewrite is a `PlanError`, never a silently stale table.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from relink.errors import PlanError

if TYPE_CHECKING:
    from relink.plan.repair import ModuleRepair

__all__ = ["repair_eh_frame"]

_FMT = {0x00: "<Q", 0x02: "<H", 0x03: "<I", 0x04: "<Q", 0x0A: "<h", 0x0B: "<i", 0x0C: "<q"}
DW_EH_PE_omit, DW_EH_PE_pcrel, DW_EH_PE_datarel, DW_EH_PE_indirect = 0xFF, 0x10, 0x30, 0x80


def _uleb(buf: bytearray, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(buf):
            raise IndexError(i)
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


class _Fixer:
    def __init__(self, rep: ModuleRepair, buf: bytearray, old: int, new: int,
                 name: str) -> None:
        self.rep, self.buf, self.old, self.new, self.name = rep, buf, old, new, name

    def pointer(self, i: int, enc: int) -> int:
        """Re-target the encoded pointer at buf[i]; returns the index after it."""
        if enc == DW_EH_PE_omit:
            return i
        fmt = _FMT.get(enc & 0x0F)
        app = enc & 0x70
        if fmt is None or app not in (0, DW_EH_PE_pcrel):
            raise PlanError(f"pointer encoding {enc:#x} at offset {i:#x} cannot be "
                            "rewritten", file=self.rep.label, section=self.name)
        size = struct.calcsize(fmt)
        value = struct.unpack_from(fmt, self.buf, i)[0]
        if value:
            where = f"{self.name} pointer at offset {i:#x}"
            if app == DW_EH_PE_pcrel:
                new = self.rep.remap(self.old + i + value, where) - (self.new + i)
            else:
                new = self.rep.remap(value, where)
            try:
                struct.pack_into(fmt, self.buf, i, new)
            except struct.error:
                raise PlanError(f"{where}: new value {new:#x} does not fit its encoding",
                                file=self.rep.label, section=self.name) from None
        return i + size


def repair_eh_frame(rep: ModuleRepair) -> None:
    """Rewrite ``.eh_frame`` and rebuild ``.eh_frame_hdr`` of `rep`'s module in place."""
    mod = rep.mod
    frame = mod.find(".eh_frame")
    if frame is not None and frame.allocated and frame.size:
        try:
            _frames(rep, frame.index)
        except (IndexError, struct.error):
            raise PlanError("malformed unwind table", file=rep.label,
                            section=".eh_frame") from None
    hdr = mod.find(".eh_frame_hdr")
    if hdr is not None and hdr.allocated and hdr.size:
        try:
            _header(rep, hdr.index)
        except (IndexError, struct.error):
            raise PlanError("malformed unwind table header", file=rep.label,
                            section=".eh_frame_hdr") from None


def _frames(rep: ModuleRepair, index: int) -> None:
    sec = rep.mod.sections[index]
    buf = rep.buf[index]
    fx = _Fixer(rep, buf, sec.addr, rep.new[index], sec.name)
    cies: dict[int, tuple[str, int, int]] = {}  # offset -> (augmentation, fde enc, lsda enc)
    i = 0
    while i + 4 <= len(buf):
        start = i
        length = struct.unpack_from("<I", buf, i)[0]
        i += 4
        if length == 0:
            break
        if length == 0xFFFFFFFF:
            length = struct.unpack_from("<Q", buf, i)[0]
            i += 8
            id_size = 8
        else:
            id_size = 4
        end = i + length
        if end > len(buf):
            raise PlanError(f"record at offset {start:#x} runs past the section",
                            file=rep.label, section=sec.name)
        id_at = i
        cie_id = struct.unpack_from("<I" if id_size == 4 else "<Q", buf, i)[0]
        i += id_size
        if cie_id == 0:
            cies[start] = _cie(fx, i, end)
        else:
            cie = cies.get(id_at - cie_id)
            if cie is None:
                raise PlanError(f"FDE at offset {start:#x} names no CIE", file=rep.label,
                                section=sec.name)
            aug, fde_enc, lsda_enc = cie
            i = fx.pointer(i, fde_enc)
            i += struct.calcsize(_FMT.get(fde_enc & 0x0F, "<Q"))  # pc_range: no pcrel
            if aug.startswith("z"):
                _alen, i = _uleb(buf, i)
                if "L" in aug:
                    fx.pointer(i, lsda_enc)
        i = end


def _cie(fx: _Fixer, i: int, end: int) -> tuple[str, int, int]:
    buf = fx.buf
    version = buf[i]
    i += 1
    z = buf.index(0, i, end)
    aug = bytes(buf[i:z]).decode("ascii", "replace")
    i = z + 1
    if "eh" in aug:
        i += 8
    _, i = _uleb(buf, i)           # code alignment
    _, i = _uleb(buf, i)           # data alignment (sleb: same length)
    if version == 1:
        i += 1
    else:
        _, i = _uleb(buf, i)
    fde_enc, lsda_enc = 0, DW_EH_PE_omit
    if aug.startswith("z"):
        _, i = _uleb(buf, i)
        for ch in aug[1:]:
            if ch == "R":
                fde_enc = buf[i]
                i += 1
            elif ch == "L":
                lsda_enc = buf[i]
                i += 1
            elif ch == "P":
                enc = buf[i]
                i = fx.pointer(i + 1, enc)
            elif ch in "SBG":
                continue
            else:
                raise PlanError(f"unknown CIE augmentation {aug!r}", file=fx.rep.label,
                                section=fx.name)
    elif aug not in ("", "eh"):
        raise PlanError(f"unknown CIE augmentation {aug!r}", file=fx.rep.label,
                        section=fx.name)
    return aug, fde_enc, lsda_enc


def _header(rep: ModuleRepair, index: int) -> None:
    sec = rep.mod.sections[index]
    buf = rep.buf[index]
    old, new = sec.addr, rep.new[index]
    version, ptr_enc, count_enc, table_enc = buf[0], buf[1], buf[2], buf[3]
    if version != 1:
        raise PlanError(f"unknown .eh_frame_hdr version {version}", file=rep.label,
                        section=sec.name)
    fx = _Fixer(rep, buf, old, new, sec.name)
    i = fx.pointer(4, ptr_enc)
    if count_enc == DW_EH_PE_omit or table_enc == DW_EH_PE_omit:
        return
    if count_enc != 0x03 or table_enc != 0x3B:
        raise PlanError(f"search table encodings {count_enc:#x}/{table_enc:#x} cannot be "
                        "rebuilt (expected udata4 / datarel sdata4)", file=rep.label,
                        section=sec.name)
    count = struct.unpack_from("<I", buf, i)[0]
    i += 4
    if i + 8 * count > len(buf):
        raise PlanError("search table runs past the section", file=rep.label,
                        section=sec.name)
    rows = []
    for k in range(count):
        loc, fde = struct.unpack_from("<ii", buf, i + 8 * k)
        where = f"{sec.name} entry {k}"
        rows.append((rep.remap(old + loc, where) - new, rep.remap(old + fde, where) - new))
    rows.sort()
    for k, (loc, fde) in enumerate(rows):
        struct.pack_into("<ii", buf, i + 8 * k, loc, fde)
