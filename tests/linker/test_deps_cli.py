"""``relink deps``: tree, --json, --dot; where each edge was found and why."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from relink.cli import main
from relink.linker.deps import dependency_graph

pytestmark = pytest.mark.needs_cc


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    rc = main(["deps", *args])
    return rc, capsys.readouterr().out


def test_tree_says_why(capsys: pytest.CaptureFixture[str], root: Path) -> None:
    rc, out = run(capsys, str(root))
    assert rc == 0
    lines = out.splitlines()
    assert lines[0] == f"libroot.so ({root})"
    assert lines[1] == (f"└── libdependent.so => {root.parent}/libdependent.so  "
                        "[RUNPATH of libroot.so]")
    assert lines[2] == (f"    └── libprovider.so => {root.parent}/libprovider.so  "
                        "[RUNPATH of libdependent.so]")


def test_rpath_inherited_and_host(capsys: pytest.CaptureFixture[str], rpath_root: Path,
                                  libc_user: Path) -> None:
    rc, out = run(capsys, str(rpath_root))
    assert rc == 0
    assert "libmiddle.so => " in out and "[RPATH of librpath_root.so]" in out
    assert "[RPATH of librpath_root.so (inherited)]" in out
    rc, out = run(capsys, str(libc_user))
    assert "libc.so.6 => " in out and "[host-provided (glibc family / host policy)]" in out
    rc, out = run(capsys, str(libc_user), "--no-host")
    assert "libc.so.6 => " in out and "[ld.so.cache]" in out


def test_missing_lists_every_path_tried(capsys: pytest.CaptureFixture[str],
                                        runpath_root: Path) -> None:
    rc, out = run(capsys, str(runpath_root))
    assert rc == 1
    assert "libleaf.so => not found" in out
    assert "tried /usr/lib/libleaf.so (default dir)" in out
    assert out.rstrip().endswith("missing: libleaf.so")


def test_json_and_dot(capsys: pytest.CaptureFixture[str], broken: Path) -> None:
    rc, out = run(capsys, str(broken), "--json")
    assert rc == 1
    data = json.loads(out)
    names = {n["id"]: n for n in data["nodes"]}
    edges = {e["needed"]: e for e in data["edges"]}
    assert edges["libprovider.so"]["how"] == "RUNPATH of libbroken.so"
    assert names[edges["libprovider.so"]["to"]]["path"] == str(broken.parent / "libprovider.so")
    missing = edges["libmissing_dep.so"]
    assert missing["how"] == "not found" and names[missing["to"]]["kind"] == "missing"
    assert f"{broken.parent}/libmissing_dep.so (RUNPATH of libbroken.so)" in missing["tried"]
    rc, out = run(capsys, str(broken), "--dot")
    assert out.startswith("digraph deps {") and out.rstrip().endswith("}")
    assert '[label="RUNPATH of libbroken.so"]' in out
    assert 'label="libmissing_dep.so", tooltip="not found", color=red' in out


def test_graph_from_bytes_and_fixed_dirs(tmp_path: Path, root: Path) -> None:
    link = tmp_path / "libdependent.so"
    os.link(root.parent / "libdependent.so", link)
    os.link(root.parent / "libprovider.so", tmp_path / "libprovider.so")  # its $ORIGIN
    graph = dependency_graph(root.read_bytes(), name="libroot.so")
    # From bytes there is no $ORIGIN: libdependent cannot be found.
    assert [e.needed for e in graph.missing] == ["libdependent.so"]
    from relink.linker.search import SearchPathResolver

    graph = dependency_graph(root.read_bytes(), name="libroot.so",
                             search=SearchPathResolver(fixed_dirs=(str(tmp_path),)))
    assert not graph.missing
    assert graph.edges[0].how == "fixed dir" and graph.nodes[1].path == str(link)


def test_unreadable_root_is_an_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.so"
    bad.write_bytes(b"not an elf")
    assert main(["deps", str(bad)]) == 1
    assert "relink:" in capsys.readouterr().err


def test_cycle_is_shown_once(capsys: pytest.CaptureFixture[str], cycle: Path) -> None:
    rc, out = run(capsys, str(cycle))
    assert rc == 0
    assert out.splitlines()[1:] == [
        f"└── libcyc_b.so => {cycle.parent}/libcyc_b.so  [RUNPATH of libcyc_a.so]",
        "    └── libcyc_a.so => " + str(cycle) + "  [already loaded as libcyc_a.so]",
    ]
