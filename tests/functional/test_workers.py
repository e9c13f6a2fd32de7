"""``gearshift serve --workers 2``: real processes on one port, summed metrics, a killed
worker replaced, SIGTERM drains a stream in flight and everything exits 0."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families

import gearshift
from gearshift.mock import MOCK_STATE
from gearshift.serve.workers import worker_count

BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Say hi."}]}
# The 2024 catalog (an example config), whose gpt-4o the requests name.
CATALOG_2024 = str(Path(gearshift.__file__).parent / "catalog_2024.toml")


async def _pids(base: str, want: int, tries: int = 200) -> set[int]:
    """Worker pids seen through fresh connections (the kernel spreads them)."""
    seen: set[int] = set()
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(tries):
            try:
                async with session.get(base + "/gearshift/stats") as resp:
                    seen.add((await resp.json())["worker"])
            except aiohttp.ClientConnectionError:
                pass  # a worker that just died: the next connection goes elsewhere
            if len(seen) >= want:
                break
    return seen


async def _requests_total(base: str, want: float) -> float:
    """The summed ``gearshift_requests_total`` once it reaches ``want`` (a worker's tally
    reaches the shared files within ``flush_interval``; a scrape flushes only its own)."""
    while True:
        async with aiohttp.ClientSession() as session, session.get(base + "/metrics") as resp:
            text = await resp.text()
        total = sum(
            s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if s.name == "gearshift_requests_total"
        )
        if total >= want:
            return total
        await asyncio.sleep(0.05)  # a poll interval


async def test_two_workers_share_a_port_sum_their_metrics_and_survive_a_kill(
    mock_upstream: TestServer, unused_port: int
) -> None:
    env = {
        **os.environ,
        "OPENAI_API_KEY": "sk-workers-test",
        "GEARSHIFT_OPENAI_BASE_URL": str(mock_upstream.make_url("/v1")),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gearshift", "serve", "--config", CATALOG_2024, "--workers", "2",
        "--port", str(unused_port), "--no-access-log",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # its own process group: a failure kills the workers too
    )  # fmt: skip
    base = f"http://127.0.0.1:{unused_port}"
    try:
        async with asyncio.timeout(60):
            pids: set[int] = set()
            while len(pids) < 2:  # both workers up and answering
                assert proc.returncode is None
                pids = await _pids(base, 2)
            assert os.getpid() not in pids
            connector = aiohttp.TCPConnector(force_close=True)
            async with aiohttp.ClientSession(connector=connector) as session:
                for _ in range(20):
                    async with session.post(base + "/v1/chat/completions", json=BODY) as resp:
                        assert resp.status == 200
            assert await _requests_total(base, 20) == 20  # one scrape, both workers' counters

            victim = min(pids)
            os.kill(victim, signal.SIGKILL)
            fresh: set[int] = set()
            while not fresh:  # the supervisor starts a replacement
                fresh = await _pids(base, 2, tries=20) - pids
            async with (
                aiohttp.ClientSession() as session,
                session.post(base + "/v1/chat/completions", json=BODY) as resp,
            ):
                assert resp.status == 200
            assert await _requests_total(base, 21) == 21  # the dead worker's counts are kept

            # SIGTERM to the supervisor while a stream is in flight: it finishes, all exit 0.
            mock_upstream.app[MOCK_STATE].settings.chunk_delay_ms = 40
            words = "one two three four five six seven eight nine"
            stream = {**BODY, "stream": True, "messages": [{"role": "user", "content": words}]}
            async with (
                aiohttp.ClientSession() as session,
                session.post(base + "/v1/chat/completions", json=stream) as resp,
            ):
                first = await resp.content.readany()
                proc.send_signal(signal.SIGTERM)
                rest = first + await resp.content.read()
            assert rest.rstrip().endswith(b"data: [DONE]")
            _, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        text = err.decode()
        assert f"worker {victim} exited" in text
        assert "Traceback" not in text
    finally:
        if proc.returncode is None:
            # The whole group: a worker left alive would hold the pipes, and wait() with it.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


def test_worker_count() -> None:
    assert worker_count("3") == 3
    assert worker_count("auto") >= 1
    for bad in ("0", "-2", "many"):
        with pytest.raises(ValueError, match="positive integer"):
            worker_count(bad)
