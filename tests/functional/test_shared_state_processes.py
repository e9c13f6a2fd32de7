"""Budgets and rate limits shared exactly across real processes on one real Redis: a
``serve --workers 2`` pair and a single ``serve`` process, started as the operator starts
them, in front of the mock upstream. One key's requests per minute and one key's daily
budget hold across all three processes (a budget overshoots by at most the requests in
flight); a Redis killed or frozen mid-run never hangs a request: ``fail_closed`` answers 503
``state_unavailable``, ``fail_open`` goes on unchecked."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from redis_server import RedisServer, redis_skip_reason

from gearshift.config import load
from gearshift.mock import MOCK_STATE
from gearshift.providers import REGISTRY
from gearshift.serve.app import create_app

pytestmark = pytest.mark.skipif(redis_skip_reason() is not None, reason=str(redis_skip_reason()))

KEYS = {"GS_OPS": "sk-ops-0123456789abcdef", "GS_GOV": "sk-gov-0123456789abcdef"}
OPS = {"authorization": f"Bearer {KEYS['GS_OPS']}"}  # no limits: stats and probes
GOV = {"authorization": f"Bearer {KEYS['GS_GOV']}"}  # the governed key under test
BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Say hi to the team."}]}
LIMIT = aiohttp.ClientTimeout(total=10)  # a request that hangs fails the test


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def config_toml(gov: str, state: str) -> str:
    """One model on the mock (nothing to route between: every answer costs the same), the
    key ``ops`` without limits and ``gov`` with ``gov``'s limits, and ``state``."""
    return (
        "use_default_catalog = false\n"
        "[server]\nshutdown_grace = 2\n"
        '[[providers]]\nname = "openai"\nkind = "openai"\nbase_url = "http://127.0.0.1:9"\n'
        'api_key = "env:OPENAI_API_KEY"\n'
        '[[models]]\nname = "gpt-4o"\nprovider = "openai"\ntier = "frontier"\n'
        "price_in = 2.5\nprice_out = 10.0\n"
        '[[keys]]\nname = "ops"\nkey = "env:GS_OPS"\n'
        f'[[keys]]\nname = "gov"\nkey = "env:GS_GOV"\n{gov}\n'
        f"{state}"
    )


def redis_state(url: str, prefix: str, extra: str = "") -> str:
    return f'[state]\nbackend = "redis"\nurl = "{url}"\nprefix = "{prefix}"\n{extra}'


def environ(upstream: TestServer) -> dict[str, str]:
    return {
        **os.environ,
        **KEYS,
        "OPENAI_API_KEY": "sk-test-provider-key-0123456789",
        "GEARSHIFT_OPENAI_BASE_URL": str(upstream.make_url("/v1")),
    }


@dataclass
class Served:
    proc: asyncio.subprocess.Process
    base: str
    stderr: Path

    def errors(self) -> str:
        return self.stderr.read_text(errors="replace")


@contextlib.asynccontextmanager
async def serving(
    config: Path, env: Mapping[str, str], stderr: Path, *, workers: int = 1
) -> AsyncIterator[Served]:
    """``gearshift serve`` in its own process group (killed whole at the end), its stderr
    into a file (never a pipe nobody reads)."""
    port = free_port()
    args = [sys.executable, "-m", "gearshift", "serve", "--config", str(config),
            "--port", str(port), "--no-access-log"]  # fmt: skip
    if workers > 1:
        args += ["--workers", str(workers)]
    with stderr.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            *args, env=dict(env), stdout=asyncio.subprocess.DEVNULL, stderr=err,
            start_new_session=True,
        )  # fmt: skip
    served = Served(proc, f"http://127.0.0.1:{port}", stderr)
    try:
        yield served
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


