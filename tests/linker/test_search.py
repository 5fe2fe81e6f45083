"""Tests for relink.linker.search: token expansion, search lists and ld.so's search order."""

from __future__ import annotations

import os

import pytest

from relink.linker.ldcache import FLAG_ELF_LIBC6, FLAG_X8664_LIB64, LdCache, LdCacheEntry
from relink.linker.search import (
    Candidate,
    ModuleSearchInfo,
    SearchPathResolver,
    default_system_dirs,
    expand_tokens,
    normalize_dir,
    split_search_list,
)

X86_64 = FLAG_ELF_LIBC6 | FLAG_X8664_LIB64


def make_cache(*paths: str) -> LdCache:
    return LdCache(
        [LdCacheEntry(X86_64, os.path.basename(path), path) for path in paths],
        format="new",
    )


def resolver(**kwargs: object) -> SearchPathResolver:
    """A resolver isolated from the host (no real cache, fixed default dirs)."""
    options: dict[str, object] = {
        "ld_cache": make_cache(),
        "machine_flags": frozenset({X86_64}),
        "default_dirs": ("/lib/x86_64-linux-gnu", "/usr/lib"),
        "lib": "lib64",
        "platform": "x86_64",
    }
    options.update(kwargs)
    return SearchPathResolver(**options)  # type: ignore[arg-type]


def paths(cands: list[Candidate]) -> list[str]:
    return [c.path for c in cands]


def reasons(cands: list[Candidate]) -> list[str]:
    return [c.reason for c in cands]


# -- expand_tokens / split_search_list ---------------------------------------------------------


def test_expand_origin_both_spellings() -> None:
    assert expand_tokens("$ORIGIN/../lib", origin="/opt/app/bin") == "/opt/app/bin/../lib"
    assert expand_tokens("${ORIGIN}/lib", origin="/opt/app") == "/opt/app/lib"
    assert expand_tokens("/x/${ORIGIN}${ORIGIN}", origin="/o") == "/x//o/o"


def test_origin_suffix_is_not_a_token() -> None:
    assert expand_tokens("$ORIGIN_SUFFIX/lib", origin="/o") == "$ORIGIN_SUFFIX/lib"
    assert expand_tokens("$ORIGINX", origin="/o") == "$ORIGINX"
    assert expand_tokens("${ORIGIN", origin="/o") == "${ORIGIN"
    assert expand_tokens("$LIBRARY/$FOO", origin="/o", lib="lib64") == "$LIBRARY/$FOO"
    assert expand_tokens("/no/tokens", origin=None) == "/no/tokens"


def test_expand_lib_and_platform() -> None:
    got = expand_tokens("$ORIGIN/$LIB/${PLATFORM}", origin="/o", lib="lib64", platform="target-v1")
    assert got == "/o/lib64/target-v1"
    assert expand_tokens("${LIB}:$PLATFORM", origin=None, lib="l", platform="p") == "l:p"


def test_expand_host_defaults_are_strings() -> None:
    got = expand_tokens("$LIB|$PLATFORM", origin=None)
    assert got is not None and "$" not in got


def test_unset_token_discards_path() -> None:
    assert expand_tokens("$ORIGIN/lib", origin=None) is None
    assert expand_tokens("${ORIGIN}/lib", origin="") is None
    assert expand_tokens("/x/$PLATFORM", origin="/o", platform=None) is None
    assert expand_tokens("/x/${LIB}", origin="/o", lib=None) is None


def test_split_search_list() -> None:
    assert split_search_list(":/fallback") == [".", "/fallback"]
    assert split_search_list("/a::/b:") == ["/a", ".", "/b", "."]
    assert split_search_list("") == []
    assert split_search_list("/a;/b:/c", separators=":;") == ["/a", "/b", "/c"]


def test_normalize_dir() -> None:
    assert normalize_dir("/usr/lib/") == "/usr/lib"
    assert normalize_dir("/usr//lib/./") == "/usr/lib"
    assert normalize_dir("/") == "/"
    assert normalize_dir("") == "."
    assert normalize_dir("./") == "."
    assert normalize_dir("a/../b/") == "a/../b"


def test_default_system_dirs_x86_64() -> None:
    assert default_system_dirs("x86_64-linux-gnu", is64=True) == (
        "/lib/x86_64-linux-gnu",
        "/usr/lib/x86_64-linux-gnu",
        "/lib64",
        "/usr/lib64",
        "/lib",
        "/usr/lib",
    )
    assert "/lib64" not in default_system_dirs("i386-linux-gnu", is64=False)


# -- candidates ---------------------------------------------------------------------------


def test_fixed_dirs_are_deduplicated() -> None:
    res = resolver(fixed_dirs=("/usr/lib/", "/usr/lib", "/opt//x/", "/opt/x", "/opt/y"))
    assert res.fixed_dirs == ("/usr/lib", "/opt/x", "/opt/y")
    cands = res.candidates("libq.so", None, ())
    assert paths(cands) == [
        "/usr/lib/libq.so",
        "/opt/x/libq.so",
        "/opt/y/libq.so",
        "/lib/x86_64-linux-gnu/libq.so",
    ]
    # /usr/lib is also a default dir: it keeps its first reason.
    assert reasons(cands) == ["fixed dir", "fixed dir", "fixed dir", "default dir"]


