"""A loopback fake of the OpenAI, Anthropic and Gemini chat APIs, for demos and tests.

``gearshift mock-upstream`` serves this app so gearshift runs without API keys. One app speaks
three wire protocols, each in its real shapes (JSON answers, SSE streams, error objects):

- OpenAI Chat Completions: ``POST /v1/chat/completions`` (``Authorization: Bearer``), and
  ``GET /v1/models``.
- Anthropic Messages: ``POST /v1/messages`` (``x-api-key``; ``anthropic-version`` required),
  streaming named events (``message_start`` ... ``message_stop``).
- Gemini v1beta: ``POST /v1beta/models/{model}:generateContent`` and
  ``:streamGenerateContent`` (SSE with ``?alt=sse``, else one JSON array), with
  ``x-goog-api-key`` or ``?key=``; ``GET /v1beta/models``.

The OpenAI routes also answer without the ``/v1`` prefix, as does ``/messages``. Anthropic and
Gemini requests are validated as strictly as the real APIs (role order, tool call/result
pairing, empty content, unknown fields...), so a buggy translator gets the provider's own 400.

Every API answers ``"Mock answer from {model}: "`` plus the first 12 words of the last user
text (cut to the max-tokens limit), or a call of the requested/first tool with arguments
``{"mock": true}`` when tools are given (but not right after tool results). A model name
containing ``cache`` reports cache tokens (Anthropic: 11 written, 100 read; Gemini: 50
cached) and one containing ``think`` reports 7 Gemini thought tokens.

The model name (or ``MockSettings.fail``) picks a misbehaviour from ``BEHAVIOURS``:
``http-<status>`` errors (in each API's shape: Anthropic turns 503 into 529
``overloaded_error``, Gemini reports 401 as 400 ``API_KEY_INVALID``), ``hang`` (no answer
until the client leaves or the app shuts down), ``garbage`` (non-JSON body or SSE event),
``stream-cut`` (connection dropped mid-stream, or before any response), ``error-first`` (a 200
stream whose only event is an error), ``error-event`` (stream ends with an in-band error and
no terminator; non-stream: a 200 whose body is that error object) and ``slow`` (200 ms extra).
Unauthenticated control endpoints under ``/_mock/`` change settings, reset state and list the
recorded requests.
"""

from __future__ import annotations

import asyncio
import binascii
import hmac
import math
import re
import socket
import time
from abc import ABC, abstractmethod
from base64 import b64decode
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, ClassVar, NoReturn, TypeGuard

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

MODEL_IDS: tuple[str, ...] = ("gpt-4o", "gpt-4o-mini")
"""Model ids listed by ``GET /v1/models`` (completions accept any model name)."""
GEMINI_MODEL_IDS: tuple[str, ...] = ("gemini-1.5-flash", "gemini-2.5-flash")
"""Model ids listed by ``GET /v1beta/models`` (generateContent accepts any model name)."""

_MODEL_CREATED = 1715367049
_SLOW_EXTRA_S = 0.2
_ANSWER_WORDS = 12
_TOOL_ARGUMENTS = '{"mock": true}'
_TOOL_INPUT = {"mock": True}
_GARBAGE_JSON = b"{not json"
_GARBAGE_EVENT = b"data: {not json\n\n"
_DONE_EVENT = b"data: [DONE]\n\n"
_INVALID = "invalid_request_error"
_EXPLODED = {"message": "upstream exploded", "type": "server_error", "param": None, "code": None}
_BAD_KEY = (
    "Incorrect API key provided: sk-ab***cd. You can find your API key at "
    "https://platform.openai.com/account/api-keys."
)
_NO_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization "
    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)
_TOO_LONG = (
    "This model's maximum context length is 128000 tokens. However, your messages resulted "
    "in 130000 tokens. Please reduce the length of the messages."
)
_RATE_LIMITED = "Rate limit reached for requests (mock). Please try again in 1s."
_PROMPT_DETAILS = {"cached_tokens": 0, "audio_tokens": 0}
_COMPLETION_DETAILS = {
    "reasoning_tokens": 0,
    "audio_tokens": 0,
    "accepted_prediction_tokens": 0,
    "rejected_prediction_tokens": 0,
}
# Leading-space pieces like OpenAI's tokens (" world"); trailing whitespace sticks to the last
# piece so that streamed content always concatenates to exactly the non-stream text.
_PIECE = re.compile(r"\s*\S+(?:\s+$)?")


def _err(message: str, type_: str, param: str | None = None, code: str | None = None) -> Any:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


_FAILURES: dict[str, tuple[int, Any]] = {
    "http-500": (500, _err("The server had an error processing your request.", "server_error")),
    "http-503": (503, _err("The server is overloaded", "server_error")),
    # OpenAI's 429 type is the exhausted limit ("requests" / "tokens"); the code is fixed.
    "http-429": (429, _err(_RATE_LIMITED, "requests", code="rate_limit_exceeded")),
    "http-400": (400, _err(_TOO_LONG, _INVALID, "messages", "context_length_exceeded")),
    "http-401": (401, _err(_BAD_KEY, _INVALID, code="invalid_api_key")),
}
_FAILURE_HEADERS = {"http-429": {"retry-after": "1", "retry-after-ms": "1000"}}
BEHAVIOURS: tuple[str, ...] = (
    *_FAILURES,
    "hang",
    "garbage",
    "stream-cut",
    "error-event",
    "error-first",
    "slow",
)
"""Behaviour names, matched as substrings of ``model`` in this order (first match wins)."""


@dataclass
class MockSettings:
    """Tunable behaviour of a mock upstream; invalid values raise ``ValueError``.

    ``latency_ms`` delays every chat response (before the first SSE byte when streaming);
    ``chunk_delay_ms`` separates SSE events; ``chunk_words`` is words per content chunk;
    ``fail`` (a ``BEHAVIOURS`` name) applies to every request instead of the model name;
    ``api_key``, when set, must arrive as each API sends it (OpenAI ``Authorization: Bearer
    <key>``, Anthropic ``x-api-key``, Gemini ``x-goog-api-key`` or ``?key=``), or the API
    rejects the request (401; Gemini 400 ``API_KEY_INVALID``).
    """

    latency_ms: float = 0.0
    chunk_delay_ms: float = 0.0
    chunk_words: int = 1
    fail: str | None = None
    api_key: str | None = None

    def __post_init__(self) -> None:
        for name in ("latency_ms", "chunk_delay_ms"):
            value = getattr(self, name)
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            if not ok or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        words = self.chunk_words
        if not isinstance(words, int) or isinstance(words, bool) or words < 1:
            raise ValueError(f"chunk_words must be an integer >= 1, got {words!r}")
        if self.fail is not None and self.fail not in BEHAVIOURS:
            raise ValueError(f"fail must be null or one of: {', '.join(BEHAVIOURS)}")
        if self.api_key is not None and not isinstance(self.api_key, str):
            raise ValueError("api_key must be a string or null")


_SETTING_NAMES = frozenset(f.name for f in fields(MockSettings))


