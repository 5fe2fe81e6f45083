"""Run the whole suite (T1-T8), each script in its own process, and summarise.

Run: ``python benchmarks/run_all.py [--quick] [--out DIR] [--markdown FILE]``.
Each benchmark script runs as a child (so one's caches, mappings and RSS do not colour
another's), writes ``DIR/<script>.json`` and prints its table; at the end one combined
table of every figure is printed and, with ``--markdown``, written as a Markdown table;
``--update BENCHMARKS.md`` puts that table between the file's figure markers.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import _common

from relink.bench import Result, format_table

SCRIPTS = ("chain_load", "first_load", "big_library", "real_libraries", "lookup",
           "cle_chain", "memory")


def load_results(doc: dict[str, object]) -> list[Result]:
    out = []
    for d in doc["results"]:  # type: ignore[attr-defined]
        out.append(Result(d["name"], d["relink_us"], d["baseline_us"], d["baseline"],
                          d["target"], d["id"], d["target_kind"] != "ratio", d["extra"],
                          d.get("unit", "us")))
    return out


def markdown(results: list[Result]) -> str:
    def val(v: float, unit: str) -> str:
        if unit != "us":
            return f"{v:.0f} {unit}" if abs(v) >= 100 else f"{v:.4g} {unit}"
        return f"{v / 1000:.2f} ms" if abs(v) >= 10000 else f"{v:.2f} µs"

    rows = ["| id | benchmark | relink | baseline | ratio | target | met | baseline is |",
            "|---|---|---:|---:|---:|---:|---|---|"]
    for r in results:
        if r.target is None:
            target = ""
        elif r.absolute:
            target = "≤ " + val(r.target, r.unit)
        else:
            target = f"≤ {r.target:g}×"
        ratio = "" if (r.absolute and r.unit != "us") or r.ratio == float("inf") else (
            f"{r.ratio:.2f}×" if 0.1 <= r.ratio < 1000 else f"{r.ratio:.3g}×")
        met = {None: "", True: "yes", False: "**no**"}[r.met]
        rows.append(f"| {r.target_id} | {r.name} | {val(r.relink_us, r.unit)} | "
                    f"{val(r.baseline_us, r.unit)} | {ratio} | {target} | {met} | "
                    f"{r.baseline} |")
    return "\n".join(rows) + "\n"


START, END = "<!-- figures:start -->", "<!-- figures:end -->"


def update(path: Path, results: list[Result]) -> None:
    """Replace the text between the figure markers of `path` with this run's table."""
    text = path.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{path}: no {START} ... {END} markers")
    m = _common.machine()
    body = (f"\nRun of `python benchmarks/run_all.py` at {m['when']}, relink {m['commit']}, "
            f"load average {m['loadavg'][0]:.1f} on {m['nproc']} CPUs.\n\n"
            + markdown(results))
    head, rest = text.split(START, 1)
    path.write_text(head + START + body + END + rest.split(END, 1)[1])


def main() -> None:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--out", help="directory for the per-script JSON (default: a temp dir)")
    p.add_argument("--markdown", help="write the combined table here as Markdown")
    p.add_argument("--only", help="comma-separated script names")
    p.add_argument("--update", metavar="FILE",
                   help="replace the figures between the markers in FILE (BENCHMARKS.md)")
    a = p.parse_args()
    out = Path(a.out or tempfile.mkdtemp(prefix="relink-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    names = a.only.split(",") if a.only else SCRIPTS
    combined: list[Result] = []
    for name in names:
        cmd = [sys.executable, str(Path(__file__).with_name(f"{name}.py")),
               "--json", str(out / f"{name}.json")] + (["--quick"] if a.quick else [])
        print(f"\n$ {' '.join(cmd[1:])}", flush=True)
        proc = subprocess.run(cmd)
        if proc.returncode:
            print(f"{name}: failed with status {proc.returncode}", file=sys.stderr)
            continue
        combined += load_results(json.loads((out / f"{name}.json").read_text()))
    print("\nAll figures:")
    print(format_table(combined))
    met = [r for r in combined if r.met is not None]
    print(f"{sum(bool(r.met) for r in met)}/{len(met)} targets met; JSON in {out}")
    if a.markdown:
        Path(a.markdown).write_text(markdown(combined))
    if a.update:
        update(Path(a.update), combined)
    if a.json:
        Path(a.json).write_text(json.dumps({"machine": _common.machine(),
                                            "results": [r.as_dict() for r in combined]},
                                           indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
