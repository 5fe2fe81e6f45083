"""Search-path scenarios through the loader (relink-study §4.5 search_path.rs, adapted)."""

from __future__ import annotations

import ctypes
import shutil
from pathlib import Path

import pytest

import relink
from relink import LinkContext, Linker, SearchPathResolver
from relink.errors import UnresolvedDependencyError
from relink.runtime.host import HostPolicy

pytestmark = pytest.mark.needs_cc
INT = ctypes.c_int


def test_inherits_rpath(rpath_root: Path, leaf: Path) -> None:
    with LinkContext() as ctx:
        mod = ctx.load(rpath_root)
        assert mod.function("rpath_value", INT)() == 3
        # libmiddle has no RPATH: libleaf comes from the root's inherited DT_RPATH.
        assert ctx.how_found("libmiddle.so") == "RPATH of librpath_root.so"
        assert ctx.how_found("libleaf.so") == "RPATH of librpath_root.so (inherited)"
        assert Path(ctx.get("libleaf.so").path).resolve() == leaf.resolve()


def test_runpath_is_not_inherited(runpath_root: Path) -> None:
    ctx = LinkContext()
    with pytest.raises(UnresolvedDependencyError) as info:
        ctx.load(runpath_root)
    err = info.value
    assert err.needed == "libleaf.so"
    assert err.needed_by is not None and err.needed_by.endswith("libmiddle.so")
    assert not any("RUNPATH" in s or "RPATH" in s for s in err.searched)
    assert any("ld.so.cache" in s or "default dir" in s for s in err.searched)
    assert len(ctx) == 0


def test_runpath_of_owner_finds_direct_dependency(runpath_root: Path, leaf: Path) -> None:
    # Adding the leaf's directory as a fixed dir completes the graph.
    linker = Linker(search=SearchPathResolver(fixed_dirs=(str(leaf.parent),)))
    with LinkContext(linker=linker) as ctx:
        mod = ctx.load(runpath_root)
        assert mod.function("rpath_value", INT)() == 3
        assert ctx.how_found("libmiddle.so") == "RUNPATH of librunpath_root.so"
        assert ctx.how_found("libleaf.so") == "fixed dir"


def test_wrong_machine_candidate_is_skipped(leaf: Path, rpath_caller: Path,
                                            tmp_path: Path) -> None:
    bad, good = tmp_path / "bad", tmp_path / "good"
    bad.mkdir()
    good.mkdir()
    data = bytearray(leaf.read_bytes())
    data[18:20] = (183).to_bytes(2, "little")  # e_machine = EM_AARCH64
    (bad / "libleaf.so").write_bytes(data)
    shutil.copy(leaf, good / "libleaf.so")
    search = SearchPathResolver(fixed_dirs=(str(bad), str(good)), use_ld_cache=False,
                                use_default_dirs=False)
    with LinkContext(linker=Linker(search=search)) as ctx:
        mod = ctx.load("libleaf.so")
        assert mod.path == str(good / "libleaf.so")
    search = SearchPathResolver(fixed_dirs=(str(bad),), use_ld_cache=False,
                                use_default_dirs=False)
    with LinkContext(linker=Linker(search=search)) as ctx:
        with pytest.raises(UnresolvedDependencyError) as info:
            ctx.load("libleaf.so")
        assert any("skipped: wrong machine" in s for s in info.value.searched)


def test_custom_resolver_precedes_fixed_dirs(leaf: Path, tmp_path: Path) -> None:
    dynamic, static = tmp_path / "dynamic", tmp_path / "static"
    for d in (dynamic, static):
        d.mkdir()
        shutil.copy(leaf, d / "libpick.so")

    def pick(request: relink.ResolveRequest) -> str | None:
        cand = dynamic / request.needed
        return str(cand) if cand.exists() else None

    linker = Linker(resolvers=[pick], search=SearchPathResolver(fixed_dirs=(str(static),)))
    with LinkContext(linker=linker) as ctx:
        assert ctx.load("libpick.so").path == str(dynamic / "libpick.so")


def test_bare_root_from_ld_so_cache() -> None:
    if not Path("/etc/ld.so.cache").exists():
        pytest.skip("no /etc/ld.so.cache on this machine")
    import zlib

    with LinkContext() as ctx:
        z = ctx.load("libz.so.1")  # a root is never served by the host: relink maps it
        assert not z.is_host and z.base
        assert ctx.how_found(z) == "ld.so.cache"
        version = z.function("zlibVersion", ctypes.c_char_p)()
        assert version.decode() == zlib.ZLIB_RUNTIME_VERSION


def test_host_policy_is_user_changeable(zuser: Path) -> None:
    import zlib

    with LinkContext() as ctx:  # default: the process already has libz -> host serves it
        mod = ctx.load(zuser)
        z = ctx.get("libz.so.1")
        assert z is not None and z.is_host and ctx.how_found(z) == "host-provided"
        assert mod.function("zuser_version", ctypes.c_char_p)() == \
            zlib.ZLIB_RUNTIME_VERSION.encode()
    policy = HostPolicy(serve_loaded=False)  # only the glibc family from the host
    with LinkContext(linker=Linker(host=policy)) as ctx:
        mod = ctx.load(zuser)
        z = ctx.get("libz.so.1")
        assert z is not None and not z.is_host and z.base
        assert ctx.how_found(z) == "ld.so.cache"
        assert mod.function("zuser_version", ctypes.c_char_p)() == \
            zlib.ZLIB_RUNTIME_VERSION.encode()
        assert ctx.get("libc.so.6") is None or ctx.get("libc.so.6").is_host


def test_buffer_load_skips_other_machines_once_the_root_is_known(
        middle: Path, leaf: Path, tmp_path: Path) -> None:
    from relink.memory.buffer import BufferMapper

    bad, good = tmp_path / "bad", tmp_path / "good"
    bad.mkdir()
    good.mkdir()
    data = bytearray(leaf.read_bytes())
    data[18:20] = (183).to_bytes(2, "little")  # an aarch64-looking libleaf.so first
    (bad / "libleaf.so").write_bytes(data)
    shutil.copy(leaf, good / "libleaf.so")
    shutil.copy(middle, good / "libmiddle.so")
    search = SearchPathResolver(fixed_dirs=(str(bad), str(good)), use_ld_cache=False,
                                use_default_dirs=False)
    linker = Linker(mapper=BufferMapper(), search=search)  # no arch given: any root
    with LinkContext(linker=linker) as ctx:
        mod = linker.load(ctx, "libmiddle.so", init=False)  # root found by name
        assert mod.path == str(good / "libmiddle.so") and mod.arch == "x86_64"
        assert ctx.get("libleaf.so").path == str(good / "libleaf.so")
