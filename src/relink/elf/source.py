"""Inputs: where the bytes of an ELF file come from, and the file's identity.

First stage of the pipeline (input -> elf -> arch -> memory -> loader -> relocation).
An `ElfSource` wraps a path, an open file or fd, or bytes in memory. Paths and fds keep
an fd so the loader can map segments straight from the file; memory inputs are copied
into anonymous memory and nothing is ever written to disk. Every source has an
identity: ``(st_dev, st_ino)`` for files (so a hard link or another path to the same file
is the same module) and a fresh process-unique token for memory inputs.
"""

from __future__ import annotations

import itertools
import os
import stat
from collections import namedtuple
from typing import IO, Union

from relink.errors import ElfParseError, MappingError

__all__ = ["ElfSource", "SourceIdentity", "SourceLike", "open_source"]

SourceLike = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, int, IO[bytes],
                   "ElfSource"]

_fresh = itertools.count(1)
# SourceIdentity(kind, a, b) without the namedtuple's Python-level __new__ (every load).
_identity = tuple.__new__
_HEAD = 4096
_S_IFMT, _S_IFREG = stat.S_IFMT(0o177777), stat.S_IFREG
_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK  # see _open_path


class SourceIdentity(namedtuple("SourceIdentity", "kind a b")):
    """Identity of an input: ``("file", dev, ino)`` or ``("memory", n, 0)``.

    `stamp` (size, mtime_ns, ctime_ns) is not part of equality; caches use it to notice that a
    file was rewritten in place. A tuple: it is built, hashed and compared on every load.
    """

    __slots__ = ()
    kind: str
    a: int
    b: int

    @staticmethod
    def fresh() -> SourceIdentity:
        return SourceIdentity("memory", next(_fresh), 0)


class ElfSource:
    """One ELF input: a name, an identity and a way to read it.

    Attributes:
        name: last path component (or the name given for memory inputs).
        path: the file path, or None for memory inputs.
        fd: an open fd the loader may mmap from, or None for memory inputs.
        size: size of the input in bytes.
        identity: the `SourceIdentity`.
        stamp: (size, mtime_ns, ctime_ns) for files, None for memory inputs. ctime
            changes on every write and cannot be set back, so a rewrite that restores
            the size and mtime is still noticed.
    """

    __slots__ = ("name", "path", "fd", "size", "identity", "stamp", "_data", "_owns_fd",
                 "_head")

    def __init__(self, *, name: str, path: str | None, fd: int | None, size: int,
                 identity: SourceIdentity, data: memoryview | None,
                 stamp: tuple[int, int, int] | None = None, owns_fd: bool = False) -> None:
        self.name = name
        self.path = path
        self.fd = fd
        self.size = size
        self.identity = identity
        self.stamp = stamp
        self._data = data
        self._owns_fd = owns_fd
        self._head: bytes | None = None

    @property
    def label(self) -> str:
        """The name to show in messages: the path if there is one, else the name."""
        return self.path or self.name

    @property
    def data(self) -> memoryview:
        """The whole input as a read-only memoryview (read from the fd on first use)."""
        if self._data is None:
            fd, temporary = self._reading_fd()
            try:
                chunks = []
                offset = 0
                while offset < self.size:
                    try:
                        chunk = os.pread(fd, self.size - offset, offset)
                    except OSError as exc:
                        raise MappingError(f"cannot read: {exc.strerror}", file=self.label,
                                           op="pread", errno=exc.errno) from exc
                    if not chunk:
                        break
                    chunks.append(chunk)
                    offset += len(chunk)
            finally:
                if temporary:
                    os.close(fd)
            self._data = memoryview(b"".join(chunks)).toreadonly()
        return self._data

    def _reading_fd(self) -> tuple[int, bool]:
        """An fd to read from: ours, or (after `detach_fd`) the path reopened, checked to
        be the same file. Returns (fd, whether the caller must close it)."""
        if self.fd is not None:
            return self.fd, False
        if self.path is None:
            raise MappingError("the input's fd is closed and it has no path", op="read")
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise MappingError(f"cannot reopen: {exc.strerror}", file=self.path, op="open",
                               errno=exc.errno) from exc
        st = os.fstat(fd)
        if SourceIdentity("file", st.st_dev, st.st_ino) != self.identity or \
                (st.st_size, st.st_mtime_ns, st.st_ctime_ns) != self.stamp:
            os.close(fd)
            raise MappingError("the file changed since it was loaded", file=self.path,
                               op="open")
        return fd, True


    def read(self, offset: int, size: int) -> bytes:
        """Read exactly `size` bytes at `offset` or raise `ElfParseError`."""
        if offset < 0 or size < 0 or offset + size > self.size:
            raise ElfParseError(f"read of {size} bytes at offset {offset:#x} is past the end "
                                f"of the file ({self.size} bytes)", file=self.label,
                                offset=offset)
        if self._data is not None:
            return bytes(self._data[offset:offset + size])
        if offset + size <= _HEAD:
            # Headers and program headers almost always sit in the first page:
            # one pread serves them all.
            head = self._head
            if head is None:
                fd, temporary = self._reading_fd()
                try:
                    head = self._head = os.pread(fd, min(_HEAD, self.size), 0)
                except OSError as exc:
                    raise MappingError(f"cannot read: {exc.strerror}", file=self.label,
                                       op="pread", errno=exc.errno) from exc
                finally:
                    if temporary:
                        os.close(fd)
            if offset + size <= len(head):
                return head[offset:offset + size]
        fd, temporary = self._reading_fd()
        try:
            out = os.pread(fd, size, offset)
        except OSError as exc:
            raise MappingError(f"cannot read: {exc.strerror}", file=self.label, op="pread",
                               errno=exc.errno) from exc
        finally:
            if temporary:
                os.close(fd)
        if len(out) != size:
            raise ElfParseError("short read", file=self.label, offset=offset)
        return out

    def close(self) -> None:
        """Close the fd if this source opened it (idempotent)."""
        if self._owns_fd and self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)

    # Close the fd once the image is mapped (ld.so keeps none either); later reads
    # reopen the path and check it is still the same, unchanged file. `close` itself:
    # no wrapper frame on every load.
    detach_fd = close

    def __repr__(self) -> str:
        return f"<ElfSource {self.label!r} {self.size} bytes>"


