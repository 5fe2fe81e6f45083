"""Foreign-ISA fixture helpers: the leaf -> middle -> base chain cross-compiled with zig.

Built at test time with ``python -m ziglang cc -target <triple>`` through the cached
fixture compiler (tests/support/build.py), ``-nostdlib``: the chain needs no libc, so
nothing from the host (or a target sysroot) is involved and every symbol the images
import is resolved by relink inside the chain or by the emulator's runtime traps
(``__tls_get_addr``, ``__aeabi_read_tp``, TLSDESC).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from relink.arch import spec_named
from support.build import (
    FixtureBuildError,
    build_executable,
    build_object,
    build_shared,
    cache_dir,
)

FIXTURES = Path(__file__).parent / "fixtures"
EMULATED = ("x86", "x86_64", "aarch64", "arm", "riscv32", "riscv64")
ALL_ISAS = (*EMULATED, "loongarch64")
HAVE_ZIG = importlib.util.find_spec("ziglang") is not None
HAVE_UNICORN = importlib.util.find_spec("unicorn") is not None


def source(name: str) -> str:
    return (FIXTURES / name).read_text()


def cflags(arch: str) -> list[str]:
    flags = ["-O1", "-fno-builtin", "-nostdlib"]
    if arch == "loongarch64":
        flags.append("-mcpu=generic_la64")  # QEMU 7.2 lacks the default CPU's extensions
    return flags


def build_chain(arch: str, *, relr: bool = False, thumb: bool = False) -> dict[str, Path]:
    """Build libbase.so, libmiddle.so, libleaf.so for `arch`; returns name -> path.

    With `relr`, the objects are linked by zig's ld.lld with
    ``--pack-dyn-relocs=relr`` (zig cc does not pass that option through), so RELATIVE
    relocations land in DT_RELR. With `thumb` (arm), the chain is Thumb-2 code.
    """
    if relr:
        return _build_relr_chain(arch)
    if not HAVE_ZIG:
        pytest.skip("the ziglang package is not installed (pip install ziglang)")
    spec = spec_named(arch)
    assert spec is not None
    target = spec.zig_target
    group = "foreign-chain"
    if thumb:  # zig ignores -mthumb; the thumb triple selects Thumb-2 code
        target, group = "thumb-linux-gnueabihf", "foreign-chain-thumb"
    common = {"cc": "zig", "target": target, "group": group, "cflags": cflags(arch)}
    try:
        base = build_shared("base", {"base.c": source("base.c"), "base.map": source("base.map")},
                            ldflags=["-nostdlib", "-Wl,--version-script=base.map"],
                            soname="libbase.so", **common)
        middle = build_shared("middle", source("middle.c"), deps=[base], soname="libmiddle.so",
                              ldflags=["-nostdlib", "-Wl,-rpath,$ORIGIN"], **common)
        leaf = build_shared("leaf", source("leaf.c"), deps=[middle, base], soname="libleaf.so",
                            ldflags=["-nostdlib", "-Wl,-rpath,$ORIGIN"], **common)
    except FixtureBuildError as exc:
        pytest.fail(f"cross-compiling the {arch} chain failed: {exc}")
    return {"base": base, "middle": middle, "leaf": leaf}


# musl triples compile non-PIC objects (zig refuses -fno-PIC for *-linux-gnu targets).
MUSL = {"x86": "x86-linux-musl", "x86_64": "x86_64-linux-musl",
        "aarch64": "aarch64-linux-musl", "arm": "arm-linux-musleabihf",
        "riscv64": "riscv64-linux-musl", "riscv32": "riscv32-linux-musl",
        "loongarch64": "loongarch64-linux-musl"}


def build_copy_exe(arch: str, base: Path) -> Path:
    """A non-PIE ET_EXEC over libbase whose ``base_data`` is a COPY relocation.

    Compiled -fno-PIC by the cached fixture compiler, linked with zig's ld.lld next to
    libbase (so DT_RUNPATH $ORIGIN finds it); relinked only when an input changed.
    """
    obj = build_object("exe", source("exe.c"), cc="zig", target=MUSL[arch],
                       cflags=["-O1", "-fno-builtin", "-fno-PIC"], group="foreign-exe")
    out = base.parent / "exe"
    stamp = base.parent / "exe.stamp"
    key = hashlib.sha256(obj.read_bytes() + base.read_bytes()).hexdigest()
    if out.exists() and stamp.exists() and stamp.read_text() == key:
        return out
    tmp = base.parent / f".exe.{os.getpid()}"
    cmd = [sys.executable, "-m", "ziglang", "ld.lld", "-o", str(tmp), str(obj), str(base),
           "-e", "_start", "--export-dynamic", "--allow-shlib-undefined", "-rpath", "$ORIGIN"]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise FixtureBuildError(cmd, res.stderr, res.returncode)
    os.replace(tmp, out)
    stamp.write_text(key)
    return out


def _lld(out: Path, args: list[str], inputs: list[Path]) -> Path:
    """Link with zig's ld.lld into `out` unless a stamp says the inputs are unchanged."""
    stamp = out.parent / f"{out.name}.stamp"
    digest = hashlib.sha256(repr(args).encode())
    for p in inputs:
        digest.update(p.read_bytes())
    key = digest.hexdigest()
    if out.exists() and stamp.exists() and stamp.read_text() == key:
        return out
    tmp = out.parent / f".{out.name}.{os.getpid()}"
    cmd = [sys.executable, "-m", "ziglang", "ld.lld", "-o", str(tmp), *args,
           *map(str, inputs)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise FixtureBuildError(cmd, res.stderr, res.returncode)
    os.replace(tmp, out)
    stamp.write_text(key)
    return out


def _build_relr_chain(arch: str) -> dict[str, Path]:
    spec = spec_named(arch)
    assert spec is not None
    flags = [*cflags(arch), "-fPIC"]
    objs = {n: build_object(f"relr_{n}", source(f"{n}.c"), cc="zig", target=spec.zig_target,
                            cflags=flags, group="foreign-relr-objects")
            for n in ("base", "middle", "leaf")}
    out_dir = objs["base"].parent.parent / f"foreign-chain-relr-{arch}"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "base.map").write_text(source("base.map"))
    common = ["-shared", "--pack-dyn-relocs=relr", "--allow-shlib-undefined",
              "-rpath", "$ORIGIN"]
    try:
        base = _lld(out_dir / "libbase.so", [*common, "-soname", "libbase.so",
                                             f"--version-script={out_dir / 'base.map'}"],
                    [objs["base"]])
        middle = _lld(out_dir / "libmiddle.so", [*common, "-soname", "libmiddle.so"],
                      [objs["middle"], base])
        leaf = _lld(out_dir / "libleaf.so", [*common, "-soname", "libleaf.so"],
                    [objs["leaf"], middle, base])
    except FixtureBuildError as exc:
        pytest.fail(f"linking the {arch} RELR chain failed: {exc}")
    return {"base": base, "middle": middle, "leaf": leaf}


