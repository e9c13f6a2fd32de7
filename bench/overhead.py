"""Overhead: the same load direct to a mock upstream, through a bare aiohttp pass-through, and
through gearshift — interleaved in rounds — and what each hop adds.

    python -m bench.overhead [--rates 100 200 400] [--round 5] [--rounds 2]
                             [--latency-ms 20] [--users 64] [--peer URL ...]

Processes on loopback: ``gearshift mock-upstream`` answering after ``--latency-ms``;
``gearshift serve`` in front of it (on ``catalog_2024.toml``, whose models ``bench.load``'s
tasks name, as the recorded figures were run; access log on as shipped, written to
/dev/null); ``bench.passthrough`` in front of it (parse, forward on a pooled session, copy
back). ``--peer URL`` adds any OpenAI-compatible proxy already running, configured to use
the mock at ``--mock-port`` (e.g. LiteLLM: see bench/README.md); never a dependency.

1. **Added latency**: at each rate, open-loop rounds of ``--round`` seconds, target after
   target in turn, ``--rounds`` times; latency percentiles per target; added = target - direct
   at the same percentile.
2. **Streaming**: the same at 200/s with streamed answers; added time to first byte.
3. **Throughput**: closed loop with ``--users`` users for twice ``--round`` seconds per target;
   gearshift's share of the pass-through's rate is the headline number.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import asdict

from bench import cli
from bench.load import Runner, Sample, Summary, closed_loop, open_loop, summarize
from bench.procs import running, trio


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


async def _rounds(
    targets: dict[str, str], scenario: str, rate: float, seconds: float, rounds: int
) -> dict[str, Summary]:
    samples: dict[str, list[Sample]] = {name: [] for name in targets}
    elapsed = dict.fromkeys(targets, 0.0)
    for r in range(rounds):
        for name, url in targets.items():
            got, took = await open_loop(Runner(url, scenario, seed=r), rate, seconds)
            samples[name] += got
            elapsed[name] += took
    return {
        name: summarize(name, f"open {rate:g}/s {scenario}", elapsed[name], samples[name])
        for name in targets
    }


def _added(results: dict[str, Summary], field: str) -> dict[str, float | None]:
    base = getattr(results["direct"], field)
    return {
        name: None if getattr(s, field) is None else round(getattr(s, field) - base, 3)
        for name, s in results.items()
        if name != "direct"
    }


async def run(args: argparse.Namespace) -> dict[str, object]:
    procs = trio(
        args.mock_port,
        mock_args=["--latency-ms", str(args.latency_ms), "--chunk-words", "4"],
        workers=str(args.workers),
    )
    commands, env = procs.commands, procs.env
    targets = {
        "direct": procs.mock_url,
        "passthrough": procs.passthrough_url,
        "gearshift": procs.gearshift_url,
    }
    for i, peer in enumerate(args.peer):
        targets[f"peer{i + 1}"] = peer
    report: dict[str, object] = {
        "latency_ms_upstream": args.latency_ms,
        "workers": args.workers,
        "rates": {},
        "stream": None,
        "throughput": {},
    }
    async with running(*commands, env=env):
        for url in targets.values():  # warm every path: pools, caches
            await open_loop(Runner(url, "simple"), 50, min(1.0, args.round))
        latency: dict[str, object] = {}
        for rate in args.rates if "latency" in args.phases else []:
            _log(f"latency at {rate:g}/s …")
            results = await _rounds(targets, "simple", rate, args.round, args.rounds)
            latency[f"{rate:g}"] = {
                "summaries": {k: asdict(v) for k, v in results.items()},
                "added_p50_ms": _added(results, "p50_ms"),
                "added_p99_ms": _added(results, "p99_ms"),
                "added_p999_ms": _added(results, "p999_ms"),
            }
        report["rates"] = latency
        if "stream" in args.phases:
            _log("streaming at 200/s …")
            results = await _rounds(targets, "stream", 200, args.round, args.rounds)
            report["stream"] = {
                "summaries": {k: asdict(v) for k, v in results.items()},
                "added_ttfb_p50_ms": _added(results, "ttfb_p50_ms"),
                "added_ttfb_p99_ms": _added(results, "ttfb_p99_ms"),
            }
        if "throughput" not in args.phases:
            return report
        _log(f"throughput, closed loop, {args.users} users …")
        throughput: dict[str, object] = {}
        for name, url in targets.items():
            got, took = await closed_loop(Runner(url, "simple"), args.users, 1000, args.round * 2)
            throughput[name] = asdict(summarize(name, f"closed {args.users}", took, got))
        report["throughput"] = throughput
        rps = {k: v["achieved_rps"] for k, v in throughput.items()}  # type: ignore[index]
        report["gearshift_share_of_passthrough"] = round(rps["gearshift"] / rps["passthrough"], 3)
    return report


async def peer_latency(
    peers: dict[str, str], *, mock_port: int, rates: list[float], round: float, rounds: int
) -> dict[str, object]:
    """Latency at fixed rates of gearshift servers already running (``peers``: name to URL,
    in order) beside this bench's own trio; the report names them (``peer1``: the first)."""
    _log(f"latency at fixed rates (peer1..: {', '.join(peers.values())}) …")
    latency = await run(
        argparse.Namespace(
            mock_port=mock_port, latency_ms=20.0, workers=1, peer=list(peers.values()),
            rates=rates, round=round, rounds=rounds, phases=["latency"], users=64,
        )
    )  # fmt: skip
    latency["peers"] = {f"peer{i + 1}": name for i, name in enumerate(peers)}
    return latency


