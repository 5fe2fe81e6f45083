"""Load templates (relink/linker/warm.py): a plain load of a root replayed from the
decisions of its previous load. The replay must give exactly what the normal stages give
(the same relocated words, entries, keys, bindings, scopes, init order), must notice
every change those decisions depend on (a rewritten file, a library appearing earlier in
the search path, re-parsed metadata), and a failure during a replay leaves nothing
behind."""

from __future__ import annotations

import ctypes
import os
import shutil
import struct
from pathlib import Path
from typing import Any

import pytest
from linker_helpers import RUNPATH, maps_lines, open_fds

import relink
from relink.linker import warm
from relink.linker.context import LinkContext
from relink.linker.linker import Linker
from relink.loader import clear_parse_cache
from support.build import build_shared, have_cc

pytestmark = pytest.mark.skipif(not have_cc(), reason="needs gcc")

BASE = """
static char trail[16]; static int n;
int base_data = %d;
void note(char c) { if (n < 15) trail[n++] = c; }
const char *trail_of(void) { return trail; }
int base_value(void) { return base_data; }
__attribute__((constructor)) static void init(void) { note('b'); }
"""
MIDDLE = """
extern int base_data; int base_value(void); void note(char c);
int *middle_ptr = &base_data;
int (*middle_fn)(void) = base_value;
int middle_value(void) { return middle_fn() + *middle_ptr; }
__attribute__((constructor)) static void init(void) { note('m'); }
"""
LEAF = """
int middle_value(void); void note(char c); const char *trail_of(void);
static int (*table[2])(void) = { middle_value, 0 };
int leaf_value(void) { return table[0]() + 1; }
const char *leaf_trail(void) { return trail_of(); }
__attribute__((constructor)) static void init(void) { note('l'); }
"""


def _base(value: int) -> Path:
    return build_shared(f"warmbase{value}", BASE % value, soname="libwarmbase.so",
                        group="linker")


@pytest.fixture
def chain(tmp_path: Path) -> Path:
    """tmp/libwarmleaf.so -> libwarmmiddle.so -> libwarmbase.so (RUNPATH $ORIGIN)."""
    base = _base(1)
    middle = build_shared("warmmiddle", MIDDLE, deps=[base], soname="libwarmmiddle.so",
                          group="linker", ldflags=RUNPATH)
    leaf = build_shared("warmleaf", LEAF, deps=[middle], soname="libwarmleaf.so",
                        group="linker", ldflags=RUNPATH)
    for lib, name in ((base, "libwarmbase.so"), (middle, "libwarmmiddle.so"),
                      (leaf, "libwarmleaf.so")):
        shutil.copy(lib, tmp_path / name)
    return tmp_path / "libwarmleaf.so"


class _Counting:
    """Counts replays that completed (monkeypatched over warm.replay)."""

    def __init__(self) -> None:
        self.done = 0
        self.abandoned = 0
        self.real = warm.replay

    def __call__(self, load: Any, t: Any) -> bool:
        ok = self.real(load, t)
        if ok:
            self.done += 1
        else:
            self.abandoned += 1
        return ok


@pytest.fixture
def replays(monkeypatch: pytest.MonkeyPatch) -> _Counting:
    counting = _Counting()
    monkeypatch.setattr(warm, "replay", counting)
    return counting


def _value(linker: Linker, leaf: Path) -> tuple[int, bytes]:
    ctx = LinkContext("warm-test")
    m = linker.load(ctx, str(leaf))
    try:
        value = m.function("leaf_value", ctypes.c_int)()
        trail = ctypes.string_at(m.function("leaf_trail", ctypes.c_void_p)())
        return value, trail
    finally:
        m.close()
        ctx.close()


