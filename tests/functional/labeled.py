"""A small tier-labeled JSONL file for the `eval` and `calibrate` tests: proofs (frontier) and
translations (light), every ``every``-th row a proof."""

from __future__ import annotations

from pathlib import Path

import orjson


def write_labeled(
    tmp_path: Path,
    rows: int,
    every: int,
    hard: str = "Prove the lemma about group {i} rigorously, step by step.",
) -> Path:
    lines = []
    for i in range(rows):
        frontier = i % every == 0
        text = (
            hard.format(i=i) if frontier else f"Translate sentence number {i} into French, please."
        )
        lines.append(
            {
                "id": f"r{i}",
                "task": "x",
                "tier": "frontier" if frontier else "light",
                "request": {"model": "gpt-4o", "messages": [{"role": "user", "content": text}]},
            }
        )
    path = tmp_path / "mine.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(r) for r in lines) + b"\n")
    return path
