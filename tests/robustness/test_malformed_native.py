"""Native loading of malformed-but-parseable files (issue 9 §3).

Every case of tests/support/elfgen_cases.py (overlapping segments, relocation offsets
outside every writable segment, symbol indices out of range, lying hash tables, string
offsets past the table, missing dynamic entries, RELR bitmaps running past the image,
a COPY larger than its segment …) is loaded into this process, from bytes and from a
path. Each must fail with its specific RelinkError before any memory operation leaves
the module's own span (CheckedMapper records every Region call), and leave no mapping,
fd or memfd behind.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import relink
from relink.api import default_context
from relink.errors import RelinkError
from support.elfgen_cases import Case, base_image, cases

from .conftest import CheckedMapper, RegionTracker, Snapshot

CASES = cases()


def test_base_image_loads_natively() -> None:
    """The unbroken image loads and relocates: the cases below fail for their one defect."""
    img = base_image()
    with relink.load(img.data, name="libcase.so") as mod:
        assert mod.symbol("answer") == mod.base + img.symbols["answer"]
    with relink.load(base_image(copy_size=8).data, name="libcase.so") as mod:
        assert mod.symbol("counter") is not None


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@pytest.mark.parametrize("from_path", [False, True], ids=["bytes", "path"])
def test_malformed_native_load_fails_cleanly(case: Case, from_path: bool, tmp_path: Path,
                                             host_regions: RegionTracker) -> None:
    source: object = case.data
    if from_path:
        path = tmp_path / "libcase.so"
        path.write_bytes(case.data)
        source = path
    mapper = CheckedMapper()
    before = Snapshot.take()
    with pytest.raises(RelinkError) as info:
        relink.load(source, name="libcase.so", mapper=mapper)
    assert isinstance(info.value, case.error), f"{type(info.value).__name__}: {info.value}"
    assert re.search(case.match, str(info.value)), str(info.value)
    assert "libcase.so" in str(info.value)  # the message names the file
    assert mapper.violations == []
    assert mapper.live == set(), "a mapping of the failed load is still reserved"
    assert Snapshot.take().new_since(before) == []


@pytest.mark.parametrize("case", CASES[:8] + CASES[-4:], ids=[c.name for c in CASES[:8] +
                                                              CASES[-4:]])
def test_malformed_default_mapper_leaves_nothing(case: Case,
                                                 host_regions: RegionTracker) -> None:
    """The same through the default path (HostMapper, default context)."""
    ctx = default_context()
    keys = set(ctx.keys())
    with pytest.raises(case.error):
        relink.load(case.data, name="libcase.so")
    assert host_regions.unreleased() == []
    assert set(ctx.keys()) == keys


def test_straddling_word_is_rejected_even_with_field_relocations() -> None:
    """Regression: the offset check used a 1-byte width on ISAs with FIELD relocations, so
    an 8-byte write could straddle the end of the writable segment (and of the span)."""
    case = next(c for c in CASES if c.name.startswith("relocation straddles"))
    with pytest.raises(relink.RelocationError, match="outside every writable"):
        relink.load(case.data, name="libcase.so")
