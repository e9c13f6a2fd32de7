"""Parameters a model refuses (reasoning models refuse sampling parameters) never reach it:
dropped and named in ``x-gearshift-dropped-params``, or, when the catalog says so, the next
model serves the request and the client gets 400 ``unsupported_parameter`` only when no
model is left."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from upstreams import HEADERS, MESSAGES, PREFIX, config_of, sse_events, state

from gearshift.config import Config
from gearshift.serve.app import create_app

ClientFactory = Callable[..., Awaitable[TestClient]]


def _config(primary: TestServer, backup: TestServer, kind: str, on_refused: str) -> Config:
    return config_of(
        f"""
use_default_catalog = false
[[providers]]
name = "primary"
kind = "{kind}"
base_url = "{primary.make_url(PREFIX[kind])}"
api_key = "env:PRIMARY_KEY"

[[providers]]
name = "backup"
kind = "openai"
base_url = "{backup.make_url("/v1")}"
api_key = "env:BACKUP_KEY"

[[models]]
name = "thinker"
provider = "primary"
upstream_id = "thinker-up"
tier = "light"
price_in = 0.1
price_out = 0.1
refuses = ["temperature", "top_p"]
on_refused = "{on_refused}"

[[models]]
name = "spare"
provider = "backup"
upstream_id = "spare-up"
tier = "light"
price_in = 1
price_out = 1
""",
        PRIMARY_KEY="sk-primary-0123456789",
        BACKUP_KEY="sk-backup-0123456789",
    )


async def _ask(client: TestClient, stream: bool = False, **params: Any) -> Any:
    body = {"model": "auto", "messages": MESSAGES, "stream": stream, **params}
    return await client.post("/v1/chat/completions", json=body, headers=HEADERS)


@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_refused_parameters_are_dropped_and_named(
    aiohttp_client: ClientFactory,
    primary: TestServer,
    backup: TestServer,
    kind: str,
    stream: bool,
) -> None:
    client = await aiohttp_client(create_app(_config(primary, backup, kind, "drop")))
    resp = await _ask(client, stream, temperature=0.2, top_p=0.9, max_tokens=50)
    assert resp.status == 200, await resp.text()
    assert resp.headers["x-gearshift-model"] == "thinker"
    assert resp.headers["x-gearshift-dropped-params"] == "temperature,top_p"
    if stream:
        assert (await sse_events(resp))[-1] == "[DONE]"
    (sent,) = state(primary).requests
    text = repr(sent.body)
    for name in ("temperature", "top_p", "topP"):
        assert name not in text
    assert "50" in text, "the rest of the request is sent as before"


async def test_no_header_when_nothing_was_dropped(
    aiohttp_client: ClientFactory, primary: TestServer, backup: TestServer
) -> None:
    client = await aiohttp_client(create_app(_config(primary, backup, "openai", "drop")))
    resp = await _ask(client)
    assert resp.status == 200
    assert "x-gearshift-dropped-params" not in resp.headers


async def test_refused_parameters_move_the_request_to_a_model_that_takes_them(
    aiohttp_client: ClientFactory, primary: TestServer, backup: TestServer
) -> None:
    client = await aiohttp_client(create_app(_config(primary, backup, "openai", "error")))
    resp = await _ask(client, temperature=0.2)
    assert resp.status == 200
    assert resp.headers["x-gearshift-model"] == "spare"
    assert resp.headers["x-gearshift-attempt-log"] == "thinker@primary:unsupported, spare@backup:ok"
    assert state(primary).requests == [], "nothing was sent to the model that refuses it"
    (sent,) = state(backup).requests
    assert sent.body["temperature"] == 0.2


async def test_with_no_model_left_the_client_gets_a_400_naming_the_parameter(
    aiohttp_client: ClientFactory, primary: TestServer, backup: TestServer
) -> None:
    client = await aiohttp_client(create_app(_config(primary, backup, "openai", "error")))
    body = {"model": "thinker", "messages": MESSAGES, "top_p": 0.5}
    resp = await client.post(
        "/v1/chat/completions", json=body, headers={"x-gearshift-route": "pin"}
    )
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert (error["code"], error["param"]) == ("unsupported_parameter", "top_p")
    assert state(primary).requests == []
