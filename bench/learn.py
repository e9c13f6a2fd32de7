"""What the learning loop costs: shadow mode on the request path, and the offline steps
(refit from the store, the report) on stores of a given size.

    python -m bench.learn [--rounds 3] [--round 5] [--rates 200 500] [--rows 1000 5000]
                          [--json FILE]

1. **On the request path**: one ``gearshift serve`` per target, on the seed's 2024 catalog
   plus its ``[learn]`` section, the store in a temporary directory, the shadow budget far
   above the load: ``shadow-0.05`` (the default share: 5% of the requests routed below the
   frontier also go to the reference model, after their answer), ``shadow-1.0`` (every one:
   the upper bound, twice the upstream calls), ``record-1.0`` (every request stored, no shadow
   call), beside plain gearshift. Each round runs wrk on each target in turn (the mock
   answering at once) and then waits until the target has gone quiet: its CPU per client
   request includes the work done after the answers went out (shadow calls, stored rows),
   which would otherwise spill into the next target's window. ``bench.overhead``'s
   open-loop rounds (the mock answering after 20 ms) give what each adds to the client's
   latency at fixed rates.
2. **Offline**: a store of N labeled rows (synthetic: two tasks, a third of one with a
   property that needs the frontier, and a tenth of hard requests that the shipped table
   sends to the frontier); the time of ``calibrate --from-store`` (the fit, its
   inner folds, the comparison) and of the report over it, in this process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench import cli, overhead
from bench import wrk as wrk_bench
from bench.load import TASKS
from bench.procs import CATALOG_2024, GEARSHIFT, free_port, running

SECTIONS = {
    "shadow-0.05": "shadow_share = 0.05",
    "shadow-1.0": "shadow_share = 1.0",
    "record-1.0": "shadow_share = 0.0\nrecord_share = 1.0",
}


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def configs(directory: Path) -> dict[str, Path]:
    catalog = Path(CATALOG_2024).read_text()
    out = {}
    for name, section in SECTIONS.items():
        store = directory / f"{name}.sqlite3"
        learn = f'[learn]\nenabled = true\nbudget_daily_usd = 1000000\nstore = "{store}"\n'
        out[name] = directory / f"{name}.toml"
        out[name].write_text(f"{catalog}\n{learn}{section}\n")
    return out


async def _drained(pid: int, quiet: float = 0.3) -> float:
    """The process's CPU seconds once it has gone quiet (its shadow calls and stored rows
    done: they run after the answers went out): less than 2 ms of CPU in ``quiet`` s."""
    before = wrk_bench.cpu_seconds(pid)
    async with asyncio.timeout(120):
        while True:
            await asyncio.sleep(quiet)  # a poll interval
            now = wrk_bench.cpu_seconds(pid)
            if now - before < 0.002:
                return now
            before = now


async def _throughput(
    args: argparse.Namespace, urls: dict[str, str], pids: dict[str, int], lua: str
) -> dict[str, dict[str, float]]:
    for url in urls.values():  # warm every path: pools, the stores
        await wrk_bench.wrk(url + wrk_bench.PATH, lua, 1, 16)
    for pid in pids.values():
        await _drained(pid)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in urls}
    for r in range(args.rounds):
        for name, url in urls.items():
            cpu = wrk_bench.cpu_seconds(pids[name])
            result = await wrk_bench.wrk(url + wrk_bench.PATH, lua, args.round, 16)
            after = await _drained(pids[name])
            row = {
                "rps": result.rps,
                "p50_ms": result.p50_ms or 0.0,
                "cpu_us_per_request": 1e6 * (after - cpu) / max(1, result.requests),
                "errors": result.errors,
            }
            runs[name].append(row)
            _log(f"round {r + 1} {name}: {row['rps']:.0f} req/s, "
                 f"cpu {row['cpu_us_per_request']:.1f} µs (deferred work included)")  # fmt: skip
    return {
        name: {k: round(statistics.median(x[k] for x in rows), 1) for k in rows[0]}
        for name, rows in runs.items()
    }


async def on_the_path(args: argparse.Namespace) -> dict[str, object]:
    mock_port = free_port()
    mock_url = f"http://127.0.0.1:{mock_port}"
    env = {"OPENAI_API_KEY": "sk-bench", "GEARSHIFT_OPENAI_BASE_URL": mock_url + "/v1"}
    body = json.dumps(TASKS["classify"]).encode()
    with tempfile.TemporaryDirectory(prefix="gearshift-bench-") as tmp:
        mock = ([*GEARSHIFT, "mock-upstream", "--port", str(mock_port)],
                mock_url + "/_mock/config", 200)  # fmt: skip
        commands: list[tuple[list[str], str, int]] = []
        urls: dict[str, str] = {}
        paths = {"gearshift": Path(CATALOG_2024), **configs(Path(tmp))}
        for name, path in paths.items():
            port = free_port()
            urls[name] = f"http://127.0.0.1:{port}"
            argv = [*GEARSHIFT, "serve", "--config", str(path), "--port", str(port),
                    "--no-access-log"]  # fmt: skip
            commands.append((argv, urls[name] + "/readyz", 200))
        lua = Path(tmp) / "bench.lua"
        lua.write_text(wrk_bench.script(body))
        async with running(*commands, env=env) as procs:
            pids = dict(zip(urls, [p.pid for p in procs], strict=True))
            async with running(mock):  # (bench.overhead starts a mock of its own after)
                targets = await _throughput(args, urls, pids, str(lua))
            latency: dict[str, object] = {}
            if args.rates:
                latency = await overhead.peer_latency(
                    {n: urls[n] for n in ("shadow-0.05", "shadow-1.0")},
                    mock_port=mock_port, rates=args.rates, round=args.round, rounds=args.rounds,
                )  # fmt: skip
    return {"throughput": {"targets": targets}, "latency": latency}


# ---------------------------------------------------------------- offline

SUPPORT = "You are the support assistant of an outdoor shop. Answer in two sentences."
EXTRACT = "Extract the city named in the text. Reply with the city name only."
ASKS = ("Where is my order {n}?", "How do I return the boots from order {n}?",
        "Can I change the address on order {n}?", "I was charged twice for order {n}.")  # fmt: skip
HARD = "You are a careful mathematician."
CITIES = ("Lisbon", "Oslo", "Toronto", "Nairobi", "Osaka", "Lima")


def synthetic_store(path: Path, rows: int, seed: int = 1) -> None:
    """``rows`` labeled shadow rows (their answers are placeholders)."""
    from gearshift.learn.outcomes import Outcome, SqliteOutcomes
    from gearshift.learn.spec import LearnSpec
    from gearshift.routing.classify import load_rules

    rules = load_rules(None)
    rng = random.Random(seed)
    store = SqliteOutcomes.open(LearnSpec(store=str(path)))

    def fill() -> None:
        for i in range(rows):
            needs = False
            draw = rng.random()
            if draw < 0.1:  # a request the shipped table sends to the frontier, needing it
                n = rng.randrange(1, 9)
                ask = f"Prove that there are infinitely many primes of the form 4k+{n}, rigorously."
                system, needs = HARD, True
            elif draw < 0.6:
                ask = rng.choice(ASKS).format(n=rng.randrange(10_000, 99_999))
                needs = rng.random() < 0.35
                plan = "Kestrel" if needs else rng.choice(("Classic", "Summit"))
                ask += f" We are on the {plan} plan."
                system = SUPPORT
            else:
                ask, system = f"Text: we met in {rng.choice(CITIES)}.", EXTRACT
            body = {"model": "auto", "messages": [{"role": "system", "content": system},
                                                  {"role": "user", "content": ask}]}  # fmt: skip
            store.record_now(Outcome(
                request_id=f"bench-{i}", at=time.time(), kind="shadow", key="bench",
                tier="light", score="0.1", model="gpt-4o-mini", model_tier="light",
                request=body, features=rules.features(body)[1], answer="a", cost_usd=0.0001,
                reference="gpt-4o", reference_tier="frontier", reference_answer="b",
                reference_cost_usd=0.002, weak_suffices=int(not needs), label_source="judge",
                reason="bench", verdict="agree",
            ))  # fmt: skip

    try:
        store.call(fill)
    finally:
        store.close_now()


def offline(sizes: list[int]) -> dict[str, object]:
    import io

    from gearshift.config import load
    from gearshift.learn import commands
    from gearshift.providers import REGISTRY

    out: dict[str, object] = {}
    for rows in sizes:
        with tempfile.TemporaryDirectory(prefix="gearshift-bench-") as tmp:
            store = Path(tmp) / "o.sqlite3"
            synthetic_store(store, rows)
            config_path = Path(tmp) / "g.toml"
            config_path.write_text(f'[learn]\nenabled = true\nstore = "{store}"\n')
            config = load(str(config_path), kinds=REGISTRY.keys())
            began = time.perf_counter()
            text = io.StringIO()
            rc = commands.from_store(config, [], out=str(Path(tmp) / "r.toml"), stream=text)
            refit_s = time.perf_counter() - began
            began = time.perf_counter()
            commands.report(config, as_json=True, out=io.StringIO())
            report_s = time.perf_counter() - began
            out[str(rows)] = {
                "refit_s": round(refit_s, 2), "accepted": rc == 0,
                "report_s": round(report_s, 3),
            }  # fmt: skip
            _log(f"{rows} rows: refit {refit_s:.2f} s ({'accepted' if rc == 0 else 'refused'}),"
                 f" report {report_s:.3f} s")  # fmt: skip
    return out


def render(report: dict[str, object]) -> str:
    from bench.governance import _table

    lines: list[str] = []
    path = report.get("path")
    if path:
        lines += _table(path["throughput"]["targets"])  # type: ignore[index]
        latency = path["latency"]  # type: ignore[index]
        if latency:
            lines += ["", overhead.render(latency), "", f"peers: {latency['peers']}"]
    if report.get("offline"):
        lines += ["", "| labeled rows | calibrate --from-store s | accepted | report s |",
                  "|---:|---:|---|---:|"]  # fmt: skip
        for rows, r in report["offline"].items():  # type: ignore[attr-defined]
            lines.append(f"| {rows} | {r['refit_s']} | {r['accepted']} | {r['report_s']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser("bench.learn", __doc__)
    parser.add_argument("--rates", type=float, nargs="*", default=[200.0, 500.0])
    parser.add_argument("--rows", type=int, nargs="*", default=[1000, 5000])
    parser.add_argument("--no-path", action="store_true", help="only the offline steps")
    args = parser.parse_args(argv)
    report: dict[str, object] = {}
    if not args.no_path:
        if cli.wrk_missing("bench.learn"):
            return 2
        report["path"] = asyncio.run(on_the_path(args))
    if args.rows:
        report["offline"] = offline(args.rows)
    return cli.finish(report, args.json, render)


if __name__ == "__main__":
    raise SystemExit(main())
