"""Fault injection through the memory backend (issue 9 §7).

Two layers. (1) The OS calls themselves fail: relink's libc `mmap` / `mprotect`
prototypes are replaced by ones that fail on the N-th call with a chosen errno, so the
real HostMapper / HostRegion error paths run. (2) A Mapper/Region test double fails
in `reserve`, `map_file`, `map_anon`, `protect` or `write`. Either way the load must
end in a MappingError that carries the errno, and nothing may stay mapped, open or
registered. Opening the input (and a pread of it) fails the same way.
"""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path
from typing import Any

import pytest

import relink
from relink.errors import MappingError
from relink.memory.buffer import BufferMapper
from relink.memory.host import HostMapper, HostRegion
from relink.runtime import libc

from .conftest import BUFFER_HOST, RegionTracker, Snapshot


class FailingCall:
    """Wraps a libc prototype: the `fail_at`-th call (1-based) fails with `err`."""

    def __init__(self, real: Any, fail_at: int, err: int, fail_value: Any) -> None:
        self.real, self.fail_at, self.err, self.fail_value = real, fail_at, err, fail_value
        self.calls = 0

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        if self.calls == self.fail_at:
            ctypes.set_errno(self.err)
            return self.fail_value
        return self.real(*args)


def _count_calls(monkeypatch: pytest.MonkeyPatch, name: str, source: Any) -> int:
    counter = FailingCall(getattr(libc, name), 0, 0, None)
    monkeypatch.setattr(libc, name, counter)
    relink.load(source, context=relink.LinkContext("count")).close()
    monkeypatch.setattr(libc, name, counter.real)
    return counter.calls


@pytest.mark.parametrize("name,err,fail_value", [
    ("mmap", errno.ENOMEM, libc.MAP_FAILED),
    ("mprotect", errno.EACCES, -1),
])
@pytest.mark.parametrize("from_path", [True, False], ids=["path", "bytes"])
def test_every_failing_os_call_is_a_clean_mapping_error(
        name: str, err: int, fail_value: Any, from_path: bool, seedlib: Path,
        monkeypatch: pytest.MonkeyPatch, host_regions: RegionTracker) -> None:
    source: Any = seedlib if from_path else seedlib.read_bytes()
    total = _count_calls(monkeypatch, name, source)
    assert total >= 1, f"a load makes no {name} call"
    for n in range(1, total + 1):
        before = Snapshot.take()
        ctx = relink.LinkContext(f"fault-{name}-{n}")
        failing = FailingCall(getattr(libc, name), n, err, fail_value)
        monkeypatch.setattr(libc, name, failing)
        try:
            with pytest.raises(MappingError) as info:
                relink.load(source, context=ctx)
        finally:
            monkeypatch.setattr(libc, name, failing.real)
        assert info.value.errno == err, f"call {n}: {info.value}"
        assert info.value.op == name
        assert os.strerror(err) in str(info.value)
        assert host_regions.unreleased() == [], f"call {n} left a mapping"
        assert len(ctx) == 0, f"call {n} left a context entry"
        assert Snapshot.take().new_since(before) == [], f"call {n}"


class FaultyRegion:
    """A Region double over a real HostRegion; one method fails on its N-th call."""

    def __init__(self, inner: HostRegion, mapper: FaultyMapper) -> None:
        self.inner, self.mapper = inner, mapper
        self.start, self.size = inner.start, inner.size

    def _maybe_fail(self, op: str) -> None:
        if op == self.mapper.op:
            self.mapper.calls += 1
            if self.mapper.calls == self.mapper.fail_at:
                raise MappingError(f"{op} failed (injected)", op=op, errno=self.mapper.err,
                                   address=self.start)

    def map_file(self, *args: Any) -> None:
        self._maybe_fail("map_file")
        self.inner.map_file(*args)

    def map_anon(self, *args: Any) -> None:
        self._maybe_fail("map_anon")
        self.inner.map_anon(*args)

    def protect(self, *args: Any) -> None:
        self._maybe_fail("protect")
        self.inner.protect(*args)

    def write(self, *args: Any) -> None:
        self._maybe_fail("write")
        self.inner.write(*args)

    def read(self, addr: int, size: int) -> bytes:
        return self.inner.read(addr, size)

    def view(self) -> memoryview:
        return self.inner.view()

    def release(self) -> None:
        self.inner.release()
        self.mapper.live.discard(self.start)


