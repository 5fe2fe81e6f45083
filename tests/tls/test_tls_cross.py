"""TLS across modules: relink provider -> relink consumer, host provider -> relink
consumer, dynamic TLSDESC and its register contract, and static TLS exhaustion."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from tlshelp import MODELS, src, tls_module, tls_user

import relink
from relink.runtime.tls import NativeTls
from support.build import build_shared

pytestmark = pytest.mark.needs_cc
I, P = ctypes.c_int, ctypes.c_void_p
USER_MODELS = ["desc", "gd", "ie"]  # local-dynamic cannot reach another module's TLS


def in_thread(fn: object) -> object:
    box: list[object] = []
    t = threading.Thread(target=lambda: box.append(fn()))  # type: ignore[operator]
    t.start()
    t.join()
    return box[0]


@pytest.mark.parametrize("user_model", USER_MODELS)
def test_consumer_reads_provider_tls(user_model: str) -> None:
    """A consumer built with each model reads `counter` of a GD provider (both relink)."""
    provider = tls_module("gd")
    user = tls_user(user_model, provider, f"{user_model}_on_gd")
    with relink.load(str(user)) as m:
        prov = m.dependencies[0]
        assert not prov.is_host
        user_get = m.function("user_get", I)
        user_set = m.function("user_set", None, I)
        user_addr = m.function("user_addr", P)
        get_counter = prov.function("get_counter", I)
        assert user_get() == 5
        user_set(17)
        assert get_counter() == 17
        assert user_addr() == prov.tls_address("counter")
        assert in_thread(lambda: (user_get(), get_counter())) == (5, 5)
        assert in_thread(lambda: user_addr() == prov.tls_address("counter")) is True


@pytest.fixture(scope="module")
def host_tls() -> dict[str, ctypes.CDLL]:
    """Two host-loaded (ctypes.CDLL) TLS libraries: static (IE-built) and dynamic."""
    libs = {}
    for kind, flags in (("static", MODELS["ie"]), ("dynamic", MODELS["gd"])):
        path = build_shared(f"hosttls_{kind}", {"hosttls.c": src("hosttls.c")}, group="tls",
                            cflags=["-O2", *flags], soname=f"libhosttls_{kind}.so")
        libs[kind] = ctypes.CDLL(str(path))
        libs[kind].host_addr.restype = P
    return libs


@pytest.mark.parametrize("kind", ["static", "dynamic"])
@pytest.mark.parametrize("user_model", USER_MODELS)
def test_host_defined_tls(host_tls: dict[str, ctypes.CDLL], kind: str,
                          user_model: str) -> None:
    lib = host_tls[kind]
    provider = Path(lib._name)
    user = tls_user(user_model, provider, f"{user_model}_on_host_{kind}")
    if user_model == "ie" and kind == "dynamic":
        with pytest.raises(relink.TlsError, match="dynamic TLS"):
            relink.load(str(user))
        return
    with relink.load(str(user)) as m:
        assert m.dependencies[0].is_host
        user_get = m.function("user_get", I)
        user_set = m.function("user_set", None, I)
        user_addr = m.function("user_addr", P)
        lib.host_set(41)
        assert user_get() == 41
        user_set(43)
        assert lib.host_get() == 43
        assert user_addr() == lib.host_addr()
        assert in_thread(lambda: (user_get(), user_addr() == lib.host_addr())) == (41, True)


def test_dynamic_tlsdesc_values_and_threads() -> None:
    """TLSDESC through the dynamic resolver (no static TLS used)."""
    with relink.load(str(tls_module("desc")), tls=NativeTls(static_tlsdesc=False)) as m:
        get_counter = m.function("get_counter", I)
        set_counter = m.function("set_counter", None, I)
        assert m.function("get_global_ptr", ctypes.c_char_p)() == b"global"
        assert get_counter() == 5
        set_counter(8)
        assert get_counter() == 8
        assert in_thread(get_counter) == 5
        assert m.function("counter_addr", P)() == m.tls_address("counter")


@pytest.mark.parametrize("static", [True, False], ids=["static", "dynamic"])
def test_tlsdesc_resolver_preserves_registers(static: bool) -> None:
    """Only rax may change across a TLSDESC call: GPRs and ymm0-15 are checked."""
    path = build_shared("tlsregs", {"tlsregs.c": src("tlsregs.c")}, group="tls",
                        cflags=["-O2", "-mavx", "-mno-red-zone", "-mtls-dialect=gnu2"])
    with relink.load(str(path), tls=NativeTls(static_tlsdesc=static)) as m:
        probe = m.function("tlsdesc_probe", ctypes.c_long, P, P, P)
        vin = (ctypes.c_ubyte * 512)(*[(i * 7 + 3) & 0xFF for i in range(512)])
        vout = (ctypes.c_ubyte * 512)()
        gout = (ctypes.c_long * 9)()
        for _ in range(2):  # the first call allocates the block (malloc runs)
            assert probe(vin, vout, gout) == 1234
            assert list(gout[:8]) == [0x1111 * k for k in range(1, 9)]
            assert bytes(vout) == bytes(vin)
        assert in_thread(lambda: probe(vin, vout, gout)) == 1234
        assert bytes(vout) == bytes(vin)


def test_static_tls_exhaustion_names_the_tunable() -> None:
    big = build_shared("bigie", {"bigie.c": src("bigie.c")}, group="tls", cflags=["-O2"])
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(relink.TlsError) as info:
        relink.load(str(big))
    assert info.value.tunable == "glibc.rtld.optional_static_tls"
    assert "glibc.rtld.optional_static_tls" in str(info.value)
    assert set(os.listdir("/proc/self/fd")) <= before  # carrier memfd closed again
    # ... and the advice works: with the tunable raised the same library loads.
    code = ("import relink, ctypes, sys; m = relink.load(sys.argv[1]); "
            "print(m.function('big_first', ctypes.c_int)())")
    env = dict(os.environ, GLIBC_TUNABLES="glibc.rtld.optional_static_tls=2000000")
    out = subprocess.run([sys.executable, "-c", code, str(big)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"


def test_dtpmod_dtpoff_slots_hold_module_id_and_offset() -> None:
    """relink-study §4.3 relocation::applies_dynamic_relocations: each DTPMOD64 slot holds
    the provider's glibc module id, each DTPOFF64 slot the symbol's value + addend."""
    from relink.arch import host_spec
    from relink.elf import ElfFile
    from relink.runtime.tls import native_tls

    provider = tls_module("gd")
    user = tls_user("gd", provider, "gd_on_gd")
    spec = host_spec()
    with ElfFile(str(user)) as elf:
        syms = elf.symbols
        assert syms is not None
        tables, _ = elf.relocation_tables()
        entries = [(spec.rtype_name(t.types[k]), t.offsets[k], syms.names[t.syms[k]],
                    t.addends[k] if t.addends else 0)
                   for t in tables for k in range(len(t))
                   if spec.rtype_name(t.types[k]) in ("R_X86_64_DTPMOD64",
                                                      "R_X86_64_DTPOFF64")]
    assert {e[0] for e in entries} == {"R_X86_64_DTPMOD64", "R_X86_64_DTPOFF64"}
    with relink.load(str(user)) as m:
        prov = m.dependencies[0]
        modid = native_tls().carrier(prov._state).modid
        psyms = prov._state.image.symbols
        for kind, off, name, addend in entries:
            slot = ctypes.c_uint64.from_address(m.base + off).value
            if kind == "R_X86_64_DTPMOD64":
                assert slot == modid
            else:
                assert slot == psyms.values[psyms.find(name)] + addend


@pytest.mark.parametrize("model", ["desc", "gd", "ie"])
def test_undefined_weak_tls_reference(model: str) -> None:
    """As ld.so: the module loads; with TLSDESC the variable's address is NULL."""
    lib = build_shared(f"weak_{model}", {"weak.c": src("weak.c")}, group="tls",
                       cflags=["-O2", *MODELS[model]])
    with relink.load(str(lib)) as m:
        assert m.function("get_here", I)() == 4
        if model == "desc":
            assert m.function("has_maybe", I)() == 0
            assert in_thread(m.function("has_maybe", I)) == 0


def test_program_with_local_exec_tls_is_refused_in_process() -> None:
    """Local-exec offsets of a program would hit the host's own TLS: refuse, and point
    to relink.execute(), which runs it correctly in its own process."""
    from support.build import build_executable

    prog = build_executable("leprog", {"leprog.c": src("leprog.c")}, group="tls",
                            cflags=["-O0"])
    with pytest.raises(relink.TlsError, match="relink.execute"):
        relink.load(str(prog))
    with pytest.raises(relink.TlsError, match="local-exec"):
        relink.run_main(str(prog), ["leprog"])
    assert relink.execute(str(prog), ["leprog"]) == 42
