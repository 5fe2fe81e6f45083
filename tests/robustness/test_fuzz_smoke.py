"""A short run of scripts/fuzz.py in CI (issue 9 §1): a few thousand executions of the
structure-aware fuzzer over every target, which must end with no finding and no leak.
The dedicated run (>= 1,000,000 executions) is ``python scripts/fuzz.py --execs 1000000
--coverage``; its numbers are in docs/robustness.md.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

SMOKE_EXECS = 3_000


@pytest.fixture(scope="module")
def fuzz(scripts_on_path: Path) -> Any:
    import fuzz as fuzz_mod

    return fuzz_mod


@pytest.fixture(scope="module")
def seeds(scripts_on_path: Path) -> list[tuple[str, bytes]]:
    from fuzz_seeds import load_seeds

    out = load_seeds()
    names = {n for n, _ in out}
    assert {"seedlib-gnu.so", "seedobj.o", "libc.so.6", "elfgen-basic.so",
            "elfgen-aarch64.so"} <= names, names
    return out


def test_smoke_run_finds_nothing(fuzz: Any, seeds: list[tuple[str, bytes]],
                                 tmp_path: Path) -> None:
    stats = fuzz.fuzz_loop(seeds, execs=SMOKE_EXECS, seed=20261126, out=tmp_path,
                           check_every=1_000, timeout=30)
    assert stats.execs == SMOKE_EXECS
    assert stats.findings == {}, "\n".join(stats.findings.values())
    assert stats.leaks == []
    per_target: dict[str, int] = {}
    for key, n in stats.outcomes.items():
        per_target[key.split(":")[0]] = per_target.get(key.split(":")[0], 0) + n
    assert set(per_target) == {"parse", "info", "deps", "scan", "plan", "load", "object"}
    # Both outcomes occur: mutants that are rejected and mutants that still load.
    assert stats.outcomes.get("load:ok", 0) > 0
    assert stats.outcomes.get("parse:ElfParseError", 0) > 0


def test_the_harness_reports_a_non_relink_exception(fuzz: Any, seeds: list[tuple[str, bytes]],
                                                    tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The smoke test can fail: a parser bug (here injected) becomes a saved finding."""
    import relink.elf.dynamic as dynamic

    real = dynamic.read_cstr

    def buggy(table: Any, offset: int, label: str, what: str) -> str:
        text = real(table, offset, label, what)
        if text == "libc.so.6":  # most seeds need libc: the bug is hit early
            raise IndexError("injected parser bug")
        return text

    monkeypatch.setattr(dynamic, "read_cstr", buggy)
    stats = fuzz.fuzz_loop(seeds, execs=300, seed=5, out=tmp_path, targets=("parse",),
                           check_every=0)
    assert any(k.startswith("IndexError@") for k in stats.findings), stats.findings
    saved = list((tmp_path / "findings").glob("exception-*.elf"))
    assert saved and saved[0].with_suffix(".txt").read_text().startswith("IndexError@")
    assert fuzz.replay([str(saved[0])]) >= 1  # --replay reproduces it


def test_mutator_knows_the_structures(scripts_on_path: Path,
                                      seeds: list[tuple[str, bytes]]) -> None:
    from fuzz_mutate import Mutator, locate_fields

    data = dict(seeds)["seedlib-gnu.so"]
    kinds = {k for k, _, _ in locate_fields(bytearray(data))}
    assert {"ehdr", "phdr", "shdr", "dyn_tag", "dyn_val", "sym", "reloc", "gnu_hash",
            "verdef", "versym", "note"} <= kinds
    relr = dict(seeds).get("seedlib-relr.so")
    if relr is not None:
        assert "relr" in {k for k, _, _ in locate_fields(bytearray(relr))}
    a = Mutator(random.Random(1)).mutate(data, [data])
    b = Mutator(random.Random(1)).mutate(data, [data])
    assert a == b and a != data  # deterministic for a seed, and it changes something
    # Tolerant of garbage: never raises, whatever it is given.
    m = Mutator(random.Random(2))
    for blob in (b"", b"\x7fELF", bytes(64), random.Random(3).randbytes(300)):
        locate_fields(bytearray(blob))
        m.mutate(blob or b"\0", [])


def test_guards_are_lifted_after_a_run(fuzz: Any, seeds: list[tuple[str, bytes]],
                                       seedlib: Path) -> None:
    """The fuzzer's PROT_EXEC / executor traps must not outlive it (native loads later
    in the same process need both)."""
    import ctypes

    import relink

    fuzz.fuzz_loop(seeds[:3], execs=20, seed=1, check_every=0)
    with relink.load(seedlib, context=relink.LinkContext("after-fuzz")) as mod:
        assert mod.function("seed_ctor_ran", ctypes.c_int)() == 1


def test_native_smoke_run_in_a_child(scripts_on_path: Path, tmp_path: Path) -> None:
    """The opt-in native target maps and relocates mutants in the process (running none
    of their code): a short run in a child process, where a crash is a finding rather
    than the end of the test session. It found the PT_GNU_RELRO and unreadable
    .eh_frame crashes (tests in test_findings.py / elfgen_cases.py)."""
    import subprocess
    import sys

    res = subprocess.run([sys.executable, str(scripts_on_path / "fuzz.py"), "--native",
                          "--execs", "1500", "--check-every", "500", "--seed", "77",
                          "--out", str(tmp_path)], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "executions: 1500" in res.stdout and "findings: 0" in res.stdout