async def worker_stats(served: Served, want: int) -> dict[int, dict[str, Any]]:
    """Each worker's ``/gearshift/stats`` (by pid), through fresh connections until ``want``
    workers answered: the kernel spreads new connections over a port's workers. Polls
    while the process starts (a refused connection: not listening yet)."""
    seen: dict[int, dict[str, Any]] = {}
    connector = aiohttp.TCPConnector(force_close=True)
    try:
        async with asyncio.timeout(20), aiohttp.ClientSession(connector=connector) as session:
            while len(seen) < want:
                assert served.proc.returncode is None, served.errors()
                try:
                    async with session.get(served.base + "/gearshift/stats", headers=OPS) as r:
                        assert r.status == 200, await r.text()
                        doc = await r.json()
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)  # a poll interval: not listening yet
                    continue
                if doc["worker"] in seen:
                    await asyncio.sleep(0.01)  # a poll interval: another worker still starting
                seen[doc["worker"]] = doc
    except TimeoutError:
        raise AssertionError(f"{served.base}: {len(seen)} of {want} workers answered") from None
    return seen


async def post(session: aiohttp.ClientSession, base: str, headers: Mapping[str, str]) -> Any:
    """One chat completion: (status, headers, JSON body, seconds taken)."""
    started = time.monotonic()
    async with session.post(base + "/v1/chat/completions", json=BODY, headers=headers) as resp:
        body = await resp.json()
        return resp.status, resp.headers, body, time.monotonic() - started


def fresh() -> aiohttp.ClientSession:
    """A session whose every request opens a new connection (spread over the workers)."""
    connector = aiohttp.TCPConnector(force_close=True, limit=0)
    return aiohttp.ClientSession(connector=connector, timeout=LIMIT)


