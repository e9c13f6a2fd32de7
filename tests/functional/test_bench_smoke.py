"""Benchmarks are not tests; these only prove they still run (a few seconds each)."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path

import pytest

from bench.wrk import parse

ROOT = Path(__file__).resolve().parents[2]


async def _bench(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        *args,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(90):
        out, err = await proc.communicate()
    assert proc.returncode == 0, (out + err).decode()
    return out.decode()


async def test_the_soak_benchmark_runs_and_loses_nothing() -> None:
    text = await _bench(
        "bench.soak", *("--duration", "2", "--rate", "20", "--flap", "0.4", "--settle", "0")
    )
    assert "| 2 s | 20/s | 40 | 0 |" in text
    assert "flaps: " in text


async def test_the_overhead_run_measures_every_target() -> None:
    text = await _bench(
        "bench.overhead",
        *("--rates", "40", "--round", "0.4", "--rounds", "1", "--users", "4"),
        *("--latency-ms", "5"),
    )
    for row in ("| 40/s | direct |", "| 40/s | passthrough |", "| 40/s | gearshift |"):
        assert row in text
    assert "gearshift (1 worker(s)) / pass-through:" in text


async def test_the_streams_benchmark_measures_every_target() -> None:
    text = await _bench(
        "bench.streams",
        *("--streams", "20", "--seconds", "2", "--ramp", "0.5", "--chunk-ms", "20"),
        *("--formats-streams", "10", "--formats-seconds", "0.5"),
    )
    for row in ("| direct |", "| passthrough |", "| gearshift |", "| gearshift anthropic |"):
        assert row in text
    assert "| upstream format |" in text


@pytest.mark.parametrize(
    "args",
    [
        ("bench.codec", "--number", "50"),
        ("bench.decision", "--repeat", "5"),
        ("bench.tableload", "--repeat", "1", "--runs", "1"),
        ("bench.translation", "--number", "50"),
    ],
    ids=lambda args: args[0],
)
async def test_the_micro_benchmarks_run(args: tuple[str, ...]) -> None:
    assert await _bench(*args)


async def test_cpu_per_request_measures_a_running_gearshift(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(ROOT))  # bench/ is not installed
    from bench.procs import free_port, running

    mock, gs = free_port(), free_port()
    gearshift = [sys.executable, "-m", "gearshift"]
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "OPENAI_API_KEY": "sk-bench",
        "GEARSHIFT_OPENAI_BASE_URL": f"http://127.0.0.1:{mock}/v1",
    }
    commands = [
        (
            [*gearshift, "mock-upstream", "--port", str(mock)],
            f"http://127.0.0.1:{mock}/_mock/config",
            200,
        ),
        ([*gearshift, "serve", "--port", str(gs)], f"http://127.0.0.1:{gs}/readyz", 200),
    ]
    async with running(*commands, env=env) as procs:
        target = f"gs={procs[1].pid}@{gs}"
        text = await _bench("bench.cpu_per_request", target, "--rounds", "2", "--requests", "50")
    assert text.startswith("gs: µs CPU per request, rounds [")


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt install wrk)")
async def test_the_wrk_benchmark_measures_every_target() -> None:
    text = await _bench("bench.wrk", *("--round", "1", "--rounds", "1", "--connections", "4"))
    for row in ("| direct |", "| passthrough |", "| gearshift |"):
        assert row in text
    assert "gearshift / pass-through throughput:" in text
    assert "gearshift / pass-through CPU per request:" in text


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt install wrk)")
async def test_the_governance_benchmark_measures_keys_and_the_cache() -> None:
    text = await _bench("bench.governance", *("--round", "0.5", "--rounds", "1", "--rates", "50"))
    for row in ("| keys-memory |", "| cache-hit-memory |", "| cache-miss-memory |"):
        assert row in text
    if shutil.which("redis-server"):
        assert "| keys-redis |" in text
    assert "| 50/s | peer1 |" in text


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt install wrk)")
async def test_the_learning_benchmark_measures_shadow_mode_and_the_refit() -> None:
    pytest.importorskip("numpy")
    text = await _bench(
        "bench.learn", *("--round", "0.5", "--rounds", "1", "--rates", "50", "--rows", "300")
    )
    for row in ("| shadow-0.05 |", "| shadow-1.0 |", "| record-1.0 |", "| 300 |"):
        assert row in text
    assert "| 50/s | peer1 |" in text


WRK_REPORT = """Running 5s test @ http://127.0.0.1:9500/v1/chat/completions
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     5.29ms    1.02ms  21.12ms   91.20%
    Req/Sec     2.83k   201.11     3.05k    80.00%
  Latency Distribution
     50%    5.10ms
     75%    5.40ms
     90%    6.01ms
     99%  850.00us
  14150 requests in 5.00s, 16.73MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:   2829.71
Transfer/sec:      3.35MB
"""


def test_a_wrk_report_is_read_with_its_errors() -> None:
    result = parse(WRK_REPORT)
    assert (result.requests, result.seconds, result.rps) == (14150, 5.0, 2829.71)
    assert (result.p50_ms, result.p99_ms) == (5.1, 0.85)
    assert result.errors == 7  # 4 non-2xx, 2 read errors, 1 timeout
    with pytest.raises(ValueError, match="not a wrk report"):
        parse("wrk: command not found")
