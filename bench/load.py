"""A small locust-style load generator for OpenAI-compatible endpoints (aiohttp, one process).

    python -m bench.load --url http://127.0.0.1:8787 --scenario mixed --rate 200 --duration 30
    python -m bench.load --url http://127.0.0.1:8787 --users 32 --spawn-rate 16 --duration 30

Scenarios are weighted tasks (``SCENARIOS``): a simple classification, a long document
with a short ask, hard reasoning, a streaming chat, a tool call. Two modes:

- **open loop** (``--rate``): requests start at a constant arrival rate whatever happens to
  earlier ones, and each latency is measured from its *scheduled* start, so a stall shows up
  in full (no coordinated omission);
- **closed loop** (``--users``, ``--spawn-rate``): that many users, started at that rate,
  each sending its next request when the last one answered — the way to find the maximum
  sustainable throughput.

Output: percentiles (p50 / p90 / p99 / p99.9 / max, exact over every sample), time to first
byte for streams, errors by kind, achieved rate; live progress on stderr; ``--json`` and
``--markdown`` files; ``--plot`` a PNG of latency over time and the percentile curve when
matplotlib is installed (it is not a dependency).

The tasks name ``gpt-4o``, a model of the 2024 catalog: serve gearshift on it (``gearshift
serve --config`` ``src/gearshift/catalog_2024.toml``, ``bench.procs.CATALOG_2024``), as the
recorded figures were run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

DOC = (
    "Section 4.2. The supplier shall deliver the goods within thirty days of the order and "
    "bears the risk of loss until delivery. Payment is due within sixty days of invoice. "
) * 60

Task = dict[str, Any]  # an OpenAI request body


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


TASKS: dict[str, Task] = {
    "classify": {
        "model": "gpt-4o",
        "messages": _user("Classify the sentiment as positive or negative: 'Great battery.'"),
        "max_tokens": 16,
    },
    "long_doc": {
        "model": "gpt-4o",
        "messages": _user(DOC + "\n\nWhen is payment due? Answer in five words."),
        "max_tokens": 32,
    },
    "reasoning": {
        "model": "gpt-4o",
        "messages": _user(
            "Prove that the square root of 2 is irrational, then derive a bound on how well "
            "it can be approximated by fractions with denominator at most 100."
        ),
    },
    "stream_chat": {
        "model": "gpt-4o",
        "messages": _user("Write two sentences about autumn in the mountains."),
        "stream": True,
    },
    "tool_call": {
        "model": "gpt-4o",
        "messages": _user("What is the weather in Lisbon?"),
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                },
            }
        ],
    },
}
SCENARIOS: dict[str, dict[str, int]] = {
    "mixed": {"classify": 5, "long_doc": 2, "reasoning": 1, "stream_chat": 3, "tool_call": 1},
    "simple": {"classify": 1},
    "stream": {"stream_chat": 1},
}


@dataclass
class Sample:
    at: float  # seconds since the run started (scheduled start in open loop)
    latency_s: float
    ttfb_s: float | None
    task: str
    error: str | None


@dataclass
class Summary:
    label: str
    mode: str
    duration_s: float
    requests: int
    ok: int
    achieved_rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    ttfb_p50_ms: float | None
    ttfb_p99_ms: float | None
    errors: dict[str, int] = field(default_factory=dict)


def percentile(sorted_values: list[float], q: float) -> float:
    """The q-quantile by nearest rank over every sample (exact: no histogram buckets)."""
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[rank]


def summarize(label: str, mode: str, duration: float, samples: list[Sample]) -> Summary:
    ok = [s for s in samples if s.error is None]
    lat = sorted(s.latency_s * 1e3 for s in ok)
    ttfb = sorted(s.ttfb_s * 1e3 for s in ok if s.ttfb_s is not None)
    return Summary(
        label=label,
        mode=mode,
        duration_s=round(duration, 2),
        requests=len(samples),
        ok=len(ok),
        achieved_rps=round(len(ok) / duration, 1) if duration else 0.0,
        p50_ms=round(percentile(lat, 0.50), 3),
        p90_ms=round(percentile(lat, 0.90), 3),
        p99_ms=round(percentile(lat, 0.99), 3),
        p999_ms=round(percentile(lat, 0.999), 3),
        max_ms=round(lat[-1], 3) if lat else 0.0,
        ttfb_p50_ms=round(percentile(ttfb, 0.5), 3) if ttfb else None,
        ttfb_p99_ms=round(percentile(ttfb, 0.99), 3) if ttfb else None,
        errors=dict(Counter(s.error for s in samples if s.error is not None)),
    )


class Runner:
    """Sends tasks of a scenario to ``url`` and records samples."""

    def __init__(
        self,
        url: str,
        scenario: str = "mixed",
        *,
        headers: dict[str, str] | None = None,
        model: str | None = None,
        seed: int = 1,
    ) -> None:
        self.url = url.rstrip("/") + "/v1/chat/completions"
        weights = SCENARIOS[scenario]
        self._names = list(weights)
        self._weights = list(weights.values())
        self._rng = random.Random(seed)
        self._headers = {"authorization": "Bearer bench", **(headers or {})}
        self._bodies = {
            name: json.dumps({**task, **({"model": model} if model else {})}).encode()
            for name, task in TASKS.items()
        }

    def pick(self) -> str:
        return self._rng.choices(self._names, self._weights)[0]

    async def one(self, session: aiohttp.ClientSession, task: str, started: float) -> Sample:
        """One request; latency from ``started`` (a perf_counter time)."""
        ttfb = None
        error = None
        stream = b'"stream": true' in self._bodies[task]
        try:
            async with session.post(
                self.url,
                data=self._bodies[task],
                headers={**self._headers, "content-type": "application/json"},
            ) as resp:
                if stream:
                    first = await resp.content.readany()
                    ttfb = time.perf_counter() - started
                    body = first + await resp.read()
                    if resp.status == 200 and not body.rstrip().endswith(b"data: [DONE]"):
                        error = "stream_incomplete"
                else:
                    body = await resp.read()
                if resp.status != 200:
                    error = f"http_{resp.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            error = type(exc).__name__
        done = time.perf_counter()
        return Sample(0.0, done - started, ttfb, task, error)


def _session(limit: int = 0) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit, force_close=False),
        timeout=aiohttp.ClientTimeout(total=120),
    )


async def open_loop(
    runner: Runner, rate: float, duration: float, progress: Callable[[str], None] | None = None
) -> tuple[list[Sample], float]:
    """Constant arrival rate for ``duration`` seconds; returns (samples, elapsed)."""
    samples: list[Sample] = []
    async with _session() as session:
        start = time.perf_counter()
        total = int(rate * duration)
        tasks: set[asyncio.Task[None]] = set()
        last = start

        async def fire(task: str, scheduled: float) -> None:
            sample = await runner.one(session, task, scheduled)
            sample.at = scheduled - start
            samples.append(sample)

        for i in range(total):
            scheduled = start + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            t = asyncio.create_task(fire(runner.pick(), scheduled))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
            now = time.perf_counter()
            if progress and now - last >= 2:
                last = now
                errors = sum(s.error is not None for s in samples)
                progress(
                    f"{now - start:5.1f} s  sent {i + 1}  done {len(samples)}  errors {errors}"
                )
        if tasks:
            await asyncio.wait(tasks)
        return samples, time.perf_counter() - start


async def closed_loop(
    runner: Runner,
    users: int,
    spawn_rate: float,
    duration: float,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[Sample], float]:
    """``users`` users, started ``spawn_rate`` per second, each one request at a time."""
    samples: list[Sample] = []
    async with _session() as session:
        start = time.perf_counter()
        stop = start + duration

        async def user(n: int) -> None:
            await asyncio.sleep(n / spawn_rate)
            while time.perf_counter() < stop:
                began = time.perf_counter()
                sample = await runner.one(session, runner.pick(), began)
                sample.at = began - start
                samples.append(sample)

        async def report() -> None:
            while True:
                await asyncio.sleep(2)
                if progress:
                    now = time.perf_counter() - start
                    progress(f"{now:5.1f} s  done {len(samples)}  ({len(samples) / now:.0f}/s)")

        reporter = asyncio.create_task(report())
        await asyncio.gather(*(user(n) for n in range(users)))
        reporter.cancel()
        return samples, time.perf_counter() - start


def markdown(summaries: list[Summary]) -> str:
    head = (
        "| target | mode | requests | ok | rate/s | p50 ms | p90 ms | p99 ms | p99.9 ms |"
        " max ms | TTFB p50 ms | errors |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    rows = [
        f"| {s.label} | {s.mode} | {s.requests} | {s.ok} | {s.achieved_rps} | {s.p50_ms} |"
        f" {s.p90_ms} | {s.p99_ms} | {s.p999_ms} | {s.max_ms} |"
        f" {s.ttfb_p50_ms if s.ttfb_p50_ms is not None else '-'} | {s.errors or '-'} |"
        for s in summaries
    ]
    return "\n".join([head, *rows])


def plot(samples: list[Sample], path: str) -> bool:
    """Latency over time and the percentile curve as a PNG; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    ok = [s for s in samples if s.error is None]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    left.scatter([s.at for s in ok], [s.latency_s * 1e3 for s in ok], s=2)
    left.set(xlabel="s", ylabel="latency ms", title="latency over time")
    lat = sorted(s.latency_s * 1e3 for s in ok)
    qs = [1 - 10 ** (-k / 10) for k in range(0, 41)]
    right.plot([1 / (1 - q) for q in qs[:-1]], [percentile(lat, q) for q in qs[:-1]])
    right.set(xscale="log", xlabel="1 / (1 - percentile)", ylabel="ms", title="percentiles")
    fig.tight_layout()
    fig.savefig(path)
    return True


