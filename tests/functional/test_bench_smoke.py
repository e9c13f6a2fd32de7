"""Benchmarks are not tests; this only proves they still run (a few seconds each)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


async def test_the_soak_benchmark_runs_and_loses_nothing() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.soak",
        *("--duration", "2", "--rate", "20", "--flap", "0.4", "--settle", "0"),
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(90):
        out, err = await proc.communicate()
    assert proc.returncode == 0, (out + err).decode()
    text = out.decode()
    assert "| 2 s | 20/s | 40 | 0 |" in text
    assert "flaps: " in text
