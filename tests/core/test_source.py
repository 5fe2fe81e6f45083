"""Inputs (relink/elf/source.py): a file's ElfSource is filled without __init__ (every
load opens one), so it must carry exactly what the constructor would give it, and a
failure must leave no fd behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from relink.elf.source import ElfSource, SourceIdentity, open_source
from relink.errors import ElfParseError, MappingError


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_file_source_has_every_slot(tmp_path: Path) -> None:
    lib = tmp_path / "libx.so"
    lib.write_bytes(b"\x7fELF" + bytes(60))
    src = open_source(str(lib))
    try:
        st = os.stat(lib)
        for name in ElfSource.__slots__:
            assert hasattr(src, name), name
        assert (src.name, src.path, src.size, src.stamp, src._data, src._head) == \
            ("libx.so", str(lib), 64, (64, st.st_mtime_ns, st.st_ctime_ns), None, None)
        assert src.identity == SourceIdentity("file", st.st_dev, st.st_ino)
        assert type(src.identity) is SourceIdentity and src._owns_fd
        assert src.read(0, 4) == b"\x7fELF"
        fd = src.fd
        assert fd is not None
        src.detach_fd()  # closes the fd it opened; reads reopen the path
        assert src.fd is None and src.read(0, 4) == b"\x7fELF"
        with pytest.raises(OSError):
            os.fstat(fd)
    finally:
        src.close()


def test_borrowed_fd_is_not_closed(tmp_path: Path) -> None:
    lib = tmp_path / "liby.so"
    lib.write_bytes(b"\x7fELF")
    fd = os.open(lib, os.O_RDONLY)
    try:
        src = open_source(fd)
        assert src.name == f"fd:{fd}" and src.path is None and not src._owns_fd
        src.close()
        os.fstat(fd)  # still open
    finally:
        os.close(fd)


def test_failures_leave_no_fd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = _fd_count()
    with pytest.raises(ElfParseError):
        open_source(str(tmp_path))  # a directory: not a regular file
    assert _fd_count() == before

    lib = tmp_path / "libz.so"
    lib.write_bytes(b"\x7fELF")
    real_fstat = os.fstat

    def failing_fstat(fd: int) -> os.stat_result:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fstat", failing_fstat)
    with pytest.raises(MappingError) as info:
        open_source(str(lib))
    monkeypatch.setattr(os, "fstat", real_fstat)
    assert info.value.errno == 5 and info.value.op == "fstat"
    assert _fd_count() == before
