"""Self-tests of the cached fixture compiler (tests/support/build.py)."""

from __future__ import annotations

import ctypes
import subprocess
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from support import build

pytestmark = [
    pytest.mark.needs_cc,
    pytest.mark.skipif(not build.have_cc(), reason="needs gcc"),
]


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the cache at a fresh directory so every test starts cold."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("RELINK_FIXTURE_CACHE", str(cache))
    return cache


def _source(value: int) -> str:
    return f"int value(void) {{ return {value}; }}\n"


def test_cache_dir_default_and_override(
    private_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert build.cache_dir() == private_cache
    monkeypatch.delenv("RELINK_FIXTURE_CACHE")
    assert build.cache_dir() == Path(build.__file__).resolve().parents[2] / ".fixture-cache"


def test_second_build_is_a_cache_hit(private_cache: Path) -> None:
    first = build.build_shared("hit", _source(1), group="g")
    stamp = first.with_name(first.name + ".stamp")
    before = (first.stat().st_mtime_ns, first.stat().st_ino, stamp.read_text())
    second = build.build_shared("hit", _source(1), group="g")
    assert second == first and second.is_relative_to(private_cache)
    assert (second.stat().st_mtime_ns, second.stat().st_ino, stamp.read_text()) == before
    assert build.read_bytes(second)[:4] == b"\x7fELF"


def test_changes_rebuild() -> None:
    lib = build.build_shared("chg", _source(1), group="g")
    ino = lib.stat().st_ino
    assert build.build_shared("chg", _source(2), group="g") == lib
    assert lib.stat().st_ino != ino  # replaced, not rewritten in place
    assert ctypes.CDLL(str(lib)).value() == 2
    ino = lib.stat().st_ino
    build.build_shared("chg", _source(2), group="g", cflags=["-O2"])
    assert lib.stat().st_ino != ino


def test_ungrouped_builds_do_not_collide() -> None:
    one = build.build_shared("same", _source(1))
    two = build.build_shared("same", _source(2))
    assert one != two and one.name == two.name == "libsame.so"
    assert ctypes.CDLL(str(one)).value() == 1 and ctypes.CDLL(str(two)).value() == 2


def test_group_chain_with_origin_and_dep_hashes() -> None:
    tag = uuid.uuid4().hex[:6]  # distinct SONAMEs: glibc reuses a loaded SONAME
    base = build.build_shared(
        f"base{tag}", "int base(void) { return 1; }", group="chain", soname=f"libbase{tag}.so"
    )
    mid = build.build_shared(
        f"mid{tag}",
        "int base(void); int mid(void) { return base() + 1; }",
        group="chain",
        deps=[base],
        ldflags=["-Wl,-rpath,$ORIGIN"],
    )
    assert mid.parent == base.parent == build.group_dir("chain")
    dyn = subprocess.run(["readelf", "-d", str(mid)], capture_output=True, text=True).stdout
    assert f"[libbase{tag}.so]" in dyn and "[$ORIGIN]" in dyn
    assert ctypes.CDLL(str(mid)).mid() == 2
    ino = mid.stat().st_ino
    build.build_shared(
        f"base{tag}", "int base(void) { return 5; }", group="chain", soname=f"libbase{tag}.so"
    )
    build.build_shared(
        f"mid{tag}",
        "int base(void); int mid(void) { return base() + 1; }",
        group="chain",
        deps=[base],
        ldflags=["-Wl,-rpath,$ORIGIN"],
    )
    assert mid.stat().st_ino != ino  # the dependency's content is part of the key


def test_no_runpath_by_default() -> None:
    base = build.build_shared("b2", "int b(void) { return 1; }", group="g")
    lib = build.build_shared(
        "m2", "int b(void); int m(void) { return b(); }", group="g", deps=[base]
    )
    dyn = subprocess.run(["readelf", "-d", str(lib)], capture_output=True, text=True).stdout
    assert "RUNPATH" not in dyn and "RPATH" not in dyn and "[libb2.so]" in dyn


def test_failure_reports_command_and_stderr() -> None:
    with pytest.raises(build.FixtureBuildError) as err:
        build.build_shared("broken", "int broken(void) { return }\n")
    assert err.value.cmd[0] == "gcc" and "-shared" in err.value.cmd
    assert "error" in err.value.stderr and err.value.returncode != 0
    assert "broken.c" in str(err.value)


def test_missing_compilers() -> None:
    assert not build.have_cc("no-such-compiler-relink")
    with pytest.raises(build.FixtureBuildError):
        build.build_shared("x", _source(1), cc="no-such-compiler-relink")
    if not build.have_cc("zig"):
        with pytest.raises(build.FixtureBuildError, match="ziglang"):
            build.compiler_command("zig", "aarch64-linux-musl")
    else:  # pragma: no cover - depends on the machine
        assert build.compiler_command("zig", "x86_64-linux-gnu")[-2:] == [
            "-target",
            "x86_64-linux-gnu",
        ]


def test_object_archive_executable_and_cxx(tmp_path: Path) -> None:
    obj = build.build_object(
        "unit", "int unit_value = 3; int unit(void) { return unit_value; }", cflags=["-O2", "-fPIC"]
    )
    assert obj.name == "unit.o"
    assert (
        "REL (Relocatable file)"
        in subprocess.run(["readelf", "-h", str(obj)], capture_output=True, text=True).stdout
    )
    archive = build.build_archive("units", [obj])
    listing = subprocess.run(["ar", "t", str(archive)], capture_output=True, text=True).stdout
    assert listing.split() == ["unit.o"]
    for pie, static, kind in ((True, False, "DYN"), (False, False, "EXEC"), (False, True, "EXEC")):
        exe = build.build_executable(
            f"prog{pie}{static}",
            {"main.c": '#include "v.h"\nint main(void) { return V; }\n', "v.h": "#define V 7\n"},
            pie=pie,
            static=static,
        )
        assert subprocess.run([str(exe)]).returncode == 7
        head = subprocess.run(["readelf", "-h", str(exe)], capture_output=True, text=True).stdout
        assert f"Type:                              {kind}" in head
    if build.have_cc(lang="c++"):
        cxx = build.build_shared(
            "cxx",
            '#include <vector>\nextern "C" int n(void) '
            "{ return (int)std::vector<int>(3).size(); }\n",
            lang="c++",
        )
        assert ctypes.CDLL(str(cxx)).n() == 3


def _build_in_worker(value: int) -> tuple[str, int]:
    lib = build.build_shared("race", _source(value), group="race")
    return str(lib), lib.stat().st_ino


def test_concurrent_builders_agree() -> None:
    with ProcessPoolExecutor(4) as pool:
        results = list(pool.map(_build_in_worker, [9] * 8))
    assert len({path for path, _ in results}) == 1
    assert len({ino for _, ino in results}) == 1  # built once, then cache hits
    assert ctypes.CDLL(results[0][0]).value() == 9
    leftovers = [p.name for p in Path(results[0][0]).parent.iterdir() if p.name.startswith(".b")]
    assert leftovers == []
