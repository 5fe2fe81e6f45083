"""Load templates (relink/linker/warm.py) against the cases a replay could get wrong:
one file under several names, a cycle back to the root, loads that change what a
resolution depends on (the working directory, the process scope, the ld.so cache, the
host loading a library), modules the generic loop relocates (TLS, COPY, TEXTREL, IFUNC,
GNU_UNIQUE), deferred and failing initializers, failures, threads and evictions. Each
replayed load is compared with what the four stages give from freshly parsed files."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from linker_helpers import RUNPATH, maps_lines, open_fds, shared
from test_warm_template import _Counting, _snapshot

import relink
from relink.linker import warm
from relink.linker.callbacks import wrap_callable
from relink.linker.context import LinkContext
from relink.linker.linker import Linker
from relink.loader import clear_parse_cache
from relink.module import Module
from support.build import build_executable, build_shared, have_cc

pytestmark = pytest.mark.skipif(not have_cc(), reason="needs gcc")

GROUP = "linker-warm"
_KEEP: list[Any] = []  # C function pointers native code may call


@pytest.fixture
def replays(monkeypatch: pytest.MonkeyPatch) -> _Counting:
    counting = _Counting()
    monkeypatch.setattr(warm, "replay", counting)
    return counting


def _lib(name: str, text: str, **kw: Any) -> Path:
    return build_shared(name, text, group=GROUP, **kw)


def _copy(*libs: Path, to: Path) -> None:
    for lib in libs:
        shutil.copy(lib, to / lib.name)


def _compare(root: Path, replays: _Counting,
             check: Callable[[Module], None] = lambda m: None,
             linker: Linker | None = None) -> dict[str, Any]:
    """Load `root` until a template replays, then once by the four stages from freshly
    parsed files (no binding plans, no programs); both must agree in every respect."""
    linker = linker or Linker()
    for _ in range(2):
        ctx = LinkContext("warm")
        with linker.load(ctx, str(root)) as m:
            check(m)
        ctx.close()
    assert str(root) in linker._templates
    done = replays.done
    ctx = LinkContext("replayed")
    m = linker.load(ctx, str(root))
    assert replays.done == done + 1
    check(m)
    replayed = _snapshot(ctx)
    m.close()
    ctx.close()
    clear_parse_cache()
    other = LinkContext("normal")
    n = Linker().load(other, str(root))
    check(n)
    normal = _snapshot(other)
    n.close()
    other.close()
    assert replayed == normal
    return replayed


def _value(linker: Linker, root: Path, fn: str) -> int:
    ctx = LinkContext("value")
    try:
        with linker.load(ctx, str(root)) as m:
            return int(m.function(fn, ctypes.c_int)())
    finally:
        ctx.close()


# -- one file, several names ---------------------------------------------------------


def test_one_file_under_several_names_replays(tmp_path: Path, replays: _Counting) -> None:
    """A file reached by a hard link, a symlink and an absolute DT_NEEDED path is one
    module; its template replays (each name is checked as the name it is)."""
    dep = _lib("warmnames_dep", "int dv = 7; int depv(void) { return dv; }")
    shutil.copy(dep, tmp_path / "libwarmnames_dep.so")
    os.symlink(tmp_path / "libwarmnames_dep.so", tmp_path / "libwarmnames_alias.so")
    os.link(tmp_path / "libwarmnames_dep.so", tmp_path / "libwarmnames_hard.so")
    mid = _lib("warmnames_mid", "int depv(void); int midv(void) { return depv() + 1; }",
               deps=[tmp_path / "libwarmnames_alias.so"], soname="libwarmnames_mid.so",
               ldflags=RUNPATH)
    mid3 = _lib("warmnames_mid3", "int depv(void); int mid3v(void) { return depv() + 2; }",
                soname="libwarmnames_mid3.so",
                ldflags=[*RUNPATH, str(tmp_path / "libwarmnames_dep.so")])
    _copy(mid, mid3, to=tmp_path)
    top = _lib("warmnames_top", """
        int depv(void); int midv(void); int mid3v(void);
        int topv(void) { return depv() + midv() + mid3v(); }""",
               deps=[tmp_path / "libwarmnames_hard.so", tmp_path / mid.name,
                     tmp_path / mid3.name], ldflags=RUNPATH)
    _copy(top, to=tmp_path)
    root = tmp_path / top.name

    def check(m: Module) -> None:
        assert m.function("topv", ctypes.c_int)() == 7 + 8 + 9

    fds = open_fds()
    snap = _compare(root, replays, check)
    assert len(snap["entries"]) == 4  # the three names are one module
    assert replays.abandoned == 0
    assert open_fds() == fds  # (each name was opened by the search, and closed)


def test_a_cycle_back_to_the_root(tmp_path: Path, replays: _Counting) -> None:
    first = _lib("warmcyc_a0", "int av(void) { return 1; }", soname="libwarmcyc_a.so")
    b = _lib("warmcyc_b", "int av(void); int bv(void) { return av() + 10; }", deps=[first],
             soname="libwarmcyc_b.so", ldflags=RUNPATH)
    a = _lib("warmcyc_a", "int bv(void); int av(void) { return 1; } "
             "int top(void) { return bv() + 100; }", deps=[b], soname="libwarmcyc_a.so",
             ldflags=RUNPATH)
    shutil.copy(a, tmp_path / "libwarmcyc_a.so")
    _copy(b, to=tmp_path)
    _compare(tmp_path / "libwarmcyc_a.so", replays,
             lambda m: None if m.function("top", ctypes.c_int)() == 111 else pytest.fail())


# -- what a resolution depends on ----------------------------------------------------


def test_a_dependency_found_relative_to_the_working_directory(
        tmp_path: Path, replays: _Counting, monkeypatch: pytest.MonkeyPatch) -> None:
    """DT_RPATH "rel" is relative to the working directory: the same file (a hard link)
    found from another directory has another $ORIGIN, so other dependencies."""
    for d in ("A", "B1/rel", "B2/rel"):
        (tmp_path / d).mkdir(parents=True)
    d2a = _lib("warmrel_d2a", "int d2(void) { return 1; }", soname="libwarmrel_d2.so")
    d2b = _lib("warmrel_d2b", "int d2(void) { return 2; }", soname="libwarmrel_d2.so")
    dep = _lib("warmrel_dep", "int d2(void); int depv(void) { return d2(); }", deps=[d2a],
               soname="libwarmrel_dep.so", ldflags=RUNPATH)
    root = _lib("warmrel_root", "int depv(void); int rv(void) { return depv(); }",
                deps=[dep], ldflags=["-Wl,-rpath,rel", "-Wl,--disable-new-dtags"])
    shutil.copy(root, tmp_path / "A" / root.name)
    shutil.copy(dep, tmp_path / "B1" / "rel" / dep.name)
    os.link(tmp_path / "B1" / "rel" / dep.name, tmp_path / "B2" / "rel" / dep.name)
    shutil.copy(d2a, tmp_path / "B1" / "rel" / "libwarmrel_d2.so")
    shutil.copy(d2b, tmp_path / "B2" / "rel" / "libwarmrel_d2.so")
    top = tmp_path / "A" / root.name
    linker = Linker()
    monkeypatch.chdir(tmp_path / "B1")
    for _ in range(3):
        assert _value(linker, top, "rv") == 1
    monkeypatch.chdir(tmp_path / "B2")
    ctx = LinkContext("moved")
    with linker.load(ctx, str(top)) as m:
        assert m.function("rv", ctypes.c_int)() == 2
        assert str(tmp_path / "B2" / "rel" / dep.name) in ctx
        assert str(tmp_path / "B1" / "rel" / dep.name) not in ctx
    ctx.close()
    assert replays.done == 0


def test_the_process_scope_is_part_of_the_decisions(tmp_path: Path,
                                                    replays: _Counting) -> None:
    lib = _lib("warmnolibc", "int getpid(void); long f(void) { return getpid(); }",
               ldflags=["-nostdlib"])  # getpid: found in the process scope only
    _copy(lib, to=tmp_path)
    root = tmp_path / lib.name
    linker = Linker()
    for _ in range(3):
        ctx = LinkContext("process")
        with linker.load(ctx, str(root)) as m:
            assert m.function("f", ctypes.c_long)() == os.getpid()
        ctx.close()
    assert replays.done == 1
    linker.process_scope = False
    fds = open_fds()
    ctx = LinkContext("no-process")
    with pytest.raises(relink.UnknownSymbolError, match="getpid"):
        linker.load(ctx, str(root))
    assert len(ctx) == 0 and open_fds() == fds and not maps_lines(str(tmp_path))
    assert replays.done == 1


@pytest.mark.skipif(shutil.which("ldconfig") is None, reason="needs ldconfig")
def test_how_a_dependency_was_found_is_checked(tmp_path: Path, replays: _Counting) -> None:
    """The same path found through the ld.so cache instead of a default directory:
    `how_found` reports what the search did this time."""
    from relink.linker.search import SearchPathResolver

    (tmp_path / "sys").mkdir()
    dep = _lib("warmhow_dep", "int dv(void) { return 3; }", soname="libwarmhow_dep.so")
    top = _lib("warmhow_top", "int dv(void); int tv(void) { return dv(); }", deps=[dep])
    shutil.copy(dep, tmp_path / "sys" / dep.name)
    _copy(top, to=tmp_path)
    cache, conf = tmp_path / "ld.so.cache", tmp_path / "ld.so.conf"
    conf.write_text("")
    ldconfig = ["ldconfig", "-C", str(cache), "-f", str(conf), "-X"]
    if subprocess.run(ldconfig, capture_output=True).returncode != 0:
        pytest.skip("ldconfig cannot write a cache here")
    linker = Linker(search=SearchPathResolver(ld_cache_path=str(cache),
                                              default_dirs=[str(tmp_path / "sys")]))

    def how() -> str:
        ctx = LinkContext("how")
        with linker.load(ctx, str(tmp_path / top.name)) as m:
            assert m.function("tv", ctypes.c_int)() == 3
            found = ctx.how_found(str(tmp_path / "sys" / dep.name))
        ctx.close()
        return found

    for _ in range(3):
        assert how() == "default dir"
    assert replays.done == 1
    conf.write_text(f"{tmp_path / 'sys'}\n")
    subprocess.run(ldconfig, check=True)
    os.utime(cache, ns=(1, 10**18))  # (a new mtime even within the clock's tick)
    assert how() == "ld.so.cache"
    assert replays.done == 1


def test_a_library_the_host_loaded_later_is_the_hosts(tmp_path: Path,
                                                      replays: _Counting) -> None:
    base = _lib("warmhost_base", "int hb_data = 5; int hbv(void) { return hb_data; }",
                soname="libwarmhost_base.so")
    top = _lib("warmhost_top", "extern int hb_data; int hbv(void); int *p = &hb_data; "
               "int top(void) { return hbv() + *p; }", deps=[base], ldflags=RUNPATH)
    _copy(base, top, to=tmp_path)
    root = tmp_path / top.name
    linker = Linker()
    for _ in range(3):
        assert _value(linker, root, "top") == 10
    assert replays.done == 1
    host = ctypes.CDLL(str(tmp_path / base.name))  # the host has it now: it serves it
    ctypes.c_int.in_dll(host, "hb_data").value = 50
    ctx = LinkContext("host")
    with linker.load(ctx, str(root)) as m:
        assert m.function("top", ctypes.c_int)() == 100
        assert ctx.how_found("libwarmhost_base.so") == "host-provided"
    ctx.close()
    assert replays.done == 1 and replays.abandoned == 1
    snap = _compare(root, replays,
                    lambda m: None if m.function("top", ctypes.c_int)() == 100
                    else pytest.fail())
    assert [e[2] for e in snap["entries"]] == ["host-provided", "root"]


def test_a_host_library_no_longer_served(tmp_path: Path, replays: _Counting) -> None:
    """The template's dependency came from the host; with another host policy the same
    name is a file relink maps itself."""
    from relink.runtime.host import HostPolicy

    base = _lib("warmserve_base", "int sb_data = 5; int sbv(void) { return sb_data; }",
                soname="libwarmserve_base.so")
    top = _lib("warmserve_top", "int sbv(void); int top(void) { return sbv(); }",
               deps=[base], ldflags=RUNPATH)
    _copy(base, top, to=tmp_path)
    host = ctypes.CDLL(str(tmp_path / base.name))
    ctypes.c_int.in_dll(host, "sb_data").value = 50
    linker = Linker()
    for _ in range(3):
        assert _value(linker, tmp_path / top.name, "top") == 50
    assert replays.done == 1
    linker.host = HostPolicy(serve_loaded=False)
    fds = open_fds()
    ctx = LinkContext("own copy")
    with linker.load(ctx, str(tmp_path / top.name)) as m:
        assert m.function("top", ctypes.c_int)() == 5
        assert ctx.how_found("libwarmserve_base.so") == "RUNPATH of libwarmserve_top.so"
    ctx.close()
    assert open_fds() == fds
    assert replays.done == 1


# -- modules the generic loop relocates ----------------------------------------------

TEXTREL_S = r"""
.text
.globl get
.type get,@function
get:
    mov tbl(%rip), %rax
    mov (%rax), %eax
    ret