@dataclass(frozen=True)
class RecordedRequest:
    """A chat request as received: ``path`` (no query), header names lower-cased (last value
    wins), ``body`` the parsed JSON object (``{}`` when the body was not a JSON object),
    ``query`` the raw query string (``""`` if none) and ``api`` the protocol that served it
    (``openai``, ``anthropic`` or ``gemini``)."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    query: str = ""
    api: str = "openai"


class MockState:
    """Per-app state: live ``settings``, recorded ``requests`` and client ``disconnects``.

    The creation settings are copied (callers' objects are never mutated) so ``reset()`` can
    restore them. Tests may change ``settings`` directly or through ``POST /_mock/config``.
    """

    def __init__(self, settings: MockSettings | None = None) -> None:
        self._initial = replace(settings) if settings is not None else MockSettings()
        self.settings = replace(self._initial)
        self.requests: list[RecordedRequest] = []
        self.disconnects = 0
        self._seq = 0
        # Replaced on every change: waiters hold the old one, which gets set, and re-check.
        # Unlike a Condition, notifying needs no await, which matters in cancelled handlers.
        self._changed = asyncio.Event()
        # Set on app shutdown so hanging handlers end instead of stalling graceful shutdown.
        self._closing = asyncio.Event()

    def reset(self) -> None:
        """Restore the creation settings; forget requests, disconnects and the id counter."""
        self.settings = replace(self._initial)
        self.requests.clear()
        self.disconnects = 0
        self._seq = 0
        self._notify()

    async def wait_for_disconnects(self, n: int = 1) -> None:
        """Return once at least ``n`` client disconnects were seen (no timeout of its own)."""
        await self._wait_until(lambda: self.disconnects >= n)

    async def wait_for_requests(self, n: int = 1) -> None:
        """Return once at least ``n`` chat requests (any API) were recorded (no timeout)."""
        await self._wait_until(lambda: len(self.requests) >= n)

    async def _wait_until(self, done: Callable[[], bool]) -> None:
        while not done():
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _record(self, request: web.Request, body: Any, api: str) -> int:
        headers = {name.lower(): value for name, value in request.headers.items()}
        body = body if isinstance(body, dict) else {}
        recorded = RecordedRequest(request.path, headers, body, request.query_string, api)
        self.requests.append(recorded)
        self._seq += 1
        self._notify()
        return self._seq

    def _note_disconnect(self) -> None:
        self.disconnects += 1
        self._notify()


MOCK_STATE: web.AppKey[MockState] = web.AppKey("gearshift_mock_state", MockState)


# --- Shared helpers ------------------------------------------------------------------------


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    body = orjson.dumps(data)
    return web.Response(body=body, status=status, content_type="application/json", headers=headers)


def _data_line(raw: bytes) -> bytes:
    return b"data: " + raw + b"\n\n"


def _sse(data: Any) -> bytes:
    return _data_line(orjson.dumps(data))


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _key_matches(given: str, key: str) -> bool:
    return hmac.compare_digest(given.strip().encode(), key.encode())


def _is_base64(data: object) -> bool:
    if not isinstance(data, str) or not data:
        return False
    try:
        b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _text_of(content: Any) -> str:
    """Text of a message ``content``: the string itself, or its text parts joined by spaces."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict)]
        return " ".join(p for p in parts if isinstance(p, str))
    return ""


def _prompt_tokens(contents: Iterable[Any]) -> int:
    """Rough prompt tokens: words, plus OpenAI's ~4 tokens of framing per message."""
    return sum(len(_text_of(content).split()) + 4 for content in contents)


def _question(turns: Iterable[tuple[Any, Any]]) -> str:
    """The text of the last ``(role, content)`` user turn that has any text (tool results
    carry none, so the answer after a tool round trip matches across the three APIs)."""
    for role, content in reversed(list(turns)):
        text = _text_of(content)
        if role == "user" and text.strip():
            return text
    return ""


def _chunks(text: str, words: int) -> list[str]:
    pieces = _PIECE.findall(text)
    return ["".join(pieces[i : i + words]) for i in range(0, len(pieces), words)]


def _slices(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


@dataclass(frozen=True)
class _Outcome:
    """What the mock answers, whatever the API: text or a tool call, and token counts."""

    text: str | None  # None when answering with a tool call
    tool: str | None
    truncated: bool  # the text was cut at the request's max-tokens limit
    prompt: int
    completion: int


def _outcome(
    model: str, question: str, limit: int | None, tool: str | None, prompt: int
) -> _Outcome:
    """The answer: a call of ``tool`` if given, else the text cut to ``limit`` words."""
    if tool is not None:
        return _Outcome(None, tool, False, prompt, len(_TOOL_ARGUMENTS.split()) + 1)
    words = question.split()[:_ANSWER_WORDS]
    text = f"Mock answer from {model}: " + " ".join(words)
    all_words = text.split()
    if limit is not None and limit < len(all_words):
        return _Outcome(" ".join(all_words[:limit]), None, True, prompt, limit)
    return _Outcome(text, None, False, prompt, len(all_words))


def _limit(*caps: object) -> int | None:
    """The smallest valid (integer >= 0) max-tokens cap, if any."""
    return min((c for c in caps if _is_int(c) and c >= 0), default=None)


@dataclass(frozen=True)
class _Problem:
    """An error answer: status, JSON body and extra headers."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


class _Invalid(Exception):
    """A validation failure; the message is the provider's error message."""


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise _Invalid(message)


def _fail(message: str) -> NoReturn:
    raise _Invalid(message)


def _as_is(items: list[bytes], whole: bool) -> list[bytes]:
    return items


@dataclass(frozen=True)
class _Stream:
    """A streamed answer in parts, so behaviours can keep a prefix or swap in an error.

    Items are written one per write; ``frame`` turns the chosen items into bytes on the wire
    (``whole`` is False when the stream will be cut).
    """

    head: list[bytes]  # before any content (role chunk, message_start...)
    content: list[bytes]  # content steps
    tail: list[bytes]  # finish, usage and terminator
    error: bytes  # an in-band error
    garbage: bytes  # a malformed item
    frame: Callable[[list[bytes], bool], list[bytes]] = _as_is
    content_type: str = "text/event-stream"

    def items(self, behaviour: str | None) -> list[bytes]:
        whole = True
        if behaviour == "garbage":
            items = [*self.head, self.garbage]
        elif behaviour == "stream-cut":
            items, whole = [*self.head, *self.content[:2]], False
        elif behaviour == "error-event":
            items = [*self.head, *self.content[:1], self.error]
        elif behaviour == "error-first":
            items = [self.error]
        else:
            items = [*self.head, *self.content, *self.tail]
        return self.frame(items, whole)


def _drop(request: web.Request) -> web.StreamResponse:
    """Close the connection; aiohttp's attempt to send the returned response then fails
    silently. Callers must return at once: the close also schedules handler cancellation."""
    if request.transport is not None:
        request.transport.close()
    return web.Response()


async def _send_events(
    request: web.Request,
    state: MockState,
    events: list[bytes],
    *,
    delay_s: float,
    cut: bool,
    headers: dict[str, str],
    content_type: str,
) -> web.StreamResponse:
    resp = web.StreamResponse(
        headers={**headers, "Content-Type": content_type, "Cache-Control": "no-cache"}
    )
    try:
        await resp.prepare(request)
        for i, event in enumerate(events):
            if i and delay_s > 0:
                await asyncio.sleep(delay_s)
            await resp.write(event)  # one write per event, so pacing and partial reads are real
        if cut:
            # The transport flushes what was written and closes without the terminating
            # chunk, so the client sees a truncated body, like an upstream that died.
            return _drop(request)
        await resp.write_eof()
    except ConnectionResetError:
        # The client left between writes, before the cancellation could reach us.
        state._note_disconnect()
    return resp


class _Api(ABC):
    """One wire protocol; ``handle`` runs the request flow shared by all three."""

    name: ClassVar[str]
    id_header: ClassVar[str | None] = None  # response header carrying ``req_mock<seq>``
    garbage_body: ClassVar[bytes]  # the non-JSON body of the non-stream ``garbage``
    error_body: ClassVar[Any]  # the 200 body of the non-stream ``error-event``/``error-first``

    @abstractmethod
    def check(
        self, request: web.Request, settings: MockSettings, body: Any, seq: int
    ) -> dict[str, Any] | _Problem:
        """The valid, authenticated request body, or the error to answer with."""

    @abstractmethod
    def model(self, request: web.Request, body: dict[str, Any]) -> str: ...

    @abstractmethod
    def failure(self, behaviour: str, seq: int) -> _Problem | None:
        """The error answer of an ``http-*`` behaviour (None for the others)."""

    @abstractmethod
    def streaming(self, request: web.Request, body: dict[str, Any]) -> bool: ...

    @abstractmethod
    def complete(self, request: web.Request, body: dict[str, Any], model: str, seq: int) -> Any:
        """The non-stream answer body."""

    @abstractmethod
    def stream(
        self, request: web.Request, body: dict[str, Any], model: str, seq: int, words: int
    ) -> _Stream: ...

    async def handle(self, request: web.Request) -> web.StreamResponse:
        state = request.app[MOCK_STATE]
        try:
            body: Any = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            body = None
        seq = state._record(request, body, self.name)
        try:
            return await self._respond(request, state, body, seq)
        except asyncio.CancelledError:
            # handler_cancellation: the client left while we slept, hung or streamed.
            state._note_disconnect()
            raise

    async def _respond(
        self, request: web.Request, state: MockState, raw: Any, seq: int
    ) -> web.StreamResponse:
        settings = state.settings  # one snapshot: a config change mid-request cannot mix
        headers = {self.id_header: f"req_mock{seq}"} if self.id_header else {}
        if settings.latency_ms > 0:
            await asyncio.sleep(settings.latency_ms / 1000)
        body = self.check(request, settings, raw, seq)
        if isinstance(body, _Problem):
            return _json(body.body, body.status, headers | body.headers)
        model = self.model(request, body)
        behaviour = settings.fail or next((b for b in BEHAVIOURS if b in model), None)
        problem = self.failure(behaviour, seq) if behaviour is not None else None
        if problem is not None:
            return _json(problem.body, problem.status, headers | problem.headers)
        if behaviour == "hang":
            await state._closing.wait()
            return _drop(request)
        if behaviour == "slow":
            await asyncio.sleep(_SLOW_EXTRA_S)
        if not self.streaming(request, body):
            if behaviour == "stream-cut":
                return _drop(request)
            if behaviour == "garbage":
                ctype = "application/json"
                return web.Response(body=self.garbage_body, content_type=ctype, headers=headers)
            if behaviour in ("error-event", "error-first"):
                return _json(self.error_body, headers=headers)
            return _json(self.complete(request, body, model, seq), headers=headers)
        stream = self.stream(request, body, model, seq, settings.chunk_words)
        return await _send_events(
            request,
            state,
            stream.items(behaviour),
            delay_s=settings.chunk_delay_ms / 1000,
            cut=behaviour == "stream-cut",
            headers=headers,
            content_type=stream.content_type,
        )


# --- OpenAI Chat Completions ---------------------------------------------------------------


def _auth_error(request: web.Request, settings: MockSettings) -> Any | None:
    if settings.api_key is None:
        return None
    header = request.headers.get("Authorization", "")
    if not header:
        return _err(_NO_KEY, _INVALID)
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not _key_matches(token, settings.api_key):
        return _err(_BAD_KEY, _INVALID, code="invalid_api_key")
    return None


def _validation_error(body: Any) -> Any | None:
    """OpenAI's 400 error body for a malformed request, or None."""
    if not isinstance(body, dict):
        return _err("We could not parse the JSON body of your request.", _INVALID)
    if "model" not in body:
        return _err("you must provide a model parameter", _INVALID)
    if not isinstance(body["model"], str):
        msg = "Invalid type for 'model': expected a string."
        return _err(msg, _INVALID, "model", "invalid_type")
    messages = body.get("messages")
    if messages is None:
        msg = "Missing required parameter: 'messages'."
        return _err(msg, _INVALID, "messages", "missing_required_parameter")
    if not isinstance(messages, list):
        msg = "Invalid type for 'messages': expected an array of objects."
        return _err(msg, _INVALID, "messages", "invalid_type")
    if not messages:
        msg = "Invalid 'messages': empty array. Expected an array with minimum length 1."
        return _err(msg, _INVALID, "messages", "empty_array")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            msg = f"Invalid type for 'messages[{i}]': expected an object."
            return _err(msg, _INVALID, f"messages[{i}]", "invalid_type")
    n = body.get("n", 1)
    if not _is_int(n) or not 1 <= n <= 128:
        return _err(f"Invalid 'n': expected an integer in [1, 128], got {n!r}.", _INVALID, "n")
    return None


def _tool_name(body: dict[str, Any]) -> str | None:
    """The function to call (named by ``tool_choice``, else the first tool), or None."""
    tools, choice = body.get("tools"), body.get("tool_choice")
    if not isinstance(tools, list) or not tools or choice == "none":
        return None
    if body["messages"][-1].get("role") == "tool":
        return None  # answer the tool results, so a tool round trip ends
    for holder in (choice, tools[0]):
        function = holder.get("function") if isinstance(holder, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if isinstance(name, str):
            return name
    return "unnamed_tool"


@dataclass(frozen=True)
class _Reply:
    meta: dict[str, Any]  # id, object, created, model, system_fingerprint, in OpenAI's order
    text: str | None  # None when answering with a tool call
    tool_call: dict[str, Any] | None
    finish: str
    choices: int
    usage: dict[str, Any]


def _reply(body: dict[str, Any], seq: int, obj: str) -> _Reply:
    model, messages, n = body["model"], body["messages"], body.get("n", 1)
    meta = {"id": f"chatcmpl-mock{seq}", "object": obj, "created": int(time.time())}
    meta |= {"model": model, "system_fingerprint": "fp_mock"}
    prompt = _prompt_tokens(m.get("content") for m in messages)
    limit = _limit(body.get("max_tokens"), body.get("max_completion_tokens"))
    turns = ((m.get("role"), m.get("content")) for m in messages)
    out = _outcome(model, _question(turns), limit, _tool_name(body), prompt)
    call = None
    if out.tool is not None:
        function = {"name": out.tool, "arguments": _TOOL_ARGUMENTS}
        call = {"id": f"call_mock{seq}", "type": "function", "function": function}
    finish = "tool_calls" if call else "length" if out.truncated else "stop"
    completion = out.completion * n
    usage = {"prompt_tokens": prompt, "completion_tokens": completion}
    usage |= {"total_tokens": prompt + completion, "prompt_tokens_details": _PROMPT_DETAILS}
    usage["completion_tokens_details"] = _COMPLETION_DETAILS
    return _Reply(meta, out.text, call, finish, n, usage)


def _completion(reply: _Reply) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text}
    if reply.tool_call is not None:
        message["tool_calls"] = [reply.tool_call]
    message["refusal"] = None
    choice = {"message": message, "logprobs": None, "finish_reason": reply.finish}
    choices = [{"index": i, **choice} for i in range(reply.choices)]
    return {**reply.meta, "choices": choices, "usage": reply.usage}


def _stream_steps(reply: _Reply, chunk_words: int, with_usage: bool) -> list[bytes]:
    """SSE steps (one event per choice each): role, content pieces, finish."""
    extra: dict[str, Any] = {"usage": None} if with_usage else {}

    def step(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"delta": delta, "logprobs": None, "finish_reason": finish}
        return b"".join(
            _sse({**reply.meta, "choices": [{"index": i, **choice}], **extra})
            for i in range(reply.choices)
        )

    deltas: list[dict[str, Any]]
    if reply.tool_call is not None:
        # As OpenAI does: id and name come with the role, then the arguments in fragments.
        fn = reply.tool_call["function"]
        head = {"index": 0, **reply.tool_call, "function": {"name": fn["name"], "arguments": ""}}
        first = {"role": "assistant", "content": None, "tool_calls": [head], "refusal": None}
        deltas = [
            {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
            for piece in _slices(fn["arguments"], 5)
        ]
    else:
        first = {"role": "assistant", "content": "", "refusal": None}
        deltas = [{"content": chunk} for chunk in _chunks(reply.text or "", chunk_words)]
    return [step(first), *(step(d) for d in deltas), step({}, reply.finish)]


class _OpenAI(_Api):
    name = "openai"
    id_header = "x-request-id"
    garbage_body = b'{"id": "chatcmpl-x", "choices": ['
    error_body: ClassVar[Any] = {"error": _EXPLODED}

    def check(
        self, request: web.Request, settings: MockSettings, body: Any, seq: int
    ) -> dict[str, Any] | _Problem:
        problem = _auth_error(request, settings)
        if problem is not None:
            return _Problem(401, problem)
        problem = _validation_error(body)
        if problem is not None:
            return _Problem(400, problem)
        return dict(body)

    def model(self, request: web.Request, body: dict[str, Any]) -> str:
        return str(body["model"])

    def failure(self, behaviour: str, seq: int) -> _Problem | None:
        if behaviour not in _FAILURES:
            return None
        status, error = _FAILURES[behaviour]
        return _Problem(status, error, _FAILURE_HEADERS.get(behaviour, {}))

    def streaming(self, request: web.Request, body: dict[str, Any]) -> bool:
        return body.get("stream") is True

    def complete(self, request: web.Request, body: dict[str, Any], model: str, seq: int) -> Any:
        return _completion(_reply(body, seq, "chat.completion"))

    def stream(
        self, request: web.Request, body: dict[str, Any], model: str, seq: int, words: int
    ) -> _Stream:
        options = body.get("stream_options")
        with_usage = isinstance(options, dict) and options.get("include_usage") is True
        reply = _reply(body, seq, "chat.completion.chunk")
        role, *content, finish = _stream_steps(reply, words, with_usage)
        tail = [finish]
        if with_usage:
            tail.append(_sse({**reply.meta, "choices": [], "usage": reply.usage}))
        tail.append(_DONE_EVENT)
        error = _sse(self.error_body)
        return _Stream([role], content, tail, error, _GARBAGE_EVENT)


async def _models(request: web.Request) -> web.Response:
    problem = _auth_error(request, request.app[MOCK_STATE].settings)
    if problem is not None:
        return _json(problem, 401)
    model = {"object": "model", "created": _MODEL_CREATED, "owned_by": "mock"}
    return _json({"object": "list", "data": [{"id": m, **model} for m in MODEL_IDS]})


# --- Anthropic Messages --------------------------------------------------------------------

_BLOCK_TYPES = (
    *("text", "image", "document", "tool_use", "tool_result"),
    *("thinking", "redacted_thinking"),
)
_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
_CHOICE_TYPES = ("auto", "any", "tool", "none")
_OVERLOADED = {"type": "overloaded_error", "message": "Overloaded"}
_ANTHROPIC_FAILURES: dict[str, tuple[int, str, str]] = {
    "http-500": (500, "api_error", "Internal server error"),
    "http-503": (529, "overloaded_error", "Overloaded"),
    "http-429": (
        429,
        "rate_limit_error",
        "This request would exceed the rate limit for your organization (mock) of 50 "
        "requests per minute. Please try again in 1s.",
    ),
    "http-400": (400, _INVALID, "prompt is too long: 210000 tokens > 200000 maximum"),
    "http-401": (401, "authentication_error", "invalid x-api-key"),
}
_CACHE_WRITE_TOKENS = 11
_CACHE_READ_TOKENS = 100


def _tags(values: Iterable[str]) -> str:
    quoted = [f"'{v}'" for v in values]
    return ", ".join(quoted[:-1]) + " or " + quoted[-1]


def _tag_error(at: str, tag: object, expected: Iterable[str]) -> NoReturn:
    names = ", ".join(f"'{e}'" for e in expected)
    _fail(
        f"{at}: Input tag {tag!r} found using 'type' does not match any of the expected "
        f"tags: {names}"
    )


def _anthropic_error(type_: str, message: str, seq: int) -> dict[str, Any]:
    error = {"type": type_, "message": message}
    return {"type": "error", "error": error, "request_id": f"req_mock{seq}"}


def _check_image(block: dict[str, Any], at: str) -> None:
    source = block.get("source")
    if not isinstance(source, dict):
        _fail(f"{at}.source: Field required")
    kind = source.get("type")
    if kind == "base64":
        media = source.get("media_type")
        _require(
            media in _MEDIA_TYPES,
            f"{at}.source.base64.media_type: Input should be " + _tags(_MEDIA_TYPES),
        )
        _require(_is_base64(source.get("data")), f"{at}.source.base64.data: invalid base64 data")
    elif kind == "url":
        _require(isinstance(source.get("url"), str), f"{at}.source.url.url: Field required")
    else:
        _tag_error(f"{at}.source", kind, ("base64", "url"))


def _check_block(block: Any, at: str, allowed: tuple[str, ...] = _BLOCK_TYPES) -> None:
    _require(isinstance(block, dict), f"{at}: Input should be a valid dictionary")
    kind = block.get("type")
    if kind not in allowed:
        _tag_error(at, kind, allowed)
    if kind == "text":
        _require(isinstance(block.get("text"), str), f"{at}.text: Field required")
        _require(block["text"] != "", "messages: text content blocks must be non-empty")
    elif kind == "image":
        _check_image(block, at)
    elif kind == "tool_use":
        for key in ("id", "name"):
            _require(isinstance(block.get(key), str), f"{at}.tool_use.{key}: Field required")
        msg = f"{at}.tool_use.input: Input should be a valid dictionary"
        _require(isinstance(block.get("input"), dict), msg)
    elif kind == "tool_result":
        msg = f"{at}.tool_result.tool_use_id: Field required"
        _require(isinstance(block.get("tool_use_id"), str), msg)
        content = block.get("content", "")
        if isinstance(content, list):
            for k, inner in enumerate(content):
                _check_block(inner, f"{at}.tool_result.content.{k}", ("text", "image"))
        else:
            _require(
                isinstance(content, str), f"{at}.tool_result.content: Input should be a valid list"
            )


def _ids(blocks: list[Any], kind: str, key: str) -> list[str]:
    return [b[key] for b in blocks if b.get("type") == kind]


def _check_messages(messages: list[Any]) -> None:
    pending: list[str] = []  # tool_use ids of the previous assistant turn
    last = len(messages) - 1
    for i, message in enumerate(messages):
        at = f"messages.{i}"
        _require(isinstance(message, dict), f"{at}: Input should be a valid dictionary")
        role = message.get("role")
        _require(role in ("user", "assistant"), f"{at}.role: Input should be 'user' or 'assistant'")
        if i == 0:
            _require(role == "user", 'messages: first message must use the "user" role')
        elif role == messages[i - 1]["role"]:
            _fail(
                'messages: roles must alternate between "user" and "assistant", but found '
                f'multiple "{role}" roles in a row'
            )
        content = message.get("content")
        _require("content" in message, f"{at}.content: Field required")
        msg = f"{at}.content: Input should be a valid string or a valid list"
        _require(isinstance(content, str | list), msg)
        if not content:
            _require(
                i == last and role == "assistant",
                f"{at}: all messages must have non-empty content except for the optional "
                "final assistant message",
            )
        blocks = content if isinstance(content, list) else [{"type": "text", "text": content}]
        blocks = blocks if content else []
        for j, block in enumerate(blocks):
            _check_block(block, f"{at}.content.{j}")
        if i == last and role == "assistant" and content:
            msg = "messages: final assistant content cannot end with trailing whitespace"
            _require(_text_of(blocks) == _text_of(blocks).rstrip(), msg)
        results = _ids(blocks, "tool_result", "tool_use_id")
        if role == "assistant":
            msg = f"{at}: tool_result blocks are only allowed in user messages"
            _require(not results, msg)
            pending = _ids(blocks, "tool_use", "id")
            continue
        kinds = [b["type"] for b in blocks]
        first_other = next((k for k, t in enumerate(kinds) if t != "tool_result"), len(kinds))
        msg = f"{at}: tool_result blocks must come before any other content in a user message"
        _require("tool_result" not in kinds[first_other:], msg)
        for k, result in enumerate(results):
            _require(
                result in pending,
                f"{at}.content.{k}: unexpected tool_use_id found in tool_result blocks: "
                f"{result}. Each tool_result block must have a corresponding tool_use block "
                "in the previous message.",
            )
        _check_answered(i - 1, [p for p in pending if p not in results])
        pending = []
    _check_answered(last, pending)


def _check_answered(index: int, unanswered: list[str]) -> None:
    _require(
        not unanswered,
        f"messages.{index}: tool_use ids were found without tool_result blocks immediately "
        f"after: {', '.join(unanswered)}. Each tool_use block must have a corresponding "
        "tool_result block in the next message.",
    )


def _check_tools(body: dict[str, Any]) -> None:
    tools = body.get("tools", [])
    _require(isinstance(tools, list), "tools: Input should be a valid list")
    for t, tool in enumerate(tools):
        _require(isinstance(tool, dict), f"tools.{t}: Input should be a valid dictionary")
        _require(isinstance(tool.get("name"), str), f"tools.{t}.name: Field required")
        if tool.get("type", "custom") == "custom":  # server tools have no input_schema
            msg = f"tools.{t}.custom.input_schema: Field required"
            _require(isinstance(tool.get("input_schema"), dict), msg)
    if "tool_choice" not in body:
        return
    choice = body["tool_choice"]
    _require(isinstance(choice, dict), "tool_choice: Input should be a valid dictionary")
    if choice.get("type") not in _CHOICE_TYPES:
        _tag_error("tool_choice", choice.get("type"), _CHOICE_TYPES)
    if choice["type"] == "tool":
        _require(isinstance(choice.get("name"), str), "tool_choice.tool.name: Field required")


def _check_anthropic(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        _fail(
            "There was an issue with your request body. Please check the formatting and try again."
        )
    for key in ("model", "max_tokens", "messages"):
        _require(key in body, f"{key}: Field required")
    _require(isinstance(body["model"], str), "model: Input should be a valid string")
    max_tokens = body["max_tokens"]
    _require(_is_int(max_tokens), "max_tokens: Input should be a valid integer")
    _require(max_tokens >= 1, "max_tokens: Input should be greater than or equal to 1")
    messages = body["messages"]
    _require(isinstance(messages, list), "messages: Input should be a valid list")
    _require(bool(messages), "messages: at least one message is required")
    if "temperature" in body:
        temperature = body["temperature"]
        _require(_is_number(temperature), "temperature: Input should be a valid number")
        _require(temperature >= 0, "temperature: Input should be greater than or equal to 0")
        _require(temperature <= 1, "temperature: Input should be less than or equal to 1")
    _require(isinstance(body.get("stream", False), bool), "stream: Input should be a valid boolean")
    system = body.get("system", "")
    if isinstance(system, list):
        for k, block in enumerate(system):
            _check_block(block, f"system.{k}", ("text",))
    else:
        _require(isinstance(system, str), "system: Input should be a valid string or a valid list")
    _check_tools(body)
    _check_messages(messages)
    return body


def _anthropic_tool(body: dict[str, Any]) -> str | None:
    tools, choice = body.get("tools"), body.get("tool_choice", {"type": "auto"})
    if not tools or choice["type"] == "none":
        return None
    last = body["messages"][-1]
    blocks = last["content"] if isinstance(last["content"], list) else []
    if last["role"] == "user" and _ids(blocks, "tool_result", "tool_use_id"):
        return None  # answer the tool results, so a tool round trip ends
    return str(choice["name"] if choice["type"] == "tool" else tools[0]["name"])


def _anthropic_outcome(body: dict[str, Any], model: str) -> _Outcome:
    messages = body["messages"]
    system = [body["system"]] if body.get("system") else []
    prompt = _prompt_tokens([*system, *(m["content"] for m in messages)])
    turns = ((m["role"], m["content"]) for m in messages)
    return _outcome(model, _question(turns), body["max_tokens"], _anthropic_tool(body), prompt)


def _anthropic_usage(model: str, input_tokens: int, output_tokens: int) -> dict[str, int]:
    cached = "cache" in model
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": _CACHE_WRITE_TOKENS if cached else 0,
        "cache_read_input_tokens": _CACHE_READ_TOKENS if cached else 0,
    }


def _event(kind: str, **data: Any) -> bytes:
    payload = orjson.dumps({"type": kind, **data})
    return b"event: " + kind.encode() + b"\ndata: " + payload + b"\n\n"


class _Anthropic(_Api):
    name = "anthropic"
    id_header = "request-id"
    garbage_body = b'{"id": "msg_x", "type": "message", "content": ['
    error_body: ClassVar[Any] = {"type": "error", "error": _OVERLOADED}

    def check(
        self, request: web.Request, settings: MockSettings, body: Any, seq: int
    ) -> dict[str, Any] | _Problem:
        given = request.headers.get("x-api-key")
        if settings.api_key is not None and not _key_matches(given or "", settings.api_key):
            message = "invalid x-api-key" if given else "x-api-key header is required"
            return _Problem(401, _anthropic_error("authentication_error", message, seq))
        try:
            version = "anthropic-version" in request.headers
            _require(version, "anthropic-version: header is required")
            return _check_anthropic(body)
        except _Invalid as exc:
            return _Problem(400, _anthropic_error(_INVALID, str(exc), seq))

    def model(self, request: web.Request, body: dict[str, Any]) -> str:
        return str(body["model"])

    def failure(self, behaviour: str, seq: int) -> _Problem | None:
        if behaviour not in _ANTHROPIC_FAILURES:
            return None
        status, type_, message = _ANTHROPIC_FAILURES[behaviour]
        headers = {"retry-after": "1"} if status == 429 else {}
        return _Problem(status, _anthropic_error(type_, message, seq), headers)

    def streaming(self, request: web.Request, body: dict[str, Any]) -> bool:
        return body.get("stream") is True

    def _block(self, out: _Outcome, seq: int, streamed: bool) -> dict[str, Any]:
        if out.tool is None:
            return {"type": "text", "text": "" if streamed else out.text}
        call_input = {} if streamed else _TOOL_INPUT
        return {"type": "tool_use", "id": f"toolu_mock{seq}", "name": out.tool, "input": call_input}

    @staticmethod
    def _stop(out: _Outcome) -> str:
        return "tool_use" if out.tool else "max_tokens" if out.truncated else "end_turn"

    def complete(self, request: web.Request, body: dict[str, Any], model: str, seq: int) -> Any:
        out = _anthropic_outcome(body, model)
        return {
            "id": f"msg_mock{seq}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [self._block(out, seq, streamed=False)],
            "stop_reason": self._stop(out),
            "stop_sequence": None,
            "usage": _anthropic_usage(model, out.prompt, out.completion),
        }

    def stream(
        self, request: web.Request, body: dict[str, Any], model: str, seq: int, words: int
    ) -> _Stream:
        out = _anthropic_outcome(body, model)
        message: dict[str, Any] = {"id": f"msg_mock{seq}", "type": "message", "role": "assistant"}
        message |= {"content": [], "model": model, "stop_reason": None, "stop_sequence": None}
        message["usage"] = _anthropic_usage(model, out.prompt, 1)
        block = self._block(out, seq, streamed=True)
        head = [
            _event("message_start", message=message),
            _event("content_block_start", index=0, content_block=block),
            _event("ping"),
        ]
        if out.text is not None:
            deltas = [{"type": "text_delta", "text": c} for c in _chunks(out.text, words)]
        else:
            # Anthropic starts with an empty fragment, then streams the JSON in pieces.
            pieces = ["", *_slices(_TOOL_ARGUMENTS, 4)]
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in pieces]
        content = [_event("content_block_delta", index=0, delta=d) for d in deltas]
        tail = [
            _event("content_block_stop", index=0),
            _event(
                "message_delta",
                delta={"stop_reason": self._stop(out), "stop_sequence": None},
                usage={"output_tokens": out.completion},
            ),
            _event("message_stop"),
        ]
        error = _event("error", error=_OVERLOADED)
        garbage = b"event: content_block_delta\n" + _data_line(_GARBAGE_JSON)
        return _Stream(head, content, tail, error, garbage)


# --- Gemini generateContent ----------------------------------------------------------------

_GEMINI_FIELDS = frozenset(
    {
        *("contents", "systemInstruction", "tools", "toolConfig", "generationConfig"),
        *("safetySettings", "cachedContent"),
    }
)
_GENERATION_FIELDS = frozenset(
    {
        *("temperature", "topP", "topK", "maxOutputTokens", "stopSequences", "candidateCount"),
        *("seed", "presencePenalty", "frequencyPenalty", "responseMimeType", "responseSchema"),
        *("responseJsonSchema", "responseLogprobs", "logprobs", "thinkingConfig"),
    }
)
_PART_DATA = (
    *("text", "inlineData", "fileData", "functionCall", "functionResponse"),
    *("executableCode", "codeExecutionResult"),
)
_PART_FIELDS = frozenset({*_PART_DATA, "thought", "thoughtSignature", "videoMetadata"})
_CALLING_MODES = ("AUTO", "ANY", "NONE", "VALIDATED")
_MAX_STOP_SEQUENCES = 5
_THOUGHT_TOKENS = 7
_CACHED_CONTENT_TOKENS = 50
_ALTERNATE = "Please ensure that multiturn requests alternate between user and model."
_GOOGLE_KEY_INVALID = "API key not valid. Please pass a valid API key."
_GOOGLE_INTERNAL = (
    "An internal error has occurred. Please retry or report in "
    "https://developers.generativeai.google/guide/troubleshooting"
)


def _google_error(code: int, status: str, message: str, *details: Any) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = list(details)
    return {"error": error}


_KEY_INVALID_ERROR = _google_error(
    400,
    "INVALID_ARGUMENT",
    _GOOGLE_KEY_INVALID,
    {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "API_KEY_INVALID",
        "domain": "googleapis.com",
    },
)
_GEMINI_FAILURES: dict[str, tuple[int, Any]] = {
    "http-500": (500, _google_error(500, "INTERNAL", _GOOGLE_INTERNAL)),
    "http-503": (
        503,
        _google_error(503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
    ),
    "http-429": (
        429,
        _google_error(
            429,
            "RESOURCE_EXHAUSTED",
            "You exceeded your current quota, please check your plan and billing details.",
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"},
        ),
    ),
    "http-400": (
        400,
        _google_error(
            400,
            "INVALID_ARGUMENT",
            "The input token count (1100000) exceeds the maximum number of tokens allowed "
            "(1048576).",
        ),
    ),
    "http-401": (400, _KEY_INVALID_ERROR),
}


def _unknown_field(name: str, where: str | None = None) -> NoReturn:
    at = f" at '{where}'" if where else ""
    _fail(f'Invalid JSON payload received. Unknown name "{name}"{at}: Cannot find field.')


def _check_part(part: Any, at: str) -> None:
    if not isinstance(part, dict):
        _fail(f"Invalid value at '{at}': expected an object.")
    for name in part:
        if name not in _PART_FIELDS:
            _unknown_field(name, at)
    data = [name for name in _PART_DATA if name in part]
    msg = f"* GenerateContentRequest.{at}.data: required oneof field 'data' must have one "
    _require(bool(data), msg + "initialized field")
    _require(
        len(data) == 1,
        f"Invalid value at '{at}': oneof field 'data' is already set. Cannot set '{data[-1]}'",
    )
    value = part[data[0]]
    if data[0] == "text":
        _require(isinstance(value, str), f"Invalid value at '{at}.text' (TYPE_STRING)")
        _require(
            value != "",
            "Unable to submit request because it has an empty text parameter. Add a value to "
            "the parameter and try again.",
        )
        return
    _require(isinstance(value, dict), f"Invalid value at '{at}.{data[0]}': expected an object.")
    if data[0] == "inlineData":
        msg = f"* GenerateContentRequest.{at}.inline_data.mime_type: mime_type is not specified"
        _require(isinstance(value.get("mimeType"), str) and bool(value["mimeType"]), msg)
        msg = f"Invalid value at '{at}.inline_data.data' (TYPE_BYTES), Base64 decoding failed"
        _require(_is_base64(value.get("data")), msg)
    elif data[0] == "fileData":
        msg = f"* GenerateContentRequest.{at}.file_data.file_uri: file_uri is not specified"
        _require(isinstance(value.get("fileUri"), str), msg)
    elif data[0] in ("functionCall", "functionResponse"):
        msg = f"* GenerateContentRequest.{at}.{data[0]}.name: Name cannot be empty."
        _require(isinstance(value.get("name"), str) and bool(value["name"]), msg)
        key = "args" if data[0] == "functionCall" else "response"
        kind = "type.googleapis.com/google.protobuf.Struct"
        msg = f"Invalid value at '{at}.{data[0]}.{key}' ({kind}), {value.get(key)!r}"
        _require(isinstance(value.get(key, {}), dict), msg)
        _require(key in value or key == "args", msg)


def _check_parts(parts: Any, at: str) -> list[dict[str, Any]]:
    msg = f"* GenerateContentRequest.{at}.parts: contents.parts must not be empty."
    _require(isinstance(parts, list) and bool(parts), msg)
    for j, part in enumerate(parts):
        _check_part(part, f"{at}.parts[{j}]")
    return list(parts)


def _calls(parts: list[dict[str, Any]], kind: str) -> list[str]:
    return [p[kind]["name"] for p in parts if kind in p]


def _check_contents(contents: Any) -> None:
    msg = "* GenerateContentRequest.contents: contents is not specified"
    _require(isinstance(contents, list) and bool(contents), msg)
    previous: tuple[str, list[str]] | None = None  # role and function calls of the last turn
    for i, content in enumerate(contents):
        at = f"contents[{i}]"
        _require(isinstance(content, dict), f"Invalid value at '{at}': expected an object.")
        for name in content:
            if name not in ("role", "parts"):
                _unknown_field(name, at)
        role = content.get("role", "user")
        _require(role in ("user", "model"), "Please use a valid role: user, model.")
        _require(previous is None or previous[0] != role, _ALTERNATE)
        parts = _check_parts(content.get("parts"), at)
        calls = _calls(parts, "functionCall")
        answers = _calls(parts, "functionResponse")
        asked = previous[1] if previous else []
        if calls:
            msg = (
                "Please ensure that function call turn comes immediately after a user turn "
                "or after a function response turn."
            )
            _require(role == "model" and previous is not None, msg)
        if answers:
            msg = "Please ensure that function response turn comes immediately after a function "
            msg += "call turn."
            _require(role == "user" and bool(asked), msg)
        if role == "user" and asked:
            _require(
                len(answers) == len(asked),
                "Please ensure that the number of function response parts is equal to the "
                "number of function call parts of the function call turn.",
            )
            _require(
                sorted(answers) == sorted(asked),
                "Please ensure that the name of each function response part matches a "
                f"function call of the function call turn (calls: {', '.join(asked)}; "
                f"responses: {', '.join(answers)}).",
            )
        previous = (role, calls)


def _check_generation(config: Any) -> None:
    where = "generation_config"
    _require(isinstance(config, dict), f"Invalid value at '{where}': expected an object.")
    for name in config:
        if name not in _GENERATION_FIELDS:
            _unknown_field(name, where)
    stops = config.get("stopSequences", [])
    msg = f"Invalid value at '{where}.stop_sequences': expected a list of strings."
    _require(isinstance(stops, list) and all(isinstance(s, str) for s in stops), msg)
    _require(
        len(stops) <= _MAX_STOP_SEQUENCES,
        f"* GenerateContentRequest.{where}.stop_sequences: at most "
        f"{_MAX_STOP_SEQUENCES} stop sequences are allowed, got {len(stops)}.",
    )


def _check_gemini_tools(body: dict[str, Any]) -> None:
    tools = body.get("tools", [])
    _require(isinstance(tools, list), "Invalid value at 'tools': expected a list.")
    for t, tool in enumerate(tools):
        _require(isinstance(tool, dict), f"Invalid value at 'tools[{t}]': expected an object.")
        declarations = tool.get("functionDeclarations", [])
        msg = f"Invalid value at 'tools[{t}].function_declarations': expected a list."
        _require(isinstance(declarations, list), msg)
        for k, declaration in enumerate(declarations):
            at = f"tools[{t}].function_declarations[{k}]"
            ok = isinstance(declaration, dict) and isinstance(declaration.get("name"), str)
            _require(
                ok and bool(declaration["name"]),
                f"* GenerateContentRequest.{at}.name: Name cannot be empty.",
            )
    config = body.get("toolConfig", {})
    _require(isinstance(config, dict), "Invalid value at 'tool_config': expected an object.")
    calling = config.get("functionCallingConfig", {})
    where = "tool_config.function_calling_config"
    _require(isinstance(calling, dict), f"Invalid value at '{where}': expected an object.")
    mode = calling.get("mode", "AUTO")
    kind = "type.googleapis.com/google.ai.generativelanguage.v1beta.FunctionCallingConfig.Mode"
    _require(mode in _CALLING_MODES, f"Invalid value at '{where}.mode' ({kind}), {mode!r}")


def _check_gemini(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        _fail("Invalid JSON payload received. Unexpected token.")
    for name in body:
        if name not in _GEMINI_FIELDS:
            _unknown_field(name)
    if "systemInstruction" in body:
        system = body["systemInstruction"]
        msg = "Invalid value at 'system_instruction': expected an object."
        _require(isinstance(system, dict), msg)
        _check_parts(system.get("parts"), "system_instruction")
    if "generationConfig" in body:
        _check_generation(body["generationConfig"])
    _check_gemini_tools(body)
    _check_contents(body.get("contents"))
    return body


def _gemini_tool(body: dict[str, Any]) -> str | None:
    names = [
        d["name"] for tool in body.get("tools", []) for d in tool.get("functionDeclarations", [])
    ]
    calling = body.get("toolConfig", {}).get("functionCallingConfig", {})
    if not names or calling.get("mode") == "NONE":
        return None
    if _calls(body["contents"][-1]["parts"], "functionResponse"):
        return None  # answer the function responses, so a tool round trip ends
    allowed = calling.get("allowedFunctionNames")
    return str(allowed[0]) if isinstance(allowed, list) and allowed else names[0]


def _gemini_usage(model: str, prompt: int, candidates: int) -> dict[str, int]:
    thoughts = _THOUGHT_TOKENS if "think" in model else 0
    usage = {"promptTokenCount": prompt, "candidatesTokenCount": candidates}
    usage["totalTokenCount"] = prompt + candidates + thoughts
    if "cache" in model:
        usage["cachedContentTokenCount"] = _CACHED_CONTENT_TOKENS
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts
    return usage


def _gemini_array(items: list[bytes], whole: bool) -> list[bytes]:
    """Frame streamed responses as one JSON array, as without ``alt=sse``."""
    framed = [(b"," if i else b"[") + item + b"\n" for i, item in enumerate(items)]
    if whole:
        framed.append(b"]" if framed else b"[]")
    return framed


def _gemini_sse(items: list[bytes], whole: bool) -> list[bytes]:
    return [_data_line(item) for item in items]


class _Gemini(_Api):
    name = "gemini"
    garbage_body = b'{"candidates": [{"content": {"parts": ['
    error_body: ClassVar[Any] = _google_error(500, "INTERNAL", _GOOGLE_INTERNAL)

    def check(
        self, request: web.Request, settings: MockSettings, body: Any, seq: int
    ) -> dict[str, Any] | _Problem:
        if not _gemini_key_ok(request, settings):
            return _Problem(400, _KEY_INVALID_ERROR)
        try:
            return _check_gemini(body)
        except _Invalid as exc:
            return _Problem(400, _google_error(400, "INVALID_ARGUMENT", str(exc)))

    def model(self, request: web.Request, body: dict[str, Any]) -> str:
        return request.match_info["model"]

    def failure(self, behaviour: str, seq: int) -> _Problem | None:
        if behaviour not in _GEMINI_FAILURES:
            return None
        return _Problem(*_GEMINI_FAILURES[behaviour])

    def streaming(self, request: web.Request, body: dict[str, Any]) -> bool:
        return request.path.endswith(":streamGenerateContent")

    @staticmethod
    def _outcome(body: dict[str, Any], model: str) -> _Outcome:
        contents = body["contents"]
        system = [body["systemInstruction"]["parts"]] if "systemInstruction" in body else []
        prompt = _prompt_tokens([*system, *(c["parts"] for c in contents)])
        prompt += _CACHED_CONTENT_TOKENS if "cache" in model else 0  # cached input counts too
        turns = ((c.get("role", "user"), c["parts"]) for c in contents)
        limit = _limit(body.get("generationConfig", {}).get("maxOutputTokens"))
        return _outcome(model, _question(turns), limit, _gemini_tool(body), prompt)

    @staticmethod
    def _response(
        parts: list[dict[str, Any]], finish: str | None, usage: dict[str, int], model: str, seq: int
    ) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}}
        if finish is not None:
            candidate["finishReason"] = finish
        candidate["index"] = 0
        return {
            "candidates": [candidate],
            "usageMetadata": usage,
            "modelVersion": model,
            "responseId": f"mock{seq}",
        }

    def complete(self, request: web.Request, body: dict[str, Any], model: str, seq: int) -> Any:
        out = self._outcome(body, model)
        parts: list[dict[str, Any]]
        if out.tool is not None:
            parts = [{"functionCall": {"name": out.tool, "args": _TOOL_INPUT}}]
        else:
            parts = [{"text": out.text}]
        finish = "MAX_TOKENS" if out.truncated else "STOP"  # STOP for calls too, as Gemini does
        usage = _gemini_usage(model, out.prompt, out.completion)
        return self._response(parts, finish, usage, model, seq)

    def stream(
        self, request: web.Request, body: dict[str, Any], model: str, seq: int, words: int
    ) -> _Stream:
        out = self._outcome(body, model)
        if out.text is None:
            responses = [self.complete(request, body, model, seq)]  # calls arrive whole
        else:
            chunks = _chunks(out.text, words)
            finish = "MAX_TOKENS" if out.truncated else "STOP"
            responses = []
            for k, chunk in enumerate(chunks, 1):
                so_far = len("".join(chunks[:k]).split())  # usage is cumulative
                usage = _gemini_usage(model, out.prompt, so_far)
                last = finish if k == len(chunks) else None
                responses.append(self._response([{"text": chunk}], last, usage, model, seq))
        *content, last_response = (orjson.dumps(r) for r in responses)
        sse = request.query.get("alt") == "sse"
        return _Stream(
            [],
            content,
            [last_response],
            orjson.dumps(self.error_body),
            _GARBAGE_JSON,
            _gemini_sse if sse else _gemini_array,
            "text/event-stream" if sse else "application/json",
        )


def _gemini_key_ok(request: web.Request, settings: MockSettings) -> bool:
    if settings.api_key is None:
        return True
    given = request.headers.get("x-goog-api-key") or request.query.get("key") or ""
    return _key_matches(given, settings.api_key)


async def _gemini_models(request: web.Request) -> web.Response:
    if not _gemini_key_ok(request, request.app[MOCK_STATE].settings):
        return _json(_KEY_INVALID_ERROR, 400)
    methods = ["generateContent", "streamGenerateContent", "countTokens"]
    models = [
        {
            "name": f"models/{m}",
            "version": "001",
            "displayName": m,
            "inputTokenLimit": 1048576,
            "outputTokenLimit": 8192,
            "supportedGenerationMethods": methods,
        }
        for m in GEMINI_MODEL_IDS
    ]
    return _json({"models": models})


# --- Control endpoints and the app ---------------------------------------------------------


async def _get_config(request: web.Request) -> web.Response:
    return _json(asdict(request.app[MOCK_STATE].settings))


async def _set_config(request: web.Request) -> web.Response:
    state = request.app[MOCK_STATE]
    try:
        updates: Any = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        updates = None
    if not isinstance(updates, dict):
        return _json(_err("Expected a JSON object of MockSettings fields.", _INVALID), 400)
    unknown = sorted(set(updates) - _SETTING_NAMES)
    if unknown:
        msg = f"Unknown mock setting(s): {', '.join(unknown)}."
        return _json(_err(msg, _INVALID, unknown[0]), 400)
    try:
        state.settings = replace(state.settings, **updates)
    except ValueError as exc:
        return _json(_err(str(exc), _INVALID), 400)
    return _json(asdict(state.settings))


async def _reset(request: web.Request) -> web.Response:
    state = request.app[MOCK_STATE]
    state.reset()
    return _json(asdict(state.settings))


async def _requests(request: web.Request) -> web.Response:
    return _json([asdict(r) for r in request.app[MOCK_STATE].requests])


@web.middleware
async def _openai_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render aiohttp's own HTTP errors (404, 405, 413...) in OpenAI's error shape."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        bad_url = exc.status in (404, 405)
        msg = f"Invalid URL ({request.method} {request.path})" if bad_url else exc.reason
        return _json(_err(msg, _INVALID), exc.status)


async def _release_hangs(app: web.Application) -> None:
    app[MOCK_STATE]._closing.set()


def create_mock_app(settings: MockSettings | None = None) -> web.Application:
    """Build the mock app; its ``MockState`` is ``app[MOCK_STATE]``.

    Serve it with ``handler_cancellation=True`` (pytest-aiohttp's test server does), or
    client disconnects are neither noticed nor counted.
    """
    # OpenAI accepts large contexts; aiohttp's 1 MiB default would turn them into 413s.
    app = web.Application(middlewares=[_openai_errors], client_max_size=64 * 1024 * 1024)
    app[MOCK_STATE] = MockState(settings)
    openai, anthropic, gemini = _OpenAI(), _Anthropic(), _Gemini()
    for prefix in ("/v1", ""):
        app.router.add_post(f"{prefix}/chat/completions", openai.handle)
        app.router.add_get(f"{prefix}/models", _models)
        app.router.add_post(f"{prefix}/messages", anthropic.handle)
    for method in ("generateContent", "streamGenerateContent"):
        app.router.add_post(f"/v1beta/models/{{model:[^/:]+}}:{method}", gemini.handle)
    app.router.add_get("/v1beta/models", _gemini_models)
    app.router.add_get("/_mock/config", _get_config)
    app.router.add_post("/_mock/config", _set_config)
    app.router.add_post("/_mock/reset", _reset)
    app.router.add_get("/_mock/requests", _requests)
    app.on_shutdown.append(_release_hangs)
    return app


async def start_mock(
    host: str = "127.0.0.1", port: int = 0, settings: MockSettings | None = None
) -> tuple[web.AppRunner, int]:
    """Serve the mock on ``host:port`` (0 picks a free port); return the runner and the port.

    The caller owns the runner (``await runner.cleanup()``); state is ``runner.app[MOCK_STATE]``.
    """
    app = create_mock_app(settings)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        bound = int(runner.addresses[0][1])
    except BaseException:
        await runner.cleanup()
        raise
    return runner, bound


def run_mock(host: str, port: int, settings: MockSettings) -> None:
    """Serve the mock until interrupted (blocking), printing one line with its address."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    # Bind here so that the printed line shows the real port even when port is 0.
    sock = socket.create_server((host, port), family=family)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{sock.getsockname()[1]}/v1"

    async def announce(app: web.Application) -> None:
        # Printed from startup, once signal handlers are in place and the socket listens.
        print(f"gearshift mock upstream listening on {url}", flush=True)

    app = create_mock_app(settings)
    app.on_startup.append(announce)
    web.run_app(app, sock=sock, print=None, handler_cancellation=True, access_log=None)
