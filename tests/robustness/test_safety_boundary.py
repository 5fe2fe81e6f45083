"""The safety boundary (issue 9 §2): inspecting or virtually loading a file never runs
its code and never maps it executable.

`relink info`, `relink deps`, `relink plan` / `relink.scan`, `ElfFile` and loading into a
`BufferMapper` (the foreign / virtual path, shared objects and relocatable objects) are
run on a library whose constructor, destructor and IFUNC resolver each leave a marker
file. Afterwards: no marker, no mmap/mprotect with PROT_EXEC was asked of the host, the
native executor was never called, and /proc/self/maps has no new executable mapping.
The control test loads the same file natively and sees all three signals fire, so
the checks can fail.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import relink
from relink.errors import ArchMismatchError, InitializerError, RelinkError
from relink.memory.buffer import BufferMapper
from relink.runtime import executor as executor_mod
from relink.runtime import libc

from .conftest import FIXTURES


@pytest.fixture(scope="module")
def marker_lib() -> Path:
    from support.build import build_shared

    return build_shared("rb_marker", (FIXTURES / "marker.c").read_text(), group="robustness")


@pytest.fixture(scope="module")
def marker_lib_plain() -> Path:
    from support.build import build_shared

    return build_shared("rb_marker_plain", (FIXTURES / "marker.c").read_text(),
                        cflags=["-DNO_IFUNC"], group="robustness")


@pytest.fixture(scope="module")
def marker_obj() -> Path:
    from support.build import build_object

    return build_object("rb_marker_obj", (FIXTURES / "marker.c").read_text(),
                        cflags=["-fPIC", "-O1"], group="robustness")


class ExecWatch:
    """Records PROT_EXEC requests and native executor calls while installed."""

    def __init__(self) -> None:
        self.exec_requests: list[str] = []
        self.executor_calls: list[str] = []

    def exec_maps(self) -> set[str]:
        with open("/proc/self/maps") as f:
            return {line.split()[0] for line in f if line.split()[1][2] == "x"}


@pytest.fixture
def watch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[ExecWatch]:
    w = ExecWatch()
    real_mmap, real_mprotect = libc.mmap, libc.mprotect

    def mmap(addr: Any, size: int, prot: int, *rest: Any) -> Any:
        if prot & libc.PROT_EXEC:
            w.exec_requests.append(f"mmap {prot:#x}")
        return real_mmap(addr, size, prot, *rest)

    def mprotect(addr: Any, size: int, prot: int) -> Any:
        if prot & libc.PROT_EXEC:
            w.exec_requests.append(f"mprotect {prot:#x}")
        return real_mprotect(addr, size, prot)

    monkeypatch.setattr(libc, "mmap", mmap)
    monkeypatch.setattr(libc, "mprotect", mprotect)
    for name in ("call_ifunc", "call_init", "call_fini"):
        original = getattr(executor_mod.NativeExecutor, name)

        def spy(self: Any, *args: Any, _n: str = name, _o: Callable[..., Any] = original
                ) -> Any:
            w.executor_calls.append(_n)
            return _o(self, *args)

        monkeypatch.setattr(executor_mod.NativeExecutor, name, spy)
    monkeypatch.setenv("RELINK_SAFETY_MARKER", str(tmp_path / "ran"))
    yield w


def _marks(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in tmp_path.glob("ran.*"))


def _quiet(fn: Callable[[], Any]) -> Any:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return fn()


def _walk_elffile(path: Path) -> None:
    with relink.ElfFile(path) as elf:
        for sh in elf.sections:
            elf.section_data(sh)
        assert elf.symbols is not None and "marker_call" in elf.symbols.exports
        elf.relocation_tables()
        elf.notes()


_HOST = relink.HostPolicy(("libc.so.6", "ld-linux*.so*"), serve_loaded=False)


def _buffer_load(source: Any) -> None:
    # The IFUNC's resolver would have to run to relocate the module: refused, not run.
    with pytest.raises(relink.UnsupportedError, match="IFUNC"):
        relink.load(source, name="librb_marker.so", mapper=BufferMapper(), host=_HOST,
                    init=False)


def _buffer_load_plain(path: Path) -> None:
    plain = path.with_name("librb_marker_plain.so")
    for source in (plain, plain.read_bytes()):
        mod = relink.load(source, name="librb_marker_plain.so", mapper=BufferMapper(),
                          host=_HOST, init=False)
        try:
            assert mod.symbol("marker_value") is not None
            assert mod.symbol("picked") is not None
        finally:
            mod.close()


def _buffer_load_init(path: Path) -> None:
    plain = path.with_name("librb_marker_plain.so")
    with pytest.raises(InitializerError):  # initializers exist but nothing may run them
        relink.load(plain, mapper=BufferMapper(), host=_HOST)


OPERATIONS: dict[str, Callable[[Path], Any]] = {
    "ElfFile": _walk_elffile,
    "info": lambda p: _quiet(lambda: relink.cli.main(["info", str(p)])),
    "info --json": lambda p: _quiet(lambda: relink.cli.main(["info", "--json", str(p)])),
    "deps": lambda p: _quiet(lambda: relink.cli.main(["deps", str(p)])),
    "plan": lambda p: _quiet(lambda: relink.cli.main(["plan", str(p)])),
    "scan": lambda p: relink.scan(p).close(),
    "buffer load (path)": _buffer_load,
    "buffer load (bytes)": lambda p: _buffer_load(p.read_bytes()),
    "buffer load, relocated": _buffer_load_plain,
    "buffer load with init": _buffer_load_init,
}


@pytest.mark.parametrize("op", list(OPERATIONS))
def test_non_executing_operations(op: str, marker_lib: Path, marker_lib_plain: Path,
                                  watch: ExecWatch, tmp_path: Path) -> None:
    import relink.cli  # noqa: F401 - the lambdas reach it as an attribute

    exec_before = watch.exec_maps()
    result = OPERATIONS[op](marker_lib)
    if op.startswith(("info", "deps", "plan")):
        assert result == 0, f"relink {op} failed"
    assert _marks(tmp_path) == [], "code from the file ran"
    assert watch.exec_requests == [], "executable host memory was requested"
    assert watch.executor_calls == []
    assert watch.exec_maps() - exec_before == set(), "a new executable mapping appeared"


def test_object_into_buffer_runs_nothing(marker_obj: Path, watch: ExecWatch,
                                         tmp_path: Path) -> None:
    exec_before = watch.exec_maps()
    for init in (False, None, True):
        try:
            mod = relink.load_object(marker_obj, mapper=BufferMapper(), init=init)
        except RelinkError:
            continue  # asked to initialize without an executor: refused, not run
        mod.close()
    assert _marks(tmp_path) == []
    assert watch.exec_requests == [] and watch.executor_calls == []
    assert watch.exec_maps() - exec_before == set()


def test_foreign_image_is_refused_natively_and_never_run(watch: ExecWatch,
                                                         tmp_path: Path) -> None:
    from support.elfgen import DylibWriter

    w = DylibWriter(soname="libarm.so", machine=183)  # aarch64
    w.add_function("fn", b"\x00\x00\x80\xd2\xc0\x03\x5f\xd6")  # mov x0, #0; ret
    w.init = "fn"  # DT_INIT (an init_array would need an x86_64 RELATIVE)
    data = w.build().data
    with pytest.raises(ArchMismatchError):
        relink.load(data, name="libarm.so")
    with pytest.raises(InitializerError):
        relink.load(data, name="libarm.so", mapper=BufferMapper())
    with relink.load(data, name="libarm.so", mapper=BufferMapper(), init=False) as mod:
        assert mod.arch == "aarch64" and mod.symbol("fn") is not None
    assert watch.exec_requests == [] and watch.executor_calls == []


def test_control_native_load_does_run_code(marker_lib: Path, watch: ExecWatch,
                                           tmp_path: Path) -> None:
    """The same signals do fire for a native load: the checks above can fail."""
    exec_before = watch.exec_maps()
    mod = relink.load(marker_lib)
    try:
        assert watch.exec_maps() - exec_before, "native load created no executable mapping"
        assert watch.exec_requests
        assert ".ctor" in "".join(_marks(tmp_path))
        assert mod.function("marker_call", __import__("ctypes").c_int)() == 47
        assert ".ifunc" in "".join(_marks(tmp_path))
        assert "call_init" in watch.executor_calls
    finally:
        mod.close()
    assert ".dtor" in "".join(_marks(tmp_path))