def _snapshot(ctx: LinkContext) -> dict[str, Any]:
    """Everything a load decided, with addresses made relative to their module."""
    entries = list(ctx._order)
    states = [e.module for e in entries]
    spans = [(s.image.region.start, s.image.region.start + s.image.region.size, s.name)
             for s in states
             if hasattr(s, "image")]

    def rel(value: int) -> Any:
        for lo, hi, name in spans:
            if lo <= value < hi:
                return (name, value - lo)
        return value

    words: dict[str, list[Any]] = {}
    for s in states:
        if not hasattr(s, "image"):
            continue
        img = s.image
        out: list[Any] = []
        for ph in img.loads:
            if ph.p_flags & 2:  # PF_W: every word relocation writes lands here
                data = img.region.read(img.base + ph.p_vaddr, ph.p_memsz & ~7)
                out += [rel(w) for (w,) in struct.iter_unpack("<Q", data)]
        words[s.name] = out
    return {
        "order": [e.key for e in entries],
        "entries": [(e.key, e.aliases, e.how, e.nodelete, e.owned,
                     [d.key for d in e.deps], sorted(b.key for b in e.bound),
                     [type(k).__name__ for k in e.keep],
                     repr(e.search)) for e in entries],
        "keys": sorted(ctx._by_key),
        # file identity -> entry (another path to a mapped file finds it)
        "identities": sorted(e.key for k, e in ctx._by_identity.items()
                             if not isinstance(k, int)),
        "words": words,
        "scopes": [[getattr(p, "name", repr(p)) for p in getattr(s, "scope", [])]
                   for s in states],
        "init": [[rel(f) for f in getattr(s, "init_funcs", [])] for s in states],
        "fini": [[rel(f) for f in getattr(s, "fini_funcs", [])] for s in states],
        "state": [str(getattr(s, "state", "")) for s in states],
        "pages": {name: _pages(lo, hi) for lo, hi, name in spans},  # RELRO protected
    }


def _pages(lo: int, hi: int) -> list[tuple[int, int, str]]:
    """The mappings of [lo, hi) in /proc/self/maps: (start, end) relative to lo, and
    their permissions."""
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            span, perms = line.split()[:2]
            start, end = (int(x, 16) for x in span.split("-"))
            if start < hi and end > lo:
                out.append((max(start, lo) - lo, min(end, hi) - lo, perms))
    return out


def test_a_replayed_load_is_the_normal_load(chain: Path, replays: _Counting) -> None:
    linker = Linker()
    assert _value(linker, chain) == (3, b"bml")  # first: no programs yet
    assert _value(linker, chain) == (3, b"bml")  # second: programs, template recorded
    assert str(chain) in linker._templates and replays.done == 0
    ctx = LinkContext("replayed")
    m = linker.load(ctx, str(chain))
    assert replays.done == 1
    replayed = _snapshot(ctx)
    m.close()
    ctx.close()
    other = LinkContext("normal")  # a new linker has no template: the four stages
    n = Linker().load(other, str(chain))
    assert replays.done == 1
    normal = _snapshot(other)
    assert n.function("leaf_value", ctypes.c_int)() == 3
    n.close()
    other.close()
    assert replayed == normal
    assert replayed["words"]["libwarmmiddle.so"], "the comparison saw no relocated data"


def test_a_rewritten_dependency_is_read_again(chain: Path, replays: _Counting) -> None:
    linker = Linker()
    for _ in range(3):
        assert _value(linker, chain) == (3, b"bml")
    assert replays.done == 1
    base = chain.parent / "libwarmbase.so"
    base.unlink()  # a new inode, as an installer writes it
    shutil.copy(_base(5), base)
    assert _value(linker, chain) == (11, b"bml")
    assert replays.abandoned == 1
    with open(base, "r+b") as f:  # and rewritten in place, same inode
        f.write(_base(7).read_bytes())
    os.utime(base, ns=(0, 1))
    assert _value(linker, chain)[0] == 15
    assert _value(linker, chain)[0] == 15


