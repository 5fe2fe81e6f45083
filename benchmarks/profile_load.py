"""Where relink's load time goes: cProfile of repeated load + close, top functions.

Run: ``python benchmarks/profile_load.py [chain|bytes|many|<path or SONAME>] [--rounds 200]
[--top 25]``. Prints the functions with the most own time (tottime) and their share of
the whole, then the heaviest relink functions by cumulative time. The profiler inflates
Python-heavy code, so read shares, not microseconds; the unprofiled figures are the
other scripts' job.
"""

from __future__ import annotations

import cProfile
import io
import pstats
from pathlib import Path

import _common

import relink
from relink.bench import build_many_relocs
from relink.demo import build_chain


def profile(target: str = "chain", rounds: int = 200, top: int = 25) -> str:
    """The report text for `rounds` load + close of `target`."""
    if target in ("chain", "bytes"):
        chain = build_chain()
        leaf = chain / "libleaf.so"
        data = leaf.read_bytes()
        resolver = relink.SearchPathResolver(fixed_dirs=(str(chain),))
        if target == "chain":
            def once() -> None:
                relink.load(leaf).close()
        else:
            def once() -> None:
                relink.load(data, name="libleaf.so", resolver=resolver).close()
    else:
        path = build_many_relocs() if target == "many" else Path(target)

        def once() -> None:
            relink.load(path).close()
    for _ in range(5):
        once()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(rounds):
        once()
    prof.disable()
    stats = pstats.Stats(prof)
    total = stats.total_tt  # type: ignore[attr-defined]
    rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])  # type: ignore[attr-defined]
    out = io.StringIO()
    out.write(f"{target}: {rounds} load+close, {total / rounds * 1e6:.0f} us each under the "
              "profiler\n\nown time (tottime), share of the whole:\n")
    for (file, line, func), (_cc, nc, tt, _ct, _callers) in rows[:top]:
        where = f"{Path(file).name}:{line}({func})" if line else func
        out.write(f"  {tt / total * 100:5.1f}%  {tt / rounds * 1e6:8.1f} us/load  "
                  f"{nc / rounds:8.1f} calls/load  {where}\n")
    out.write("\ncumulative time of relink functions, share of the whole:\n")
    cum = sorted(((k, v) for k, v in stats.stats.items()  # type: ignore[attr-defined]
                  if "/relink/" in k[0]), key=lambda kv: -kv[1][3])
    for (file, line, func), (_cc, nc, _tt, ct, _callers) in cum[:top]:
        rel = file.split("/relink/", 1)[1]
        out.write(f"  {ct / total * 100:5.1f}%  {nc / rounds:8.1f} calls/load  "
                  f"{rel}:{line}({func})\n")
    return out.getvalue()


def main() -> None:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("target", nargs="?", default="chain")
    p.add_argument("--rounds", type=int, default=200)
    p.add_argument("--top", type=int, default=25)
    a = p.parse_args()
    print(profile(a.target, 10 if a.quick else a.rounds, a.top))


if __name__ == "__main__":
    main()