# Debian cross glibc packages (Architecture: all) per ISA: package, directory inside.
CROSS_GLIBC = {"aarch64": ("libc6-arm64-cross", "aarch64-linux-gnu"),
               "arm": ("libc6-armhf-cross", "arm-linux-gnueabihf"),
               "riscv64": ("libc6-riscv64-cross", "riscv64-linux-gnu"),
               "x86": ("libc6-i386-cross", "i686-linux-gnu"),
               "x86_64": ("libc6-amd64-cross", "x86_64-linux-gnu")}
GLIBC_VERSION = "2.36"  # bookworm's cross packages; fixtures are linked against it


def cross_glibc(arch: str) -> Path | None:
    """The lib directory of the target glibc for `arch`, unpacked into the fixture cache
    (``apt-get download`` + ``dpkg -x``, as .ci/run does); None when unavailable."""
    package, triple = CROSS_GLIBC[arch]
    root = Path(os.environ.get("RELINK_CROSS_GLIBC_ROOT", cache_dir() / "cross-glibc"))
    libdir = root / "usr" / triple / "lib"
    if (libdir / "libc.so.6").exists():
        return libdir
    if shutil.which("apt-get") and shutil.which("dpkg"):
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            subprocess.run(["apt-get", "download", package], cwd=tmp, capture_output=True,
                           check=False, timeout=600)
            for deb in Path(tmp).glob(f"{package}_*.deb"):
                subprocess.run(["dpkg", "-x", str(deb), str(root)], capture_output=True,
                               check=False, timeout=600)
    return libdir if (libdir / "libc.so.6").exists() else None


def build_uselibc(arch: str) -> Path:
    """libuselibc.so for `arch`, linked against glibc GLIBC_VERSION by zig."""
    spec = spec_named(arch)
    assert spec is not None
    return build_shared("uselibc", source("uselibc.c"), cc="zig",
                        target=f"{spec.zig_target}.{GLIBC_VERSION}", cflags=["-O1"],
                        group="foreign-libc")


def build_prog(arch: str) -> Path:
    """A PIE program using the target's glibc (argv, atoi, strdup, printf)."""
    spec = spec_named(arch)
    assert spec is not None
    return build_executable("prog", source("prog.c"), cc="zig",
                            target=f"{spec.zig_target}.{GLIBC_VERSION}", cflags=["-O1"],
                            group="foreign-libc")