_new_source = object.__new__


def _from_fd(fd: int, path: str | None, owns: bool) -> ElfSource:
    """The `ElfSource` of an open fd (closed here on failure if `owns`). Every file
    load comes here: the slots are filled directly, as `ElfSource.__init__` would."""
    try:
        st = os.fstat(fd)
    except OSError as exc:
        if owns:
            os.close(fd)
        raise MappingError(f"cannot stat: {exc.strerror}", file=path, op="fstat",
                           errno=exc.errno) from exc
    if st.st_mode & _S_IFMT != _S_IFREG:
        if owns:
            os.close(fd)
        raise ElfParseError("not a regular file", file=path)
    src: ElfSource = _new_source(ElfSource)
    src.name = path.rpartition("/")[2] if path else f"fd:{fd}"
    src.path = path
    src.fd = fd
    src.size = size = st.st_size
    src.identity = _identity(SourceIdentity, ("file", st.st_dev, st.st_ino))
    src.stamp = (size, st.st_mtime_ns, st.st_ctime_ns)
    src._data = None
    src._owns_fd = owns
    src._head = None
    return src


def _open_path(path: str) -> ElfSource:
    """Open a file input (kept open: the loader maps its segments from the fd)."""
    try:
        # O_NONBLOCK: opening a FIFO (say a hostile DT_NEEDED path) must not block
        # forever; _from_fd then rejects it as not a regular file (issue 9).
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        raise MappingError(f"cannot open: {exc.strerror}", file=path, op="open",
                           errno=exc.errno) from exc
    except ValueError as exc:  # e.g. an embedded NUL byte
        raise MappingError(f"cannot open: {exc}", file=repr(path), op="open",
                           errno=22) from exc
    # O_NONBLOCK has no effect on the regular files _from_fd accepts: no need to
    # clear it (one system call less per file).
    return _from_fd(fd, path, True)


def open_source(source: SourceLike, *, name: str | None = None) -> ElfSource:
    """Turn anything relink accepts as input into an `ElfSource`.

    Args:
        source: a path (str / PathLike), bytes / bytearray / memoryview, an fd (int),
            an open binary file, or an `ElfSource` (returned unchanged).
        name: the name to give a memory input (default ``"<memory>"``).

    Raises:
        MappingError: the file cannot be opened or read (carries errno).
        ElfParseError: the input is not a regular file.
    """
    if type(source) is str:  # the common case first
        return _open_path(source)
    if isinstance(source, ElfSource):
        return source
    if isinstance(source, (bytes, bytearray, memoryview)):
        view = memoryview(source).cast("B") if isinstance(source, memoryview) else \
            memoryview(source)
        if isinstance(source, bytearray):
            # Snapshot: the caller may mutate its bytearray after the call.
            view = memoryview(bytes(source))
        return ElfSource(name=name or "<memory>", path=None, fd=None, size=len(view),
                         identity=SourceIdentity.fresh(), data=view.toreadonly())
    if isinstance(source, int):
        return _from_fd(source, name, owns=False)
    if isinstance(source, (str, os.PathLike)):
        return _open_path(os.fspath(source))
    fileno = getattr(source, "fileno", None)
    if fileno is not None:
        try:
            got = fileno()
        except (OSError, ValueError):
            got = None
        if isinstance(got, int):
            fname = getattr(source, "name", None)
            return _from_fd(got, fname if isinstance(fname, str) else name, owns=False)
    read = getattr(source, "read", None)
    if read is not None:
        data = read()
        if isinstance(data, (bytes, bytearray)):
            return open_source(bytes(data), name=name)
    raise TypeError(f"cannot load from {type(source).__name__}: pass a path, bytes, "
                    "an fd or a binary file")
