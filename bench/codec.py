"""Micro-benchmark: JSON parse and serialise of typical bodies (orjson, as gearshift uses,
and the standard library for reference).

    python -m bench.codec [--number N]

Bodies: a small chat request, a request with a ~10 KB pasted document, a 100-message
conversation, a non-streaming answer with usage, and one stream chunk. Best of 5 runs.
"""

from __future__ import annotations

import argparse
import json
import platform
import timeit
from typing import Any

import orjson

from bench.load import DOC


def _bodies() -> dict[str, Any]:
    turn = {"role": "user", "content": "And what about the second clause of the contract?"}
    return {
        "small request": {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi!"}]},
        "10 KB document": {
            "model": "gpt-4o",
            "messages": [{"role": "user", "content": DOC[:20_000] + " When is payment due?"}],
        },
        "100 turns": {"model": "gpt-4o", "messages": [turn] * 100},
        "answer": {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": "gpt-4o-mini",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Payment is due in sixty days."},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 5000, "completion_tokens": 8, "total_tokens": 5008},
        },
        "stream chunk": {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "delta": {"content": " sixty"}, "finish_reason": None}],
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--number", type=int, default=20_000)
    args = parser.parse_args(argv)
    print(f"python {platform.python_version()}; orjson {orjson.__version__}; best of 5")
    print(f"{'body':>16} {'bytes':>7} {'orjson load':>12} {'orjson dump':>12} {'json load':>10}")
    for name, doc in _bodies().items():
        raw = orjson.dumps(doc)
        n = max(1, args.number // max(1, len(raw) // 1000))

        def best(stmt: Any, n: int = n) -> float:
            return min(timeit.repeat(stmt, number=n, repeat=5)) / n * 1e6

        load = best(lambda raw=raw: orjson.loads(raw))
        dump = best(lambda doc=doc: orjson.dumps(doc))
        stdlib = best(lambda raw=raw: json.loads(raw))
        print(f"{name:>16} {len(raw):>7} {load:>10.2f}µs {dump:>10.2f}µs {stdlib:>8.2f}µs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
