"""Executables: `relink.execute` (a real run in a child), `relink.run_main` (main
in-process), ET_EXEC at its fixed address, PIE, COPY relocations, `Module.entry`,
and ``relink run``."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import relink
from relink.elf import ElfFile
from relink.runtime import exec as rexec
from relink.runtime import libc

pytestmark = pytest.mark.needs_cc
REPO = Path(__file__).resolve().parents[2]


def report(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        for item in line.split():
            key, sep, value = item.partition("=")
            if sep:
                out[key] = value
    return out


@pytest.mark.parametrize("how", ["path", "bytes"])
def test_execute_runs_every_kind(any_program: Path, how: str,
                                 capfd: pytest.CaptureFixture[str]) -> None:
    source = any_program if how == "path" else any_program.read_bytes()
    status = relink.execute(source, ["prog", "args", "x y"])
    out = capfd.readouterr().out
    assert out == "ctor=42 argc=3 [prog] [args] [x y]\n"
    assert status == 3


def test_execute_auxv_is_complete(any_program: Path,
                                  capfd: pytest.CaptureFixture[str]) -> None:
    assert relink.execute(any_program, ["prog", "auxv"]) == 0
    r = report(capfd.readouterr().out)
    assert r["AT_PHDR"] == r["phdr"] != "0"
    assert r["AT_ENTRY"] == r["start"] != "0"
    assert r["AT_BASE"] == r["interp"]  # 0 for static programs, ld.so's base otherwise
    assert (r["AT_BASE"] != "0") == ("static" not in any_program.name)
    with ElfFile(any_program) as f:
        assert int(r["AT_PHNUM"]) == f.header.e_phnum
        assert int(r["AT_PHENT"]) == f.header.e_phentsize
    assert int(r["AT_PAGESZ"]) == os.sysconf("SC_PAGE_SIZE")
    assert (r["AT_UID"], r["AT_EUID"], r["AT_GID"], r["AT_EGID"]) == \
        (str(os.getuid()), str(os.geteuid()), str(os.getgid()), str(os.getegid()))
    assert (r["uid"], r["gid"]) == (str(os.getuid()), str(os.getgid()))
    assert r["AT_SECURE"] == "0"
    assert int(r["AT_CLKTCK"]) == os.sysconf("SC_CLK_TCK")
    assert int(r["AT_HWCAP"]) == libc.getauxval(16)
    assert int(r["AT_HWCAP2"]) == libc.getauxval(26)
    assert int(r["AT_SYSINFO_EHDR"]) == libc.getauxval(33) != 0
    assert r["AT_EXECFN"] == str(any_program)
    assert r["AT_PLATFORM"] == "x86_64"
    assert r["AT_RANDOM"] == "1"
    assert r["stack_aligned"] == "1"


def test_execute_environment(pie: Path, capfd: pytest.CaptureFixture[str]) -> None:
    os.environ["RELINK_EXEC_TEST"] = "inherited"
    try:
        assert relink.execute(pie, ["p", "env", "RELINK_EXEC_TEST", "OTHER"]) == 0
        assert report(capfd.readouterr().out) == {"RELINK_EXEC_TEST": "inherited",
                                                  "OTHER": "(unset)"}
    finally:
        del os.environ["RELINK_EXEC_TEST"]
    assert relink.execute(pie, ["p", "env", "RELINK_EXEC_TEST", "OTHER"],
                          env={"OTHER": "given"}) == 0
    assert report(capfd.readouterr().out) == {"RELINK_EXEC_TEST": "(unset)",
                                              "OTHER": "given"}
    with pytest.raises(ValueError):
        relink.execute(pie, ["p"], env={"A=B": "x"})


def test_execute_status_and_signals(pie: Path) -> None:
    assert relink.execute(pie, ["p", "exit", "77"]) == 77
    assert relink.execute(pie, ["p", "abort"]) == -signal.SIGABRT


def test_execute_closes_cloexec_descriptors(pie: Path,
                                            capfd: pytest.CaptureFixture[str]) -> None:
    private = os.open("/dev/null", os.O_RDONLY)  # close-on-exec (PEP 446)
    shared = os.open("/dev/null", os.O_RDONLY)
    os.set_inheritable(shared, True)
    try:
        assert relink.execute(pie, ["p", "fds"]) == 0
        fds = set(capfd.readouterr().out.split())
    finally:
        os.close(private)
        os.close(shared)
    assert {"0", "1", "2", str(shared)} <= fds
    assert str(private) not in fds


def test_execute_resets_signal_state(pie: Path, capfd: pytest.CaptureFixture[str]) -> None:
    old = signal.signal(signal.SIGUSR1, lambda *a: None)
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR2])
    try:
        assert relink.execute(pie, ["p", "signals"]) == 0
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGUSR2])
        signal.signal(signal.SIGUSR1, old)
    r = report(capfd.readouterr().out)
    assert r["SIGUSR1"] == "default"   # a caught signal is reset, as by execve
    assert r["SIGPIPE"] == "default"   # Python ignores it; restored like subprocess
    assert r["SIGINT"] == "default"
    assert r["SIGUSR2_blocked"] == "1"  # the mask is inherited, as by execve
    assert r["altstack"] == "disabled"


def test_execute_reports_child_setup_failure(pie: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    real = rexec.plan_child

    def failing(plan: rexec.ChildPlan, **kw: object) -> None:
        real(plan, **kw)  # type: ignore[arg-type]
        plan.call(1, 3, 1 << 30)  # close(huge fd) must succeed -> EBADF in the child

    monkeypatch.setattr(rexec, "plan_child", failing)
    with pytest.raises(relink.ExecutionError) as info:
        relink.execute(pie, ["p"])
    assert info.value.syscall == "close"
    assert info.value.errno == 9


def test_execute_missing_interpreter_is_clear(pie: Path) -> None:
    data = bytearray(pie.read_bytes())
    with ElfFile(pie) as f:
        ph = f.phdr(3)
        assert ph is not None
    bogus = b"/nonexistent/ld.so\0"
    assert len(bogus) <= ph.p_filesz
    data[ph.p_offset:ph.p_offset + len(bogus)] = bogus
    with pytest.raises(relink.ExecutionError, match="/nonexistent/ld.so"):
        relink.execute(bytes(data), ["p"])


def test_execute_rejects_garbage() -> None:
    garbage = b"\x7fELF" + b"\0" * 60
    with pytest.raises(relink.RelinkError):
        relink.execute(garbage, ["x"])


def test_execute_stdin_through_cli(pie: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "relink", "run", str(pie), "stdin"],
                          input="hello relink\n", capture_output=True, text=True,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "HELLO RELINK\n"


def test_cli_run_statuses(pie: Path) -> None:
    def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([sys.executable, "-m", "relink", "run", *args],
                              capture_output=True, cwd=REPO, input=stdin)

    p = run(str(pie), "args", "b")
    assert p.returncode == 3 and b"argc=3" in p.stdout
    assert run(str(pie), "exit", "5").returncode == 5
    assert run(str(pie), "abort").returncode == 128 + signal.SIGABRT
    p = run("-", "args", stdin=pie.read_bytes())
    assert p.returncode == 2 and b"[<stdin>] [args]" in p.stdout
    p = run("--main", str(pie), "args")
    assert p.returncode == 2 and b"ctor=42 argc=2" in p.stdout
    p = run("--clear-env", "--env", "ZZ=1", str(pie), "env", "ZZ", "HOME")
    assert p.stdout.split() == [b"ZZ=1", b"HOME=(unset)"]
    p = run("/nonexistent/program")
    assert p.returncode == 1 and p.stderr.startswith(b"relink: ")


# -- in-process: load, run_main, COPY -----------------------------------------------

@pytest.mark.parametrize("how", ["path", "bytes"])
def test_run_main_pie_and_exec(pie: Path, exec_program: Path, how: str,
                               capfd: pytest.CaptureFixture[str]) -> None:
    for prog in (pie, exec_program):
        source = prog if how == "path" else prog.read_bytes()
        assert relink.run_main(source, ["m", "args", "q"]) == 3
        assert capfd.readouterr().out == "ctor=42 argc=3 [m] [args] [q]\n"


def test_module_entry_and_fixed_address(pie: Path, exec_program: Path) -> None:
    with ElfFile(exec_program) as f:
        e_entry = f.header.e_entry
        first = min(ph.p_vaddr for ph in f.phdrs if ph.p_type == 1)
    with relink.load(exec_program) as m:
        assert m.entry == e_entry
        assert m.contains(first) and m.base == 0
        # A second ET_EXEC at the same fixed address is a clear error, never a replace.
        with pytest.raises(relink.MappingError, match="fixed address"):
            relink.load(exec_program.read_bytes(), name="again")
        with pytest.raises(relink.MappingError, match="fixed address"):
            relink.execute(exec_program, ["x"])
    with ElfFile(pie) as f:
        pie_entry = f.header.e_entry
    with relink.load(pie) as m:
        assert m.entry == m.base + pie_entry and m.base != 0


def test_copy_relocation_shared_with_relink_library(copy_program: Path) -> None:
    """COPY from a relink-loaded library: the library binds to the program's copy."""
    assert relink.run_main(copy_program, ["c"]) == 5 * 1000 + 15 * 10 + 1
    resolver = relink.SearchPathResolver(fixed_dirs=(str(copy_program.parent),))
    assert relink.run_main(copy_program.read_bytes(), ["c"], name="copyuse",
                           resolver=resolver) == 5151


