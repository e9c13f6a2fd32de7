"""Golden cases of the Anthropic Messages inbound: ``tests/golden_inbound/messages/<case>/``.

The expected files are written from ``docs/wire-formats.md`` §2 and §4 and the ``anthropic``
SDK's types, not from what ``gearshift.inbound.messages`` emits. A case holds any of:

- ``request.json`` (or ``request.raw``, bytes as sent) + ``chat_request.json``: ``parse``
  must build that chat body (``stream`` / ``stream_options`` included; the ``gearshift``
  hints taken out into ``hints.json`` when present); ``client_wants_usage`` is always true;
- ``request.json`` + ``request_error.json``: ``parse`` must refuse it (``status``, ``code``,
  ``param``, and ``message`` when given);
- ``completion.json`` + ``message.json``: ``encode`` of that chat answer;
- ``chat_stream.sse`` + ``messages_stream.sse``: the ``StreamEncoder`` fed the chat events
  one at a time (and, again, all at once: the same bytes must come out), then ``end()``;
- ``error.json`` (``class`` in ``gearshift.errors``, ``message``, ``status``, ``code``) +
  ``anthropic_error.json`` (``status``, ``body``): ``error_body``;
- ``count_tokens.json``: ``{"chat_body": …}``: ``count_tokens(request.json)`` must be
  ``{"input_tokens": <gearshift's counter on that chat body>}``.

``encode`` and the stream take the request of ``request.json`` when the case has one, else
a plain one (``stream`` as the case needs). ``meta.json`` may set ``message_id`` (default
``msg_golden``) and ``requested_model`` (default the request's model).

Tool-call ids carrying state (``providers.carry``: a zlib'd blob whose bytes may differ
between zlib builds) are written ``{"$carry": [<plain id>, <model>, <state without m>]}``:
built with ``carry.wrap`` in inputs, read back with ``carry.unwrap`` from outputs.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from gearshift import errors, sse
from gearshift.errors import BadRequest
from gearshift.inbound import messages
from gearshift.inbound.chat import ChatRequest
from gearshift.providers import carry
from gearshift.routing import tokens

GOLDEN = Path(__file__).resolve().parent.parent / "golden_inbound" / "messages"
CASES = sorted(p for p in GOLDEN.iterdir() if p.is_dir())
PLAIN = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 1024,
    "messages": [{"role": "user", "content": "Hi"}],
}


def _load(path: Path) -> Any:
    return orjson.loads(path.read_bytes())


def materialise(value: Any) -> Any:
    """Inputs: ``{"$carry": [id, model, state]}`` → the wrapped id."""
    if isinstance(value, dict):
        if set(value) == {"$carry"}:
            plain, model, state = value["$carry"]
            return carry.wrap(plain, model, state)
        return {k: materialise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [materialise(v) for v in value]
    return value


def normalise(value: Any) -> Any:
    """Outputs: a wrapped id → ``{"$carry": [id, model, state]}``."""
    if isinstance(value, dict):
        return {k: normalise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalise(v) for v in value]
    if isinstance(value, str) and carry.MARK in value:
        plain, state = carry.unwrap(value)
        assert state is not None, f"unreadable carried id {value!r}"
        model = state.pop("m")
        return {"$carry": [plain, model, state]}
    return value


def assert_same(actual: Any, expected: Any, what: str) -> None:
    if actual == expected:
        return

    def pretty(v: Any) -> list[str]:
        return json.dumps(v, indent=2, sort_keys=True, ensure_ascii=False).splitlines()

    diff = "\n".join(
        difflib.unified_diff(pretty(expected), pretty(actual), "expected", "actual", lineterm="")
    )
    pytest.fail(f"{what} differs from the golden file:\n{diff}", pytrace=False)


def chat_events(raw: bytes) -> list[bytes]:
    """A chat ``.sse`` input as the relay's pieces: one whole event each, ids materialised."""
    framer = sse.Framer()
    out = []
    for event in framer.feed(raw):
        data = sse.data_payload(event)
        if data is None or data == sse.DONE:
            out.append(event)
        else:
            out.append(sse.encode(orjson.dumps(materialise(orjson.loads(data)))))
    return out


def anthropic_events(raw: bytes) -> list[tuple[str | None, Any]]:
    """An Anthropic SSE body as (event name, parsed data); each data names its own type."""
    framer = sse.Framer()
    events = framer.feed(raw)
    assert framer.pending.strip() == b"", f"ends inside an event: {framer.pending!r}"
    items: list[tuple[str | None, Any]] = []
    for event in events:
        parsed = sse.parse(event)
        assert parsed is not None, f"an event with no data: {event!r}"
        data = orjson.loads(parsed.data)
        assert parsed.name == data.get("type"), f"event: {parsed.name} carries {data}"
        items.append((parsed.name, data))
    return items