def main(argv: list[str] | None = None) -> int:
    summary = (__doc__ or "").splitlines()[0]
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=summary)
    parser.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:8787")
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="mixed")
    parser.add_argument("--rate", type=float, help="open loop: requests per second")
    parser.add_argument("--users", type=int, help="closed loop: concurrent users")
    parser.add_argument("--spawn-rate", type=float, default=10.0, help="users started per s")
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--model", help="override the model of every task")
    parser.add_argument("--header", action="append", default=[], help="NAME:VALUE, repeatable")
    parser.add_argument("--json", help="write samples' summary as JSON here")
    parser.add_argument("--markdown", help="write the Markdown summary here")
    parser.add_argument("--plot", help="write a PNG here (needs matplotlib)")
    args = parser.parse_args(argv)
    if (args.rate is None) == (args.users is None):
        parser.error("give exactly one of --rate (open loop) or --users (closed loop)")
    headers = dict(h.split(":", 1) for h in args.header)
    runner = Runner(args.url, args.scenario, headers=headers, model=args.model)

    def progress(line: str) -> None:
        print("  " + line, file=sys.stderr, flush=True)

    if args.rate is not None:
        mode = f"open {args.rate:g}/s"
        samples, elapsed = asyncio.run(open_loop(runner, args.rate, args.duration, progress))
    else:
        mode = f"closed {args.users} users"
        samples, elapsed = asyncio.run(
            closed_loop(runner, args.users, args.spawn_rate, args.duration, progress)
        )
    result = summarize(args.url, mode, elapsed, samples)
    table = markdown([result])
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(asdict(result), indent=2))
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    if args.plot and not plot(samples, args.plot):
        print("(no plot: matplotlib is not installed)", file=sys.stderr)
    return 0 if result.ok == result.requests else 1


if __name__ == "__main__":
    sys.exit(main())