class FaultyMapper:
    """A native Mapper double: `op` ("reserve", "map_file", …) fails on call `fail_at`."""

    native = True

    def __init__(self, op: str, fail_at: int, err: int = errno.EIO) -> None:
        self._host = HostMapper()
        self.page_size = self._host.page_size
        self.op, self.fail_at, self.err = op, fail_at, err
        self.calls = 0
        self.live: set[int] = set()

    def reserve(self, size: int, **kw: Any) -> FaultyRegion:
        if self.op == "reserve":
            self.calls += 1
            if self.calls == self.fail_at:
                raise MappingError("reserve failed (injected)", op="mmap", errno=self.err)
        region = self._host.reserve(size, **kw)
        self.live.add(region.start)
        return FaultyRegion(region, self)

    def reserve_file(self, size: int, fd: int, offset: int, prot: int) -> FaultyRegion:
        if self.op == "reserve_file":
            self.calls += 1
            if self.calls == self.fail_at:
                raise MappingError("reserve failed (injected)", op="mmap", errno=self.err)
        region = self._host.reserve_file(size, fd, offset, prot)
        self.live.add(region.start)
        return FaultyRegion(region, self)


# Which Region calls a load makes depends on the input: file-backed segments from a
# path (map_file), copies from bytes (map_anon, then protect).
@pytest.mark.parametrize("op,from_path", [("reserve", False), ("reserve_file", True),
                                          ("map_file", True),
                                          ("protect", True), ("map_anon", False),
                                          ("protect", False)])
def test_backend_failures_roll_the_whole_load_back(op: str, from_path: bool, seedlib: Path,
                                                   tmp_path: Path) -> None:
    source: Any = seedlib if from_path else seedlib.read_bytes()
    probe = FaultyMapper(op, 0)
    relink.load(source, mapper=probe).close()
    assert probe.calls > 0, f"a load of this fixture makes no {op} call"
    for n in range(1, probe.calls + 1):
        mapper = FaultyMapper(op, n, errno.EIO)
        before = Snapshot.take()
        with pytest.raises(MappingError) as info:
            relink.load(source, mapper=mapper)
        assert info.value.errno == errno.EIO and "injected" in str(info.value)
        assert mapper.live == set(), f"{op} #{n}: a region was not released"
        assert Snapshot.take().new_since(before) == []


def test_open_failure_is_a_mapping_error_with_errno(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(MappingError) as info:
        relink.load(tmp_path / "absent.so")
    assert info.value.errno == errno.ENOENT and info.value.op == "open"
    real_open = os.open

    def emfile(path: Any, *args: Any, **kw: Any) -> int:
        if str(path).endswith(".so"):
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE), str(path))
        return real_open(path, *args, **kw)

    monkeypatch.setattr(os, "open", emfile)
    lib = tmp_path / "any.so"
    lib.write_bytes(b"\x7fELF")
    before = Snapshot.take()
    with pytest.raises(MappingError) as info:
        relink.load(lib)
    assert info.value.errno == errno.EMFILE
    assert Snapshot.take().new_since(before) == []


def test_read_failure_into_a_buffer_is_a_mapping_error(seedlib: Path,
                                                       monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    """BufferRegion.map_file copies with pread; an I/O error must not escape as OSError."""
    real_pread = os.pread
    calls = {"n": 0}

    def failing_pread(fd: int, size: int, offset: int) -> bytes:
        calls["n"] += 1
        if calls["n"] > 1:  # let the header read through, fail the segment copy
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real_pread(fd, size, offset)

    fd = os.open(seedlib, os.O_RDONLY)
    try:
        with open(seedlib, "rb") as f:
            head = f.read()
        monkeypatch.setattr(os, "pread", failing_pread)
        with pytest.raises(MappingError) as info:
            relink.load(fd, name="librbseed.so", mapper=BufferMapper(), host=BUFFER_HOST,
                        init=False)
        assert info.value.errno == errno.EIO
        assert head  # the file itself is fine
    finally:
        os.close(fd)