def _exe_switch_allowed(pie: Path, capfd: pytest.CaptureFixture[str]) -> bool:
    assert relink.execute(pie, ["p", "proc"]) == 0
    return report(capfd.readouterr().out)["exe"] == str(pie)


def test_execute_copy_program(copy_program: Path, pie: Path,
                              capfd: pytest.CaptureFixture[str]) -> None:
    # ld.so resolves the program's $ORIGIN through /proc/self/exe: relink points it at
    # the program when the kernel lets it (CAP_CHECKPOINT_RESTORE), else it names Python.
    env = {**os.environ, "LD_LIBRARY_PATH": str(copy_program.parent)}
    assert relink.execute(copy_program, ["c"], env=env) == 5151 & 0xFF
    if _exe_switch_allowed(pie, capfd):
        assert relink.execute(copy_program, ["c"]) == 5151 & 0xFF
    else:
        assert relink.execute(copy_program, ["c"]) == 127
        assert "libcopyprov.so" in capfd.readouterr().err


def _kernel_has_prctl_mm_map() -> bool:
    size = ctypes.c_uint(0)
    # prctl(PR_SET_MM, PR_SET_MM_MAP_SIZE, &size, 0, 0): CONFIG_CHECKPOINT_RESTORE
    return libc.syscall(ctypes.c_long(157), ctypes.c_long(35), ctypes.c_long(15),
                        ctypes.byref(size), ctypes.c_long(0), ctypes.c_long(0)) == 0


