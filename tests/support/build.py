"""Cached fixture compiler: C/C++ source text in, shared object / object / archive /
executable out.

Test-only support code. Fixtures are compiled at test time (nothing a compiler can produce
is checked in) and cached under :func:`cache_dir`::

    <cache>/<toolchain>/<group>/lib<name>.so        grouped outputs (find each other by $ORIGIN)
    <cache>/<toolchain>/_/<key>/lib<name>.so        ungrouped outputs (one directory per build)

``<toolchain>`` names the compiler and target and hashes its ``--version`` line. Next to
every output sits ``<output>.stamp`` holding the build key: the sha256 of the source text,
flags, dependencies' content hashes, compiler identity and target. A call whose key matches
the stamp returns the cached file without running anything. Builds hold a per-output
``flock`` and write to a temporary name that is moved in with ``os.replace``, so parallel
test workers (pytest-xdist) and concurrent loaders of an old copy are safe. Within one group
give different fixtures different names: rebuilding a name replaces that file.

``cc`` is a compiler command name (``gcc``, ``clang``, ``x86_64-linux-gnu-gcc``) or
``"zig"``, which means ``python -m ziglang cc -target <target>`` (resolved only when asked;
the ``ziglang`` package may be absent). With ``target``, clang gets ``--target=<target>``
and gcc-style names become ``<target>-<cc>``.

Example::

    lib = build_shared("answer", "int answer(void) { return 42; }", group="basic")
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "FixtureBuildError",
    "build_archive",
    "build_executable",
    "build_object",
    "build_shared",
    "cache_dir",
    "compiler_command",
    "compiler_identity",
    "group_dir",
    "have_cc",
    "read_bytes",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
_SCHEME = "relink-fixture-build-1"  # bump to invalidate every cached fixture
_COMPILABLE = (".c", ".cc", ".cpp", ".cxx", ".C", ".s", ".S")
_TIMEOUT = 600

Sources = Mapping[str, str] | str
PathLike = str | os.PathLike[str]


class FixtureBuildError(RuntimeError):
    """A fixture could not be built; carries the command and the tool's stderr."""

    def __init__(self, cmd: Sequence[str], stderr: str, returncode: int | None = None) -> None:
        """Record the failed command.

        Args:
            cmd: the command line that failed (or would have run).
            stderr: the tool's diagnostics, or why it could not run.
            returncode: exit status, ``None`` when the tool did not run.
        """
        self.cmd = list(cmd)
        self.stderr = stderr
        self.returncode = returncode
        super().__init__(
            f"fixture build failed (exit {returncode}): {shlex.join(self.cmd)}\n{stderr.rstrip()}"
        )


def cache_dir() -> Path:
    """Root of the fixture cache: ``$RELINK_FIXTURE_CACHE`` or ``<repo>/.fixture-cache``."""
    env = os.environ.get("RELINK_FIXTURE_CACHE")
    return Path(env) if env else REPO_ROOT / ".fixture-cache"


def read_bytes(path: PathLike) -> bytes:
    """The content of a built file (for loading fixtures from bytes)."""
    return Path(path).read_bytes()


def compiler_command(cc: str = "gcc", target: str | None = None, lang: str = "c") -> list[str]:
    """The argv prefix that runs compiler ``cc`` for ``target`` and language ``lang``.

    Raises:
        FixtureBuildError: for ``cc="zig"`` when the ``ziglang`` package is not installed.
    """
    if lang not in ("c", "c++"):
        raise ValueError(f"lang must be 'c' or 'c++', not {lang!r}")
    if cc == "zig":
        cmd = [sys.executable, "-m", "ziglang", "c++" if lang == "c++" else "cc"]
        if importlib.util.find_spec("ziglang") is None:
            raise FixtureBuildError(cmd, "the ziglang package is not installed")
        return cmd + (["-target", target] if target else [])
    name = cc
    if lang == "c++":
        for c_name, cxx_name in (("clang", "clang++"), ("gcc", "g++"), ("cc", "c++")):
            if c_name in name and "++" not in name:
                name = name.replace(c_name, cxx_name, 1)
                break
    if target and "clang" in name:
        return [name, f"--target={target}"]
    if target:
        return [f"{target}-{name}"]
    return [name]


