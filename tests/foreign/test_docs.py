"""The README example of docs/foreign.md runs as written (on the zig-built aarch64 chain)."""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

import pytest
from foreign_support import HAVE_UNICORN, build_chain

pytestmark = [pytest.mark.cross,
              pytest.mark.skipif(not HAVE_UNICORN, reason="unicorn is not installed")]

DOC = Path(__file__).resolve().parents[2] / "docs" / "foreign.md"


def test_foreign_md_example_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    chain = build_chain("aarch64")
    block = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert block is not None
    code = block.group(1)
    assert 'relink.load("libleaf.so", memory=emu)' in code
    monkeypatch.chdir(chain["leaf"].parent)  # the example names the file relatively
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(DOC), "exec"), {})
    lines = out.getvalue().split()
    assert lines[0] == "22"
    assert int(lines[1], 16) >= 0x10000000
    assert os.path.exists("libleaf.so")


def test_support_table_matches_what_the_tests_verify() -> None:
    from foreign_support import ALL_ISAS, CROSS_GLIBC, EMULATED

    rows = {}
    for line in DOC.read_text().splitlines():
        if line.startswith("| ") and ("(32, " in line or "(64, " in line):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0].split()[0]] = cells
    assert set(rows) == set(ALL_ISAS)
    for arch, cells in rows.items():
        assert cells[1] == "yes" and cells[2] == "yes"          # shared objects, executables
        verified, glibc = cells[7], cells[8]
        assert verified.startswith("unicorn" if arch in EMULATED else "qemu-user")
        assert glibc.startswith("yes") == (arch in CROSS_GLIBC)
