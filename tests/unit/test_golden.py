"""Golden translation cases: ``tests/golden/<provider>/<case>/``, one directory per case.

The expected files are written from the wire-format reference (docs/wire-formats.md and the
providers' own documentation), not from what an adapter happens to emit. A case holds any of:

- ``client_request.json``: the OpenAI body the client sends (needed by every request and
  response check; optional for pure error cases);
- ``upstream_request.json``: the upstream body ``encode_request`` must produce (as JSON), and
  ``upstream.json``: ``{"url_suffix", "headers" (an expected subset), "model" (gearshift
  model name, default per provider)}``;
- ``encode_error.json``: ``encode_request`` must refuse the request (``status``, ``code``,
  ``param``);
- ``upstream_response.json`` + ``client_response.json``: ``decode_response``;
- ``upstream_stream.sse`` + ``client_stream.sse`` (+ ``stream_state.json``): the stream
  decoder, fed the provider's raw bytes event by event; ``end()`` at the end of the body
  unless the stream failed;
- ``upstream_error.json`` + ``error.json``: ``decode_error`` (``status`` and ``headers`` the
  upstream answered with; ``client_status``, ``retryable``, ``code``, ``retry_after``).

``created`` is normalised everywhere; ids gearshift synthesizes (``call_<24 hex>``,
``chatcmpl-<24 hex>``) become ``call_<synth-N>`` / ``chatcmpl-<synth-N>`` in order of first
appearance, so the expected files name them that way.
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import fed

from gearshift import sse
from gearshift.config import Model, load
from gearshift.errors import BadRequest, Unsupported, UpstreamError
from gearshift.inbound.chat import ChatRequest, parse_chat
from gearshift.providers import REGISTRY

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
CASES = sorted(p for p in GOLDEN.glob("*/*") if p.is_dir())
KEYS = {
    "OPENAI_API_KEY": "sk-test-openai-0123456789",
    "ANTHROPIC_API_KEY": "sk-ant-test-0123456789",
    "GEMINI_API_KEY": "gemini-test-key-0123456789",
}
CONFIG = load(None, environ=KEYS)
# The seed's 2024 catalog (an example config now): the older cases run on its models.
CONFIG_2024 = load(
    Path(__file__).resolve().parents[2] / "src" / "gearshift" / "catalog_2024.toml", environ=KEYS
)
MODELS: dict[str, Model] = {**CONFIG_2024.models, **CONFIG.models}
DEFAULT_MODEL = {
    "openai": "gpt-4o-mini",
    "anthropic": "claude-3-haiku",
    "gemini": "gemini-1.5-flash",
}
SYNTHESIZED = re.compile(r"^(call_|chatcmpl-)[0-9a-f]{24}$")


def case_id(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


# ---------------------------------------------------------------- helpers


def _load_json(path: Path) -> Any:
    return orjson.loads(path.read_bytes())


class Normaliser:
    """Replaces ``created`` and synthesized ids, consistently across one document/stream."""

    def __init__(self) -> None:
        self.ids: dict[str, str] = {}

    def __call__(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: 0 if k == "created" and isinstance(v, int) else self(v) for k, v in value.items()
            }
        if isinstance(value, list):
            return [self(v) for v in value]
        if isinstance(value, str) and SYNTHESIZED.match(value):
            if value not in self.ids:
                kind = "call_" if value.startswith("call_") else "chatcmpl-"
                same_kind = sum(1 for v in self.ids.values() if v.startswith(kind))
                self.ids[value] = f"{kind}<synth-{same_kind + 1}>"
            return self.ids[value]
        return value


def _pretty(value: Any) -> list[str]:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False).splitlines()


def assert_same(actual: Any, expected: Any, what: str) -> None:
    if actual == expected:
        return
    diff = "\n".join(
        difflib.unified_diff(
            _pretty(expected), _pretty(actual), "expected", "actual", lineterm="", n=4
        )
    )
    pytest.fail(f"{what} differs from the golden file:\n{diff}", pytrace=False)


def sse_items(raw: bytes) -> list[Any]:
    """A client SSE body as comparable items: parsed JSON, ``"[DONE]"``, or ``": comment"``."""
    framer = sse.Framer()
    events = framer.feed(raw)
    assert framer.pending.strip() == b"", f"SSE body ends inside an event: {framer.pending!r}"
    items: list[Any] = []
    for event in events:
        parsed = sse.parse(event)
        if parsed is None:
            comment = event.strip().decode()
            if comment:
                items.append(comment)
            continue
        assert parsed.name is None, "OpenAI streams have no event: lines"
        items.append("[DONE]" if parsed.data == sse.DONE else orjson.loads(parsed.data))
    return items


def _model(case: Path) -> Model:
    meta = _load_json(case / "upstream.json") if (case / "upstream.json").exists() else {}
    return MODELS[meta.get("model", DEFAULT_MODEL[case.parent.name])]


def _request(case: Path) -> ChatRequest:
    path = case / "client_request.json"
    assert path.exists(), "this case needs client_request.json"
    return parse_chat(path.read_bytes())


# ---------------------------------------------------------------- the checks


def check_encode(case: Path, adapter: Any, model: Model) -> None:
    out = adapter.encode_request(_request(case), model)
    assert_same(orjson.loads(out.body), _load_json(case / "upstream_request.json"), "upstream body")
    meta_path = case / "upstream.json"
    if meta_path.exists():
        meta = _load_json(meta_path)
        if "url_suffix" in meta:
            assert out.url.endswith(meta["url_suffix"]), f"url {out.url!r}"
        headers = {k.lower(): v for k, v in out.headers.items()}
        for name, value in meta.get("headers", {}).items():
            assert headers.get(name.lower()) == value, f"header {name}: {headers.get(name)!r}"


def check_encode_error(case: Path, adapter: Any, model: Model) -> None:
    expected = _load_json(case / "encode_error.json")
    with pytest.raises((BadRequest, Unsupported)) as caught:
        adapter.encode_request(_request(case), model)
    error = caught.value
    assert error.status == expected["status"]
    assert error.code == expected.get("code", error.code)
    assert error.param == expected.get("param", error.param)


def check_response(case: Path, adapter: Any, model: Model) -> None:
    upstream = (case / "upstream_response.json").read_bytes()
    completion = adapter.decode_response(upstream, _request(case), model)
    normalise = Normaliser()
    actual = orjson.loads(completion.body)
    assert isinstance(actual.get("created"), int)
    expected = _load_json(case / "client_response.json")
    assert_same(normalise(actual), normalise(expected), "client response")
    assert completion.usage == expected.get("usage"), "Completion.usage is the body's usage"


def check_stream(case: Path, adapter: Any, model: Model) -> None:
    request = _request(case)
    decoder = adapter.stream_decoder(request, model)
    raw = (case / "upstream_stream.sse").read_bytes()
    framer = sse.Framer()
    out = b""
    # Arbitrary network chunking: the framer reassembles the provider's events.
    for start in range(0, len(raw), 37):
        for event in framer.feed(raw[start : start + 37]):
            out += fed(decoder, event)
            if decoder.state.error is not None:
                break
        if decoder.state.error is not None:
            break
    else:
        out += fed(decoder, None)
    actual = sse_items(out)
    chunks = [c for c in actual if isinstance(c, dict)]
    for field in ("id", "created", "model"):
        assert len({c.get(field) for c in chunks}) <= 1, f"{field} differs between chunks"
    for chunk in chunks:
        assert chunk.get("object") == "chat.completion.chunk"
    normalise = Normaliser()
    expected = sse_items((case / "client_stream.sse").read_bytes())
    assert_same(normalise(actual), normalise(expected), "client stream")

    state_path = case / "stream_state.json"
    want = _load_json(state_path) if state_path.exists() else {}
    state = decoder.state
    assert state.finished is want.get("finished", True), f"state.finished is {state.finished}"
    if "usage" in want:
        assert_same(state.usage, want["usage"], "state.usage")
    error = want.get("error")
    if error is None:
        assert state.error is None, f"unexpected stream error {state.error!r}"
    else:
        assert isinstance(state.error, UpstreamError), "the stream error is not noted"
        _check_error(state.error, error, model)


def _check_error(error: UpstreamError, expected: dict[str, Any], model: Model) -> None:
    assert error.status == expected["client_status"], f"status {error.status}"
    assert error.retryable is expected["retryable"], f"retryable {error.retryable}"
    if "code" in expected:
        assert error.code == expected["code"], f"code {error.code!r}"
    if "retry_after" in expected:
        assert error.retry_after == expected["retry_after"], f"retry_after {error.retry_after}"
    if "type" in expected:
        assert error.type == expected["type"], f"type {error.type!r}"
    assert error.provider == model.provider.name
    body = orjson.loads(error.body())
    assert set(body["error"]) == {"message", "type", "param", "code"}
    for key in KEYS.values():
        assert key not in error.message, "a provider key leaked into the error message"
    if error.retry_after is not None:
        assert error.headers()["retry-after"] == str(max(1, round(error.retry_after)))


def check_error(case: Path, adapter: Any, model: Model) -> None:
    expected = _load_json(case / "error.json")
    error = adapter.decode_error(
        expected["status"],
        expected.get("headers", {}),
        (case / "upstream_error.json").read_bytes(),
        model.provider,
    )
    assert isinstance(error, UpstreamError)
    assert error.upstream_status == expected["status"]
    _check_error(error, expected, model)


CHECKS = (
    ("upstream_request.json", check_encode),
    ("encode_error.json", check_encode_error),
    ("upstream_response.json", check_response),
    ("upstream_stream.sse", check_stream),
    ("upstream_error.json", check_error),
)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_golden(case: Path) -> None:
    adapter = REGISTRY[case.parent.name]
    model = _model(case)
    assert model.provider.kind == case.parent.name
    ran = []
    for name, check in CHECKS:
        if (case / name).exists():
            check(case, adapter, model)
            ran.append(name)
    assert ran, f"{case_id(case)} has no file to check"


def test_golden_cases_exist() -> None:
    assert len(CASES) >= 60, [case_id(c) for c in CASES]
