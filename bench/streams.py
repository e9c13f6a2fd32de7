"""Streamed answers at scale through one gearshift process: memory per open stream, time
added per chunk, CPU per relayed chunk — against the mock direct and a bare pass-through.

    python -m bench.streams [--streams 2000] [--seconds 20] [--chunk-ms 100] [--clients 2]
                            [--phases scale formats] [--max-connections N] [--json FILE]

Processes on loopback: ``gearshift mock-upstream`` (OpenAI, Anthropic and Gemini APIs, its
stream paced at runtime through ``POST /_mock/config``); ``gearshift serve`` on the seed's
2024 catalog (one process; access log on as shipped, to /dev/null; each provider's
``max_connections`` as shipped, 4,096 — beyond it streams wait inside gearshift for a
pooled upstream connection — unless ``--max-connections`` writes a copy of the catalog
with another); ``bench.passthrough`` (OpenAI format only) in front of it.

The load generator is ``--clients`` child processes (``python -m bench.streams --client``),
each with its own event loop (uvloop when installed) and one aiohttp session (connector
limit 0), reading every stream with ``readany`` and recording its status, time to first
byte, the gaps between reads, whether it ended with ``data: [DONE]``, and its error. The
mock's answer is at most 16 words (``_ANSWER_WORDS`` of the question after its 4-word
preamble) and no setting lengthens it: with the usage event the request asks for (as
gearshift asks its upstream), a stream is 20 events, 19 chunk delays long (1.9 s at
100 ms). So each of the ``--streams`` *slots* opens its next stream as soon as
the last one ended, from its start in the ramp (``--ramp``) until ``--seconds`` after the
ramp: that many streams stay open for the whole plateau, and the measured stream length
is reported. Every stream has a hard deadline (the phase's end plus a grace); a stream
still open then is an error (``timeout``).

1. **scale** — ``--streams`` slots with the mock pacing events ``--chunk-ms`` apart,
   against the mock direct, the pass-through, then gearshift (the OpenAI path:
   ``gpt-4o-mini`` pinned with ``x-gearshift-route: pin``). While the streams are open (a
   quarter, half and three quarters into the plateau) the target's RSS (``VmRSS``) and open
   descriptors are read from ``/proc`` and the streams open at that instant counted from the
   records; memory per open stream = (RSS then - RSS after the warm-up, before the phase) /
   open streams (the mock keeps every request it served, for ``/_mock/requests``, so its
   RSS grows with requests and direct's figure is not only per stream). Added time per
   chunk = gap between reads - the mock's chunk delay (p50, p99; and gearshift's p50
   against direct's); time to first byte p50/p99; CPU µs per chunk = the target process's
   CPU seconds over the phase (``bench.wrk.cpu_seconds``) / SSE events the clients
   received. The clients' own CPU share is shown: near 100 % means the load generator,
   not the target, was the limit.
2. **formats** — per upstream wire format (gearshift pinned to ``gpt-4o-mini``,
   ``claude-3-haiku``, ``gemini-1.5-flash``; the client always speaks OpenAI) and the
   pass-through (OpenAI) for reference: ``--formats-streams`` slots, ``--formats-chunk-ms``
   apart, for ``--formats-seconds``, twice — one word per chunk (~20 events a stream) and
   the whole answer in one chunk (5 events). CPU µs per relayed chunk over the long run
   (the request's fixed cost included) and the marginal µs per chunk (the difference between
   the two runs per stream, divided by the difference in chunks: the relay and translation
   of one more event, without the request's fixed cost, which is shown apart).

Markdown tables on stdout (and an example message of each kind of error), progress on
stderr, ``--json`` writes everything, with the first 200 failed streams' records. The open-file
soft limit is raised to the hard limit (the children inherit it); 2000 streams need ~4000
descriptors in gearshift. Exit status 1 when any stream failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.load import TASKS, percentile
from bench.procs import CATALOG_2024, running, trio
from bench.wrk import cpu_seconds

PATH = "/v1/chat/completions"
ROOT = Path(__file__).resolve().parents[1]
# More than the mock's 12 answer words, so that the answer (and the stream) is the longest
# the mock gives: "Mock answer from <model>:" and the first 12 words of this.
QUESTION = (
    "Write two sentences about autumn in the mountains, with the colours of the larches, "
    "the first snow on the ridges and the quiet of the empty huts."
)
FORMATS = {"openai": "gpt-4o-mini", "anthropic": "claude-3-haiku", "gemini": "gemini-1.5-flash"}
SHORT_CHUNK_WORDS = 64  # the whole answer in one content chunk (formats phase, short run)


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def body_for(model: str) -> str:
    """``bench.load``'s streaming chat with a longer question, asking for the usage event:
    gearshift asks its upstream for it anyway, and this way direct, pass-through and gearshift
    get the same upstream stream (else gearshift's has one more paced event)."""
    task = TASKS["stream_chat"]
    messages = [{"role": "user", "content": QUESTION}]
    usage = {"include_usage": True}
    return json.dumps({**task, "model": model, "messages": messages, "stream_options": usage})


# --- The client side: a child process ------------------------------------------------------


async def _client(spec: dict[str, Any], t0: float) -> dict[str, Any]:
    """Run the slots of ``spec`` from ``t0`` (a ``time.monotonic()`` time, which is
    system-wide); records are ``[start, end, status, ttfb_ms, events, done, error]``, times
    from ``t0``, and ``gaps`` every gap between two reads of an ok stream, in µs."""
    total, ramp = int(spec["total"]), float(spec["ramp"])
    stop = t0 + ramp + float(spec["seconds"])
    deadline = stop + float(spec["grace"])
    data = spec["body"].encode()
    headers = {"content-type": "application/json", **spec["headers"]}
    records: list[list[Any]] = []
    gaps: list[int] = []
    examples: dict[str, str] = {}  # an error kind -> the first message of that kind
    reads = 0
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None)
    cpu0, wall0 = time.process_time(), time.monotonic()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one() -> bool:
            nonlocal reads
            start = time.monotonic()
            status, ttfb, events, done, error = 0, None, 0, False, None
            mine: list[int] = []
            try:
                async with asyncio.timeout(max(0.0, deadline - start)):
                    async with session.post(spec["url"], data=data, headers=headers) as resp:
                        status = resp.status
                        last: float | None = None
                        tail = b""
                        while chunk := await resp.content.readany():
                            now = time.monotonic()
                            if last is None:
                                ttfb = round((now - start) * 1e3, 3)
                            else:
                                mine.append(round((now - last) * 1e6))
                            last = now
                            reads += 1
                            events += chunk.count(b"\n\n")
                            tail = (tail + chunk)[-64:]
                        done = tail.rstrip().endswith(b"data: [DONE]")
                if status != 200:
                    error = f"http_{status}"
                elif not done:
                    error = "incomplete"
            except TimeoutError:
                error = "timeout"
            except aiohttp.ClientError as exc:
                error = type(exc).__name__
                examples.setdefault(error, str(exc)[:300])
            end = time.monotonic()
            if error is None:
                gaps.extend(mine)
            records.append(
                [round(start - t0, 4), round(end - t0, 4), status, ttfb, events, done, error]
            )
            return error is None

        async def slot(i: int) -> None:
            await asyncio.sleep(max(0.0, t0 + ramp * i / total - time.monotonic()))
            while time.monotonic() < stop:
                if not await one():
                    await asyncio.sleep(0.05)  # no hot loop of failures

        await asyncio.gather(*(slot(i) for i in spec["slots"]))
    return {
        "records": records,
        "gaps": gaps,
        "reads": reads,
        "examples": examples,
        "cpu_share": round((time.process_time() - cpu0) / (time.monotonic() - wall0), 3),
    }


