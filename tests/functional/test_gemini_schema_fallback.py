"""A recursive tool schema through the real app: Gemini cannot carry it (its schemas are sent
with every ``$ref`` inlined), so the next model of the plan, whose API accepts ``$ref``, serves
it with nothing sent to Gemini; with no such model the client gets a 400 naming the param."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestServer
from upstreams import (
    HEADERS,
    MESSAGES,
    PREFIX,
    ClientFactory,
    sse_events,
    state,
    two_providers,
)

from gearshift.config import Config, decode, resolve
from gearshift.providers import REGISTRY
from gearshift.serve.app import create_app

NODE = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
    },
    "required": ["name"],
}
TREE = {
    "type": "object",
    "properties": {"root": {"$ref": "#/$defs/Node"}},
    "$defs": {"Node": NODE},
}
TOOLS = [
    {"type": "function", "function": {"name": "plant", "parameters": TREE}},
]


def only_gemini(server: TestServer) -> Config:
    toml = f"""
use_default_catalog = false

[[providers]]
name = "g"
kind = "gemini"
base_url = "{server.make_url(PREFIX["gemini"])}"
api_key = "env:G_KEY"

[[models]]
name = "flash"
provider = "g"
upstream_id = "flash-up"
tier = "light"
price_in = 0.1
price_out = 0.1
"""
    raw = decode(toml.encode(), source="test.toml")
    env = {"G_KEY": "g-0123456789"}
    return resolve(raw, source="test.toml", environ=env, kinds=REGISTRY.keys())


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_a_recursive_tool_schema_is_served_by_the_next_model(
    aiohttp_client: ClientFactory, primary: TestServer, backup: TestServer, stream: bool
) -> None:
    # ``cheap`` (Gemini format, cheaper: tried first) on primary, ``spare`` (OpenAI) on backup.
    client = await aiohttp_client(create_app(two_providers(primary, backup, "gemini")))
    resp = await client.post(
        "/v1/chat/completions",
        json={"model": "auto", "messages": MESSAGES, "tools": TOOLS, "stream": stream},
        headers=HEADERS,
    )
    assert resp.status == 200, await resp.text()
    assert resp.headers["x-gearshift-model"] == "spare"
    assert resp.headers["x-gearshift-attempt-log"] == "cheap@primary:unsupported, spare@backup:ok"
    # The mock answers a request with tools by calling the first one.
    if stream:
        events = await sse_events(resp)
        assert events[-1] == "[DONE]"
        calls = [
            call
            for event in events[:-1]
            for choice in event["choices"]
            for call in choice["delta"].get("tool_calls") or []
        ]
        assert calls
        assert calls[0]["function"]["name"] == TOOLS[0]["function"]["name"]
    else:
        body = await resp.json()
        (call,) = body["choices"][0]["message"]["tool_calls"]
        assert call["function"]["name"] == TOOLS[0]["function"]["name"]
        assert body["choices"][0]["finish_reason"] == "tool_calls"
    assert state(primary).requests == [], "nothing is sent to Gemini"
    # The OpenAI-format model gets the schema as the client wrote it, $ref and all.
    (sent,) = state(backup).requests
    assert sent.body["tools"][0]["function"]["parameters"] == TREE


async def test_with_only_gemini_the_client_gets_a_400_naming_the_param(
    aiohttp_client: ClientFactory, primary: TestServer
) -> None:
    client = await aiohttp_client(create_app(only_gemini(primary)))
    resp = await client.post(
        "/v1/chat/completions",
        json={"model": "auto", "messages": MESSAGES, "tools": TOOLS},
        headers=HEADERS,
    )
    assert resp.status == 400, await resp.text()
    assert resp.headers["x-gearshift-attempt-log"] == "flash@g:unsupported"
    error = (await resp.json())["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "tools[0].function.parameters"
    assert error["code"] == "unsupported_schema"
    assert "recursive" in error["message"]
    assert state(primary).requests == []
