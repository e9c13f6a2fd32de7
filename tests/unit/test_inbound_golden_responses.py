"""Golden cases of the Responses API inbound: ``tests/golden_inbound/responses/<case>/``.

The expected files are written from docs/wire-formats.md §6 and openai-python's types, not
from what ``inbound.responses`` emits. A case holds ``request.json`` (the client's Responses
body) and any of:

- ``chat_request.json``: the chat body ``parse`` must build (``ChatRequest.body``; with
  ``history.json``, the stored conversation's chat messages, passed as ``history``);
  ``parsed.json``: expected fields of the ``ResponsesRequest`` (and of its ``chat``:
  ``stream``, ``client_wants_usage``, ``hints``); ``input_items.json``: its ``input_items``;
- ``request_error.json``: ``parse`` must refuse (``status``, ``code``, ``param``);
- ``completion.json`` + ``response.json``: ``encode`` (the chat completion in, the Response
  out), which the SDK's ``Response`` model must also accept;
- ``chat_stream.sse`` + ``response_stream.sse``: ``StreamEncoder`` fed the relay's chat
  stream (in arbitrary slices), then ``end()``; every event's ``event:`` line is its type,
  ``sequence_number`` counts from 0, the terminal event's Response validates and is
  ``final`` (None for a failed stream).

The response id is ``resp_golden``, the served model ``gpt-6-mini``; minted ids
(``msg_`` / ``fc_`` / ``fco_`` / ``call_`` and 48 hex digits) are written ``msg_<synth-N>``
… in order of appearance; ``created_at`` and ``completed_at`` are 0.
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from openai.types.responses import Response

from gearshift import sse
from gearshift.errors import BadRequest
from gearshift.inbound import responses

GOLDEN = Path(__file__).resolve().parent.parent / "golden_inbound" / "responses"
CASES = sorted(p for p in GOLDEN.iterdir() if p.is_dir())
RESPONSE_ID = "resp_golden"
SERVED = "gpt-6-mini"
MINTED = re.compile(r"^(msg_|fc_|fco_|call_)[0-9a-f]{48}$")
TIMES = frozenset({"created_at", "completed_at"})


class Normaliser:
    """Minted ids and times replaced, consistently across one document or stream."""

    def __init__(self) -> None:
        self.ids: dict[str, str] = {}

    def __call__(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: 0 if k in TIMES and isinstance(v, int) else self(v) for k, v in value.items()
            }
        if isinstance(value, list):
            return [self(v) for v in value]
        if isinstance(value, str) and (match := MINTED.match(value)):
            if value not in self.ids:
                prefix = match.group(1)
                n = sum(1 for v in self.ids.values() if v.startswith(prefix)) + 1
                self.ids[value] = f"{prefix}<synth-{n}>"
            return self.ids[value]
        return value


def _json(path: Path) -> Any:
    return orjson.loads(path.read_bytes())


def assert_same(actual: Any, expected: Any, what: str) -> None:
    if actual == expected:
        return

    def pretty(value: Any) -> list[str]:
        return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False).splitlines()

    diff = "\n".join(
        difflib.unified_diff(pretty(expected), pretty(actual), "expected", "actual", lineterm="")
    )
    pytest.fail(f"{what} differs from the golden file:\n{diff}", pytrace=False)


def _parse(case: Path) -> responses.ResponsesRequest:
    history = case / "history.json"
    return responses.parse(
        (case / "request.json").read_bytes(),
        history=_json(history) if history.exists() else None,
    )


def events(raw: bytes) -> list[Any]:
    """A Responses SSE body as comparable items (event objects, or ``": comment"``), with
    the framing checked: each ``event:`` name is its data's type."""
    framer = sse.Framer()
    out: list[Any] = []
    for event in framer.feed(raw):
        parsed = sse.parse(event)
        if parsed is None:
            out.append(event.strip().decode())
            continue
        data = orjson.loads(parsed.data)
        assert parsed.name == data["type"], f"event: {parsed.name} carries {data['type']}"
        out.append(data)
    assert framer.pending == b"", f"the stream ends inside an event: {framer.pending!r}"
    return out


# ---------------------------------------------------------------- the checks


def check_request(case: Path) -> None:
    parsed = _parse(case)
    assert_same(parsed.chat.body, _json(case / "chat_request.json"), "chat body")
    normalise = Normaliser()
    if (case / "parsed.json").exists():
        for name, want in _json(case / "parsed.json").items():
            holder = parsed.chat if name in ("stream", "client_wants_usage", "hints") else parsed
            assert_same(getattr(holder, name), want, name)
    if (case / "input_items.json").exists():
        expected = _json(case / "input_items.json")
        assert_same(normalise(parsed.input_items), expected, "input_items")


def check_request_error(case: Path) -> None:
    expected = _json(case / "request_error.json")
    with pytest.raises(BadRequest) as caught:
        _parse(case)
    error = caught.value
    assert (error.status, error.code, error.param) == (
        expected["status"],
        expected["code"],
        expected["param"],
    ), error.message
    assert error.message


def check_encode(case: Path) -> None:
    parsed = _parse(case)
    doc = responses.encode((case / "completion.json").read_bytes(), parsed, RESPONSE_ID, SERVED)
    Response.model_validate(doc)
    assert isinstance(doc["created_at"], int)
    assert_same(Normaliser()(doc), _json(case / "response.json"), "response")


def check_stream(case: Path) -> None:
    parsed = _parse(case)
    encoder = responses.StreamEncoder(parsed, RESPONSE_ID, SERVED)
    raw = (case / "chat_stream.sse").read_bytes()
    out = b"".join(encoder.feed(raw[i : i + 37]) for i in range(0, len(raw), 37))
    out += encoder.end()
    actual = events(out)
    numbered = [e for e in actual if isinstance(e, dict)]
    assert [e["sequence_number"] for e in numbered] == list(range(len(numbered)))
    assert_same(Normaliser()(actual), events((case / "response_stream.sse").read_bytes()), "stream")
    terminal = numbered[-1]
    Response.model_validate(terminal["response"])
    if terminal["type"] == "response.failed":
        assert encoder.final is None
    else:
        assert encoder.final == terminal["response"]
    assert encoder.feed(b"data: [DONE]\n\n") == b"", "nothing follows the terminal event"
    assert encoder.end() == b""


CHECKS = (
    ("chat_request.json", check_request),
    ("request_error.json", check_request_error),
    ("completion.json", check_encode),
    ("chat_stream.sse", check_stream),
)


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_golden_responses(case: Path) -> None:
    ran = [name for name, check in CHECKS if (case / name).exists() and check(case) is None]
    assert ran, f"{case.name} has no file to check"


def test_golden_responses_cases_exist() -> None:
    kinds = {name: sum((c / name).exists() for c in CASES) for name, _ in CHECKS}
    assert all(n >= 4 for n in kinds.values()), kinds
