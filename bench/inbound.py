"""Micro-benchmark: what the inbound formats add, per request and per stream event.

    python -m bench.inbound [--number N]

The same conversation (a system prompt, 24 tools, a tool loop: about 18 KB, the shape an
agentic client sends) is parsed as chat (``parse_chat``), as a Responses request and as a
Messages request; a content chunk (a few words) is fed to the Responses and Messages stream
encoders. Best of 5 runs of ``number``; no network. Chat is the baseline: the other formats
decode into a chat request, so their parse includes chat's.
"""

from __future__ import annotations

import argparse
import platform
import timeit
from typing import Any

import orjson

from gearshift.inbound import messages, responses
from gearshift.inbound.chat import parse_chat

SYSTEM = "You are a coding agent. " + "Follow the repository's rules carefully. " * 40
SCHEMA = {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}
ASK = "Read README.md and the tests, then summarise what the project does. " * 3


def _chat() -> bytes:
    tools = [
        {
            "type": "function",
            "function": {"name": f"tool_{i}", "description": f"Tool {i}.", "parameters": SCHEMA},
        }
        for i in range(24)
    ]
    call = {"id": "call_1", "type": "function", "function": {"name": "tool_0",
            "arguments": '{"path": "README.md"}'}}  # fmt: skip
    body = {
        "model": "auto",
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": ASK},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "# gearshift\n" * 200},
        ],
        "tools": tools,
        "stream": True,
    }
    return orjson.dumps(body)


def _responses() -> bytes:
    tools = [
        {"type": "function", "name": f"tool_{i}", "description": f"Tool {i}.", "parameters": SCHEMA}
        for i in range(24)
    ]
    body = {
        "model": "auto",
        "instructions": SYSTEM,
        "input": [
            {"role": "user", "content": ASK},
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "tool_0",
                "arguments": '{"path": "README.md"}',
            },
            {"type": "function_call_output", "call_id": "call_1", "output": "# gearshift\n" * 200},
        ],
        "tools": tools,
        "stream": True,
    }
    return orjson.dumps(body)


def _messages() -> bytes:
    tools = [
        {"name": f"tool_{i}", "description": f"Tool {i}.", "input_schema": SCHEMA}
        for i in range(24)
    ]
    body = {
        "model": "claude-sonnet-5-5",
        "max_tokens": 4096,
        "system": [{"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": ASK},
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "tool_0",
                        "input": {"path": "README.md"},
                    }
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "content": "# gearshift\n" * 200,
                    }
                ],
            },
        ],
        "tools": tools,
        "stream": True,
    }
    return orjson.dumps(body)


CHUNK = (
    b"data: "
    + orjson.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "delta": {"content": " world, and a few more words"},
                    "finish_reason": None,
                }
            ],
        }
    )
    + b"\n\n"
)
FIRST = (
    b"data: "
    + orjson.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": "Hello"},
                    "finish_reason": None,
                }
            ],
        }
    )
    + b"\n\n"
)


def _best(fn: Any, number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=2000)
    args = parser.parse_args()
    n = args.number
    chat_raw, resp_raw, msg_raw = _chat(), _responses(), _messages()
    rreq = responses.parse(resp_raw)
    mreq = messages.parse(msg_raw)
    r_enc = responses.StreamEncoder(rreq, "resp_1", "m")
    m_enc = messages.StreamEncoder(mreq, "msg_1", "m")
    r_enc.feed(FIRST)
    m_enc.feed(FIRST)
    print(f"python {platform.python_version()} on {platform.machine()}; best of 5 x {n}")
    print(f"{'format':<10} {'body KB':>8} {'parse µs':>9} {'per event µs':>13}")
    rows = [
        ("chat", chat_raw, lambda: parse_chat(chat_raw), None),
        ("responses", resp_raw, lambda: responses.parse(resp_raw), lambda: r_enc.feed(CHUNK)),
        ("messages", msg_raw, lambda: messages.parse(msg_raw), lambda: m_enc.feed(CHUNK)),
    ]
    for name, raw, parse, feed in rows:
        per_event = f"{_best(feed, n * 10):13.2f}" if feed else f"{'(bytes as-is)':>13}"
        print(f"{name:<10} {len(raw) / 1024:8.1f} {_best(parse, n):9.1f} {per_event}")


if __name__ == "__main__":
    main()