def test_rpath_chain_inheritance_uses_each_modules_origin() -> None:
    exe = ModuleSearchInfo("app", "/opt/app/bin", rpath=("$ORIGIN/../lib",))
    liba = ModuleSearchInfo("liba.so", "/opt/a", rpath=("$ORIGIN/private:/shared",))
    libb = ModuleSearchInfo("libb.so", "/opt/b", rpath=("$ORIGIN",))
    cands = resolver(use_default_dirs=False).candidates("libc9.so", libb, (liba, exe))
    assert [str(c) for c in cands] == [
        "/opt/b/libc9.so (RPATH of libb.so)",
        "/opt/a/private/libc9.so (RPATH of liba.so (inherited))",
        "/shared/libc9.so (RPATH of liba.so (inherited))",
        "/opt/app/bin/../lib/libc9.so (RPATH of app (inherited))",
    ]


def test_origin_in_dependency_name() -> None:
    owner = ModuleSearchInfo("libx.so", "/opt/x/lib", rpath=("/never",))
    res = resolver(fixed_dirs=("/fixed",))
    assert res.candidates("$ORIGIN/../plugins/libp.so", owner, ()) == [
        Candidate("/opt/x/lib/../plugins/libp.so", "direct path")
    ]
    assert res.candidates("${ORIGIN}/libp.so", owner, ()) == [
        Candidate("/opt/x/lib/libp.so", "direct path")
    ]
    assert res.candidates("sub/libp.so", owner, ()) == [Candidate("sub/libp.so", "direct path")]
    # No origin known: the name cannot be expanded, nothing to try.
    assert res.candidates("$ORIGIN/libp.so", None, ()) == []


def test_lib_and_platform_in_runpath() -> None:
    owner = ModuleSearchInfo("libo.so", "/opt/o", runpath=("$ORIGIN/$LIB/${PLATFORM}",))
    res = resolver(lib="lib64", platform="target-v1", use_default_dirs=False)
    assert res.candidates("libq.so", owner, ()) == [
        Candidate("/opt/o/lib64/target-v1/libq.so", "RUNPATH of libo.so")
    ]


def test_unset_token_discards_only_that_element() -> None:
    owner = ModuleSearchInfo("libo.so", None, rpath=("/ok:$ORIGIN/bad:/also-ok",))
    cands = resolver(use_default_dirs=False).candidates("libq.so", owner, ())
    assert paths(cands) == ["/ok/libq.so", "/also-ok/libq.so"]
    cands = resolver(platform=None, use_default_dirs=False).candidates(
        "libq.so", ModuleSearchInfo("m", "/o", runpath=("/p/$PLATFORM:/q",)), ()
    )
    assert paths(cands) == ["/q/libq.so"]


@pytest.mark.parametrize(
    "owner",
    [
        ModuleSearchInfo("libo.so", "/opt/o", rpath=("/own-rpath",), has_runpath=True),
        ModuleSearchInfo("libo.so", "/opt/o", rpath=("/own-rpath",), runpath=("",)),
        ModuleSearchInfo.from_dynamic("libo.so", "/opt/o/libo.so", rpath="/own-rpath", runpath=""),
    ],
    ids=["has_runpath", "empty-runpath-string", "from_dynamic"],
)
def test_runpath_even_empty_suppresses_rpath_chain(owner: ModuleSearchInfo) -> None:
    assert owner.has_runpath
    parent = ModuleSearchInfo("libparent.so", "/opt/p", rpath=("/parent-rpath",))
    exe = ModuleSearchInfo("app", "/opt/app", rpath=("/exe-rpath",))
    cands = resolver(fixed_dirs=("/fixed",), use_default_dirs=False).candidates(
        "libq.so", owner, (parent, exe)
    )
    assert [str(c) for c in cands] == ["/fixed/libq.so (fixed dir)"]


def test_runpath_is_not_inherited_and_hides_that_modules_rpath() -> None:
    parent = ModuleSearchInfo("libparent.so", "/p", rpath=("/p-rpath",), runpath=("/p-runpath",))
    exe = ModuleSearchInfo("app", "/e", rpath=("/e-rpath",))
    owner = ModuleSearchInfo("libo.so", "/o")
    cands = resolver(use_default_dirs=False).candidates("libq.so", owner, (parent, exe))
    assert [str(c) for c in cands] == ["/e-rpath/libq.so (RPATH of app (inherited))"]


