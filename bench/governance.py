"""What governance costs: a key with a budget and rate limits, and the response cache (hits,
and misses that store), with the state in this process or in Redis, against gearshift
without either.

    python -m bench.governance [--rounds 3] [--round 5] [--rates 200 500] [--json FILE]

Starts a ``redis-server`` on a free loopback port (no persistence; without the binary the
Redis targets are left out) and one ``gearshift serve`` per target, each on the seed's 2024
catalog plus its section:

- ``keys-memory`` / ``keys-redis``: the bench's proxy keys with a daily budget, ``rpm`` and
  ``tpm``, all far above the load (every request is checked and settled, none refused);
- ``cache-hit-*``: the cache on with ``any_temperature`` (the bench's requests carry no
  temperature): after the first, every request is a hit;
- ``cache-miss-*``: the same, measured in a second run whose every request has a prompt of
  its own (``bench.wrk --unique``): each looks up, misses, is forwarded and stores its answer.

1. **Throughput and CPU per request**: ``bench.wrk`` (wrk, the mock answering at once), the
   targets above as its peers, interleaved with direct, pass-through and plain gearshift;
   then the second run: plain gearshift and the ``cache-miss`` targets, unique prompts.
2. **Added latency at fixed rates**: ``bench.overhead``'s open-loop rounds (the mock
   answering after 20 ms) with ``keys-memory`` and ``keys-redis`` as peers: what a
   governed request adds, p50 and p99, beside plain gearshift.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

from bench import cli, overhead
from bench import wrk as wrk_bench
from bench.procs import CATALOG_2024, GEARSHIFT, free_port, running

KEYS = """
[[keys]]
name = "bench-wrk"
key = "sk-bench"
budget_daily_usd = 1000000
rpm = 10000000
tpm = 1000000000
[[keys]]
name = "bench-load"
key = "bench"
budget_daily_usd = 1000000
rpm = 10000000
tpm = 1000000000
"""
HIT = "[cache]\nenabled = true\nany_temperature = true\n"
MISS = HIT


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def configs(directory: Path, redis_url: str | None) -> dict[str, Path]:
    """Each target's config file: the 2024 catalog and its section."""
    catalog = Path(CATALOG_2024).read_text()
    state = f'[state]\nbackend = "redis"\nurl = "{redis_url}"\ntimeout = 0.5\n'
    sections = {"keys-memory": KEYS, "cache-hit-memory": HIT, "cache-miss-memory": MISS}
    if redis_url is not None:
        sections |= {
            "keys-redis": KEYS + state,
            "cache-hit-redis": HIT + state,
            "cache-miss-redis": MISS + state,
        }
    out = {}
    for name, section in sections.items():
        out[name] = directory / f"{name}.toml"
        out[name].write_text(catalog + "\n" + section)
    return out


async def run(args: argparse.Namespace) -> dict[str, object]:
    mock_port = free_port()
    env = {
        "OPENAI_API_KEY": "sk-bench",
        "GEARSHIFT_OPENAI_BASE_URL": f"http://127.0.0.1:{mock_port}/v1",
    }
    with tempfile.TemporaryDirectory(prefix="gearshift-bench-") as tmp:
        redis = await _redis(tmp)
        redis_url = None
        if redis is not None:
            redis_url = f"redis://127.0.0.1:{redis[1]}/0"
        else:
            _log("no redis-server: the Redis targets are left out")
        commands = []
        urls: dict[str, str] = {}
        for name, path in configs(Path(tmp), redis_url).items():
            port = free_port()
            urls[name] = f"http://127.0.0.1:{port}"
            argv = [*GEARSHIFT, "serve", "--config", str(path), "--port", str(port)]
            commands.append((argv, urls[name] + "/readyz", 200))
        try:
            return await _measure(args, commands, env, urls, mock_port)
        finally:
            if redis is not None:
                redis[0].terminate()
                await redis[0].wait()


async def _redis(directory: str) -> tuple[asyncio.subprocess.Process, int] | None:
    """A redis-server on a free loopback port, once it answers PING; None without one."""
    if shutil.which("redis-server") is None:
        return None
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "no", "--dir", directory,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    async with asyncio.timeout(10):
        while True:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"PING\r\n")
                pong = await reader.read(16)
                writer.close()
                if pong.startswith(b"+PONG"):
                    return proc, port
            except OSError:
                pass
            await asyncio.sleep(0.02)  # a poll interval


async def _measure(
    args: argparse.Namespace,
    commands: list[tuple[list[str], str, int]],
    env: dict[str, str],
    urls: dict[str, str],
    mock_port: int,
) -> dict[str, object]:
    async with running(*commands, env=env) as procs:
        pids = dict(zip(urls, [p.pid for p in procs], strict=True))
        peers = {name: f"{name}={url}@{pids[name]}" for name, url in urls.items()}
        _log("throughput (wrk) …")
        throughput = await wrk_bench.run(
            argparse.Namespace(
                mock_port=mock_port, workers=1, round=args.round, rounds=args.rounds,
                peer=[p for n, p in peers.items() if "miss" not in n],
                connections=16, threads=1,
            )
        )  # fmt: skip
        _log("throughput (wrk), a prompt of its own in every request …")
        misses = await wrk_bench.run(
            argparse.Namespace(
                mock_port=mock_port, workers=1, round=args.round, rounds=args.rounds,
                peer=[p for n, p in peers.items() if "miss" in n],
                connections=16, threads=1, unique=True,
            )
        )  # fmt: skip
        latency: dict[str, object] = {}
        if args.rates:
            latency = await overhead.peer_latency(
                {n: urls[n] for n in ("keys-memory", "keys-redis") if n in urls},
                mock_port=mock_port, rates=args.rates, round=args.round, rounds=args.rounds,
            )  # fmt: skip
    return {"throughput": throughput, "misses": misses, "latency": latency}


def _table(targets: dict[str, dict[str, float]]) -> list[str]:
    base = targets["gearshift"]
    lines = [
        "| target | requests/s | p50 ms | CPU µs / request | CPU µs more than plain | errors |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, s in targets.items():
        more = (
            f"{s['cpu_us_per_request'] - base['cpu_us_per_request']:+.1f}"
            if s.get("cpu_us_per_request") and name not in ("direct", "passthrough", "gearshift")
            else ""
        )
        lines.append(
            f"| {name} | {s['rps']:,.0f} | {s['p50_ms']} | {s.get('cpu_us_per_request')} |"
            f" {more} | {s.get('errors', 0)} |"
        )
    return lines


def render(report: dict[str, object]) -> str:
    lines = _table(report["throughput"]["targets"])  # type: ignore[index]
    lines += ["", "A prompt of its own in every request:", ""]
    lines += _table(report["misses"]["targets"])  # type: ignore[index]
    latency = report["latency"]
    if latency:
        lines += ["", overhead.render(latency), "", f"peers: {latency['peers']}"]  # type: ignore[arg-type,index]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser("bench.governance", __doc__)
    parser.add_argument("--rates", type=float, nargs="*", default=[200.0, 500.0])
    args = parser.parse_args(argv)
    if cli.wrk_missing("bench.governance"):
        return 2
    return cli.finish(asyncio.run(run(args)), args.json, render)


if __name__ == "__main__":
    raise SystemExit(main())
