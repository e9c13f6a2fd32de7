"""Micro-benchmark: translation cost per stream event and per request, by provider.

    python -m bench.translation [--number N]

For each wire format, a typical content event (a few words of text) is fed to the adapter's
stream decoder ``number`` times (best of 5 runs), and a typical request is encoded: the
per-event and per-request cost gearshift adds on top of the bytes it forwards. No network.
Models from the 2024 catalog (``catalog_2024.toml``), as the recorded figures were run on.
"""

from __future__ import annotations

import argparse
import platform
import timeit
from typing import Any

import orjson

from gearshift.config import catalog_2024, load
from gearshift.inbound.chat import parse_chat
from gearshift.providers import REGISTRY

TEXT = " world, and a few more words"
EVENTS = {
    "openai": b"data: "
    + orjson.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "delta": {"content": TEXT}, "finish_reason": None}],
            "usage": None,
        }
    )
    + b"\n\n",
    "anthropic": b"event: content_block_delta\ndata: "
    + orjson.dumps(
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": TEXT},
        }
    )
    + b"\n\n",
    "gemini": b"data: "
    + orjson.dumps(
        {
            "candidates": [{"content": {"role": "model", "parts": [{"text": TEXT}]}, "index": 0}],
            "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 3},
            "modelVersion": "gemini-1.5-flash",
            "responseId": "r1",
        }
    )
    + b"\n\n",
}
ANTHROPIC_START = (
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1",'
    b'"model":"claude","usage":{"input_tokens":5,"output_tokens":1}}}\n\n'
)
MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-3-haiku", "gemini": "gemini-1.5-flash"}


def _request(stream: bool) -> Any:
    body = {
        "model": "auto",
        "stream": stream,
        "messages": [
            {"role": "system", "content": "You are a support assistant for an online shop."},
            {"role": "user", "content": "Where is my order 4411? It was due yesterday."},
        ],
        "temperature": 0.2,
        "max_tokens": 300,
    }
    return parse_chat(orjson.dumps(body))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=50_000)
    args = parser.parse_args()
    # The 2024 catalog (chat-only models, no reasoning), as the recorded figures were run on.
    config = load(
        None,
        environ={"OPENAI_API_KEY": "o", "ANTHROPIC_API_KEY": "a", "GEMINI_API_KEY": "g"},
        base=catalog_2024(),
    )
    print(f"python {platform.python_version()}; best of 5 runs of {args.number}")
    print(f"{'provider':>10} {'µs/event':>9} {'µs/request encode':>18}")
    for kind, adapter in REGISTRY.items():
        model = config.models[MODELS[kind]]
        decoder = adapter.stream_decoder(_request(True), model)
        if kind == "anthropic":
            decoder.feed(ANTHROPIC_START)
        event = EVENTS[kind]
        feed = decoder.feed
        per_event = min(timeit.repeat(lambda: feed(event), number=args.number, repeat=5))  # noqa: B023
        request = _request(False)
        encode = min(
            timeit.repeat(
                lambda: adapter.encode_request(request, model),  # noqa: B023
                number=args.number // 5,
                repeat=5,
            )
        )
        print(
            f"{kind:>10} {per_event / args.number * 1e6:>9.2f} "
            f"{encode / (args.number // 5) * 1e6:>18.2f}"
        )


if __name__ == "__main__":
    main()