def test_a_library_appearing_earlier_in_the_search_wins(tmp_path: Path,
                                                        replays: _Counting) -> None:
    dep = build_shared("warmdep1", "int dep_value(void) { return 1; }",
                       soname="libwarmdep.so", group="linker")
    top = build_shared("warmtop", "int dep_value(void); int top(void) { return dep_value(); }",
                       deps=[dep], group="linker",
                       ldflags=["-Wl,-rpath,$ORIGIN/a:$ORIGIN/b", "-Wl,--enable-new-dtags"])
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    shutil.copy(top, tmp_path / "libwarmtop.so")
    shutil.copy(dep, tmp_path / "b" / "libwarmdep.so")
    linker = Linker()

    def value() -> int:
        ctx = LinkContext("search")
        with linker.load(ctx, str(tmp_path / "libwarmtop.so")) as m:
            return int(m.function("top", ctypes.c_int)())

    for _ in range(3):
        assert value() == 1
    assert replays.done == 1
    shutil.copy(build_shared("warmdep2", "int dep_value(void) { return 2; }",
                             soname="libwarmdep.so", group="linker"),
                tmp_path / "a" / "libwarmdep.so")
    assert value() == 2
    assert replays.abandoned == 1


def test_reparsed_metadata_falls_back_without_leaks(chain: Path, replays: _Counting) -> None:
    linker = Linker()
    for _ in range(3):
        _value(linker, chain)
    fds = open_fds()
    clear_parse_cache()  # the template's programs belong to the old metadata objects
    assert _value(linker, chain) == (3, b"bml")
    assert replays.done == 1 and replays.abandoned == 0  # Stale: rolled back in replay
    assert open_fds() == fds
    assert not maps_lines(str(chain.parent))
    for _ in range(2):
        assert _value(linker, chain) == (3, b"bml")
    assert replays.done == 2


def test_a_failure_during_a_replay_leaves_nothing(chain: Path, replays: _Counting,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    linker = Linker()
    for _ in range(3):
        _value(linker, chain)
    fds = open_fds()
    real = warm.map_image
    calls = []

    def failing(src: Any, **kw: Any) -> Any:
        calls.append(src.name)
        if len(calls) == 2:
            raise relink.MappingError("injected", file=src.path)
        return real(src, **kw)

    monkeypatch.setattr(warm, "map_image", failing)
    ctx = LinkContext("failing")
    with pytest.raises(relink.MappingError, match="injected"):
        linker.load(ctx, str(chain))
    assert len(ctx) == 0
    assert open_fds() == fds
    assert not maps_lines(str(chain.parent))
    monkeypatch.setattr(warm, "map_image", real)
    assert _value(linker, chain) == (3, b"bml")


def test_loads_with_options_make_no_template(chain: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    linker = Linker()
    for _ in range(3):
        ctx = LinkContext("options")
        linker.load(ctx, str(chain), key="leaf").close()
        ctx.close()
    monkeypatch.chdir(chain.parent)
    for _ in range(3):
        ctx = LinkContext("relative")
        linker.load(ctx, chain.name).close()
        ctx.close()
    for _ in range(3):
        ctx = LinkContext("shared")
        held = ctx.load(str(chain.parent / "libwarmbase.so"))  # not an empty context
        linker.load(ctx, str(chain)).close()
        held.close()
        ctx.close()
    assert linker._templates == {}


def test_a_tls_module_replays_through_the_generic_loop(replays: _Counting) -> None:
    tls = build_shared("warmtls", """
        __thread int t = 4; static __thread int u[3] = {5, 6, 7};
        int get(void) { return t + u[2]; }
        int bump(void) { t += 10; u[2] += 100; return get(); }""", group="linker")
    linker = Linker()
    for _ in range(4):  # each load: a fresh block with the initial values
        ctx = LinkContext("tls")
        with linker.load(ctx, str(tls)) as m:
            assert m.function("get", ctypes.c_int)() == 11
            assert m.function("bump", ctypes.c_int)() == 121
        ctx.close()
    assert str(tls) in linker._templates
    assert replays.done == 2
    assert linker._templates[str(tls)].modules[0].program is None  # TLS: the loop


def test_the_default_linker_replays(chain: Path, replays: _Counting) -> None:
    for _ in range(4):
        with relink.load(chain) as m:
            assert m.function("leaf_value", ctypes.c_int)() == 3
    assert replays.done == 2