@pytest.mark.parametrize("how", ["path", "bytes"])
def test_execute_process_looks_exec_d(pie: Path, how: str,
                                      capfd: pytest.CaptureFixture[str]) -> None:
    """The child drops every mapping of the parent; cmdline, brk and (when permitted)
    /proc/self/exe describe the program, as after execve."""
    source = pie if how == "path" else pie.read_bytes()
    assert relink.execute(source, ["prog", "proc", "two words"]) == 0
    r = report(capfd.readouterr().out.replace("two words", "two_words"))
    assert r["python_maps"] == "0"
    if _kernel_has_prctl_mm_map():
        assert r["cmdline"] == "prog|proc|two_words"
        assert r["brk_after_bss"] == "1"
    if how == "bytes":
        assert r["exe"] != str(pie)  # nothing on disk names the program


def test_copy_against_host_data_is_the_documented_limit(getopt_program: Path) -> None:
    """getopt advances libc's optind; the program reads its private COPY of it."""
    assert relink.execute(getopt_program, ["g", "-a", "-b", "rest"]) == 3
    saved = ctypes.c_int.in_dll(libc.libc, "optind").value
    try:
        assert relink.run_main(getopt_program, ["g", "-a", "-b", "rest"]) == 1
    finally:
        ctypes.c_int.in_dll(libc.libc, "optind").value = saved


def test_main_through_dynsym_and_stripped(tmp_path: Path) -> None:
    from support.build import build_executable

    src = "int main(int argc, char **argv) { (void)argv; return 40 + argc; }"
    exported = build_executable("exported", {"m.c": src}, group="exec",
                                ldflags=["-rdynamic"])
    with relink.load(exported) as m:
        assert m.symbol("main") is not None
        assert rexec.find_main(m) == m.symbol("main")
    assert relink.run_main(exported, ["e", "1"]) == 42
    stripped = build_executable("stripped", {"m.c": src}, group="exec", ldflags=["-s"])
    with pytest.raises(relink.ExecutionError, match="stripped"):
        relink.run_main(stripped)
    assert relink.execute(stripped, ["s"]) == 41


def test_run_main_refuses_static_pie(static_pie: Path) -> None:
    with pytest.raises(relink.UnsupportedError, match="execute"):
        relink.run_main(static_pie)


def test_run_main_exit_returns_to_python(pie: Path, exec_program: Path,
                                         capfd: pytest.CaptureFixture[str]) -> None:
    """exit() in main comes back as the status instead of ending the interpreter."""
    assert relink.run_main(pie, ["p", "exit", "77"]) == 77
    assert relink.run_main(exec_program, ["p", "exit", "300"]) == 300 & 0xFF
    # The hooks are inactive outside main, and the next run works normally.
    assert relink.run_main(pie, ["p", "args"]) == 2
    assert capfd.readouterr().out == "ctor=42 argc=2 [p] [args]\n"


def test_run_main_exit_from_a_subprocess_interpreter(pie: Path) -> None:
    code = (f"import relink; rc = relink.run_main({str(pie)!r}, ['p', 'exit', '9']); "
            "print('still here', rc)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "still here 9"


def test_execute_from_a_file_object_and_default_argv(pie: Path,
                                                     capfd: pytest.CaptureFixture[str]
                                                     ) -> None:
    with open(pie, "rb") as f:
        assert relink.execute(f, name="from-file") == 1
    assert capfd.readouterr().out == "ctor=42 argc=1 [from-file]\n"
    assert relink.execute(pie) == 1
    assert capfd.readouterr().out == f"ctor=42 argc=1 [{pie}]\n"
