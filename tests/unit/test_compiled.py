"""The routing decision's modules compiled with mypyc (``setup.py``) against the same modules
as plain Python: the same score (to the bit), risk, tier, reasons and token estimate for every
labeled request the repository holds and for 3,000 odd bodies (wrong types everywhere: the
same answer or the same error), on the shipped table and on a tuned one."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import gearshift
from gearshift.routing import classify, features, policy, risk, tokens

ROOT = Path(__file__).resolve().parents[2]
ROWS = sorted((ROOT / "bench" / "routing").glob("*.jsonl"))
MODULES = (features, tokens, risk, classify, policy)

# Run in a process of its own: every body's decision (or the error it raised), as JSON
# lines. A compiled module checks a typed variable's value at run time where Python would
# not: odd bodies must fare the same on both paths.
DECIDE = """
import json, sys
from gearshift.routing import classify, features, policy
from gearshift.routing.classify import load_rules
shipped = load_rules()
tuned = shipped.with_lean(0.3).with_risk(0.2)
print(json.dumps([m.__file__ for m in (features, classify, policy)]))
bodies = json.load(open(sys.argv[1], encoding="utf-8"))
for path in sys.argv[2:]:
    bodies += [json.loads(line)["request"] for line in open(path, encoding="utf-8")]
for body in bodies:
    for rules in (shipped, tuned):
        try:
            d = rules.decide(body)
        except Exception as exc:
            print(json.dumps(["error", type(exc).__name__]))
        else:
            print(json.dumps([d.score.hex(), d.risk.hex(), d.tier, d.reasons, d.tokens,
                              d.uncertain, d.image]))
"""

ODD = [None, 0, 1, -3, 2.5, True, "", "x", "hello world", [], {}, [1, "a"], {"a": 1}]


def _odd(rng: random.Random) -> Any:
    return rng.choice(ODD)


def _part(rng: random.Random) -> Any:
    kind = rng.choice(["text", "image_url", "input_audio", "refusal", None, 3])
    part: dict[str, Any] = {"type": kind}
    if rng.random() < 0.8:
        part["text"] = rng.choice(["Prove it.", "résumé ½ 要約して", _odd(rng)])
    if rng.random() < 0.3:
        part["image_url"] = rng.choice([{"url": "data:,x"}, _odd(rng)])
    return part if rng.random() < 0.9 else _odd(rng)


def _message(rng: random.Random) -> Any:
    if rng.random() < 0.05:
        return _odd(rng)
    content = rng.choice(
        [
            "Summarize this:\n\n" + "The report shows growth. " * rng.randrange(1, 80),
            "```py\ndef f(x):\n    return x\n```\nWhy does this fail?",
            [_part(rng) for _ in range(rng.randrange(0, 4))],
            _odd(rng),
        ]
    )
    role = rng.choice(["user", "user", "system", "developer", "assistant", "tool", _odd(rng)])
    return {"role": role, "content": content}


def _bodies(n: int, seed: int = 7) -> list[Any]:
    rng = random.Random(seed)
    out: list[Any] = []
    for _ in range(n):
        body: dict[str, Any] = {"model": rng.choice(["auto", "gpt-4o", _odd(rng)])}
        if rng.random() < 0.95:
            body["messages"] = (
                [_message(rng) for _ in range(rng.randrange(0, 5))]
                if rng.random() < 0.9
                else _odd(rng)
            )
        for key in ("tools", "tool_choice", "response_format", "max_tokens", "stream"):
            if rng.random() < 0.3:
                body[key] = rng.choice(
                    [_odd(rng), [{"type": "function", "function": {"name": "f"}}],
                     {"type": "json_schema"}, "required", 128]
                )  # fmt: skip
        out.append(body if rng.random() < 0.97 else _odd(rng))
    return out


def _decisions(pythonpath: Path, odd: Path) -> tuple[list[str], list[str]]:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    out = subprocess.run(
        [sys.executable, "-c", DECIDE, str(odd), *map(str, ROWS)],
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
    shutil.copytree(source, tmp_path / "pure" / "gearshift", ignore=shutil.ignore_patterns("*.so"))
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps(_bodies(3000)))
    pure_files, pure = _decisions(tmp_path / "pure", odd)
    compiled_files, compiled = _decisions(source.parent, odd)
    assert all(f.endswith(".py") for f in pure_files)
    assert not any(f.endswith(".py") for f in compiled_files)
    assert len(pure) == len(compiled) > 10_000
    assert pure == compiled
    # No body, however odd, makes the decision raise; and the odd ones went many ways.
    assert not any(line.startswith('["error"') for line in pure)
    assert len(set(pure[:6000])) > 100
