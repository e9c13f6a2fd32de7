"""A loopback fake of the OpenAI Chat Completions API, for demos and tests.

``gearshift mock-upstream`` serves this app so gearshift runs without API keys. It answers in
the real OpenAI wire shapes (JSON, SSE chunks, error objects); the ``model`` name (or
``MockSettings.fail``) picks a misbehaviour from ``BEHAVIOURS``: ``http-<status>`` errors,
``hang`` (no answer until the client leaves or the app shuts down), ``garbage`` (non-JSON body
or SSE event), ``stream-cut`` (connection dropped mid-stream, or before any response),
``error-first`` (a 200 stream whose only event is an error),
``error-event`` (stream ends with an error event and no ``[DONE]``; non-stream: a 200 whose
body is that error object) and ``slow`` (200 ms extra). Unauthenticated control endpoints
under ``/_mock/`` change settings, reset state and list the recorded requests.
"""

from __future__ import annotations

import asyncio
import hmac
import math
import re
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, TypeGuard

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

MODEL_IDS: tuple[str, ...] = ("gpt-4o", "gpt-4o-mini")
"""Model ids listed by ``GET /v1/models`` (completions accept any model name)."""

_MODEL_CREATED = 1715367049
_SLOW_EXTRA_S = 0.2
_ANSWER_WORDS = 12
_TOOL_ARGUMENTS = '{"mock": true}'
_GARBAGE_BODY = b'{"id": "chatcmpl-x", "choices": ['
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
    ``api_key``, when set, must arrive as ``Authorization: Bearer <key>`` or the API answers 401.
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
    """A chat request as received: header names lower-cased (last value wins) and ``body``
    the parsed JSON object (``{}`` when the body was not a JSON object)."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]


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
        """Return once at least ``n`` chat requests were recorded (no timeout of its own)."""
        await self._wait_until(lambda: len(self.requests) >= n)

    async def _wait_until(self, done: Callable[[], bool]) -> None:
        while not done():
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _record(self, request: web.Request, body: Any) -> int:
        headers = {name.lower(): value for name, value in request.headers.items()}
        body = body if isinstance(body, dict) else {}
        self.requests.append(RecordedRequest(request.path, headers, body))
        self._seq += 1
        self._notify()
        return self._seq

    def _note_disconnect(self) -> None:
        self.disconnects += 1
        self._notify()


MOCK_STATE: web.AppKey[MockState] = web.AppKey("gearshift_mock_state", MockState)


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    body = orjson.dumps(data)
    return web.Response(body=body, status=status, content_type="application/json", headers=headers)


def _sse(data: Any) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _auth_error(request: web.Request, settings: MockSettings) -> Any | None:
    if settings.api_key is None:
        return None
    header = request.headers.get("Authorization", "")
    if not header:
        return _err(_NO_KEY, _INVALID)
    scheme, _, token = header.partition(" ")
    key = settings.api_key.encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key):
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


def _text_of(content: Any) -> str:
    """Text of a message ``content``: the string itself, or its text parts joined by spaces."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict)]
        return " ".join(p for p in parts if isinstance(p, str))
    return ""


def _answer(model: str, messages: list[Any], body: dict[str, Any]) -> tuple[str, str]:
    """The deterministic answer text and its finish_reason (``length`` when truncated)."""
    users = [m for m in messages if m.get("role") == "user"]
    words = _text_of(users[-1].get("content")).split()[:_ANSWER_WORDS] if users else []
    text = f"Mock answer from {model}: " + " ".join(words)
    caps = (body.get("max_tokens"), body.get("max_completion_tokens"))
    limit = min((c for c in caps if _is_int(c) and c >= 0), default=None)
    all_words = text.split()
    if limit is not None and limit < len(all_words):
        return " ".join(all_words[:limit]), "length"
    return text, "stop"


def _tool_name(body: dict[str, Any]) -> str | None:
    """The function to call (named by ``tool_choice``, else the first tool), or None."""
    tools, choice = body.get("tools"), body.get("tool_choice")
    if not isinstance(tools, list) or not tools or choice == "none":
        return None
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
    # Rough token counts: words, plus OpenAI's ~4 tokens of framing per message.
    prompt = sum(len(_text_of(m.get("content")).split()) + 4 for m in messages)
    name = _tool_name(body)
    if name is not None:
        function = {"name": name, "arguments": _TOOL_ARGUMENTS}
        call = {"id": f"call_mock{seq}", "type": "function", "function": function}
        text, finish, completion = None, "tool_calls", len(_TOOL_ARGUMENTS.split()) + 1
    else:
        call = None
        text, finish = _answer(model, messages, body)
        completion = len(text.split())
    usage = {"prompt_tokens": prompt, "completion_tokens": completion * n}
    usage |= {"total_tokens": prompt + completion * n, "prompt_tokens_details": _PROMPT_DETAILS}
    usage["completion_tokens_details"] = _COMPLETION_DETAILS
    return _Reply(meta, text, call, finish, n, usage)


def _completion(reply: _Reply) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text}
    if reply.tool_call is not None:
        message["tool_calls"] = [reply.tool_call]
    message["refusal"] = None
    choice = {"message": message, "logprobs": None, "finish_reason": reply.finish}
    choices = [{"index": i, **choice} for i in range(reply.choices)]
    return {**reply.meta, "choices": choices, "usage": reply.usage}