def _request(case: Path, stream: bool) -> ChatRequest:
    path = case / "request.json"
    body = _load(path) if path.exists() else {**PLAIN, "stream": stream}
    return messages.parse(orjson.dumps(materialise(body)))


def _meta(case: Path, request: ChatRequest) -> tuple[str, str]:
    meta = _load(case / "meta.json") if (case / "meta.json").exists() else {}
    return meta.get("message_id", "msg_golden"), meta.get("requested_model", request.model)


# ---------------------------------------------------------------- the checks


def check_decode(case: Path) -> None:
    raw_path = case / "request.raw"
    raw = (
        raw_path.read_bytes()
        if raw_path.exists()
        else orjson.dumps(materialise(_load(case / "request.json")))
    )
    error_path = case / "request_error.json"
    if error_path.exists():
        expected = _load(error_path)
        with pytest.raises(BadRequest) as caught:
            messages.parse(raw)
        error = caught.value
        assert error.status == expected["status"]
        assert error.code == expected.get("code", error.code)
        assert error.param == expected.get("param", error.param)
        if "message" in expected:
            assert error.message == expected["message"]
        return
    chat = messages.parse(raw)
    assert_same(normalise(chat.body), _load(case / "chat_request.json"), "chat body")
    assert chat.client_wants_usage is True
    assert chat.model == chat.body["model"]
    assert chat.stream is (chat.body.get("stream") is True)
    assert chat.carried is (carry.MARK_BYTES in orjson.dumps(chat.body))
    hints = case / "hints.json"
    assert chat.hints == (_load(hints) if hints.exists() else {})


def check_encode(case: Path) -> None:
    request = _request(case, stream=False)
    message_id, model = _meta(case, request)
    completion = orjson.dumps(materialise(_load(case / "completion.json")))
    actual = orjson.loads(messages.encode(completion, request, message_id, model))
    assert_same(normalise(actual), _load(case / "message.json"), "Messages answer")


def check_stream(case: Path) -> None:
    request = _request(case, stream=True)
    message_id, model = _meta(case, request)
    pieces = chat_events((case / "chat_stream.sse").read_bytes())
    encoder = messages.StreamEncoder(request, message_id, model)
    out = b"".join(encoder.feed(p) for p in pieces) + encoder.end()
    whole = messages.StreamEncoder(request, message_id, model)
    assert whole.feed(b"".join(pieces)) + whole.end() == out, "the pieces' split matters"
    expected = anthropic_events((case / "messages_stream.sse").read_bytes())
    assert_same(normalise(anthropic_events(out)), expected, "Messages stream")


def check_error(case: Path) -> None:
    spec = _load(case / "error.json")
    cls = getattr(errors, spec["class"])
    kwargs = {k: spec[k] for k in ("code", "status") if k in spec}
    if issubclass(cls, errors.UpstreamError):
        kwargs["provider"] = spec.get("provider", "golden")
    error = cls(spec["message"], **kwargs)
    status, body = messages.error_body(error)
    expected = _load(case / "anthropic_error.json")
    assert status == expected["status"]
    assert_same(orjson.loads(body), expected["body"], "error body")


def check_count(case: Path) -> None:
    spec = _load(case / "count_tokens.json")
    raw = orjson.dumps(_load(case / "request.json"))
    actual = orjson.loads(messages.count_tokens(raw))
    assert actual == {"input_tokens": tokens.count_request(spec["chat_body"])}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_golden(case: Path) -> None:
    ran = False
    if (case / "count_tokens.json").exists():
        check_count(case)
        ran = True
    elif (case / "chat_request.json").exists() or (case / "request_error.json").exists():
        check_decode(case)
        ran = True
    if (case / "message.json").exists():
        check_encode(case)
        ran = True
    if (case / "messages_stream.sse").exists():
        check_stream(case)
        ran = True
    if (case / "anthropic_error.json").exists():
        check_error(case)
        ran = True
    assert ran, "the case holds no check"


def test_every_kind_of_case_is_there() -> None:
    names = {f.name for c in CASES for f in c.iterdir()}
    for needed in (
        "chat_request.json",
        "request_error.json",
        "message.json",
        "messages_stream.sse",
        "anthropic_error.json",
        "count_tokens.json",
    ):
        assert needed in names, needed
