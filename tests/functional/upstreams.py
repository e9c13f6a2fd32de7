"""Helpers for the fault-injection and reliability tests: real mock upstreams on loopback
and configs that put providers on them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp.test_utils import TestClient, TestServer

from gearshift.config import Config, decode, resolve
from gearshift.mock import MOCK_STATE, MockState
from gearshift.providers import REGISTRY

ServerFactory = Callable[..., Awaitable[TestServer]]
ClientFactory = Callable[..., Awaitable[TestClient]]

PREFIX = {"openai": "/v1", "anthropic": "/v1", "gemini": "/v1beta"}
MESSAGES = [{"role": "user", "content": "Say something about the weather in three words."}]
HEADERS = {"x-gearshift-tier": "light"}


def two_providers(primary: TestServer, backup: TestServer, kind: str, extra: str = "") -> Config:
    """``cheap`` on ``primary`` (format ``kind``, short timeouts), ``spare`` on ``backup``."""
    toml = f"""
use_default_catalog = false
{extra}
[[providers]]
name = "primary"
kind = "{kind}"
base_url = "{primary.make_url(PREFIX[kind])}"
api_key = "env:PRIMARY_KEY"
timeouts = {{ connect = 1, first_byte = 0.25, idle = 0.25, total = 0.5 }}

[[providers]]
name = "backup"
kind = "openai"
base_url = "{backup.make_url("/v1")}"
api_key = "env:BACKUP_KEY"

[[models]]
name = "cheap"
provider = "primary"
upstream_id = "cheap-up"
tier = "light"
price_in = 0.1
price_out = 0.1

[[models]]
name = "spare"
provider = "backup"
upstream_id = "spare-up"
tier = "light"
price_in = 1
price_out = 1
"""
    env = {"PRIMARY_KEY": "sk-primary-0123456789", "BACKUP_KEY": "sk-backup-0123456789"}
    raw = decode(toml.encode(), source="test.toml")
    return resolve(raw, source="test.toml", environ=env, kinds=REGISTRY.keys())


def state(server: TestServer) -> MockState:
    return server.app[MOCK_STATE]


async def sse_events(resp: Any) -> list[Any]:
    """The ``data:`` payloads of an SSE body: parsed JSON, or the string ``[DONE]``."""
    raw = (await resp.read()).decode()
    out: list[Any] = []
    for block in raw.split("\n\n"):
        for line in block.splitlines():
            if line.startswith("data: "):
                data = line[6:]
                out.append(data if data == "[DONE]" else orjson.loads(data))
    return out


def content_of(events: list[Any]) -> str:
    return "".join(
        (c.get("delta") or {}).get("content") or ""
        for e in events
        if isinstance(e, dict)
        for c in e.get("choices", [])
    )


def config_of(toml: str, **env: str) -> Config:
    raw = decode(toml.encode(), source="test.toml")
    return resolve(raw, source="test.toml", environ=env, kinds=REGISTRY.keys())
