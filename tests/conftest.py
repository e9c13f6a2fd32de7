"""Shared fixtures: the mock OpenAI upstream and gearshift on real loopback servers."""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from redis_server import redis_server  # noqa: F401 (a session fixture: a real Redis)

from gearshift.config import Config, catalog_2024, decode, load, resolve
from gearshift.mock import MOCK_STATE, MockState, create_mock_app
from gearshift.providers import REGISTRY
from gearshift.serve.app import create_app

MakeConfig = Callable[..., Config]


def pytest_sessionstart(session: pytest.Session) -> None:
    """Stop at once when a routing module compiled by mypyc (``setup.py``) is older than its
    source: Python would import the stale extension, and the tests would not see the edit."""
    import gearshift.routing

    stale = [
        compiled.name
        for compiled in Path(gearshift.routing.__file__).parent.glob("*.so")
        if (source := compiled.with_name(compiled.name.split(".")[0] + ".py")).exists()
        and source.stat().st_mtime > compiled.stat().st_mtime
    ]
    if stale:
        pytest.exit(
            f"compiled routing modules older than their sources: {', '.join(sorted(stale))}; "
            "rebuild them (pip install -e .) or delete them to run the pure modules",
            returncode=4,
        )


@pytest.fixture
async def mock_upstream(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> TestServer:
    """A fake OpenAI on loopback, speaking the real wire format."""
    return await aiohttp_server(create_mock_app())


@pytest.fixture
def mock_state(mock_upstream: TestServer) -> MockState:
    return mock_upstream.app[MOCK_STATE]


@pytest.fixture
def make_config(mock_upstream: TestServer) -> MakeConfig:
    """Config builder: the 2024 catalog (``catalog_2024()``, not the default catalog: the
    existing tests are written against its models, prices and tiers), OpenAI pointed at the
    mock, optional TOML merged on top of it."""

    def build(toml: str | None = None, environ: Mapping[str, str] | None = None) -> Config:
        env = {
            "OPENAI_API_KEY": "sk-test-provider-key-0123456789",
            "GEARSHIFT_OPENAI_BASE_URL": str(mock_upstream.make_url("/v1")),
            **(environ or {}),
        }
        if toml is None:
            return load(None, environ=env, kinds=REGISTRY.keys(), base=catalog_2024())
        raw = decode(toml.encode(), source="test.toml")
        return resolve(
            raw, source="test.toml", environ=env, kinds=REGISTRY.keys(), base=catalog_2024()
        )

    return build


@pytest.fixture
async def gateway(
    aiohttp_client: Callable[..., Awaitable[TestClient]], make_config: MakeConfig
) -> TestClient:
    """A gearshift app (real server on loopback) in front of the mock upstream."""
    return await aiohttp_client(create_app(make_config()))


@pytest.fixture
def unused_port() -> int:
    """A loopback port with nothing listening on it."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def solo(model: str, tier: str = "frontier") -> str:
    """A config whose only model is ``model`` (on the mock): nothing to route to or fall
    back on, so the test sees exactly what that upstream behaviour does."""
    return (
        "use_default_catalog = false\n"
        "[[providers]]\nname = 'openai'\nkind = 'openai'\nbase_url = 'http://127.0.0.1:9'\n"
        "api_key = 'env:OPENAI_API_KEY'\n"
        f"[[models]]\nname = '{model}'\nprovider = 'openai'\ntier = '{tier}'\n"
        "price_in = 1\nprice_out = 1\n"
    )


class FakeClock:
    """A clock for breakers, back-off and deadlines that only moves when told to (or when
    the code under test sleeps on it: the sleep is recorded and returns at once). Timers
    (``call_at``: the request's deadline) fire as the fake time passes them; a sleeper whose
    deadline fires mid-sleep wakes at the deadline."""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start
        self.sleeps: list[float] = []
        self.on_sleep: Callable[[float], None] | None = None
        self._timers: list[tuple[float, int, _Timer]] = []
        self._seq = 0

    def now(self) -> float:
        return self.t

    def call_at(self, when: float, callback: Callable[[], None]) -> _Timer:
        timer = _Timer(callback)
        self._seq += 1
        heapq.heappush(self._timers, (when, self._seq, timer))
        return timer

    def advance(self, seconds: float) -> None:
        self._move(self.t + seconds)

    def _move(self, target: float) -> bool:
        """Fire the timers due by ``target``; False when one cancelled the running task
        (time then stays at that timer's moment)."""
        task = asyncio.current_task() if _in_loop() else None
        cancelling = task.cancelling() if task is not None else 0
        while self._timers and self._timers[0][0] <= target:
            when, _, timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self.t = max(self.t, when)
            timer.callback()
            if task is not None and task.cancelling() > cancelling:
                return False
        self.t = max(self.t, target)
        return True

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if self._move(self.t + seconds) and self.on_sleep is not None:
            self.on_sleep(seconds)
        await asyncio.sleep(0)


class _Timer:
    __slots__ = ("callback", "cancelled")

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


def _in_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


@pytest.fixture
async def primary(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> TestServer:
    """A second and third mock upstream, for tests that fail one provider and not another."""
    return await aiohttp_server(create_mock_app())


@pytest.fixture
async def backup(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> TestServer:
    return await aiohttp_server(create_mock_app())


def fed(decoder: Any, event: bytes | None) -> bytes:
    """A stream decoder's bytes for one raw event (``None``: the end of the body), with the
    usage chunk it holds back sent first, as the relay sends it (without gearshift's cost
    object, which the relay adds)."""
    out = decoder.end() if event is None else decoder.feed(event)
    held = decoder.state.usage_chunk
    if held is not None:
        decoder.state.usage_chunk = None
        out = b"data: " + held + b"\n\n" + out
    return bytes(out)
