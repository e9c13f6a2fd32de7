"""``gearshift demo``: gearshift and a mock provider on loopback, a small mixed workload sent
through the official ``openai`` SDK, and a table of what happened. No API keys needed.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO

import aiohttp
from aiohttp import web

from gearshift.config import catalog_2024, load
from gearshift.mock import MockSettings, start_mock
from gearshift.providers import REGISTRY
from gearshift.serve.app import create_app

# (requested model, prompt, stream[, extra headers[, extra body]])
WORKLOAD: list[tuple[Any, ...]] = [
    (
        "auto",
        "Classify the sentiment of this review as positive or negative: "
        "'The battery lasts all day and the screen is gorgeous.'",
        False,
    ),
    ("gpt-6.2-sol", "Extract the invoice number from: 'Invoice INV-2231, due 2026-12-01'.", False),
    # Frontier work: Sonnet 5.5 at max effort meets the frontier tier for less (a variant).
    (
        "gpt-6.2-astra",
        "Prove that for every integer n > 1 the harmonic sum 1 + 1/2 + ... + 1/n is never an "
        "integer.",
        True,
    ),
    ("auto", "Translate 'Where is the train station?' into French.", True),
    # The client's reasoning_effort is a ceiling: no variant above it, and it is what is sent.
    (
        "claude-opus-5-5",
        "This Go code deadlocks under load when two transfers run in opposite directions; "
        "find the bug and fix it:\n```go\nfunc transfer(a, b *Account, amt int) {\n"
        "  a.mu.Lock()\n  b.mu.Lock()\n  a.bal -= amt\n  b.bal += amt\n  b.mu.Unlock()\n"
        "  a.mu.Unlock()\n}\n```",
        False,
        None,
        {"reasoning_effort": "low"},
    ),
    ("gemini-4-hydrogen", "Summarize in one sentence: the meeting moved to Thursday at 3pm.", True),
    # Pinned: no rerouting, so the answer comes from Anthropic's wire format, streamed.
    ("claude-sonnet-5-5", "Write a haiku about rain.", True, {"x-gearshift-route": "pin"}),
    # The 2024 default, withdrawn since: not in today's catalog.
    ("gpt-4o", "This model is not in the catalog any more.", False),
]
# The same story on the seed's 2024 catalog (`gearshift demo --catalog 2024`).
WORKLOAD_2024: list[tuple[Any, ...]] = [
    (
        "auto",
        "Classify the sentiment of this review as positive or negative: "
        "'The battery lasts all day and the screen is gorgeous.'",
        False,
    ),
    ("gpt-4o-mini", "Extract the invoice number from: 'Invoice INV-2231, due 2026-12-01'.", False),
    (
        "gpt-4o",
        "Prove that for every integer n > 1 the harmonic sum 1 + 1/2 + ... + 1/n is never an "
        "integer.",
        True,
    ),
    ("auto", "Translate 'Where is the train station?' into French.", True),
    ("gpt-4o-mini", "Summarize in one sentence: the meeting moved to Thursday at 3pm.", True),
    ("claude-3-5-sonnet", "Write a haiku about rain.", True, {"x-gearshift-route": "pin"}),
    ("gpt-5-ultra", "This model does not exist in the catalog.", False),
]


@dataclass(slots=True)
class Row:
    requested: str
    stream: bool
    status: int
    ms: float
    answer: str
    model: str = "-"
    provider: str = "-"
    tier: str = "-"
    score: str = "-"
    effort: str = "-"
    cost: float = 0.0
    baseline: float = 0.0


async def _send(
    client: Any,
    requested: str,
    prompt: str,
    stream: bool,
    headers: dict[str, str] | None = None,
    body: dict[str, Any] | None = None,
) -> Row:
    import openai

    messages = [{"role": "user", "content": prompt}]
    started = time.perf_counter()
    create = client.chat.completions.with_raw_response.create
    money: dict[str, Any] = {}
    try:
        if stream:
            raw = await create(
                model=requested,
                messages=messages,
                stream=True,
                stream_options={"include_usage": True},
                extra_headers=headers,
                extra_body=body,
            )
            text = []
            async for chunk in raw.parse():
                if chunk.choices:
                    text.append(chunk.choices[0].delta.content or "")
                # the usage chunk carries gearshift's accounting (headers were sent before)
                money = (chunk.model_extra or {}).get("gearshift") or money
            answer = "".join(text)
        else:
            raw = await create(
                model=requested, messages=messages, extra_headers=headers, extra_body=body
            )
            answer = raw.parse().choices[0].message.content or ""
            money = {
                "cost_usd": float(raw.headers.get("x-gearshift-cost-usd", 0)),
                "baseline_usd": float(raw.headers.get("x-gearshift-baseline-usd", 0)),
            }
    except openai.APIStatusError as exc:
        message = exc.body.get("message") if isinstance(exc.body, dict) else str(exc)
        return Row(
            requested,
            stream,
            exc.status_code,
            (time.perf_counter() - started) * 1e3,
            f"error: {message}",
        )
    h = raw.headers
    return Row(
        requested,
        stream,
        raw.http_response.status_code,
        (time.perf_counter() - started) * 1e3,
        answer,
        model=h.get("x-gearshift-model", "?"),
        provider=h.get("x-gearshift-provider", "?"),
        tier=h.get("x-gearshift-tier", "?"),
        score=h.get("x-gearshift-score", "?"),
        effort=h.get("x-gearshift-effort", "-"),
        cost=float(money.get("cost_usd", 0)),
        baseline=float(money.get("baseline_usd", 0)),
    )


def _print_table(rows: list[Row], out: TextIO) -> None:
    head = (
        "#",
        "requested",
        "stream",
        "status",
        "score",
        "tier",
        "served by",
        "effort",
        "ms",
        "cost $",
        "as asked $",
        "answer",
    )
    cells = [head] + [
        (
            str(i),
            r.requested,
            "yes" if r.stream else "no",
            str(r.status),
            r.score,
            r.tier,
            f"{r.model} ({r.provider})" if r.provider != "-" else r.model,
            r.effort,
            f"{r.ms:.0f}",
            f"{r.cost:.6f}",
            f"{r.baseline:.6f}",
            r.answer[:44] + ("…" if len(r.answer) > 44 else ""),
        )
        for i, r in enumerate(rows, 1)
    ]
    widths = [max(len(row[c]) for row in cells) for c in range(len(head))]
    for n, row in enumerate(cells):
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        out.write("\n")
        if n == 0:
            out.write("  ".join("-" * w for w in widths) + "\n")


def _print_savings(stats: dict[str, Any], out: TextIO) -> None:
    rows = [("served by", "requests", "cost $", "as asked $", "saved $")]
    for name, m in stats["models"].items():
        rows.append(
            (
                name,
                str(m["requests"]),
                f"{m['cost_usd']:.6f}",
                f"{m['baseline_usd']:.6f}",
                f"{m['savings_usd']:.6f}",
            )
        )
    rows.append(
        (
            "total",
            str(stats["answered"]),
            f"{stats['cost_usd']:.6f}",
            f"{stats['baseline_usd']:.6f}",
            f"{stats['savings_usd']:.6f} ({stats['savings_pct']:.0f}%)",
        )
    )
    widths = [max(len(r[c]) for r in rows) for c in range(5)]
    for n, row in enumerate(rows):
        if n == len(rows) - 1:
            out.write("  ".join("-" * w for w in widths) + "\n")
        out.write("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                            enumerate(zip(row, widths, strict=True))).rstrip() + "\n")  # fmt: skip
        if n == 0:
            out.write("  ".join("-" * w for w in widths) + "\n")


async def run_demo(out: TextIO = sys.stdout, catalog: str = "default") -> int:
    """Run the demo on today's catalog (or the seed's, ``catalog="2024"``); 0 when every
    request behaved as expected."""
    try:
        from openai import AsyncOpenAI
    except ImportError:
        out.write("gearshift demo needs the openai SDK: pip install 'gearshift[demo]'\n")
        return 2
    mock_runner, mock_port = await start_mock(
        settings=MockSettings(latency_ms=30, chunk_delay_ms=3, chunk_words=2)
    )
    mock = f"http://127.0.0.1:{mock_port}"
    # The mock speaks all three wire formats; every default provider points at it.
    environ = {
        "OPENAI_API_KEY": "mock-key",
        "ANTHROPIC_API_KEY": "mock-key",
        "GEMINI_API_KEY": "mock-key",
        "GEARSHIFT_OPENAI_BASE_URL": f"{mock}/v1",
        "GEARSHIFT_ANTHROPIC_BASE_URL": f"{mock}/v1",
        "GEARSHIFT_GEMINI_BASE_URL": f"{mock}/v1beta",
    }
    base = catalog_2024() if catalog == "2024" else None
    config = load(None, environ=environ, kinds=REGISTRY.keys(), base=base)
    workload = WORKLOAD_2024 if catalog == "2024" else WORKLOAD
    runner = web.AppRunner(create_app(config), access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    out.write(
        f"mock upstream (OpenAI, Anthropic and Gemini wire formats) on 127.0.0.1:{mock_port} "
        "(30 ms per answer); "
        f"gearshift on 127.0.0.1:{port}\n"
    )
    out.write("offered: " + ", ".join(m.label for m in config.offered) + "\n")
    for model in config.models.values():
        if not model.offered:
            out.write(f"not offered: {model.name} ({model.why_not})\n")
    out.write("\n")
    client = AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="demo", max_retries=0)
    try:
        rows = [await _send(client, *job) for job in workload]
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/gearshift/stats") as resp,
        ):
            stats = await resp.json()
    finally:
        await client.close()
        await runner.cleanup()
        await mock_runner.cleanup()
    _print_table(rows, out)
    ok = sum(r.status == 200 for r in rows)
    out.write("\nsavings (from the upstreams' usage; GET /gearshift/stats, /metrics):\n")
    _print_savings(stats, out)
    out.write(
        f"\n{ok} of {len(rows)} answered; the unknown model got an OpenAI-shaped 404, "
        "as a client expects.\n"
    )
    return 0 if ok == len(rows) - 1 and rows[-1].status == 404 else 1