def _run(coro: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def client_main() -> int:
    """``--client``: read the spec (a JSON line) on stdin, say ``ready``, wait for ``go T0``,
    run, write the result as JSON to the spec's ``out`` file (not stdout: the event loop may
    have left it non-blocking, and a large write to a pipe would then be cut)."""
    spec = json.loads(sys.stdin.readline())
    print("ready", flush=True)
    go = sys.stdin.readline().split()
    if not go or go[0] != "go":
        return 2
    result = _run(_client(spec, float(go[1])))
    Path(spec["out"]).write_text(json.dumps(result))
    return 0


# --- The bench side: drive children, read /proc --------------------------------------------


@dataclass
class Target:
    name: str
    url: str  # the full chat-completions URL
    pid: int  # the process whose memory and CPU are read
    model: str = "gpt-4o-mini"
    pin: bool = False  # send x-gearshift-route: pin


@dataclass
class Drive:
    """One target's run: the children's records and gaps, /proc samples, CPU."""

    records: list[list[Any]] = field(default_factory=list)
    gaps: list[int] = field(default_factory=list)
    reads: int = 0
    examples: dict[str, str] = field(default_factory=dict)
    client_cpu: list[float] = field(default_factory=list)
    samples: list[dict[str, float]] = field(default_factory=list)  # at, rss_kib, fds
    cpu_s: float = 0.0
    lost: int = 0  # slots of a client that had to be killed


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def raise_nofile(streams: int) -> dict[str, Any]:
    """Soft RLIMIT_NOFILE to the hard limit (children inherit it); a warning when the hard
    limit is below what gearshift needs (a client and an upstream socket per stream)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    need = 2 * streams + 256
    info: dict[str, Any] = {"soft_was": soft, "now": hard, "needed_by_gearshift": need}
    if hard != resource.RLIM_INFINITY and hard < need:
        info["warning"] = (
            f"RLIMIT_NOFILE hard limit {hard} < {need} needed for {streams} streams: "
            "expect accept/connect errors (raise it: ulimit -Hn, or limits.conf)"
        )
        _log(info["warning"])
    return info


async def configure_mock(mock_url: str, **settings: float) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(mock_url + "/_mock/config", json=settings) as resp,
    ):
        resp.raise_for_status()


async def _child(spec: dict[str, Any]) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.streams", "--client",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    assert proc.stdin is not None
    assert proc.stdout is not None
    proc.stdin.write(json.dumps(spec).encode() + b"\n")
    await proc.stdin.drain()
    async with asyncio.timeout(30):
        line = await proc.stdout.readline()
    if line.strip() != b"ready":
        raise SystemExit(f"a client did not start: {line!r}")
    return proc


async def drive(
    target: Target, streams: int, seconds: float, ramp: float, clients: int, grace: float
) -> Drive:
    """Run ``streams`` slots against ``target`` from ``clients`` children; sample the
    target's RSS and descriptors during the plateau; its CPU over the whole run."""
    headers = {"authorization": "Bearer sk-bench"}
    if target.pin:
        headers["x-gearshift-route"] = "pin"
    base = {
        "url": target.url, "body": body_for(target.model), "headers": headers,
        "total": streams, "ramp": ramp, "seconds": seconds, "grace": grace,
    }  # fmt: skip
    shares = [list(range(k, streams, clients)) for k in range(min(clients, streams))]
    with tempfile.TemporaryDirectory(prefix="bench-streams-") as tmp:
        outs = [str(Path(tmp) / f"client{k}.json") for k in range(len(shares))]
        children = await asyncio.gather(
            *(_child({**base, "slots": s, "out": o}) for s, o in zip(shares, outs, strict=True))
        )
        return await _collect(target, children, shares, outs, seconds + ramp + grace, ramp, seconds)


def _load(path: str) -> dict[str, Any]:
    with open(path) as handle:
        result: dict[str, Any] = json.load(handle)
    return result


async def _collect(
    target: Target,
    children: list[asyncio.subprocess.Process],
    shares: list[list[int]],
    outs: list[str],
    bound: float,
    ramp: float,
    seconds: float,
) -> Drive:
    result = Drive()
    cpu0 = cpu_seconds(target.pid)
    t0 = time.monotonic() + 0.1
    for proc in children:
        assert proc.stdin is not None
        proc.stdin.write(f"go {t0!r}\n".encode())
        await proc.stdin.drain()
        proc.stdin.close()

    async def sample() -> None:
        for f in (0.25, 0.5, 0.75):
            at = t0 + ramp + seconds * f
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            now = time.monotonic()
            result.samples.append(
                {
                    "at": round(now - t0, 3),
                    "rss_kib": rss_kib(target.pid),
                    "fds": open_fds(target.pid),
                }
            )

    sampler = asyncio.create_task(sample())
    end = t0 + bound + 15  # the children enforce the deadline; this is a backstop
    for proc, slots, out in zip(children, shares, outs, strict=True):
        try:
            async with asyncio.timeout(max(1.0, end - time.monotonic())):
                await proc.wait()
            got = _load(out)
        except (TimeoutError, OSError, ValueError):
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            result.lost += len(slots)
            continue
        result.records += got["records"]
        result.gaps += got["gaps"]
        result.reads += got["reads"]
        result.client_cpu.append(got["cpu_share"])
        for kind, message in got["examples"].items():
            result.examples.setdefault(kind, message)
    result.cpu_s = cpu_seconds(target.pid) - cpu0
    sampler.cancel()
    return result


async def warm(target: Target, mock_url: str, clients: int, seconds: float) -> None:
    """Load code paths, pools and caches: a few slots of unpaced streams."""
    await configure_mock(mock_url, chunk_delay_ms=0, chunk_words=1)
    await drive(target, 20, seconds, 0.0, min(clients, 2), 10.0)


# --- Figures ---------------------------------------------------------------------------------


def _ms(values: list[float], q: float) -> float | None:
    return round(percentile(values, q), 3) if values else None


def figures(d: Drive, chunk_ms: float, before_kib: int, before_fds: int) -> dict[str, Any]:
    ok = [r for r in d.records if r[6] is None]
    errors = Counter(str(r[6]) for r in d.records if r[6] is not None)
    if d.lost:
        errors["client_lost"] += d.lost
    events = sum(int(r[4]) for r in d.records)
    added = sorted(g / 1e3 - chunk_ms for g in d.gaps)
    ttfb = sorted(float(r[3]) for r in ok)
    per_open: list[float] = []
    opened: list[int] = []
    flowing: list[int] = []  # of those, the ones whose first byte had arrived (not queued)
    for s in d.samples:  # streams open at the instant of each /proc sample
        at = s["at"]
        n = sum(1 for r in d.records if r[0] <= at < r[1])
        opened.append(n)
        flowing.append(
            sum(1 for r in d.records if r[3] is not None and r[0] + r[3] / 1e3 <= at < r[1])
        )
        if n:
            per_open.append((s["rss_kib"] - before_kib) / n)
    return {
        "streams": len(d.records),
        "ok": len(ok),
        "errors": dict(errors),
        "events": events,
        "events_per_stream": float(statistics.median(int(r[4]) for r in ok)) if ok else None,
        "reads_per_event": round(d.reads / events, 3) if events else None,
        "stream_s_p50": round(statistics.median(r[1] - r[0] for r in ok), 3) if ok else None,
        "ttfb_p50_ms": _ms(ttfb, 0.5),
        "ttfb_p99_ms": _ms(ttfb, 0.99),
        "added_per_chunk_p50_ms": _ms(added, 0.5),
        "added_per_chunk_p99_ms": _ms(added, 0.99),
        "rss_before_kib": before_kib,
        "fds_before": before_fds,
        "samples": d.samples,
        "open_at_samples": opened,
        "open_at_plateau": round(statistics.median(opened)) if opened else None,
        "flowing_at_samples": flowing,
        "flowing_at_plateau": round(statistics.median(flowing)) if flowing else None,
        "rss_plateau_kib": round(statistics.median(s["rss_kib"] for s in d.samples))
        if d.samples
        else None,
        "fds_plateau": round(statistics.median(s["fds"] for s in d.samples)) if d.samples else None,
        "kib_per_open_stream": round(statistics.median(per_open), 1) if per_open else None,
        "cpu_s": round(d.cpu_s, 3),
        "cpu_us_per_chunk": round(d.cpu_s / events * 1e6, 1) if events else None,
        "client_cpu_share": d.client_cpu,
        "error_examples": d.examples,
        # [start s, end s, status, ttfb ms, events, done, error], times from the phase's start
        "error_records": [r for r in d.records if r[6] is not None][:200],
    }


async def scale_phase(
    targets: list[Target], mock_url: str, args: argparse.Namespace, grace: float
) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for target in targets:
        await warm(target, mock_url, args.clients, min(1.0, args.seconds / 2))
        await configure_mock(mock_url, chunk_delay_ms=args.chunk_ms, chunk_words=1)
        before, fds = rss_kib(target.pid), open_fds(target.pid)
        _log(f"scale: {args.streams} streams → {target.name} …")
        d = await drive(target, args.streams, args.seconds, args.ramp, args.clients, grace)
        rows[target.name] = figures(d, args.chunk_ms, before, fds)
        r = rows[target.name]
        _log(
            f"  {target.name}: {r['ok']}/{r['streams']} ok, errors {r['errors'] or 0}, "
            f"{r['kib_per_open_stream']} KiB/stream, added p50 {r['added_per_chunk_p50_ms']} ms"
        )
    direct = rows.get("direct", {}).get("added_per_chunk_p50_ms")
    for r in rows.values():
        p50 = r["added_per_chunk_p50_ms"]
        r["added_p50_vs_direct_ms"] = (
            round(p50 - direct, 3) if p50 is not None and direct is not None else None
        )
    return rows


async def formats_phase(
    targets: list[Target], mock_url: str, args: argparse.Namespace
) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    grace = max(10.0, 40 * args.formats_chunk_ms / 1000)
    for target in targets:
        await warm(target, mock_url, args.clients, min(1.0, args.formats_seconds))
        runs: dict[str, dict[str, Any]] = {}
        for label, words in (("long", 1), ("short", SHORT_CHUNK_WORDS)):
            await configure_mock(mock_url, chunk_delay_ms=args.formats_chunk_ms, chunk_words=words)
            _log(f"formats: {target.name}, {label} streams …")
            d = await drive(
                target, args.formats_streams, args.formats_seconds, min(args.ramp, 0.5),
                args.clients, grace,
            )  # fmt: skip
            runs[label] = figures(d, args.formats_chunk_ms, rss_kib(target.pid), 0)
            runs[label].pop("samples")
        long, short = runs["long"], runs["short"]
        marginal = fixed = None
        if long["ok"] and short["ok"] and long["events"] and short["events"]:
            per_stream_l = long["cpu_s"] / long["streams"] * 1e6
            per_stream_s = short["cpu_s"] / short["streams"] * 1e6
            e_l, e_s = long["events"] / long["streams"], short["events"] / short["streams"]
            if e_l > e_s:
                marginal = round((per_stream_l - per_stream_s) / (e_l - e_s), 1)
                fixed = round(per_stream_s - marginal * e_s, 1)
        rows[target.name] = {
            "model": target.model,
            "streams": long["streams"] + short["streams"],
            "ok": long["ok"] + short["ok"],
            "errors": dict(Counter(long["errors"]) + Counter(short["errors"])),
            "events_per_stream": [long["events_per_stream"], short["events_per_stream"]],
            "cpu_us_per_chunk": long["cpu_us_per_chunk"],
            "marginal_us_per_chunk": marginal,
            "fixed_us_per_stream": fixed,
            "client_cpu_share": long["client_cpu_share"] + short["client_cpu_share"],
            "error_examples": {**short["error_examples"], **long["error_examples"]},
            "runs": runs,
        }
    return rows


def catalog(max_connections: int | None) -> str:
    """The 2024 catalog, or a temporary copy with every provider's ``max_connections``."""
    if max_connections is None:
        return CATALOG_2024
    text = Path(CATALOG_2024).read_text()
    text = re.sub(
        r'^(kind = "\w+")$', rf"\1\nmax_connections = {max_connections}", text, flags=re.M
    )
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as handle:
        handle.write(text)
    return handle.name


async def run(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {
        "streams": args.streams, "seconds": args.seconds, "ramp_s": args.ramp,
        "chunk_ms": args.chunk_ms, "clients": args.clients,
        "max_connections": args.max_connections or "as shipped (4,096 per provider)",
        "nofile": raise_nofile(max(args.streams, args.formats_streams)),
    }  # fmt: skip
    config = catalog(args.max_connections)
    started = trio(config=config)
    mock_url = started.mock_url
    try:
        async with running(*started.commands, env=started.env) as procs:
            mock_pid, gs_pid, pt_pid = (p.pid for p in procs)
            gs_url, pt_url = started.gearshift_url + PATH, started.passthrough_url + PATH
            if "scale" in args.phases:
                grace = max(10.0, 40 * args.chunk_ms / 1000)
                targets = [
                    t
                    for t in (
                        Target("direct", mock_url + PATH, mock_pid),
                        Target("passthrough", pt_url, pt_pid),
                        Target("gearshift", gs_url, gs_pid, pin=True),
                    )
                    if t.name in args.targets
                ]
                report["scale"] = await scale_phase(targets, mock_url, args, grace)
            if "formats" in args.phases:
                targets = [
                    Target(f"gearshift {fmt}", gs_url, gs_pid, model, pin=True)
                    for fmt, model in FORMATS.items()
                ]
                targets.append(Target("passthrough openai", pt_url, pt_pid))
                report["formats"] = await formats_phase(targets, mock_url, args)
    finally:
        if config != CATALOG_2024:
            os.unlink(config)
    return report


def _cell(value: object) -> str:
    return "-" if value is None else str(value)


def render(report: dict[str, Any]) -> str:
    lines: list[str] = []
    scale = report.get("scale")
    if scale:
        direct = scale.get("direct", {})
        lines += [
            f"scale: {report['streams']} concurrent streams from {report['clients']} client "
            f"processes, ramp {report['ramp_s']} s, plateau {report['seconds']} s, mock chunk "
            f"delay {report['chunk_ms']} ms; a stream: {_cell(direct.get('events_per_stream'))}"
            f" events, {_cell(direct.get('stream_s_p50'))} s (direct p50), each slot opening "
            f"its next when one ends; gearshift max_connections: {report['max_connections']}",
            "",
            "| target | streams | ok | errors | open (first byte in) at plateau | stream s p50 |"
            " TTFB p50 ms |"
            " TTFB p99 ms | added / chunk p50 ms | added / chunk p99 ms | added p50 vs direct"
            " ms | RSS before MiB | RSS plateau MiB | KiB / open stream | fds before → plateau"
            " | CPU µs / chunk | client CPU |",
            "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|",
        ]
        for name, r in scale.items():
            plateau = r["rss_plateau_kib"]
            lines.append(
                f"| {name} | {r['streams']} | {r['ok']} | {r['errors'] or '-'} |"
                f" {_cell(r['open_at_plateau'])} ({_cell(r['flowing_at_plateau'])}) |"
                f" {_cell(r['stream_s_p50'])} |"
                f" {_cell(r['ttfb_p50_ms'])} | {_cell(r['ttfb_p99_ms'])} |"
                f" {_cell(r['added_per_chunk_p50_ms'])} | {_cell(r['added_per_chunk_p99_ms'])} |"
                f" {_cell(r['added_p50_vs_direct_ms'])} | {r['rss_before_kib'] / 1024:.1f} |"
                f" {'-' if plateau is None else f'{plateau / 1024:.1f}'} |"
                f" {_cell(r['kib_per_open_stream'])} | {r['fds_before']} →"
                f" {_cell(r['fds_plateau'])} | {_cell(r['cpu_us_per_chunk'])} |"
                f" {' / '.join(f'{c:.0%}' for c in r['client_cpu_share'])} |"
            )
    formats = report.get("formats")
    if formats:
        if lines:
            lines.append("")
        lines += [
            f"formats: {report['formats_streams']} concurrent streams for "
            f"{report['formats_seconds']} s per run, mock chunk delay "
            f"{report['formats_chunk_ms']} ms; runs of one word per chunk (long) and the whole "
            "answer in one chunk (short); the client speaks OpenAI",
            "",
            "| upstream format | model | streams | ok | errors | events / stream (long, short) |"
            " CPU µs / chunk (long) | marginal µs / chunk | fixed µs / stream | client CPU |",
            "|---|---|---:|---:|---|---|---:|---:|---:|---|",
        ]
        for name, r in formats.items():
            long, short = r["events_per_stream"]
            lines.append(
                f"| {name} | {r['model']} | {r['streams']} | {r['ok']} | {r['errors'] or '-'} |"
                f" {_cell(long)}, {_cell(short)} | {_cell(r['cpu_us_per_chunk'])} |"
                f" {_cell(r['marginal_us_per_chunk'])} | {_cell(r['fixed_us_per_stream'])} |"
                f" {' / '.join(f'{c:.0%}' for c in r['client_cpu_share'])} |"
            )
    examples = [
        f"- {name}, {kind}: {message}"
        for phase in ("scale", "formats")
        for name, r in (report.get(phase) or {}).items()
        for kind, message in r["error_examples"].items()
    ]
    if examples:
        lines += ["", "errors, an example of each kind:", *examples]
    if "warning" in report["nofile"]:
        lines += ["", report["nofile"]["warning"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--client"]:
        return client_main()
    parser = argparse.ArgumentParser(
        prog="python -m bench.streams", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--streams", type=int, default=2000, help="concurrent streams (scale)")
    parser.add_argument("--seconds", type=float, default=20.0, help="plateau length (scale)")
    parser.add_argument("--ramp", type=float, default=2.0, help="seconds to open them all")
    parser.add_argument("--chunk-ms", type=float, default=100.0, help="mock delay per chunk")
    parser.add_argument("--clients", type=int, default=2, help="load generator processes")
    parser.add_argument("--formats-streams", type=int, default=200)
    parser.add_argument("--formats-seconds", type=float, default=5.0, help="per run")
    parser.add_argument("--formats-chunk-ms", type=float, default=5.0)
    parser.add_argument(
        "--max-connections", type=int,
        help="serve a copy of the catalog with this max_connections per provider",
    )  # fmt: skip
    parser.add_argument(
        "--phases", nargs="+", choices=["scale", "formats"], default=["scale", "formats"]
    )
    parser.add_argument(
        "--targets", nargs="+", choices=["direct", "passthrough", "gearshift"],
        default=["direct", "passthrough", "gearshift"], help="the scale phase's targets",
    )  # fmt: skip
    parser.add_argument("--json", help="write the report here")
    args = parser.parse_args(argv)
    if args.streams < 1 or args.clients < 1 or args.formats_streams < 1:
        parser.error("--streams, --clients and --formats-streams must be >= 1")
    report = asyncio.run(run(args))
    report.update(
        formats_streams=args.formats_streams,
        formats_seconds=args.formats_seconds,
        formats_chunk_ms=args.formats_chunk_ms,
    )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    print(render(report))
    failed = sum(
        r["streams"] - r["ok"]
        for phase in ("scale", "formats")
        for r in report.get(phase, {}).values()
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