.p2align 3
tbl: .quad val
.data
.globl val
val: .long 3
.section .note.GNU-stack,"",@progbits
"""


def _feature(kind: str, tmp_path: Path) -> tuple[Path, str, int]:
    """(root, function, expected value) of a fixture with one relocation feature."""
    if kind == "textrel":
        lib = _lib("warmf_textrel", {"t.S": TEXTREL_S}, ldflags=["-Wl,-z,notext"])
        return lib, "get", 3
    if kind == "nodelete":
        return _lib("warmf_nodelete", "int get(void) { return 7; }",
                    ldflags=["-Wl,-z,nodelete"]), "get", 7
    if kind in ("tls-ie", "tls-gd"):
        tls = _lib("warmf_tls", '__thread int tv __attribute__((tls_model("initial-exec")))'
                   " = 4; int get(void) { return tv; }", soname="libwarmf_tls.so")
        _copy(tls, to=tmp_path)
        model = '__attribute__((tls_model("initial-exec")))' if kind == "tls-ie" else ""
        user = _lib(f"warmf_{kind.replace('-', '')}",
                    f"extern __thread int tv {model}; int get2(void) {{ tv += 1; "
                    "return tv; }", deps=[tls], ldflags=RUNPATH)
        return user, "get2", 5
    if kind == "ifunc":
        return _lib("warmf_ifunc", """
            static int a(void) { return 11; }
            static void *r(void) { return (void *)a; }
            int f(void) __attribute__((ifunc("r")));
            int (*fp)(void) = f;
            int get(void) { return fp() + f(); }"""), "get", 22
    if kind == "copy":
        dep = _lib("warmf_copydep", "int shared_v = 17; int arr[4] = {1, 2, 3, 4};",
                   soname="libwarmf_copydep.so")
        _copy(dep, to=tmp_path)
        exe = build_executable("warmf_copyexe", """
            extern int shared_v; extern int arr[4];
            int get(void) { return shared_v + arr[3]; }
            int main(void) { return get(); }""", deps=[dep], group=GROUP,
                               ldflags=[*RUNPATH, "-rdynamic"])
        return exe, "get", 21
    if kind == "c++-exception":  # unwinds through frames only relink registered
        return build_shared("warmf_cxx", {"x.cpp": """
            #include <stdexcept>
            static int inner(int v) { if (v > 0) throw std::runtime_error("x"); return v; }
            extern "C" int get(void) {
                try { return inner(1); } catch (const std::exception &) { return 9; }
            }"""}, lang="c++", group=GROUP), "get", 9
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["textrel", "nodelete", "tls-ie", "tls-gd", "ifunc",
                                  "copy", "c++-exception"])
def test_generic_loop_modules_replay_as_the_stages(kind: str, tmp_path: Path,
                                                   replays: _Counting) -> None:
    lib, fn, want = _feature(kind, tmp_path)
    _copy(lib, to=tmp_path)

    def check(m: Module) -> None:
        assert m.function(fn, ctypes.c_int)() == want

    fds = open_fds()
    _compare(tmp_path / lib.name, replays, check)
    assert open_fds() == fds
    assert not maps_lines(str(tmp_path))


def test_a_gnu_unique_binding_makes_no_template(tmp_path: Path, replays: _Counting) -> None:
    lib = build_shared("warmf_unique", {"u.cpp": """
        template <class T> struct Box { static int value; };
        template <class T> int Box<T>::value = 5;
        extern "C" int get(void) { return Box<int>::value; }"""}, lang="c++", group=GROUP)
    _copy(lib, to=tmp_path)
    linker = Linker()
    for _ in range(4):
        assert _value(linker, tmp_path / lib.name, "get") == 5
    assert linker._templates == {} and replays.done == 0


def test_an_ifunc_of_another_module_resolving_outside_it(tmp_path: Path) -> None:
    """The resolver of a dependency's IFUNC returns a libc function: the address is no
    offset into the dependency, so a later load (other biases) must not reuse it."""
    prov = _lib("warmifx_prov", """
        #include <unistd.h>
        static void *resolve_f(void) { return (void *)getpid; }
        int f(void) __attribute__((ifunc("resolve_f")));""", soname="libwarmifx_prov.so")
    user = _lib("warmifx_user", "int f(void); int (*fp)(void) = f; "
                "void *fp_value(void) { return (void *)fp; }", deps=[prov], ldflags=RUNPATH)
    _copy(prov, user, to=tmp_path)
    getpid = ctypes.cast(ctypes.CDLL(None).getpid, ctypes.c_void_p).value
    linker = Linker()
    held = []
    for _ in range(4):  # held open: each load maps at other addresses
        ctx = LinkContext("ifunc")
        m = linker.load(ctx, str(tmp_path / user.name))
        held.append((ctx, m))
        assert m.function("fp_value", ctypes.c_void_p)() == getpid
    for ctx, m in held:
        m.close()
        ctx.close()


# -- initializers --------------------------------------------------------------------


@pytest.fixture
def hooked(tmp_path: Path) -> tuple[Path, Path, list[str], list[bool]]:
    """libtraced roots whose trace()/fail_init() come from a library the host loaded
    (served by the host policy, so the loads stay plain): (root, failing root, calls,
    [fail?])."""
    hook = _lib("warmhook", """
        void (*warm_trace)(const char *); void (*warm_fail)(void);
        void trace(const char *s) { if (warm_trace) warm_trace(s); }
        void fail_init(void) { if (warm_fail) warm_fail(); }""", soname="libwarmhook.so")
    host = ctypes.CDLL(str(hook))
    calls: list[str] = []
    failing = [False]

    def fail() -> None:
        if failing[0]:
            raise RuntimeError("initializer failed")

    keep = (wrap_callable(lambda s: calls.append(s.decode()), None, (ctypes.c_char_p,)),
            wrap_callable(fail, None, ()))
    for name, fn in zip(("warm_trace", "warm_fail"), keep, strict=True):
        ctypes.c_void_p.in_dll(host, name).value = ctypes.cast(fn, ctypes.c_void_p).value
    _KEEP.extend(keep)

    def traced(name: str, deps: list[Path], fail: bool = False) -> Path:
        return shared(f"traced_{name}", "traced", group=GROUP, deps=[*deps, hook],
                      cflags=[f'-DNAME="{name}"', "-Wl,--no-as-needed",
                              *(["-DFAIL"] if fail else [])],
                      ldflags=RUNPATH, soname=f"libtraced_{name}.so")

    dep = traced("warmdep", [])
    root = traced("warmroot", [dep])
    bad = traced("warmbad", [dep], fail=True)
    _copy(dep, root, bad, to=tmp_path)
    return tmp_path / root.name, tmp_path / bad.name, calls, failing


def test_deferred_initialization_of_a_replayed_load(
        hooked: tuple[Path, Path, list[str], list[bool]], replays: _Counting) -> None:
    root, _, calls, _ = hooked
    linker = Linker()
    snaps = []
    for lk in (linker, linker, linker, Linker()):
        if lk is not linker:
            clear_parse_cache()
        calls.clear()
        ctx = LinkContext("deferred")
        m = lk.load(ctx, str(root), init=False)
        assert calls == [] and m.state == "relocated"
        m.initialize()
        assert calls == ["init:warmdep", "init:warmroot"] and m.state == "initialized"
        snaps.append(_snapshot(ctx))
        m.close()
        ctx.close()
        assert calls[2:] == ["fini:warmroot", "fini:warmdep"]
    # init=False loads make no template: one plain load first
    ctx = LinkContext("plain")
    linker.load(ctx, str(root)).close()
    ctx.close()
    calls.clear()
    ctx = LinkContext("deferred")
    m = linker.load(ctx, str(root), init=False)
    assert replays.done == 1 and calls == []
    m.initialize()
    assert calls == ["init:warmdep", "init:warmroot"]
    assert _snapshot(ctx) == snaps[-1]
    m.close()
    ctx.close()


def test_a_failing_initializer_in_a_replayed_load(
        hooked: tuple[Path, Path, list[str], list[bool]], replays: _Counting) -> None:
    _, bad, calls, failing = hooked
    linker = Linker()
    for _ in range(3):
        ctx = LinkContext("fine")
        linker.load(ctx, str(bad)).close()
        ctx.close()
    assert replays.done == 1
    failing[0] = True
    fds = open_fds()
    outcomes = []
    for lk in (linker, Linker()):
        calls.clear()
        ctx = LinkContext("failing")
        with pytest.raises(RuntimeError, match="initializer failed"):
            lk.load(ctx, str(bad))
        outcomes.append(list(calls))
        assert len(ctx) == 0 and ctx.keys() == []
        assert open_fds() == fds
        assert not maps_lines("libtraced_warm")
        ctx.close()
    assert replays.done == 2
    assert outcomes[0] == outcomes[1] == ["init:warmdep", "init:warmbad", "fini:warmbad",
                                          "fini:warmdep"]
    failing[0] = False
    calls.clear()
    ctx = LinkContext("again")
    linker.load(ctx, str(bad)).close()
    ctx.close()
    assert replays.done == 3 and calls[:2] == ["init:warmdep", "init:warmbad"]


# -- failures, changes and cleanup ---------------------------------------------------


@pytest.fixture
def pair(tmp_path: Path) -> Path:
    """tmp/libwarmerr_top.so -> tmp/lib/libwarmerr_base.so (RUNPATH $ORIGIN/lib)."""
    (tmp_path / "lib").mkdir()
    base = _lib("warmerr_base", "int bv(void) { return 4; }", soname="libwarmerr_base.so")
    top = _lib("warmerr_top", "int bv(void); int tv(void) { return bv() + 1; }",
               deps=[base], ldflags=["-Wl,-rpath,$ORIGIN/lib", "-Wl,--enable-new-dtags"])
    shutil.copy(base, tmp_path / "lib" / base.name)
    _copy(top, to=tmp_path)
    return tmp_path / top.name


def _outcome(linker: Linker, root: Path) -> tuple[Any, ...]:
    """A load's result, or its error, with nothing of it left behind."""
    fds = open_fds()
    ctx = LinkContext("outcome")
    try:
        with linker.load(ctx, str(root)) as m:
            return ("ok", m.function("tv", ctypes.c_int)())
    except relink.RelinkError as exc:
        assert len(ctx) == 0
        return (type(exc).__name__, str(exc), getattr(exc, "__notes__", None))
    finally:
        ctx.close()
        assert open_fds() == fds
        assert not maps_lines(str(root.parent))


