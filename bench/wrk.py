"""Throughput measured with wrk, a load generator written in C, so that the proxy and not the
load generator is what saturates the cores.

    python -m bench.wrk [--round 5] [--rounds 3] [--connections 16] [--workers 1]
                        [--peer NAME=URL[@PID]] [--json FILE]

Processes on loopback: ``gearshift mock-upstream`` answering at once (latency 0); a bare
aiohttp pass-through (``bench.passthrough``) and ``gearshift serve`` (the seed's 2024
catalog, one process unless ``--workers``, access log on as shipped, to /dev/null) in front
of it. Each round runs wrk for ``--round`` seconds against every target in turn — direct,
pass-through, gearshift, then any ``--peer`` (another OpenAI-compatible proxy already running
in front of the same mock, ``--mock-port``) — the order reversed every other round, and
reads the CPU seconds each proxy process (and its children) spent from ``/proc``. The
report gives, per target, the median over rounds of requests per second and of CPU µs per
request, and gearshift's share of the pass-through's throughput.

The body is ``bench.load``'s ``classify`` task (a short classification for ``gpt-4o``,
which gearshift sends to ``gpt-4o-mini``: the OpenAI path, no translation). wrk is a Debian
package (``apt-get install wrk``); without it this module says so and exits 2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass

import aiohttp

from bench import cli
from bench.load import TASKS
from bench.procs import running, trio

PATH = "/v1/chat/completions"


@dataclass
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float | None
    p99_ms: float | None
    errors: int  # non-2xx answers, socket errors and timeouts


UNIQUE = "@@N@@"  # in a body: replaced by a number no other request of the run has


def script(body: bytes, key: str = "sk-bench") -> str:
    """A wrk Lua script that POSTs ``body`` as JSON on every request; a body holding
    ``UNIQUE`` gets a different number there in each request (a run's random prefix and a
    counter: every request is one the response cache has not seen)."""
    text = (
        'wrk.method = "POST"\n'
        f"wrk.body = {_lua_string(body.decode())}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {key}"\n'
    )
    if UNIQUE.encode() in body:
        head, tail = body.decode().split(UNIQUE, 1)
        text += (
            "math.randomseed(os.time())\n"
            "local run = tostring(math.random(1, 1000000000))\n"
            "local n = 0\n"
            "request = function()\n"
            "  n = n + 1\n"
            f"  return wrk.format(nil, nil, nil, {_lua_string(head)} .. run .. '-' .. n .. "
            f"{_lua_string(tail)})\n"
            "end\n"
        )
    return text


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", value).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def parse(output: str) -> WrkResult:
    """Read wrk's report (run with ``--latency``)."""
    done = re.search(r"(\d+) requests in ([\d.]+)(\w+),", output)
    if done is None:
        raise ValueError(f"not a wrk report: {output[:200]!r}")
    seconds = _ms(done.group(2) + done.group(3)) / 1000
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.M)
    errors = 0
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non2xx:
        errors += int(non2xx.group(1))
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if sockets:
        errors += sum(int(n) for n in sockets.groups())
    return WrkResult(
        requests=int(done.group(1)),
        seconds=seconds,
        rps=float(rps.group(1)) if rps else int(done.group(1)) / seconds,
        p50_ms=_ms(p50.group(1)) if p50 else None,
        p99_ms=_ms(p99.group(1)) if p99 else None,
        errors=errors,
    )


