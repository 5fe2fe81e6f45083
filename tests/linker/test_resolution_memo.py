"""Remembered resolutions (linker/resolvers.py `_replay`): a dependency found before in
the configuration's own directories (RUNPATH here) is checked again on the next load,
never trusted blindly. A library that appears in an earlier directory wins at once, as
the full search would decide; one that disappears sends the search on; a file of the
wrong kind stays skipped. Also: the checks leave no fd open."""

from __future__ import annotations

import ctypes
import shutil
from pathlib import Path

import pytest
from linker_helpers import open_fds

import relink
from support.build import build_shared, have_cc

pytestmark = pytest.mark.skipif(not have_cc(), reason="needs gcc")


def _dep(value: int) -> Path:
    return build_shared(f"memodep{value}", f"int dep_value(void) {{ return {value}; }}",
                        soname="libmemodep.so", group="linker")


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path, Path]:
    """top/libmemotop.so with RUNPATH $ORIGIN/a:$ORIGIN/b; b/libmemodep.so returns 1."""
    dep = _dep(1)
    top = build_shared("memotop", "int dep_value(void); int top(void) { return dep_value(); }",
                       deps=[dep], group="linker",
                       ldflags=["-Wl,-rpath,$ORIGIN/a:$ORIGIN/b", "-Wl,--enable-new-dtags"])
    root = tmp_path / "top"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    shutil.copy(top, root / "libmemotop.so")
    shutil.copy(dep, root / "b" / "libmemodep.so")
    return root / "libmemotop.so", root / "a", root / "b"


def _value(top: Path) -> tuple[int, str]:
    with relink.load(top) as m:
        dep = m.dependencies[0]
        return m.function("top", ctypes.c_int)(), str(dep.path)


def test_an_earlier_directory_gaining_the_library_wins(layout: tuple[Path, Path, Path]
                                                       ) -> None:
    top, a, b = layout
    for _ in range(3):  # the second and third loads replay the remembered resolution
        assert _value(top) == (1, str(b / "libmemodep.so"))
    shutil.copy(_dep(2), a / "libmemodep.so")
    assert _value(top) == (2, str(a / "libmemodep.so"))
    assert _value(top) == (2, str(a / "libmemodep.so"))
    (a / "libmemodep.so").unlink()
    assert _value(top) == (1, str(b / "libmemodep.so"))


def test_a_vanished_library_is_searched_for_again(layout: tuple[Path, Path, Path]) -> None:
    top, a, b = layout
    assert _value(top)[0] == 1
    (b / "libmemodep.so").rename(a / "libmemodep.so")
    assert _value(top) == (1, str(a / "libmemodep.so"))
    (a / "libmemodep.so").unlink()
    with pytest.raises(relink.UnresolvedDependencyError):
        relink.load(top)


def test_a_wrong_machine_file_in_an_earlier_directory_stays_skipped(
        layout: tuple[Path, Path, Path]) -> None:
    top, a, b = layout
    (a / "libmemodep.so").write_bytes(b"\x7fELF" + b"\x00" * 60)  # not loadable
    for _ in range(3):
        assert _value(top) == (1, str(b / "libmemodep.so"))


def test_replayed_checks_leave_no_fd(layout: tuple[Path, Path, Path]) -> None:
    top, a, _b = layout
    _value(top)
    shutil.copy(_dep(2), a / "libmemodep.so")  # the replay finds a, falls back to search
    before = set(open_fds())
    for _ in range(5):
        _value(top)
    assert set(open_fds()) - before == set()
