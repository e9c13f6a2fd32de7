"""The ``gearshift`` command as a user runs it: real processes, real ports."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer

import gearshift
from gearshift.mock import MOCK_STATE

GEARSHIFT = [sys.executable, "-m", "gearshift"]
# The 2024 catalog (an example config): the tests that name models are written against it.
CATALOG_2024 = Path(gearshift.__file__).parent / "catalog_2024.toml"


def _on_2024(extra: str = "", *, top: str = "") -> str:
    """A config file of the 2024 catalog: ``top`` (top-level keys) before it, ``extra``
    (tables) after it; ``extra``'s [[models]] replace the catalog's of the same name, as a
    file merged over the catalog would (one file cannot name a model twice)."""
    replaced = set(re.findall(r"^\[\[models\]\]\nname = '([^']+)'", extra, re.M))
    kept = [
        chunk
        for chunk in CATALOG_2024.read_text().split("\n\n")
        if not (chunk.startswith("[[models]]\n") and chunk.split('"')[1] in replaced)
    ]
    return top + "\n\n".join(kept) + "\n" + extra


async def _run(*args: str, env: dict[str, str | None] | None = None) -> tuple[int, str, str]:
    """Run ``gearshift *args``; ``env`` adds variables to ours (None: removes one)."""
    merged = {**os.environ, **(env or {})}
    proc = await asyncio.create_subprocess_exec(
        *GEARSHIFT,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={name: value for name, value in merged.items() if value is not None},
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def _wait_ready(url: str, proc: asyncio.subprocess.Process) -> None:
    """Poll readiness until the server answers; fail at once if the process died."""
    async with aiohttp.ClientSession() as session, asyncio.timeout(20):
        while True:
            if proc.returncode is not None:
                raise AssertionError(f"gearshift exited with {proc.returncode}")
            try:
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)  # a poll interval, not a wait for the server


@contextlib.asynccontextmanager
async def _serve(
    mock_upstream: TestServer, port: int, *args: str, env: dict[str, str] | None = None
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """``gearshift serve`` on ``port`` in front of the mock, ready; killed if still alive."""
    env = {
        **os.environ,
        "OPENAI_API_KEY": "sk-cli-test-key",
        "GEARSHIFT_OPENAI_BASE_URL": str(mock_upstream.make_url("/v1")),
        **(env or {}),
    }
    proc = await asyncio.create_subprocess_exec(
        *GEARSHIFT,
        "serve",
        "--port",
        str(port),
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        await _wait_ready(base + "/readyz", proc)
        yield proc, base
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.fixture
async def served(
    mock_upstream: TestServer, unused_port: int
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    async with _serve(mock_upstream, unused_port, "--config", str(CATALOG_2024)) as running:
        yield running


async def test_serve_answers_and_stops_cleanly_on_sigterm(
    served: tuple[asyncio.subprocess.Process, str],
) -> None:
    proc, base = served
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    async with (
        aiohttp.ClientSession() as session,
        session.post(base + "/v1/chat/completions", json=body) as resp,
    ):
        assert resp.status == 200
        assert resp.headers["x-gearshift-model"] == "gpt-4o-mini"
        assert (await resp.json())["object"] == "chat.completion"
    proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(20):
        out, err = await proc.communicate()
    assert proc.returncode == 0
    # the access log: one JSON object per request on stdout, flushed at shutdown
    (line,) = [orjson.loads(x) for x in out.splitlines()]
    assert (line["model"], line["status"]) == ("gpt-4o-mini", 200)
    text = err.decode()
    assert "listening on http://127.0.0.1" in text
    assert "sk-cli-test-key" not in text
    assert "Traceback" not in text


async def test_serve_no_access_log_writes_none_anywhere(
    mock_upstream: TestServer, unused_port: int
) -> None:
    """``--no-access-log`` used to move the lines to stderr (the logger), not turn them off."""
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    async with _serve(mock_upstream, unused_port, "--no-access-log") as (proc, base):
        async with aiohttp.ClientSession() as session:
            for _ in range(3):
                async with session.post(base + "/v1/chat/completions", json=body) as resp:
                    assert resp.status == 200
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            out, err = await proc.communicate()
    assert out == b""
    assert b"request_id" not in err
    assert b"listening on" in err  # the operational log is still there


STREAM_BODY = {
    "model": "gpt-4o-mini",
    "stream": True,
    "messages": [{"role": "user", "content": "one two three four five six seven eight nine"}],
}


@pytest.mark.parametrize("grace", [None, 0.2])
async def test_sigterm_drains_streams_in_flight(
    mock_upstream: TestServer, unused_port: int, tmp_path: Path, grace: float | None
) -> None:
    """Streams in flight finish after SIGTERM; past the grace period they end with an
    explicit error event, never a clean end; either way the process exits 0."""
    mock_upstream.app[MOCK_STATE].settings.chunk_delay_ms = 60  # ~15 events: ~0.9 s
    args = ["--config", str(CATALOG_2024)]
    if grace is not None:
        config = tmp_path / "gearshift.toml"
        config.write_text(_on_2024(f"[server]\nshutdown_grace = {grace}\n"))
        args = ["--config", str(config)]
    async with (
        _serve(mock_upstream, unused_port, *args) as (proc, base),
        aiohttp.ClientSession() as session,
    ):
        async with session.post(base + "/v1/chat/completions", json=STREAM_BODY) as resp:
            assert resp.status == 200
            first = await resp.content.readany()
            assert first.startswith(b"data: ")
            proc.send_signal(signal.SIGTERM)
            rest = first + await resp.content.read()
        async with asyncio.timeout(20):
            _, err = await proc.communicate()
    events = [line[6:] for line in rest.decode().splitlines() if line.startswith("data: ")]
    assert proc.returncode == 0, err.decode()
    if grace is None:
        assert events[-1] == "[DONE]"
        assert "error" not in rest.decode()
    else:
        assert "[DONE]" not in events
        assert orjson.loads(events[-1])["error"]["code"] == "server_shutting_down"
    assert "Traceback" not in err.decode()


@pytest.mark.parametrize("slow", [False, True])
async def test_serve_warns_loudly_on_the_slow_path(
    mock_upstream: TestServer, unused_port: int, slow: bool
) -> None:
    env = {"AIOHTTP_NO_EXTENSIONS": "1"} if slow else {}
    async with _serve(mock_upstream, unused_port, env=env) as (proc, _):
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            _, err = await proc.communicate()
    text = err.decode()
    assert ("SLOW PATH" in text) is slow
    if slow:
        assert "C extensions" in text


async def test_serve_refuses_a_public_bind_without_proxy_keys() -> None:
    code, _, err = await _run(
        "serve", "--host", "0.0.0.0", "--port", "1", env={"GEARSHIFT_API_KEYS": None}
    )
    assert code == 2
    assert "--insecure-no-auth" in err


async def test_serve_reports_config_errors(tmp_path: object) -> None:
    import pathlib

    assert isinstance(tmp_path, pathlib.Path)
    path = tmp_path / "bad.toml"
    path.write_text(
        "[[models]]\nname = 'x'\nprovider = 'openai'\ntier = 'light'\n"
        "price_in = 'cheap'\nprice_out = 1\n"
    )
    code, _, err = await _run("serve", "--config", str(path))
    assert code == 2
    assert "$.models[0].price_in" in err
    assert "Traceback" not in err


# `serve` that stops, whatever happens, right after loading the configuration.
NEVER_LISTENS = ["serve", "--workers", "2", "--port", "0"]


async def test_check_config_refuses_infinite_numbers(tmp_path: Path) -> None:
    """TOML has inf and nan; printed as JSON they were `null`, and SIGTERM then crashed."""
    path = tmp_path / "g.toml"
    for text, where in [
        ("[server]\nshutdown_grace = inf\n", "$.server.shutdown_grace"),
        ("[reliability]\ndeadline = nan\n", "$.reliability.deadline"),
        (
            "[[providers]]\nname = 'openai'\nkind = 'openai'\nbase_url = 'http://h'\n"
            "timeouts = { total = inf }\n",
            "$.providers[0].timeouts.total",
        ),
    ]:
        path.write_text(text)
        code, out, err = await _run("check-config", str(path))
        assert code == 2, out
        assert where in err
        assert out == ""
        assert "Traceback" not in err


async def test_check_config_and_serve_refuse_a_missing_rules_file(tmp_path: Path) -> None:
    path = tmp_path / "g.toml"
    absent = tmp_path / "my-rules.toml"
    path.write_text(f"[routing]\nrules = '{absent}'\n")
    for args in (["check-config", str(path)], [*NEVER_LISTENS, "--config", str(path)]):
        code, out, err = await _run(*args)
        assert code == 2, out
        assert f"$.routing.rules: {absent}: cannot read" in err
        assert "Traceback" not in err


async def test_check_config_refuses_a_rules_table_it_cannot_use(tmp_path: Path) -> None:
    table = tmp_path / "my-rules.toml"
    table.write_text("bias = 0.0\nprev_lexicon_scale = 5.0\n")  # parses, but out of range
    path = tmp_path / "g.toml"
    path.write_text(f"[routing]\nrules = '{table}'\n")
    code, _, err = await _run("check-config", str(path))
    assert code == 2
    assert "$.routing.rules" in err
    assert "prev_lexicon_scale" in err


async def test_check_config_refuses_header_injection_and_url_credentials(tmp_path: Path) -> None:
    path = tmp_path / "g.toml"
    head = "[[providers]]\nname = 'local'\nkind = 'openai'\n"
    for text, where in [
        (head + "base_url = 'http://h'\nheaders = { x-a = \"v\\r\\nx-b: w\" }\n", "headers"),
        (head + "base_url = 'https://me:pa55word@h.example/v1'\n", "base_url"),
    ]:
        path.write_text(text)
        code, out, err = await _run("check-config", str(path))
        assert code == 2, out
        assert f"$.providers[0].{where}" in err
        assert "pa55word" not in err
        assert "Traceback" not in err


async def test_check_config_warns_about_literal_secrets_and_never_prints_them(
    tmp_path: Path,
) -> None:
    path = tmp_path / "g.toml"
    path.write_text(
        "[server]\napi_keys = ['proxy-l1teral']\n"
        "[[providers]]\nname = 'local'\nkind = 'openai'\nbase_url = 'http://127.0.0.1:9/v1'\n"
        "api_key = 'sk-l1teral'\nheaders = { x-api-key = 'hdr-l1teral' }\n"
    )
    code, out, err = await _run("check-config", str(path))
    assert code == 0, err
    warnings = [line for line in err.splitlines() if " WARNING " in line]
    assert len(warnings) == 3, err
    assert "$.server.api_keys[0]" in warnings[0]
    assert "$.providers[0].api_key" in warnings[1]
    assert "$.providers[0].headers.x-api-key" in warnings[2]
    assert "l1teral" not in out + err


@pytest.mark.parametrize("value", [" , ,", ""])
async def test_a_blank_proxy_key_variable_is_a_config_error(value: str) -> None:
    """Set but empty would have turned authentication off, silently, on loopback."""
    for args in (["check-config"], NEVER_LISTENS):
        code, _, err = await _run(*args, env={"GEARSHIFT_API_KEYS": value})
        assert code == 2
        assert "GEARSHIFT_API_KEYS" in err
        assert "Traceback" not in err


async def test_demo_runs_end_to_end_with_no_keys() -> None:
    env = {"OPENAI_API_KEY": "", "ANTHROPIC_API_KEY": "", "GEMINI_API_KEY": ""}
    code, out, err = await _run("demo", env=env)
    assert code == 0, err
    table = out.split("savings")[0].splitlines()
    rows = {line.split()[0]: line for line in table if line[:1].isdigit()}
    assert "gpt-6-luna (openai)" in rows["1"], "light work goes to the cheapest light model"
    # Frontier work asked of GPT-6.2 Astra: Sonnet 5.5 at max effort meets it for less.
    assert "claude-sonnet-5-5 (anthropic)  max" in rows["3"]
    # The client's reasoning_effort is a ceiling: no variant above it, and it is what runs.
    assert "claude-opus-5-5 (anthropic)    low" in rows["5"]
    assert "claude-sonnet-5-5 (anthropic)" in rows["7"], "the pinned request is served by it"
    assert " 404 " in rows["8"], "the 2024 default gpt-4o is not in today's catalog"
    assert "7 of 8 answered" in out
    # the savings table from gearshift's own accounting: shifting down saved something
    total = next(line for line in out.splitlines() if line.startswith("total "))
    assert total.split()[1] == "7"
    assert float(total.split()[4]) > 0
    assert "Traceback" not in err


async def test_demo_still_tells_the_2024_story() -> None:
    env = {"OPENAI_API_KEY": "", "ANTHROPIC_API_KEY": "", "GEMINI_API_KEY": ""}
    code, out, err = await _run("demo", "--catalog", "2024", env=env)
    assert code == 0, err
    assert "(gemini)" in out, "light work goes to the cheapest light model: Gemini Flash"
    assert "gpt-4o (openai)" in out, "hard work stays on the cheapest frontier model"
    assert "claude-3-5-sonnet (anthropic)" in out, "the pinned request is served by Anthropic"
    assert "6 of 7 answered" in out


async def test_mock_upstream_command_serves_the_openai_format(unused_port: int) -> None:
    proc = await asyncio.create_subprocess_exec(
        *GEARSHIFT,
        "mock-upstream",
        "--port",
        str(unused_port),
        "--fail",
        "http-429",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{unused_port}"
    try:
        await _wait_ready(base + "/v1/models", proc)
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
        async with aiohttp.ClientSession() as session:
            async with session.post(base + "/v1/chat/completions", json=body) as resp:
                assert resp.status == 429
                assert resp.headers["retry-after"] == "1"
                assert (await resp.json())["error"]["code"] == "rate_limit_exceeded"
            async with session.post(base + "/_mock/config", json={"fail": None}) as resp:
                assert resp.status == 200
            async with session.post(base + "/v1/chat/completions", json=body) as resp:
                assert resp.status == 200
                assert (await resp.json())["object"] == "chat.completion"
    finally:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            await proc.communicate()
    assert proc.returncode == 0


async def test_catalog_prints_the_resolved_catalog_with_a_price_file(tmp_path: Path) -> None:
    prices = tmp_path / "model_prices_and_context_window.json"
    entry = {"input_cost_per_token": 2e-07, "output_cost_per_token": 8e-07}
    prices.write_bytes(orjson.dumps({"gpt-4o-mini": {**entry, "litellm_provider": "openai"}}))
    config = tmp_path / "g.toml"
    config.write_text(_on_2024(top=f"price_file = '{prices}'\n"))
    code, out, err = await _run("catalog", "--config", str(config))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:5] == ["model", "provider", "tier", "efforts", "in"]
    (mini,) = [line for line in lines if line.startswith("gpt-4o-mini ")]
    assert mini.split()[3:5] == ["-", "0.2"]  # no efforts: not a reasoning model
    assert "price file model_prices_and_context_window.json" in mini
    code, out, _ = await _run("catalog", "--config", str(config), "--json")
    rows = {row["model"]: row for row in orjson.loads(out)}
    assert rows["gpt-4o-mini"]["price_out"] == 0.8
    assert rows["gpt-4o"]["source"] is None
    assert not any(line.endswith(" ") for line in lines)


async def test_doctor_checks_the_catalog_against_each_providers_model_list(
    mock_upstream: TestServer, tmp_path: Path
) -> None:
    """The mock lists gpt-4o, gpt-4o-mini and the four GPT-6 ids (OpenAI), two Claude 3 and
    three Claude 5.5 ids (Anthropic), gemini-1.5-flash, gemini-2.5-flash and the four
    current Gemini ids (Gemini), each in its API's shape."""
    base = str(mock_upstream.make_url(""))
    env = {
        "OPENAI_API_KEY": "sk-doctor-0123456789",
        "ANTHROPIC_API_KEY": "sk-ant-doctor",
        "GEMINI_API_KEY": "g-doctor",
        "GEARSHIFT_OPENAI_BASE_URL": base + "/v1",
        "GEARSHIFT_ANTHROPIC_BASE_URL": base + "/v1",
        "GEARSHIFT_GEMINI_BASE_URL": base + "/v1beta",
    }
    prices = tmp_path / "prices.json"
    entry = {"input_cost_per_token": 2e-07, "output_cost_per_token": 6e-07}
    prices.write_bytes(orjson.dumps({"gpt-4o-mini": {**entry, "litellm_provider": "openai"}}))
    config = tmp_path / "g.toml"
    config.write_text(
        _on_2024(
            "[[models]]\nname = 'gpt-4o'\nprovider = 'openai'\ntier = 'frontier'\n"
            "price_in = 2.5\nprice_out = 10\nretires = '2027-01-14'\n"
            "[[models]]\nname = 'claude-3-5-sonnet'\nprovider = 'anthropic'\n"
            "upstream_id = 'claude-3-5-sonnet-20241022'\ntier = 'frontier'\nprice_in = 3\n"
            "price_out = 15\nretires = '2025-10-28'\n"
        )
    )
    code, out, err = await _run("doctor", "--config", str(config), "--prices", str(prices), env=env)
    assert code == 1, err
    lines = out.splitlines()
    for name, listed in (("openai", 6), ("anthropic", 5), ("gemini", 6)):
        assert f"provider {name}: {listed} models listed for this key" in lines
    report = {line.split()[0].rstrip(":"): line for line in lines if line.startswith("  ")}
    assert "NOT LISTED" in report["gemini-1.5-pro"]  # the mock's Gemini list lacks it
    assert report["gemini-1.5-flash"] == "  gemini-1.5-flash: ok"
    assert "retired on 2025-10-28" in report["claude-3-5-sonnet"]
    assert "retires on 2027-01-14" in report["gpt-4o"]
    assert "price_in 0.15 -> 0.2" in report["gpt-4o-mini"]
    assert lines[-1] == "4 problem(s)"
    assert "sk-doctor" not in out + err
    # A catalog the accounts can reach, with nothing to say: exit 0.
    config.write_text(
        "use_default_catalog = false\n[[providers]]\nname = 'openai'\nkind = 'openai'\n"
        "api_key = 'env:OPENAI_API_KEY'\nbase_url = 'http://unused'\n"
        "[[models]]\nname = 'mini'\nprovider = 'openai'\nupstream_id = 'gpt-4o-mini'\n"
        "tier = 'light'\nprice_in = 0.15\nprice_out = 0.6\n"
    )
    code, out, _ = await _run("doctor", "--config", str(config), env=env)
    assert out.splitlines() == [
        "provider openai: 6 models listed for this key",
        "  mini: ok",
        "no problems",
    ]
    assert code == 0


async def test_doctor_reports_a_key_the_provider_refuses(
    mock_upstream: TestServer,
) -> None:
    mock_upstream.app[MOCK_STATE].settings.api_key = "the-right-key"
    env = {
        "OPENAI_API_KEY": "sk-wrong-0123456789",
        "GEARSHIFT_OPENAI_BASE_URL": str(mock_upstream.make_url("/v1")),
        "ANTHROPIC_API_KEY": "",
        "GEMINI_API_KEY": "",
    }
    code, out, err = await _run("doctor", env=env)
    assert code == 1, err
    assert out.splitlines()[0].startswith("provider openai: cannot list its models: HTTP 401")
    assert "sk-wrong" not in out