def render(report: dict[str, object]) -> str:
    lines = [f"upstream latency {report['latency_ms_upstream']} ms", ""]
    head = "| rate | target | p50 ms | p99 ms | p99.9 ms | added p50 | added p99 | added p99.9 |"
    lines.append(head + " errors |")
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for rate, r in report["rates"].items():  # type: ignore[attr-defined]
        for name, s in r["summaries"].items():
            add = [r[k].get(name, "-") for k in ("added_p50_ms", "added_p99_ms", "added_p999_ms")]
            lines.append(
                f"| {rate}/s | {name} | {s['p50_ms']} | {s['p99_ms']} | {s['p999_ms']} |"
                f" {add[0]} | {add[1]} | {add[2]} | {s['errors'] or '-'} |"
            )
    st = report["stream"] or {"summaries": {}}
    lines += ["", "| streams 200/s | TTFB p50 ms | TTFB p99 ms | added TTFB p50 | errors |",
              "|---|---|---|---|---|"]  # fmt: skip
    for name, s in st["summaries"].items():  # type: ignore[index]
        added = st["added_ttfb_p50_ms"].get(name, "-")  # type: ignore[index]
        lines.append(
            f"| {name} | {s['ttfb_p50_ms']} | {s['ttfb_p99_ms']} | {added} | {s['errors'] or '-'} |"
        )
    lines += ["", "| throughput (closed loop) | requests/s | p50 ms | p99 ms | errors |",
              "|---|---|---|---|---|"]  # fmt: skip
    for name, s in report["throughput"].items():  # type: ignore[attr-defined]
        lines.append(
            f"| {name} | {s['achieved_rps']} | {s['p50_ms']} | {s['p99_ms']} |"
            f" {s['errors'] or '-'} |"
        )
    if "gearshift_share_of_passthrough" in report:
        share = report["gearshift_share_of_passthrough"]
        lines += ["", f"gearshift ({report['workers']} worker(s)) / pass-through: {share}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser("bench.overhead", __doc__, rounds=2)
    parser.add_argument("--rates", type=float, nargs="+", default=[100.0, 200.0, 400.0])
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--users", type=int, default=64)
    parser.add_argument("--peer", action="append", default=[], help="another proxy's base URL")
    parser.add_argument(
        "--mock-port", type=int, help="port of the mock upstream (so a peer can point at it)"
    )
    parser.add_argument("--workers", default="1", help="gearshift serve --workers")
    parser.add_argument(
        "--phases",
        nargs="+",
        choices=["latency", "stream", "throughput"],
        default=["latency", "stream", "throughput"],
    )
    args = parser.parse_args(argv)
    return cli.finish(asyncio.run(run(args)), args.json, render)


if __name__ == "__main__":
    sys.exit(main())
