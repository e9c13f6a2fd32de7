"""A misbehaving upstream for the hardening tests: it answers whatever the test scripts
(status, headers, body, a gzip bomb, a text body to a stream request), on a real loopback
server, for any of the three wire formats' paths.

Unlike the mock (``gearshift.mock``), which speaks each provider's format faithfully and
fails in the ways providers fail, this one is an attacker's or a broken proxy's upstream.
"""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import orjson
from aiohttp import web
from aiohttp.test_utils import TestServer
from upstreams import config_of

from gearshift.config import Config

KEY = "sk-misbehaving-provider-key-0123456789"
PREFIX = {"openai": "/v1", "anthropic": "/v1", "gemini": "/v1beta"}


@dataclass
class Script:
    """What every request gets until the test changes it."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"{}"
    gzip_bomb: int = 0  # > 0: the body is this many bytes of zeros, gzip-compressed
    requests: int = 0


SCRIPT = web.AppKey("script", Script)


async def _answer(request: web.Request) -> web.StreamResponse:
    script = request.app[SCRIPT]
    script.requests += 1
    await request.read()
    if script.gzip_bomb:
        body = bomb(script.gzip_bomb)
        headers = {"content-type": "application/json", "content-encoding": "gzip"}
        return web.Response(status=script.status, body=body, headers=headers)
    return web.Response(status=script.status, body=script.body, headers=script.headers)


_BOMBS: dict[int, bytes] = {}


def bomb(size: int) -> bytes:
    """``size`` bytes of zeros, gzip-compressed, made a MiB at a time (the test process
    never holds the inflated size)."""
    if size not in _BOMBS:
        packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # gzip framing
        block = b"\0" * (1 << 20)
        parts = [packer.compress(block) for _ in range(size >> 20)]
        _BOMBS[size] = b"".join(parts) + packer.flush()
    return _BOMBS[size]


def create_misbehaving_app() -> web.Application:
    app = web.Application()
    app[SCRIPT] = Script()
    app.router.add_route("POST", "/{tail:.*}", _answer)
    return app


ServerFactory = Callable[..., Awaitable[TestServer]]


def script(server: TestServer) -> Script:
    return server.app[SCRIPT]


def json_error(status: int, doc: object, **headers: str) -> Script:
    return Script(
        status=status,
        body=orjson.dumps(doc),
        headers={"content-type": "application/json", **headers},
    )


def one_provider(server: TestServer, kind: str = "openai", extra: str = "") -> Config:
    """A single model on the misbehaving upstream: nothing to fall back on."""
    return config_of(
        f"""
use_default_catalog = false
{extra}
[[providers]]
name = "evil"
kind = "{kind}"
base_url = "{server.make_url(PREFIX[kind])}"
api_key = "env:EVIL_KEY"
timeouts = {{ connect = 1, first_byte = 2, idle = 2, total = 5 }}

[[models]]
name = "m"
provider = "evil"
upstream_id = "m-up"
tier = "light"
price_in = 1
price_out = 1
""",
        EVIL_KEY=KEY,
    )


def with_backup(server: TestServer, backup: TestServer, kind: str = "openai") -> Config:
    """``m`` on the misbehaving upstream first, ``spare`` on a faithful mock after it."""
    return config_of(
        f"""
use_default_catalog = false
[[providers]]
name = "evil"
kind = "{kind}"
base_url = "{server.make_url(PREFIX[kind])}"
api_key = "env:EVIL_KEY"
timeouts = {{ connect = 1, first_byte = 2, idle = 2, total = 5 }}

[[providers]]
name = "backup"
kind = "openai"
base_url = "{backup.make_url("/v1")}"
api_key = "env:BACKUP_KEY"

[[models]]
name = "m"
provider = "evil"
upstream_id = "m-up"
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
""",
        EVIL_KEY=KEY,
        BACKUP_KEY="sk-backup-0123456789",
    )
