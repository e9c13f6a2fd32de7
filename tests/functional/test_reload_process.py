"""Hot reload of real ``gearshift serve`` processes under load: SIGHUP with a valid and then an
invalid configuration while clients keep sending requests (not one fails); with
``--workers 2`` the supervisor passes SIGHUP to every worker, and a reload over HTTP that
reached one worker reaches them all."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer

ENV = {"TEAM_A": "sk-team-a-0123456789", "GS_ADMIN": "sk-admin-0123456789"}
KEY = {"authorization": f"Bearer {ENV['TEAM_A']}"}
BODY = {"model": "auto", "messages": [{"role": "user", "content": "Classify: 'Great battery.'"}]}


def config(rpm: int) -> str:
    return (
        '[server]\nadmin_key = "env:GS_ADMIN"\n'
        f'[[keys]]\nname = "team-a"\nkey = "env:TEAM_A"\nrpm = {rpm}\n'
    )


@contextlib.asynccontextmanager
async def serving(
    mock_upstream: TestServer, port: int, path: Path, *extra: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    env = {
        **os.environ,
        **ENV,
        "OPENAI_API_KEY": "sk-reload-test",
        "GEARSHIFT_OPENAI_BASE_URL": str(mock_upstream.make_url("/v1")),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gearshift", "serve", "--config", str(path),
        "--port", str(port), "--no-access-log", *extra,
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # its own group: a failure kills the workers too
    )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


async def generations(base: str, want: int, tries: int = 100) -> dict[int, dict[str, Any]]:
    """Each worker's ``config`` block of /gearshift/stats (by pid), over fresh connections
    until ``want`` workers answered (the kernel spreads connections over them)."""
    seen: dict[int, dict[str, Any]] = {}
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector, headers=KEY) as session:
        for _ in range(tries):
            try:
                async with session.get(base + "/gearshift/stats") as resp:
                    doc = await resp.json()
                    seen[doc["worker"]] = doc["config"]
            except aiohttp.ClientConnectionError:
                pass  # not listening yet
            if len(seen) >= want:
                break
    return seen


async def until(base: str, workers: int, done: Any) -> dict[int, dict[str, Any]]:
    """Poll the workers' config blocks until ``done(blocks)``."""
    while True:
        blocks = await generations(base, workers)
        if len(blocks) >= workers and done(blocks):
            return blocks
        await asyncio.sleep(0.02)  # a poll interval


class Load:
    """Clients sending requests back to back until stopped; every outcome kept."""

    def __init__(self, base: str, clients: int = 4) -> None:
        self.base = base
        self.outcomes: list[int | str] = []
        self._stop = asyncio.Event()
        self._more = asyncio.Event()
        self._tasks = [asyncio.create_task(self._client()) for _ in range(clients)]

    async def _client(self) -> None:
        async with aiohttp.ClientSession(headers=KEY) as session:
            while not self._stop.is_set():
                try:
                    async with session.post(self.base + "/v1/chat/completions", json=BODY) as resp:
                        await resp.read()
                        self.outcomes.append(resp.status)
                except aiohttp.ClientError as exc:
                    self.outcomes.append(type(exc).__name__)
                self._more.set()

    async def more(self, n: int) -> None:
        """Until ``n`` more requests have come back."""
        want = len(self.outcomes) + n
        while len(self.outcomes) < want:
            self._more.clear()
            await self._more.wait()

    async def stop(self) -> list[int | str]:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        return self.outcomes


async def test_sighup_with_a_valid_then_an_invalid_config_under_load_fails_no_request(
    mock_upstream: TestServer, unused_port: int, tmp_path: Path
) -> None:
    path = tmp_path / "gearshift.toml"
    path.write_text(config(100_000))
    base = f"http://127.0.0.1:{unused_port}"
    async with serving(mock_upstream, unused_port, path) as proc, asyncio.timeout(60):
        await until(base, 1, lambda b: True)  # listening
        load = Load(base)
        await load.more(50)  # under load before the first reload
        path.write_text(config(90_000))
        proc.send_signal(signal.SIGHUP)
        await until(base, 1, lambda b: all(c["generation"] == 2 for c in b.values()))
        await load.more(50)
        path.write_text(config(90_000) + 'tiers = ["platinum"]\n')  # an unknown tier
        proc.send_signal(signal.SIGHUP)
        blocks = await until(
            base, 1, lambda b: all(c["last_reload"]["reloaded"] is False for c in b.values())
        )
        await load.more(50)
        outcomes = await load.stop()
        async with (
            aiohttp.ClientSession(headers=KEY) as session,
            session.post(base + "/v1/chat/completions", json=BODY) as resp,
        ):
            assert resp.status == 200
            assert resp.headers["x-ratelimit-limit-requests"] == "90000"  # the valid one
        proc.send_signal(signal.SIGTERM)
        _, err = await proc.communicate()
    assert [o for o in outcomes if o != 200] == []
    assert len(outcomes) >= 150
    (block,) = blocks.values()
    assert block["generation"] == 2
    assert "unknown tier 'platinum'" in block["last_reload"]["reason"]
    text = err.decode()
    assert "configuration reloaded (SIGHUP" in text
    assert "configuration reload rejected (SIGHUP" in text
    assert "Traceback" not in text
    assert proc.returncode == 0


async def test_workers_reload_together_on_sighup_and_on_a_reload_over_http(
    mock_upstream: TestServer, unused_port: int, tmp_path: Path
) -> None:
    path = tmp_path / "gearshift.toml"
    path.write_text(config(100_000))
    base = f"http://127.0.0.1:{unused_port}"
    async with (
        serving(mock_upstream, unused_port, path, "--workers", "2") as proc,
        asyncio.timeout(90),
    ):
        first = await until(base, 2, lambda b: True)
        assert len(first) == 2
        load = Load(base)
        path.write_text(config(90_000))
        proc.send_signal(signal.SIGHUP)  # to the supervisor
        await until(base, 2, lambda b: all(c["generation"] == 2 for c in b.values()))

        path.write_text(config(80_000))
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                base + "/gearshift/reload",
                headers={"authorization": f"Bearer {ENV['GS_ADMIN']}"},
            ) as resp,
        ):
            assert resp.status == 200
            doc = await resp.json()
        assert doc["reloaded"] is True
        # The worker that answered told the supervisor; every worker read the new file.
        await until(base, 2, lambda b: all(c["generation"] >= 3 for c in b.values()))
        outcomes = await load.stop()
        async with aiohttp.ClientSession(
            headers=KEY, connector=aiohttp.TCPConnector(force_close=True)
        ) as session:
            for _ in range(10):
                async with session.post(base + "/v1/chat/completions", json=BODY) as answer:
                    assert answer.headers["x-ratelimit-limit-requests"] == "80000"
        proc.send_signal(signal.SIGTERM)
        _, err = await proc.communicate()
    assert [o for o in outcomes if o != 200] == []
    assert "Traceback" not in err.decode()
    assert proc.returncode == 0