async def wrk(
    url: str, lua: str, seconds: float, connections: int = 16, threads: int = 1
) -> WrkResult:
    """Run wrk against ``url`` with the Lua script at ``lua`` and read its report (wrk takes
    whole seconds)."""
    proc = await asyncio.create_subprocess_exec(
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
        "-s", lua,
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"wrk exited with {proc.returncode}: {out.decode()[:300]}")
    return parse(out.decode())


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    return children


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of ``pid`` and its living descendants (workers)."""
    if pid is None:
        return 0.0
    tree = _children()
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        todo += tree.get(p, [])
    return total


async def _settle(mock_url: str) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(mock_url + "/_mock/config", json={"latency_ms": 0}) as resp,
    ):
        resp.raise_for_status()


async def measure(
    targets: dict[str, tuple[str, int | None]],
    lua: str,
    seconds: float,
    rounds: int,
    connections: int,
    threads: int = 1,
    log: Callable[[str], None] = lambda line: None,
) -> dict[str, dict[str, object]]:
    """``targets``: name → (base URL, the PID whose CPU to read, or None). Interleaved rounds,
    the order reversed every other round; per target the rounds and their medians."""
    runs: dict[str, list[dict[str, float | int | None]]] = {name: [] for name in targets}
    names = list(targets)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            url, pid = targets[name]
            before = cpu_seconds(pid)
            result = await wrk(url.rstrip("/") + PATH, lua, seconds, connections, threads)
            spent = cpu_seconds(pid) - before
            row: dict[str, float | int | None] = asdict(result)
            row["cpu_us_per_request"] = (
                round(spent / result.requests * 1e6, 1) if pid and result.requests else None
            )
            runs[name].append(row)
            log(f"round {r + 1} {name}: {result.rps:.0f} req/s, cpu {row['cpu_us_per_request']} µs")
    report: dict[str, dict[str, object]] = {}
    for name, rows in runs.items():
        cpu = [c for c in (row["cpu_us_per_request"] for row in rows) if c is not None]
        report[name] = {
            "rps": round(statistics.median(float(row["rps"] or 0) for row in rows), 1),
            "p50_ms": statistics.median(float(row["p50_ms"] or 0) for row in rows),
            "p99_ms": statistics.median(float(row["p99_ms"] or 0) for row in rows),
            "errors": sum(int(row["errors"] or 0) for row in rows),
            "cpu_us_per_request": round(statistics.median(cpu), 1) if cpu else None,
            "rounds": rows,
        }
    return report


def render(report: dict[str, object]) -> str:
    targets: dict[str, dict[str, object]] = report["targets"]  # type: ignore[assignment]
    lines = [
        f"wrk, {report['connections']} connections, {report['rounds']} rounds of "
        f"{report['round_s']} s; gearshift workers: {report['workers']}",
        "",
        "| target | requests/s (median) | p50 ms | p99 ms | CPU µs / request | errors |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, t in targets.items():
        cpu = t["cpu_us_per_request"]
        lines.append(
            f"| {name} | {t['rps']} | {t['p50_ms']:.3f} | {t['p99_ms']:.3f} |"
            f" {cpu if cpu is not None else '-'} | {t['errors']} |"
        )
    lines += ["", f"gearshift / pass-through throughput: {report['share']}"]
    if report.get("cpu_ratio") is not None:
        lines.append(f"gearshift / pass-through CPU per request: {report['cpu_ratio']}")
    for name, times in report.get("vs_peers", {}).items():  # type: ignore[attr-defined]
        lines.append(f"gearshift / {name} throughput: {times} times")
    return "\n".join(lines)


def _peer(spec: str) -> tuple[str, str, int | None]:
    name, _, where = spec.partition("=")
    if not where:
        name, where = "peer", spec
    url, _, pid = where.rpartition("@") if "@" in where.split("//", 1)[-1] else (where, "", "")
    return name, url, int(pid) if pid else None


async def run(args: argparse.Namespace) -> dict[str, object]:
    started = trio(args.mock_port, workers=str(args.workers))
    mock_url = started.mock_url
    task = TASKS["classify"]
    if getattr(args, "unique", False):  # each request one the cache has not seen
        messages = [*task["messages"][:-1], dict(task["messages"][-1])]
        messages[-1]["content"] = f"{messages[-1]['content']} (#{UNIQUE})"
        task = {**task, "messages": messages}
    body = json.dumps(task).encode()
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script(body))
    try:
        async with running(*started.commands, env=started.env) as procs:
            await _settle(mock_url)
            targets: dict[str, tuple[str, int | None]] = {
                "direct": (mock_url, procs[0].pid),
                "passthrough": (started.passthrough_url, procs[2].pid),
                "gearshift": (started.gearshift_url, procs[1].pid),
            }
            for spec in args.peer:
                name, url, pid = _peer(spec)
                targets[name] = (url, pid)
            for url, _ in targets.values():  # warm every path: pools, caches
                await wrk(url + PATH, handle.name, 1, args.connections)
            measured = await measure(
                targets, handle.name, args.round, args.rounds, args.connections, args.threads,
                log=lambda line: print(line, file=sys.stderr, flush=True),
            )  # fmt: skip
    finally:
        os.unlink(handle.name)
    share = round(measured["gearshift"]["rps"] / measured["passthrough"]["rps"], 3)  # type: ignore[operator]
    gs_cpu, pt_cpu = (measured[n]["cpu_us_per_request"] for n in ("gearshift", "passthrough"))
    report: dict[str, object] = {
        "connections": args.connections,
        "rounds": args.rounds,
        "round_s": args.round,
        "workers": args.workers,
        "targets": measured,
        "share": share,
        "cpu_ratio": round(gs_cpu / pt_cpu, 2) if gs_cpu and pt_cpu else None,  # type: ignore[operator]
        "vs_peers": {
            name: round(measured["gearshift"]["rps"] / t["rps"], 1)  # type: ignore[operator]
            for name, t in measured.items()
            if name not in ("direct", "passthrough", "gearshift") and t["rps"]
        },
    }
    return report


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser("bench.wrk", __doc__)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--workers", default="1", help="gearshift serve --workers")
    parser.add_argument(
        "--peer", action="append", default=[],
        help="NAME=URL[@PID]: another proxy in front of the mock (PID: to read its CPU)",
    )  # fmt: skip
    parser.add_argument("--mock-port", type=int, help="the mock's port (so a peer can use it)")
    parser.add_argument(
        "--unique", action="store_true",
        help="a different prompt in every request (what a response cache has not seen)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if cli.wrk_missing("bench.wrk"):
        return 2
    return cli.finish(asyncio.run(run(args)), args.json, render)


if __name__ == "__main__":
    sys.exit(main())