def test_order_with_rpath() -> None:
    exe = ModuleSearchInfo("app", "/e", rpath=("/exe-rpath",))
    owner = ModuleSearchInfo("libo.so", "/o", rpath=("/o-rpath",))
    res = resolver(
        use_ld_library_path=True,
        ld_library_path="/llp1:/llp2",
        fixed_dirs=("/fixed",),
        ld_cache=make_cache("/cache/dir/libq.so"),
        default_dirs=("/default",),
    )
    cands = res.candidates("libq.so", owner, (exe,))
    assert [str(c) for c in cands] == [
        "/o-rpath/libq.so (RPATH of libo.so)",
        "/exe-rpath/libq.so (RPATH of app (inherited))",
        "/llp1/libq.so (LD_LIBRARY_PATH)",
        "/llp2/libq.so (LD_LIBRARY_PATH)",
        "/fixed/libq.so (fixed dir)",
        "/cache/dir/libq.so (ld.so.cache)",
        "/default/libq.so (default dir)",
    ]


def test_order_with_runpath() -> None:
    owner = ModuleSearchInfo("libo.so", "/o", runpath=("$ORIGIN/rp",))
    res = resolver(
        use_ld_library_path=True,
        ld_library_path="/llp",
        fixed_dirs=("/fixed",),
        ld_cache=make_cache("/cache/dir/libq.so"),
        default_dirs=("/default",),
    )
    assert reasons(res.candidates("libq.so", owner, ())) == [
        "LD_LIBRARY_PATH",
        "RUNPATH of libo.so",
        "fixed dir",
        "ld.so.cache",
        "default dir",
    ]


def test_duplicates_keep_first_reason() -> None:
    owner = ModuleSearchInfo("libo.so", "/o", runpath=("/usr/lib/:/cache/dir",))
    res = resolver(
        fixed_dirs=("/usr/lib",),
        ld_cache=make_cache("/cache/dir/libq.so"),
        default_dirs=("/usr/lib",),
    )
    assert [str(c) for c in res.candidates("libq.so", owner, ())] == [
        "/usr/lib/libq.so (RUNPATH of libo.so)",
        "/cache/dir/libq.so (RUNPATH of libo.so)",
    ]


def test_empty_element_means_current_directory() -> None:
    owner = ModuleSearchInfo("libo.so", "/o", runpath=(":/fallback",))
    cands = resolver(use_default_dirs=False).candidates("libq.so", owner, ())
    assert paths(cands) == ["./libq.so", "/fallback/libq.so"]


def test_ld_library_path_is_opt_in_and_read_at_construction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LD_LIBRARY_PATH", "/env1;/env2:$ORIGIN/x")
    off = resolver(use_default_dirs=False)
    on = resolver(use_default_dirs=False, use_ld_library_path=True)
    monkeypatch.setenv("LD_LIBRARY_PATH", "/changed")
    assert off.candidates("libq.so", None, ()) == []
    exe = ModuleSearchInfo("app", "/exe/dir")
    lib = ModuleSearchInfo("libo.so", "/lib/dir")
    # $ORIGIN in LD_LIBRARY_PATH is the executable's directory (end of the chain).
    assert paths(on.candidates("libq.so", lib, (exe,))) == [
        "/env1/libq.so",
        "/env2/libq.so",
        "/exe/dir/x/libq.so",
    ]
    assert set(reasons(on.candidates("libq.so", lib, (exe,)))) == {"LD_LIBRARY_PATH"}


def test_nodeflib_skips_cache_hits_in_default_dirs_and_default_dirs() -> None:
    owner = ModuleSearchInfo("libo.so", "/o", nodeflib=True)
    res = resolver(
        ld_cache=make_cache("/usr/lib/libq.so", "/usr/lib/sub/libq.so", "/opt/cache/libq.so"),
        default_dirs=("/usr/lib",),
    )
    assert [str(c) for c in res.candidates("libq.so", owner, ())] == [
        "/opt/cache/libq.so (ld.so.cache)"
    ]


def test_cache_can_be_disabled() -> None:
    res = resolver(use_ld_cache=False, ld_cache=make_cache("/c/libq.so"), default_dirs=("/d",))
    assert paths(res.candidates("libq.so", None, ())) == ["/d/libq.so"]


# -- resolve ------------------------------------------------------------------------------


def test_resolve_returns_first_accepted_and_tried_list() -> None:
    owner = ModuleSearchInfo("libo.so", "/o", rpath=("/wrong-arch:/right",))
    res = resolver(default_dirs=("/d",))
    seen: list[str] = []

    def accept(path: str) -> bool:
        seen.append(path)
        return path == "/right/libq.so"  # /wrong-arch holds an ELF of another machine

    found, tried = res.resolve("libq.so", owner, (), accept=accept)
    assert found == "/right/libq.so"
    assert paths(tried) == ["/wrong-arch/libq.so", "/right/libq.so"] == seen

    found, tried = res.resolve("libq.so", owner, (), accept=lambda _p: False)
    assert found is None
    assert paths(tried) == ["/wrong-arch/libq.so", "/right/libq.so", "/d/libq.so"]


def test_resolve_libc_on_this_host() -> None:
    if not os.path.isfile("/etc/ld.so.cache"):
        pytest.skip("no ld.so.cache")
    found, tried = SearchPathResolver().resolve("libc.so.6", None, (), accept=os.path.isfile)
    assert found is not None and os.path.basename(found) == "libc.so.6"
    assert tried[-1].reason == "ld.so.cache"
