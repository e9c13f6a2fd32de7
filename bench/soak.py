"""Soak: a steady request rate for a long time while the primary provider flaps.

    python -m bench.soak [--duration 600] [--rate 100] [--flap 60] [--json out.json]

Three processes on loopback: two ``gearshift mock-upstream`` (the primary speaks Anthropic's
Messages API, the backup OpenAI's; both answer after ``--latency-ms``) and ``gearshift
serve`` in front of them. The primary is cheaper, so it serves while healthy. Every
``--flap`` seconds it switches between healthy and one failure mode, in turn: HTTP 529
overloaded, connection resets, HTTP 500, HTTP 429 with a long Retry-After, and a hang (cut
off by a 1 s first-byte timeout). Requests (half streamed, half not) are sent open-loop at
``--rate`` per second: each latency is measured from the request's scheduled start, so a
stall shows up in full (no coordinated omission).

Reported: requests, failed requests (any status but 200, a stream without ``[DONE]`` or
with an error event: the target is 0), latency percentiles, how many requests needed a
fallback, and gearshift's resident memory and open file descriptors: after the warm-up, at
their peak (sampled every second), and at the end — once the load's connections are closed
and ``--settle`` seconds have let idle pooled upstream connections expire (30 s keep-alive),
so that start and end compare like with like (they must be flat). Linux only (reads /proc).
Traffic stays on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp

from bench.procs import GEARSHIFT, free_port, running

PHASES = ("http-503", "reset", "http-500", "http-429", "hang")
CONFIG = """
use_default_catalog = false
[server]
shutdown_grace = 5
[reliability]
retry_after_max = 1
[[providers]]
name = "primary"
kind = "anthropic"
base_url = "http://127.0.0.1:{primary}/v1"
api_key = "env:SOAK_KEY"
timeouts = {{ connect = 1, first_byte = 1, idle = 5, total = 30 }}
[[providers]]
name = "backup"
kind = "openai"
base_url = "http://127.0.0.1:{backup}/v1"
api_key = "env:SOAK_KEY"
[[models]]
name = "primary-light"
provider = "primary"
tier = "light"
price_in = 0.25
price_out = 1.25
[[models]]
name = "backup-light"
provider = "backup"
tier = "light"
price_in = 0.6
price_out = 2.4
"""


@dataclass
class Report:
    duration_s: float
    rate: float
    requests: int = 0
    failed: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    fallbacks: int = 0
    served_by: dict[str, int] = field(default_factory=dict)
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    p999_ms: float = 0.0
    max_ms: float = 0.0
    rss_start_kib: int = 0
    rss_peak_kib: int = 0
    rss_end_kib: int = 0
    fds_start: int = 0
    fds_peak: int = 0
    fds_end: int = 0
    flaps: int = 0


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@contextlib.asynccontextmanager
async def _processes(latency_ms: float) -> AsyncIterator[tuple[str, str, int]]:
    """The two mocks and gearshift; yields (gearshift URL, primary control URL, pid)."""
    primary, backup, port = free_port(), free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "soak.toml"
        config.write_text(CONFIG.format(primary=primary, backup=backup))
        mocks = [
            (
                [*GEARSHIFT, "mock-upstream", "--port", str(p), "--latency-ms", str(latency_ms),
                 "--chunk-words", "3"],
                f"http://127.0.0.1:{p}/_mock/config",
                200,
            )
            for p in (primary, backup)
        ]  # fmt: skip
        serve = (
            [*GEARSHIFT, "serve", "--config", str(config), "--port", str(port), "--no-access-log"],
            f"http://127.0.0.1:{port}/readyz",
            200,
        )
        async with running(*mocks, serve, env={"SOAK_KEY": "sk-soak-0123456789"}) as procs:
            yield f"http://127.0.0.1:{port}", f"http://127.0.0.1:{primary}", procs[-1].pid


BODY = {
    "model": "auto",
    "messages": [
        {"role": "user", "content": "Classify this review as positive or negative: great."}
    ],
    "max_tokens": 64,
}


async def _one(
    session: aiohttp.ClientSession, url: str, stream: bool
) -> tuple[str | None, str, bool]:
    """(failure kind or None, model that answered, needed a fallback)."""
    headers = {"x-gearshift-tier": "light"}
    try:
        async with session.post(
            url + "/v1/chat/completions", json={**BODY, "stream": stream}, headers=headers
        ) as resp:
            model = resp.headers.get("x-gearshift-model", "-")
            fallback = resp.headers.get("x-gearshift-attempt-log", "") != ""
            body = await resp.read()
            if resp.status != 200:
                return f"http-{resp.status}", model, fallback
            if stream:
                tail = body.rstrip()[-200:]
                if not tail.endswith(b"data: [DONE]") or b'"error"' in body:
                    return "stream-error", model, fallback
            return None, model, fallback
    except (aiohttp.ClientError, TimeoutError) as exc:
        return type(exc).__name__, "-", False


async def _flapper(
    control: str, session: aiohttp.ClientSession, every: float, n: list[int]
) -> None:
    """Healthy, then the next failure mode, then healthy … until cancelled."""
    i = 0
    while True:
        await asyncio.sleep(every)
        down = i % 2 == 0
        fail = PHASES[(i // 2) % len(PHASES)] if down else None
        settings = {"fail": fail, "retry_after_s": 30 if fail == "http-429" else None}
        async with session.post(control + "/_mock/config", json=settings) as resp:
            resp.raise_for_status()
        n[0] += 1
        i += 1


def _percentile(sorted_ms: list[float], q: float) -> float:
    if not sorted_ms:
        return 0.0
    return sorted_ms[min(len(sorted_ms) - 1, int(q * len(sorted_ms)))]


async def _sampler(pid: int, report: Report) -> None:
    while True:
        report.rss_peak_kib = max(report.rss_peak_kib, _rss_kib(pid))
        report.fds_peak = max(report.fds_peak, _fds(pid))
        await asyncio.sleep(1.0)


async def soak(
    duration: float, rate: float, flap: float, latency_ms: float, settle: float
) -> Report:
    report = Report(duration, rate)
    timeout = aiohttp.ClientTimeout(total=60)
    async with (
        # One connection for set-up, warm-up and the final check; the load has its own.
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1), timeout=timeout) as calm,
        _processes(latency_ms) as (url, control, pid),
    ):
        for i in range(50):  # warm-up: pools, caches, first-use allocations
            await _one(calm, url, i % 2 == 0)
        report.rss_start_kib, report.fds_start = _rss_kib(pid), _fds(pid)
        sampler = asyncio.create_task(_sampler(pid, report))
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout)
        latencies: list[float] = []
        failures: Counter[str] = Counter()
        served: Counter[str] = Counter()
        flaps = [0]
        flapper = asyncio.create_task(_flapper(control, session, flap, flaps))
        loop = asyncio.get_running_loop()
        start = loop.time()
        total = int(duration * rate)
        tasks: set[asyncio.Task[None]] = set()
        last_print = start

        async def fire(i: int, scheduled: float) -> None:
            failure, model, fallback = await _one(session, url, i % 2 == 0)
            latencies.append((loop.time() - scheduled) * 1000)
            served[model] += 1
            report.fallbacks += fallback
            if failure is not None:
                failures[failure] += 1

        for i in range(total):
            scheduled = start + i / rate
            delay = scheduled - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(fire(i, scheduled))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            if loop.time() - last_print >= 10:
                last_print = loop.time()
                print(
                    f"  {last_print - start:6.0f} s  sent {i + 1}  failed {sum(failures.values())}"
                    f"  rss {_rss_kib(pid)} KiB  fds {_fds(pid)}",
                    file=sys.stderr,
                    flush=True,
                )
        if tasks:
            await asyncio.wait(tasks)
        for task in (flapper, sampler):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await session.close()  # the load's connections go away
        async with calm.post(control + "/_mock/config", json={"fail": None}) as resp:
            resp.raise_for_status()
        if settle > 0:
            print(f"  settling {settle:.0f} s (idle upstream connections expire)", file=sys.stderr)
            await asyncio.sleep(settle)
        for i in range(50):  # the same warm state as at the start, before measuring
            await _one(calm, url, i % 2 == 0)
        report.rss_end_kib, report.fds_end = _rss_kib(pid), _fds(pid)
    latencies.sort()
    report.requests = len(latencies)
    report.failed = sum(failures.values())
    report.failures = dict(failures)
    report.served_by = dict(served)
    report.flaps = flaps[0]
    for name, q in (("p50_ms", 0.5), ("p90_ms", 0.9), ("p99_ms", 0.99), ("p999_ms", 0.999)):
        setattr(report, name, round(_percentile(latencies, q), 2))
    report.max_ms = round(latencies[-1], 2) if latencies else 0.0
    return report


def markdown(r: Report) -> str:
    return "\n".join(
        [
            "| duration | rate | requests | failed | fallbacks | p50 | p99 | p99.9 | max |"
            " RSS start / peak / end | fds start / peak / end |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
            f"| {r.duration_s:.0f} s | {r.rate:.0f}/s | {r.requests} | {r.failed} |"
            f" {r.fallbacks} | {r.p50_ms} ms | {r.p99_ms} ms | {r.p999_ms} ms | {r.max_ms} ms |"
            f" {r.rss_start_kib / 1024:.1f} / {r.rss_peak_kib / 1024:.1f} /"
            f" {r.rss_end_kib / 1024:.1f} MiB | {r.fds_start} / {r.fds_peak} / {r.fds_end} |",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    summary = (__doc__ or "").split("\n")[0]
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=summary)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds (default 600)")
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second")
    parser.add_argument("--flap", type=float, default=60.0, help="seconds per up/down phase")
    parser.add_argument(
        "--settle", type=float, default=35.0, help="idle seconds before the final measurement"
    )
    parser.add_argument("--latency-ms", type=float, default=20.0, help="mock upstream latency")
    parser.add_argument("--json", help="write the report here as JSON")
    args = parser.parse_args(argv)
    print(
        f"soak: {args.duration:.0f} s at {args.rate:.0f} req/s, primary flapping every "
        f"{args.flap:.0f} s ({platform.python_version()}, {os.cpu_count()} cores)",
        file=sys.stderr,
    )
    started = time.time()
    report = asyncio.run(soak(args.duration, args.rate, args.flap, args.latency_ms, args.settle))
    if args.json:
        Path(args.json).write_text(json.dumps(asdict(report), indent=2))
    print(markdown(report))
    print(
        f"failures: {report.failures or 'none'}; served by: {report.served_by}; "
        f"flaps: {report.flaps}; wall time {time.time() - started:.0f} s"
    )
    return 0 if report.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