def _stream_steps(reply: _Reply, chunk_words: int, with_usage: bool) -> list[list[bytes]]:
    """SSE events grouped in steps (one event per choice): role, content pieces, finish."""
    extra: dict[str, Any] = {"usage": None} if with_usage else {}

    def step(delta: dict[str, Any], finish: str | None = None) -> list[bytes]:
        choice = {"delta": delta, "logprobs": None, "finish_reason": finish}
        return [
            _sse({**reply.meta, "choices": [{"index": i, **choice}], **extra})
            for i in range(reply.choices)
        ]

    deltas: list[dict[str, Any]]
    if reply.tool_call is not None:
        # As OpenAI does: id and name come with the role, then the arguments in fragments.
        fn = reply.tool_call["function"]
        args = fn["arguments"]
        head = {"index": 0, **reply.tool_call, "function": {"name": fn["name"], "arguments": ""}}
        first = {"role": "assistant", "content": None, "tool_calls": [head], "refusal": None}
        deltas = [
            {"tool_calls": [{"index": 0, "function": {"arguments": args[i : i + 5]}}]}
            for i in range(0, len(args), 5)
        ]
    else:
        first = {"role": "assistant", "content": "", "refusal": None}
        pieces = _PIECE.findall(reply.text or "")
        deltas = [
            {"content": "".join(pieces[i : i + chunk_words])}
            for i in range(0, len(pieces), chunk_words)
        ]
    return [step(first), *(step(d) for d in deltas), step({}, reply.finish)]


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
) -> web.StreamResponse:
    sse = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    resp = web.StreamResponse(headers={**headers, **sse})
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


async def _chat(request: web.Request) -> web.StreamResponse:
    state = request.app[MOCK_STATE]
    try:
        body: Any = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        body = None
    seq = state._record(request, body)
    try:
        return await _respond(request, state, body, seq)
    except asyncio.CancelledError:
        # handler_cancellation: the client left while we slept, hung or streamed.
        state._note_disconnect()
        raise


async def _respond(
    request: web.Request, state: MockState, body: Any, seq: int
) -> web.StreamResponse:
    settings = state.settings  # one snapshot: a config change mid-request cannot mix
    headers = {"x-request-id": f"req_mock{seq}"}
    if settings.latency_ms > 0:
        await asyncio.sleep(settings.latency_ms / 1000)
    problem = _auth_error(request, settings)
    if problem is not None:
        return _json(problem, 401, headers)
    problem = _validation_error(body)
    if problem is not None:
        return _json(problem, 400, headers)
    behaviour = settings.fail or next((b for b in BEHAVIOURS if b in body["model"]), None)
    if behaviour in _FAILURES:
        status, error = _FAILURES[behaviour]
        return _json(error, status, headers | _FAILURE_HEADERS.get(behaviour, {}))
    if behaviour == "hang":
        await state._closing.wait()
        return _drop(request)
    if behaviour == "slow":
        await asyncio.sleep(_SLOW_EXTRA_S)
    if body.get("stream") is not True:
        if behaviour == "stream-cut":
            return _drop(request)
        if behaviour == "garbage":
            ctype = "application/json"
            return web.Response(body=_GARBAGE_BODY, content_type=ctype, headers=headers)
        if behaviour in ("error-event", "error-first"):
            return _json({"error": _EXPLODED}, headers=headers)
        return _json(_completion(_reply(body, seq, "chat.completion")), headers=headers)
    options = body.get("stream_options")
    with_usage = isinstance(options, dict) and options.get("include_usage") is True
    reply = _reply(body, seq, "chat.completion.chunk")
    role, *content, finish = _stream_steps(reply, settings.chunk_words, with_usage)
    if behaviour == "garbage":
        events = [*role, _GARBAGE_EVENT]
    elif behaviour == "stream-cut":
        events = [*role, *(e for s in content[:2] for e in s)]
    elif behaviour == "error-event":
        events = [*role, *(e for s in content[:1] for e in s), _sse({"error": _EXPLODED})]
    elif behaviour == "error-first":
        events = [_sse({"error": _EXPLODED})]
    else:
        events = [*role, *(e for s in content for e in s), *finish]
        if with_usage:
            events.append(_sse({**reply.meta, "choices": [], "usage": reply.usage}))
        events.append(_DONE_EVENT)
    delay_s, cut = settings.chunk_delay_ms / 1000, behaviour == "stream-cut"
    return await _send_events(request, state, events, delay_s=delay_s, cut=cut, headers=headers)


async def _models(request: web.Request) -> web.Response:
    problem = _auth_error(request, request.app[MOCK_STATE].settings)
    if problem is not None:
        return _json(problem, 401)
    model = {"object": "model", "created": _MODEL_CREATED, "owned_by": "mock"}
    return _json({"object": "list", "data": [{"id": m, **model} for m in MODEL_IDS]})


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
    for prefix in ("/v1", ""):
        app.router.add_post(f"{prefix}/chat/completions", _chat)
        app.router.add_get(f"{prefix}/models", _models)
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
