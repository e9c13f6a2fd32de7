"""The routing decision's modules compiled with mypyc (``setup.py``) against the same modules
as plain Python: the same score (to the bit), risk, tier, reasons and token estimate for every
labeled request the repository holds, on the shipped table and on a tuned one."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import gearshift
from gearshift.routing import classify, features, policy, risk, tokens

ROOT = Path(__file__).resolve().parents[2]
ROWS = sorted((ROOT / "bench" / "routing").glob("*.jsonl"))
MODULES = (features, tokens, risk, classify, policy)

# Run in a process of its own: every row's decision, as JSON lines.
DECIDE = """
import json, sys
from gearshift.routing import classify, features, policy
from gearshift.routing.classify import load_rules
shipped = load_rules()
tuned = shipped.with_lean(0.3).with_risk(0.2)
print(json.dumps([m.__file__ for m in (features, classify, policy)]))
for path in sys.argv[1:]:
    for line in open(path, encoding="utf-8"):
        body = json.loads(line)["request"]
        for rules in (shipped, tuned):
            d = rules.decide(body)
            print(json.dumps([d.score.hex(), d.risk.hex(), d.tier, d.reasons, d.tokens,
                              d.uncertain, d.image]))
"""


def _decisions(pythonpath: Path) -> tuple[list[str], list[str]]:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    out = subprocess.run(
        [sys.executable, "-c", DECIDE, *map(str, ROWS)],
        env=env, capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip
    first, *rest = out.stdout.splitlines()
    return json.loads(first), rest


def test_the_shipped_rows_are_there() -> None:
    assert len(ROWS) >= 8


@pytest.mark.skipif(
    not os.environ.get("GEARSHIFT_REQUIRE_COMPILED"),
    reason="GEARSHIFT_REQUIRE_COMPILED is not set (CI sets it): a pure install is allowed",
)
def test_the_build_compiled_the_routing_modules() -> None:
    assert [Path(m.__file__ or "").suffix for m in MODULES] == [".so"] * len(MODULES)


@pytest.mark.skipif(
    not all(m.__file__ and not m.__file__.endswith(".py") for m in MODULES),
    reason="the routing modules are not compiled in this install (GEARSHIFT_PURE=1, or mypyc "
    "was missing at build time): there is no second path to compare",
)
def test_compiled_and_pure_decisions_are_identical(tmp_path: Path) -> None:
    # The pure modules: the package's sources without the compiled extensions (nor the
    # mypyc runtime library, which lives beside the package).
    source = Path(gearshift.__file__).parent
    shutil.copytree(source, tmp_path / "gearshift", ignore=shutil.ignore_patterns("*.so"))
    pure_files, pure = _decisions(tmp_path)
    compiled_files, compiled = _decisions(source.parent)
    assert all(f.endswith(".py") for f in pure_files)
    assert not any(f.endswith(".py") for f in compiled_files)
    assert len(pure) == len(compiled) > 4000
    assert pure == compiled
