"""Start-up cost of the rule table: loading it, and ``gearshift route`` from start to exit.

    python -m bench.tableload [--rules FILE] [--repeat N] [--runs N]

The table (FILE, default the shipped one) is measured as it is and in the single-file form
(the same table with its word maps inline in the TOML, written to a temporary directory), so
one run compares the two. Every figure is a median:

- ``first load``: ``load_rules`` once in each of ``--runs`` fresh processes, imports excluded
  (what a worker or the CLI pays at start-up);
- ``decode`` / ``compile``: in this process, ``--repeat`` times, reading and decoding the files
  (TOML, and msgpack for a split table) and then building ``Rules`` from them (bytes-keyed
  maps, word sets, checks);
- ``route``: wall time of ``gearshift route hello`` (``--rules`` FILE, unless it is the
  shipped table) from process start to exit, ``--runs`` runs.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from gearshift.routing import classify
from gearshift.routing.classify import (
    Rules,
    decode_rules,
    load_rules,
)
from gearshift.routing.tablefile import encode_rules, lexicons_path

SHIPPED = Path(classify.__file__).parent / "rules.toml"


def median_ms(run: Callable[[], object], times: int) -> float:
    spent = []
    for _ in range(times):
        started = time.perf_counter()
        run()
        spent.append(time.perf_counter() - started)
    return statistics.median(spent) * 1e3


def first_load_ms(path: Path, runs: int) -> float:
    code = (
        "import time; from gearshift.routing.classify import load_rules; "
        f"t = time.perf_counter(); load_rules({str(path)!r}); "
        "print(time.perf_counter() - t)"
    )
    command = [sys.executable, "-c", code]
    spent = [
        float(subprocess.run(command, check=True, capture_output=True).stdout) for _ in range(runs)
    ]
    return statistics.median(spent) * 1e3


def route_ms(path: Path, runs: int) -> float:
    rules = [] if path == SHIPPED else ["--rules", str(path)]
    command = [sys.executable, "-m", "gearshift", "route", *rules, "hello"]
    return median_ms(lambda: subprocess.run(command, check=True, capture_output=True), runs)


def measure(path: Path, repeat: int, runs: int) -> dict[str, float]:
    def decode() -> object:
        return decode_rules(path.read_bytes(), str(path), path.parent)

    spec = decode_rules(path.read_bytes(), str(path), path.parent)
    return {
        "first load": first_load_ms(path, runs),
        "decode": median_ms(decode, repeat),
        "compile": median_ms(lambda: Rules(spec, str(path)), repeat),
        "route": route_ms(path, runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=Path, default=SHIPPED)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--runs", type=int, default=11)
    args = parser.parse_args()
    spec = load_rules(args.rules).spec
    print(
        f"python {platform.python_version()} on {platform.machine()}; {args.rules}: "
        f"{len(spec.lexicon)} lexicon, {len(spec.lead_lexicon)} lead, "
        f"{len(spec.semantic)} semantic words; {args.repeat} loads in process, "
        f"{args.runs} processes"
    )
    print("| form | files | first load ms | decode ms | compile ms | `gearshift route` ms |")
    print("|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        inline = Path(tmp) / "inline.toml"
        inline.write_bytes(encode_rules(spec))
        for form, path in (("as given", args.rules), ("single TOML", inline)):
            files = [path, *filter(Path.is_file, [lexicons_path(path)])]
            size = sum(f.stat().st_size for f in files)
            m = measure(path, args.repeat, args.runs)
            print(
                f"| {form} | {len(files)}, {size / 1e3:.0f} kB | {m['first load']:.1f} | "
                f"{m['decode']:.1f} | {m['compile']:.1f} | {m['route']:.0f} |"
            )


if __name__ == "__main__":
    main()