def _set_machine(path: Path, machine: int) -> None:
    data = bytearray(path.read_bytes())
    data[18:20] = machine.to_bytes(2, "little")
    path.unlink()
    path.write_bytes(data)


@pytest.mark.parametrize("change", ["dep-rewritten", "dep-other-machine", "dir-removed",
                                    "root-removed", "root-other-machine", "root-garbage"])
def test_a_changed_file_gives_what_the_stages_give(pair: Path, change: str,
                                                   replays: _Counting) -> None:
    linker = Linker()
    for _ in range(3):
        assert _outcome(linker, pair) == ("ok", 5)
    assert replays.done == 1
    base = pair.parent / "lib" / "libwarmerr_base.so"
    if change == "dep-rewritten":
        base.unlink()
        shutil.copy(_lib("warmerr_base2", "int bv(void) { return 6; }",
                         soname="libwarmerr_base.so"), base)
    elif change == "dep-other-machine":
        _set_machine(base, 183)  # EM_AARCH64: skipped by the search, as ld.so does
    elif change == "dir-removed":
        shutil.rmtree(base.parent)
    elif change == "root-removed":
        pair.unlink()
    elif change == "root-other-machine":
        _set_machine(pair, 183)
    else:
        pair.unlink()
        pair.write_bytes(b"garbage")
    replayed = _outcome(linker, pair)  # (checks that nothing stays open or mapped)
    if change == "dep-rewritten":
        assert replayed == ("ok", 7)
    else:
        assert replayed[0] != "ok"
    assert replayed == _outcome(Linker(), pair)
    assert replays.done == 1


