"""The host TLS block cache of runtime/tls.py (`host_tls_block`).

The blocks ``dl_iterate_phdr`` reports are the calling thread's and change when the host
loads or unloads objects, so the cache is per thread and per host load generation: a
library with TLS dlopened by the host (here through ctypes) must be seen by the next
relink load that references its TLS, and a block from an older generation's list must
never be answered once its module id belongs to another object.
"""

from __future__ import annotations

import _ctypes
import ctypes
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from tlshelp import MODELS, src, tls_user

import relink
from relink.runtime import libc, tls
from support.build import build_shared

pytestmark = pytest.mark.needs_cc
P = ctypes.c_void_p


def host_lib(tag: str, init: int) -> Path:
    source = src("hosttls.c").replace("counter = 41", f"counter = {init}")
    return build_shared(f"hostcache_{tag}", {"hosttls.c": source}, group="tls",
                        cflags=["-O2", *MODELS["gd"]], soname=f"libhostcache_{tag}.so")


def open_host(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    lib.host_addr.restype = P
    return lib


def modid(lib: ctypes.CDLL) -> int:
    out = ctypes.c_size_t()
    assert libc.dlinfo(lib._handle, libc.RTLD_DI_TLS_MODID, ctypes.byref(out)) == 0
    return out.value


@pytest.fixture
def walks(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts the walks of the host's objects."""
    count: list[int] = []
    real = tls._walk_host_blocks

    def counting() -> tuple[tls.HostTlsBlock, ...]:
        count.append(1)
        return real()

    monkeypatch.setattr(tls, "_walk_host_blocks", counting)
    yield count


def test_lookups_of_one_generation_walk_once(walks: list[int]) -> None:
    lib = open_host(host_lib("once", 7))
    addr = lib.host_addr()
    first = tls.host_tls_block(addr)
    assert first is not None and first.modid == modid(lib) and first.start <= addr
    for _ in range(3):
        assert tls.host_tls_block(addr) is first
    assert tls.host_tls_block(addr + 2) is first
    assert len(walks) == 1


def test_a_host_dlopen_is_seen(walks: list[int]) -> None:
    """After ctypes dlopens a new TLS library, a block the cache holds is answered only
    after checking glibc's slot for its module id; the new library's block is found by
    a new walk, and a relink module bound to its TLS reads its value."""
    old = open_host(host_lib("old", 7))
    addr = old.host_addr()
    assert tls.host_tls_block(addr) is not None
    before = len(walks)
    new_path = host_lib("new", 23)
    new = open_host(new_path)
    hit = tls.host_tls_block(addr)
    assert hit is not None and hit.modid == modid(old) and len(walks) == before
    block = tls.host_tls_block(new.host_addr())
    assert block is not None and block.modid == modid(new) and len(walks) == before + 1
    user = tls_user("gd", new_path, "gd_on_hostcache_new")
    with relink.load(str(user)) as m:
        assert m.dependencies[0].is_host
        assert m.function("user_get", ctypes.c_int)() == 23
        assert m.function("user_addr", P)() == new.host_addr()


def test_a_block_freed_by_dlclose_is_not_answered_from_cache() -> None:
    """dlclose frees a block; glibc gives the next library a block at the same address
    (malloc reuses the chunk) under another module id (the freed id went to a library
    whose TLS nobody touched). The answer must be the new library's."""
    first = open_host(host_lib("gone", 5))
    addr = first.host_addr()
    assert tls.host_tls_block(addr) is not None
    _ctypes.dlclose(first._handle)
    spacer = open_host(host_lib("spacer", 6))  # takes the freed module id, no block
    second = open_host(host_lib("after", 8))
    addr2 = second.host_addr()  # frees the old block, allocates the new one
    block = tls.host_tls_block(addr2)
    assert block is not None and block.modid == modid(second) != modid(spacer)
    assert block.name.endswith("libhostcache_after.so")
    if addr2 != addr:
        pytest.skip("malloc did not reuse the freed block's address: not this scenario")


def test_each_thread_gets_its_own_blocks() -> None:
    lib = open_host(host_lib("threads", 9))
    main = tls.host_tls_block(lib.host_addr())
    box: list[object] = []

    def run() -> None:
        addr = lib.host_addr()
        block = tls.host_tls_block(addr)
        box.append((addr, block))

    t = threading.Thread(target=run)
    t.start()
    t.join()
    addr, block = box[0]  # type: ignore[misc]
    assert isinstance(block, tls.HostTlsBlock) and main is not None
    assert block.start <= addr < block.start + block.size
    assert block.start != main.start and block.modid == main.modid
