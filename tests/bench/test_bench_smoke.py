"""Smoke tests of the benchmark suite: every benchmark function runs with tiny counts and
returns sane, structured results. No timing is asserted (timings live in BENCHMARKS.md).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from bench_helpers import BENCH_DIR, bench_script

from relink import ElfFile, bench
from relink.cli import main as cli_main
from relink.demo import build_chain
from support.build import have_cc

pytestmark = pytest.mark.skipif(not have_cc(), reason="needs a C compiler")


def sane(results: list[bench.Result], ids: set[str]) -> None:
    assert results
    for r in results:
        assert r.target_id in ids
        assert math.isfinite(r.relink_us) and math.isfinite(r.baseline_us)
        if r.unit == "us" and "runs" not in r.extra:  # process deltas may be < 0 (noise)
            assert r.relink_us > 0 and r.baseline_us > 0
        assert r.met in (None, True, False)
        d = r.as_dict()
        assert json.loads(json.dumps(d, default=str))["name"] == r.name
    table = bench.format_table(results)
    for r in results:
        assert r.name in table


def test_interleave_rotates_and_times_every_side() -> None:
    calls: list[str] = []
    seen: list[int] = []
    out = bench.interleave({"a": lambda i: calls.append("a"), "b": lambda i: calls.append("b")},
                           4, before=seen.append)
    assert {k: len(v) for k, v in out.items()} == {"a": 4, "b": 4}
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert seen == [0, 1, 2, 3]


def test_t1_chain_load() -> None:
    results = bench.bench_chain_load(3)
    sane(results, {"T1"})
    assert results[0].target == 1.0
    assert results[0].extra["dlopen_unloaded"] is True


def test_t3_generated_library_counts(tmp_path: Path) -> None:
    path = bench.build_many_relocs(300, 50, 20, directory=tmp_path)
    counts = bench.relocation_counts(path)
    assert counts["relative"] >= 300 and counts["symbolic"] >= 50 and counts["exports"] >= 20
    results = bench.bench_big_library(2, relative=300, symbolic=50, exports=20)
    sane(results, {"T3"})
    assert results[0].extra["relocations"]["relative"] >= 300


def test_soname_copy_renames(tmp_path: Path) -> None:
    base = build_chain() / "libbase.so"
    out = bench.soname_copy(base.read_bytes(), "libbase.so", "0042", tmp_path / "x.so")
    with ElfFile(out) as elf:
        assert elf.dynamic is not None and elf.dynamic.soname == "libbas0042"
    with pytest.raises(ValueError, match="not found"):
        bench.soname_copy(base.read_bytes(), "libnothere.so", "0001", tmp_path / "y.so")


def test_t4_real_libraries() -> None:
    mod = bench_script("real_libraries")
    results, missing = mod.bench_real_libraries(2, sonames=("libz.so.1", "libnot_here.so.7"))
    assert "libnot_here.so.7" in missing
    if "libz.so.1" in missing:
        pytest.skip("libz.so.1 is not installed")
    sane(results, {"T4"})
    assert results[0].target == 2.0


def test_t5_lookup() -> None:
    results = bench.bench_lookup(50)
    sane(results, {"T5"})
    assert [r.target for r in results] == [0.2, 0.1, 1.2]


def test_t2_t7_processes_and_import_profile() -> None:
    results = bench.bench_processes(1)
    sane(results, {"T2", "T7"})
    t7 = results[1]
    assert t7.absolute and t7.target == 30000.0
    assert results[0].extra["runs"] == 1 and "import relink" in results[0].extra["wall_delta_us"]
    rows = bench.import_profile(1, 50)
    assert any(mod == "relink" for mod, _, _ in rows)
    assert all(s >= 0 and c >= s for _, s, c in rows)


def test_t6_cle_reports_when_missing() -> None:
    mod = bench_script("cle_chain")
    results, facts = mod.bench_cle(1, candidates=["/nonexistent/python"])
    assert results == []
    assert "not installed" in str(facts["cle"]) and "bitstring<5" in str(facts["cle"])


def test_t6_cle_side_by_side() -> None:
    mod = bench_script("cle_chain")
    py = mod.cle_python()
    if py is None:
        pytest.skip("CLE is not installed in any interpreter (benchmarks/cle_chain.py)")
    results, facts = mod.bench_cle(1, python=py)
    sane(results, {"T6"})
    assert "libbase.so" in str(facts["CLE objects (forced)"])


def test_t8_memory() -> None:
    mod = bench_script("memory")
    per = mod.per_library(2)
    sane(per, {"T8"})
    assert [r.unit for r in per] == ["maps", "KiB", "fds"]
    grow, samples = mod.cycles(6, 3)
    assert grow[0].extra["warm-up cycles"] == 200
    assert [s[0] for s in samples] == [0, 3, 6]
    assert [r.unit for r in grow] == ["maps", "fds", "KiB"]
    assert grow[0].relink_us == samples[-1][1] - samples[0][1]


def test_cli_bench_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["bench", "--quick", "--only", "T5", "--json"]) == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert [r["id"] for r in doc["results"]] == ["T5", "T5", "T5"]
    assert doc["machine"]["nproc"] >= 1
    assert "T5 lookup" in captured.err  # progress on stderr


def test_cli_bench_table_and_bad_stage(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["bench", "--quick", "--only", "T1", "--rounds", "3"]) == 0
    out = capsys.readouterr().out
    assert "chain load+call+close (file)" in out and "targets met" in out
    assert cli_main(["bench", "--only", "T9"]) == 2
    assert "unknown stage" in capsys.readouterr().err


def test_script_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "lookup.json"
    proc = subprocess.run([sys.executable, str(BENCH_DIR / "lookup.py"), "--quick",
                           "--json", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "symbol lookup hit" in proc.stdout
    doc = json.loads(out.read_text())
    assert doc["machine"]["cpu"] is not None and len(doc["results"]) == 3


def test_syscall_count() -> None:
    import shutil

    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    mod = bench_script("syscalls")
    counts = mod.count("relink", str(build_chain() / "libleaf.so"), 2)
    # three libraries opened and mapped per cycle: the window between the markers is right
    assert counts["openat"] == 6 and counts["mmap"] >= 6