def test_a_failure_while_relocating_a_replay_leaves_nothing(
        pair: Path, replays: _Counting, monkeypatch: pytest.MonkeyPatch) -> None:
    linker = Linker()
    for _ in range(3):
        assert _outcome(linker, pair) == ("ok", 5)
    real = warm.replay_module
    calls: list[Any] = []

    def failing(st: Any, program: Any, biases: Any) -> None:
        calls.append(st)
        if len(calls) == 2:  # the first module is relocated and protected already
            raise relink.RelocationError("injected", file=st.name)
        real(st, program, biases)

    monkeypatch.setattr(warm, "replay_module", failing)
    result = _outcome(linker, pair)  # (checks fds and mappings)
    assert result[0] == "RelocationError" and "injected" in result[1]
    monkeypatch.setattr(warm, "replay_module", real)
    assert _outcome(linker, pair) == ("ok", 5)
    assert replays.done == 2


def test_metadata_evicted_midway_through_a_replay(pair: Path, replays: _Counting,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The second module's metadata are parsed again while the replay maps: the mapped
    modules are rolled back, the load takes the stages, and the dead template goes."""
    linker = Linker()
    for _ in range(3):
        assert _outcome(linker, pair) == ("ok", 5)
    real = warm.map_image
    calls: list[Any] = []

    def evicting(src: Any, **kw: Any) -> Any:
        calls.append(src)
        if len(calls) == 2:
            clear_parse_cache()
        return real(src, **kw)

    monkeypatch.setattr(warm, "map_image", evicting)
    assert _outcome(linker, pair) == ("ok", 5)
    assert len(calls) == 2 and replays.done == 1
    assert str(pair) not in linker._templates  # its programs can never apply again
    assert _outcome(linker, pair) == ("ok", 5)  # the stages, with plans: recorded
    assert _outcome(linker, pair) == ("ok", 5)
    assert replays.done == 2 and len(calls) == 4


def test_parse_cache_eviction_by_other_files(pair: Path, tmp_path: Path,
                                             replays: _Counting) -> None:
    linker = Linker()
    for _ in range(3):
        assert _outcome(linker, pair) == ("ok", 5)
    other = _lib("warmevict", "int ev(void) { return 1; }")
    (tmp_path / "evict").mkdir()
    ctx = LinkContext("evict")
    for i in range(130):  # more files than the parse cache holds (128)
        copy = tmp_path / "evict" / f"lib{i}.so"
        shutil.copy(other, copy)
        ctx.load(str(copy)).close()
    ctx.close()
    assert _outcome(linker, pair) == ("ok", 5)
    for _ in range(2):
        assert _outcome(linker, pair) == ("ok", 5)
    assert replays.done >= 2


def test_a_full_template_table(tmp_path: Path, replays: _Counting) -> None:
    lib = _lib("warmtable", "int tv(void) { return 5; }")
    linker = Linker()
    roots = []
    for i in range(warm.MAX_TEMPLATES + 1):
        root = tmp_path / f"lib{i}.so"
        shutil.copy(lib, root)
        roots.append(root)
        for _ in range(2):
            assert _outcome(linker, root) == ("ok", 5)
    assert list(linker._templates) == [str(roots[-1])]  # full: cleared
    assert _outcome(linker, roots[0]) == ("ok", 5)
    assert _outcome(linker, roots[0]) == ("ok", 5)
    assert _outcome(linker, roots[-1]) == ("ok", 5)
    assert replays.done == 2


# -- threads -------------------------------------------------------------------------


def test_threads_loading_one_root(tmp_path: Path, replays: _Counting) -> None:
    base = _lib("warmthr_base", "__thread int tt = 3; int bd = 4; "
                "int bv(void) { return bd + tt; }", soname="libwarmthr_base.so")
    mid = _lib("warmthr_mid", "int bv(void); extern int bd; int *p = &bd; "
               "int mv(void) { return bv() + *p; }", deps=[base],
               soname="libwarmthr_mid.so", ldflags=RUNPATH)
    top = _lib("warmthr_top", "int mv(void); int (*fp)(void) = mv; "
               "int tv(void) { return fp() + 1; }", deps=[mid], ldflags=RUNPATH)
    _copy(base, mid, top, to=tmp_path)
    root = tmp_path / top.name
    with relink.load(root) as m:
        assert m.function("tv", ctypes.c_int)() == 12
    fds = open_fds()
    errors: list[Any] = []

    def worker() -> None:
        try:
            for _ in range(40):
                with relink.load(root) as m:
                    value = m.function("tv", ctypes.c_int)()
                    if value != 12:
                        errors.append(value)
        except BaseException as exc:  # (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert replays.done >= 100
    assert not maps_lines(str(tmp_path))
    assert open_fds() == fds