async def test_a_key_s_rpm_holds_exactly_across_two_workers_and_another_process(
    mock_upstream: TestServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    prefix = f"rpm{time.monotonic_ns()}:"
    config = tmp_path / "gearshift.toml"
    config.write_text(config_toml("rpm = 10", redis_state(redis_server.url, prefix)))
    env = environ(mock_upstream)
    async with (
        asyncio.timeout(30),
        serving(config, env, tmp_path / "pair.err", workers=2) as pair,
        serving(config, env, tmp_path / "solo.err") as solo,
    ):
        pids = set(await worker_stats(pair, 2)) | set(await worker_stats(solo, 1))
        assert len(pids) == 3
        assert os.getpid() not in pids

        bases = [pair.base, solo.base] * 15  # 30 requests, half to each port
        async with fresh() as session:
            started = time.monotonic()
            answers = await asyncio.gather(*(post(session, b, GOV) for b in bases))
            elapsed = time.monotonic() - started

        ok = [a for a in answers if a[0] == 200]
        refused = [a for a in answers if a[0] != 200]
        # The bucket holds 10 and refills one every 6 s: exactly 10 between all three
        # processes (each alone would admit 10), plus what the refill gave meanwhile.
        assert 10 <= len(ok) <= 10 + math.floor(elapsed / 6), (len(ok), elapsed)
        for _, headers, _, _ in ok:
            assert headers["x-ratelimit-limit-requests"] == "10"
            assert headers["x-ratelimit-reset-requests"].endswith("s")
        if len(ok) == 10:  # no refill: each success took one of the same 10, once
            remaining = sorted(int(h["x-ratelimit-remaining-requests"]) for _, h, _, _ in ok)
            assert remaining == list(range(10))
        for status, headers, body, _ in refused:
            assert status == 429, body
            assert body["error"]["code"] == "rate_limit_exceeded"
            assert body["error"]["type"] == "requests"
            assert 1 <= int(headers["retry-after"]) <= 6
            assert headers["x-ratelimit-limit-requests"] == "10"
            assert headers["x-ratelimit-remaining-requests"] == "0"
            assert headers["x-ratelimit-reset-requests"].endswith("s")

        # Three processes answered: both workers of the pair (15 requests between them) and
        # the single process (15).
        pair_stats = await worker_stats(pair, 2)
        solo_stats = await worker_stats(solo, 1)
        served = {pid: doc["requests"] for pid, doc in pair_stats.items()}
        assert sum(served.values()) == 15, served
        assert min(served.values()) > 0, served
        assert [doc["requests"] for doc in solo_stats.values()] == [15]
        # What the processes answered is what the clients were admitted.
        assert sum(d["answered"] for d in [*pair_stats.values(), *solo_stats.values()]) == len(ok)
        assert "Traceback" not in pair.errors() + solo.errors()


async def _one_answer_costs(
    aiohttp_client: Callable[..., Awaitable[TestClient]],
    path: Path,
    env: Mapping[str, str],
) -> float:
    """What one answer to ``BODY`` costs under the prices of the config at ``path``: asked
    of an in-process gateway on the same mock and the same model, with in-process state."""
    client = await aiohttp_client(create_app(load(path, environ=env, kinds=REGISTRY.keys())))
    resp = await client.post("/v1/chat/completions", json=BODY, headers=GOV)
    assert resp.status == 200, await resp.text()
    cost = float(resp.headers["x-gearshift-cost-usd"])
    assert cost > 0
    return cost


def _process_state(pid: int) -> str:
    """A process's state letter from ``/proc`` (``T``: stopped)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0]


async def _spent(url: str, pattern: str) -> float:
    from redis import asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    try:
        return sum([float(await client.get(k) or 0) async for k in client.scan_iter(pattern)])
    finally:
        await client.aclose()


async def test_a_key_s_daily_budget_holds_across_processes_up_to_the_requests_in_flight(
    aiohttp_client: Callable[..., Awaitable[TestClient]],
    mock_upstream: TestServer,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    prefix = f"budget{time.monotonic_ns()}:"
    env = environ(mock_upstream)
    probe = tmp_path / "probe.toml"
    probe.write_text(config_toml("", ""))
    cost = await _one_answer_costs(aiohttp_client, probe, env)
    budget = 6.5 * cost  # 7 answers when they come one at a time
    config = tmp_path / "gearshift.toml"
    state = redis_state(redis_server.url, prefix)
    config.write_text(config_toml(f"budget_daily_usd = {budget!r}", state))
    # Answers take a while, so that the three clients' requests are in flight together.
    mock_upstream.app[MOCK_STATE].settings.latency_ms = 40
    async with (
        asyncio.timeout(30),
        serving(config, env, tmp_path / "pair.err", workers=2) as pair,
        serving(config, env, tmp_path / "solo.err") as solo,
    ):
        await worker_stats(pair, 2)
        await worker_stats(solo, 1)
        costs: list[float] = []

        async def client(base: str) -> None:
            """Asks until refused; never more than one request in flight."""
            async with fresh() as session:
                for _ in range(100):
                    status, headers, body, _ = await post(session, base, GOV)
                    if status != 200:
                        assert status == 429, body
                        assert body["error"]["code"] == "budget_exceeded"
                        assert body["error"]["type"] == "insufficient_quota"
                        assert int(headers["retry-after"]) >= 1
                        return
                    costs.append(float(headers["x-gearshift-cost-usd"]))
                raise AssertionError(f"{base}: 100 answers and the budget still not reached")

        async with asyncio.TaskGroup() as clients:  # three clients, two on the pair
            for base in (pair.base, pair.base, solo.base):
                clients.create_task(client(base))

        assert costs
        assert max(costs) == pytest.approx(cost) == min(costs)
        # Every answer is settled into the one counter, exactly once (settlement follows
        # the answer: poll until it is in; with a deadline of its own, as on Python 3.11
        # redis-py's ``asyncio.wait_for`` may swallow an enclosing timeout's cancellation).
        pattern, deadline = f"{prefix}spend:gov:d:*", time.monotonic() + 5
        while (spent := await _spent(redis_server.url, pattern)) < sum(costs) - 1e-12:
            assert time.monotonic() < deadline, f"settled {spent} of {sum(costs)}"
            await asyncio.sleep(0.02)  # a poll interval
        assert spent == pytest.approx(sum(costs), rel=1e-9)
        # At least the budget (refused only once reached), and at most one request more
        # than that per client: the three in flight when the last was admitted.
        assert budget <= spent <= budget + 3 * max(costs), (budget, spent, len(costs))

        # Spent is spent for every process: the single one and both workers of the pair
        # refuse the key (fresh connections to the pair until each worker refused some).
        before = await worker_stats(pair, 2)
        refused_by: dict[int, int] = {}
        async with fresh() as session:
            again = [await post(session, solo.base, GOV) for _ in range(3)]
            for _ in range(10):
                again += [await post(session, pair.base, GOV) for _ in range(4)]
                after = await worker_stats(pair, 2)
                refused_by = {pid: after[pid]["errors"] - before[pid]["errors"] for pid in after}
                if min(refused_by.values()) > 0:
                    break
        for status, headers, body, _ in again:
            assert status == 429, body
            assert body["error"]["code"] == "budget_exceeded"
            assert int(headers["retry-after"]) >= 1
        assert sum(refused_by.values()) == len(again) - 3, refused_by
        assert min(refused_by.values()) > 0, refused_by
        assert "Traceback" not in pair.errors() + solo.errors()


@pytest.mark.parametrize(
    ("policy", "how"),
    [("fail_closed", "kill"), ("fail_closed", "freeze"), ("fail_open", "kill")],
)
async def test_a_redis_lost_mid_run_never_hangs_a_request(
    mock_upstream: TestServer, tmp_path: Path, policy: str, how: str
) -> None:
    server = RedisServer()  # its own: this test kills it
    server.start()
    assert server.proc is not None
    config = tmp_path / "gearshift.toml"
    state = redis_state(server.url, "lost:", f'timeout = 0.1\non_error = "{policy}"\n')
    config.write_text(config_toml("rpm = 1000", state))
    try:
        async with (
            asyncio.timeout(30),
            serving(config, environ(mock_upstream), tmp_path / "serve.err") as served,
        ):
            await worker_stats(served, 1)
            # When Redis was lost: from just before the signal to once it took effect.
            loss: list[float] = []
            steady = asyncio.Event()  # 20 answers came while Redis was up
            answers: list[tuple[float, float, Any]] = []  # (started, ended, answer)

            def after_loss() -> int:
                return sum(1 for started, _, _ in answers if len(loss) == 2 and started >= loss[1])

            async def client() -> None:
                """A steady stream on one keep-alive connection until 15 requests were sent
                and answered after Redis was lost."""
                async with aiohttp.ClientSession(timeout=LIMIT) as session:
                    while after_loss() < 15:
                        started = time.monotonic()
                        answer = await post(session, served.base, GOV)
                        answers.append((started, time.monotonic(), answer))
                        if len(answers) >= 20:
                            steady.set()

            async def lose_redis() -> None:
                await steady.wait()  # a steady stream first
                assert server.proc is not None
                loss.append(time.monotonic())
                if how == "kill":
                    server.proc.kill()
                    server.proc.wait(5)
                else:  # a Redis that still accepts connections but answers nothing
                    server.proc.send_signal(signal.SIGSTOP)
                    for _ in range(1000):  # until it is stopped for sure
                        if _process_state(server.proc.pid) == "T":
                            break
                        await asyncio.sleep(0.005)  # a poll interval
                    else:
                        raise AssertionError("redis-server did not stop on SIGSTOP")
                loss.append(time.monotonic())

            async with asyncio.TaskGroup() as tasks:
                for _ in range(4):
                    tasks.create_task(client())
                tasks.create_task(lose_redis())

            for started, ended, (status, headers, body, seconds) in answers:
                assert seconds < 3.0, (status, seconds)  # never a hang
                if ended <= loss[0]:  # Redis was up all along
                    assert status == 200, body
                    assert headers["x-ratelimit-limit-requests"] == "1000"
                elif policy == "fail_open":  # unchecked once Redis is gone
                    assert status == 200, body
                    if started >= loss[1]:
                        assert "x-ratelimit-limit-requests" not in headers
                elif started >= loss[1]:  # fail_closed: refused once Redis is gone
                    assert status == 503, body
                    assert body["error"]["code"] == "state_unavailable"
                else:  # in flight as Redis was lost: admitted before, or refused
                    assert status in (200, 503), body
                    if status == 503:
                        assert body["error"]["code"] == "state_unavailable"

            # Stopped, it drains and exits cleanly, Redis or not.
            served.proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(10):
                code = await served.proc.wait()
            errors = served.errors()
            assert "Traceback" not in errors, errors
            assert "shared state (redis) unavailable" in errors
            assert code == 0, errors
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.proc.send_signal(signal.SIGCONT)
        server.stop()
