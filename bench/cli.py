"""What every rounds-of-targets bench's command line shares: ``--round``, ``--rounds`` and
``--json``, the check that ``wrk`` is installed, and the report written and printed."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def parser(prog: str, doc: str | None, *, rounds: int = 3) -> argparse.ArgumentParser:
    """``python -m <prog>``'s parser, described by the module docstring's first line."""
    p = argparse.ArgumentParser(prog=f"python -m {prog}", description=(doc or "").splitlines()[0])
    p.add_argument("--round", type=float, default=5.0, help="seconds per target per round")
    p.add_argument("--rounds", type=int, default=rounds)
    p.add_argument("--json", help="write the report here")
    return p


def wrk_missing(prog: str) -> bool:
    """True (and says so) when ``wrk`` is not installed: nothing can be measured."""
    if shutil.which("wrk") is not None:
        return False
    print(f"{prog} needs wrk (Debian: apt-get install wrk); nothing measured.", file=sys.stderr)
    return True


def finish(report: Any, json_path: str | None, render: Callable[[Any], str]) -> int:
    """Writes the report as JSON when asked, prints it rendered; exit code 0."""
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=2))
    print(render(report))
    return 0
