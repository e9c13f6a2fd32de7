"""CPU time per request of running gearshift processes, compared in alternating rounds.

Throughput on a 2-core machine moves by ±20 % from run to run (the load generator and the
mock share the cores with the proxy); the CPU seconds a server process spends per request
(its utime + stime from ``/proc``, over a fixed number of requests) is steadier, and it is
what a sidecar costs its host. Start the processes to compare (each a ``gearshift serve``
in front of the same mock upstream), then::

    python -m bench.cpu_per_request before=PID@PORT after=PID@PORT --rounds 6

Each round sends ``--requests`` small chat requests (``--concurrency`` at a time, keep-alive)
to each target in turn, the order reversed every other round; the report gives every
round's µs of CPU per request and the median.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics

import aiohttp

BODY = (
    b'{"model":"auto","messages":[{"role":"user","content":'
    b'"Classify the sentiment of: I loved it."}]}'
)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load(url: str, requests: int, concurrency: int) -> None:
    connector = aiohttp.TCPConnector(limit=concurrency)
    headers = {"content-type": "application/json"}
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        left = requests

        async def user() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                async with session.post(url + "/v1/chat/completions", data=BODY) as resp:
                    await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"{url}: status {resp.status}")

        await asyncio.gather(*(user() for _ in range(concurrency)))


async def run(args: argparse.Namespace) -> dict[str, list[float]]:
    targets = []
    for spec in args.targets:
        name, _, where = spec.partition("=")
        pid, _, port = where.partition("@")
        targets.append((name, int(pid), f"http://127.0.0.1:{port}"))
    await asyncio.gather(*(load(url, 200, 8) for _, _, url in targets))  # warm up
    per_request: dict[str, list[float]] = {name: [] for name, _, _ in targets}
    for round_ in range(args.rounds):
        for name, pid, url in targets if round_ % 2 == 0 else reversed(targets):
            before = cpu_seconds(pid)
            await load(url, args.requests, args.concurrency)
            spent = cpu_seconds(pid) - before
            per_request[name].append(spent / args.requests * 1e6)
    return per_request


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="+", help="NAME=PID@PORT of a running gearshift")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args(argv)
    for name, values in asyncio.run(run(args)).items():
        rounds = ", ".join(f"{v:.0f}" for v in values)
        print(
            f"{name}: µs CPU per request, rounds [{rounds}], median {statistics.median(values):.0f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