@functools.cache
def _identity(cmd: tuple[str, ...]) -> str:
    argv = [*cmd, "--version"]
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FixtureBuildError(argv, str(exc)) from exc
    if res.returncode != 0:
        raise FixtureBuildError(argv, res.stderr, res.returncode)
    return (res.stdout.strip().splitlines() or [""])[0]


def compiler_identity(cc: str = "gcc", target: str | None = None, lang: str = "c") -> str:
    """First line of the compiler's ``--version`` output (part of every build key).

    Raises:
        FixtureBuildError: when the compiler cannot be run.
    """
    return _identity(tuple(compiler_command(cc, target, lang)))


@functools.cache
def have_cc(cc: str = "gcc", target: str | None = None, lang: str = "c") -> bool:
    """Whether ``cc`` runs and compiles a trivial translation unit for ``target``."""
    try:
        cmd = compiler_command(cc, target, lang)
        _identity(tuple(cmd))
    except FixtureBuildError:
        return False
    with tempfile.TemporaryDirectory(prefix="relink-have-cc-") as tmp:
        src = Path(tmp, "probe.cpp" if lang == "c++" else "probe.c")
        src.write_text("int relink_probe(void) { return 0; }\n")
        try:
            res = subprocess.run(
                [*cmd, "-c", str(src), "-o", str(Path(tmp, "probe.o"))],
                capture_output=True,
                timeout=_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return False
        return res.returncode == 0


def _toolchain_dir(cc: str, target: str | None) -> str:
    # Keyed by the C driver only, so that C and C++ outputs of one group share a directory.
    cmd = compiler_command(cc, target, "c")
    digest = hashlib.sha256(json.dumps([cmd, _identity(tuple(cmd))]).encode()).hexdigest()
    base = Path(cc).name.replace(os.sep, "_")
    return f"{base}-{target or 'host'}-{digest[:10]}"


def group_dir(group: str, *, cc: str = "gcc", target: str | None = None) -> Path:
    """The directory that outputs built with ``group=group`` and this toolchain go to."""
    return cache_dir() / _toolchain_dir(cc, target) / _check_group(group)


def _check_group(group: str) -> str:
    if not group or "/" in group or group in (".", "..", "_") or group.startswith("."):
        raise ValueError(f"bad group name {group!r}")
    return group


def _file_hash(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise FixtureBuildError([str(path)], f"input file unreadable: {exc}") from exc


def _normalise_sources(name: str, sources: Sources, lang: str) -> dict[str, str]:
    if isinstance(sources, str):
        return {f"{name}{'.cpp' if lang == 'c++' else '.c'}": sources}
    out = dict(sources)
    for rel in out:
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise ValueError(f"source names must be relative paths, not {rel!r}")
    if not any(rel.endswith(_COMPILABLE) for rel in out):
        raise ValueError(f"no compilable source among {sorted(out)}")
    return out


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _run(argv: list[str], cwd: Path) -> None:
    try:
        res = subprocess.run(
            argv, cwd=cwd, capture_output=True, text=True, timeout=_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FixtureBuildError(argv, str(exc)) from exc
    if res.returncode != 0:
        raise FixtureBuildError(argv, res.stderr + res.stdout, res.returncode)


def _cached_build(
    out_name: str,
    key_parts: Mapping[str, object],
    group: str | None,
    toolchain: str,
    sources: Mapping[str, str],
    make_argv: Callable[[Path, list[str]], list[str]],
) -> Path:
    """Return ``out_name`` for ``key_parts``, building it with ``make_argv`` when stale."""
    key = hashlib.sha256(
        json.dumps({"scheme": _SCHEME, **key_parts}, sort_keys=True, default=str).encode()
    ).hexdigest()
    out_dir = cache_dir() / toolchain / ("_" if group is None else _check_group(group))
    if group is None:
        out_dir /= key[:16]
    out = out_dir / out_name
    stamp = out_dir / f"{out_name}.stamp"
    with _locked(out):
        if out.exists() and stamp.exists() and stamp.read_text().split("\n", 1)[0] == key:
            return out
        tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=out_dir))
        try:
            for rel, text in sources.items():
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                (tmp / rel).write_text(text)
            tmp_out = tmp / out_name
            argv = make_argv(tmp_out, [rel for rel in sources if rel.endswith(_COMPILABLE)])
            _run(argv, tmp)
            os.replace(tmp_out, out)
            tmp_stamp = tmp / "stamp"
            tmp_stamp.write_text(f"{key}\n{shlex.join(argv)}\n")
            os.replace(tmp_stamp, stamp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


class _ArgvFactory:
    """Callable building the command line once the temporary output path is known."""

    def __init__(self, head: list[str], middle: list[str], tail: list[str]) -> None:
        self.head, self.middle, self.tail = head, middle, tail

    def __call__(self, out: Path, inputs: list[str]) -> list[str]:
        return [*self.head, "-o", str(out), *self.middle, *inputs, *self.tail]


def _dep_args(deps: Sequence[PathLike]) -> tuple[list[str], list[tuple[str, str]]]:
    args: list[str] = []
    hashes: list[tuple[str, str]] = []
    for dep in deps:
        path = Path(dep).resolve()
        hashes.append((path.name, _file_hash(path)))
        args += ["-L", str(path.parent), f"-l:{path.name}"]
    return args, hashes


def build_shared(
    name: str,
    sources: Sources,
    *,
    cflags: Sequence[str] = (),
    ldflags: Sequence[str] = (),
    deps: Sequence[PathLike] = (),
    soname: str | None = None,
    cc: str = "gcc",
    target: str | None = None,
    lang: str = "c",
    group: str | None = None,
) -> Path:
    """Compile and link ``lib<name>.so`` with ``cc -shared -fPIC``.

    Args:
        name: library name; the output is ``lib<name>.so``.
        sources: C source text, or ``{relative file name: text}`` (headers included; only
            ``.c/.cc/.cpp/.cxx/.s/.S`` files are passed to the compiler).
        cflags: flags placed before the sources.
        ldflags: flags placed after the sources and ``deps`` (for example
            ``["-Wl,-rpath,$ORIGIN"]``, ``["-Wl,-z,lazy"]``, ``["-nostdlib"]``).
        deps: built shared objects to link against (``-L <dir> -l:<file>``); their content
            hashes are part of the key. No runpath is added unless ``ldflags`` says so.
        soname: ``-Wl,-soname,<soname>`` when given.
        cc: compiler (see the module docstring); target: target triple.
        lang: ``"c"`` or ``"c++"`` (C++ links with the C++ driver).
        group: put the output in the shared ``<toolchain>/<group>/`` directory.

    Raises:
        FixtureBuildError: when the compiler fails or cannot be run.
    """
    srcs = _normalise_sources(name, sources, lang)
    dep_args, dep_hashes = _dep_args(deps)
    cmd = compiler_command(cc, target, lang)
    extra = [f"-Wl,-soname,{soname}"] if soname else []
    key = {
        "kind": "shared",
        "name": name,
        "sources": srcs,
        "cflags": list(cflags),
        "ldflags": list(ldflags),
        "deps": dep_hashes,
        "soname": soname,
        "cmd": cmd,
        "cc": _identity(tuple(cmd)),
        "target": target,
        "lang": lang,
    }
    argv = _ArgvFactory([*cmd, "-shared", "-fPIC", *cflags], [], [*dep_args, *extra, *ldflags])
    return _cached_build(f"lib{name}.so", key, group, _toolchain_dir(cc, target), srcs, argv)


def build_object(
    name: str,
    source: Sources,
    *,
    cflags: Sequence[str] = (),
    cc: str = "gcc",
    target: str | None = None,
    lang: str = "c",
    group: str | None = None,
) -> Path:
    """Compile one translation unit to ``<name>.o`` with ``cc -c`` (no implicit ``-fPIC``).

    ``source`` is the text or ``{file name: text}`` with exactly one compilable file.

    Raises:
        FixtureBuildError: when the compiler fails or cannot be run.
    """
    srcs = _normalise_sources(name, source, lang)
    if sum(rel.endswith(_COMPILABLE) for rel in srcs) != 1:
        raise ValueError("build_object needs exactly one compilable source")
    cmd = compiler_command(cc, target, lang)
    key = {
        "kind": "object",
        "name": name,
        "sources": srcs,
        "cflags": list(cflags),
        "cmd": cmd,
        "cc": _identity(tuple(cmd)),
        "target": target,
        "lang": lang,
    }
    argv = _ArgvFactory([*cmd, "-c", *cflags], [], [])
    return _cached_build(f"{name}.o", key, group, _toolchain_dir(cc, target), srcs, argv)


def build_archive(
    name: str,
    objects: Sequence[PathLike],
    *,
    ar: str = "ar",
    group: str | None = None,
) -> Path:
    """Pack objects into ``lib<name>.a`` with ``ar rcs``.

    Raises:
        FixtureBuildError: when ``ar`` fails or cannot be run.
    """
    paths = [Path(o).resolve() for o in objects]
    key = {
        "kind": "archive",
        "name": name,
        "ar": _identity((ar,)),
        "objects": [(p.name, _file_hash(p)) for p in paths],
    }
    toolchain = f"{Path(ar).name}-{hashlib.sha256(_identity((ar,)).encode()).hexdigest()[:10]}"

    def make_argv(out: Path, _inputs: list[str]) -> list[str]:
        return [ar, "rcs", str(out), *map(str, paths)]

    return _cached_build(f"lib{name}.a", key, group, toolchain, {}, make_argv)


def build_executable(
    name: str,
    sources: Sources,
    *,
    cflags: Sequence[str] = (),
    ldflags: Sequence[str] = (),
    deps: Sequence[PathLike] = (),
    pie: bool = True,
    static: bool = False,
    cc: str = "gcc",
    target: str | None = None,
    lang: str = "c",
    group: str | None = None,
) -> Path:
    """Compile and link executable ``<name>``.

    Args:
        name: output file name.
        sources: as for :func:`build_shared`.
        cflags / ldflags / deps / cc / target / lang / group: as for :func:`build_shared`.
        pie: ``-fPIE -pie`` (default) or ``-fno-pie -no-pie``.
        static: ``-static`` (``-static-pie`` together with ``pie``).

    Raises:
        FixtureBuildError: when the compiler fails or cannot be run.
    """
    srcs = _normalise_sources(name, sources, lang)
    dep_args, dep_hashes = _dep_args(deps)
    cmd = compiler_command(cc, target, lang)
    mode = ["-fPIE", "-pie"] if pie else ["-fno-pie", "-no-pie"]
    if static:
        mode = ["-fPIE", "-static-pie"] if pie else ["-fno-pie", "-static"]
    key = {
        "kind": "exec",
        "name": name,
        "sources": srcs,
        "cflags": list(cflags),
        "ldflags": list(ldflags),
        "deps": dep_hashes,
        "mode": mode,
        "cmd": cmd,
        "cc": _identity(tuple(cmd)),
        "target": target,
        "lang": lang,
    }
    argv = _ArgvFactory([*cmd, *mode, *cflags], [], [*dep_args, *ldflags])
    return _cached_build(name, key, group, _toolchain_dir(cc, target), srcs, argv)
