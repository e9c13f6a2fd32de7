"""The request flow the three APIs share, and the mock's settings and per-app state.

``_Api.handle`` records the request, waits out ``latency_ms``, lets the API check and
authenticate the body, picks a behaviour (``MockSettings.fail`` or the model name), then
answers with the API's error, its JSON body or its stream (``_Stream``), cut or spoiled as
the behaviour asks. The helpers below are shared by the wire formats in ``openai``,
``anthropic`` and ``gemini``.
"""

from __future__ import annotations

import asyncio
import binascii
import contextvars
import hmac
import math
import re
from abc import ABC, abstractmethod
from base64 import b64decode
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, NoReturn, TypeGuard

import orjson
from aiohttp import web

from gearshift.mock import judge

_SLOW_EXTRA_S = 0.2
_ANSWER_WORDS = 12
_TOOL_ARGUMENTS = '{"mock": true}'
_TOOL_INPUT = {"mock": True}
_GARBAGE_JSON = b"{not json"
_INVALID = "invalid_request_error"
# Leading-space pieces like OpenAI's tokens (" world"); trailing whitespace sticks to the last
# piece so that streamed content always concatenates to exactly the non-stream text.
_PIECE = re.compile(r"\s*\S+(?:\s+$)?")
BEHAVIOURS: tuple[str, ...] = (
    # Each API answers the http-* names in its own error shape (its ``failure`` method).
    "http-500",
    "http-503",
    "http-429",
    "http-400",
    "http-401",
    "http-502",  # an HTML page from a proxy in front of the API, in every API
    "withdrawn",  # 404: the model does not exist (retired, or not on this account)
    "hang",  # nothing at all: no headers
    "stall",  # the answer starts (headers, part of the body / first events), then nothing
    "reset-body",  # the answer starts, then the connection is dropped
    "reset",  # the connection is dropped before any byte of an answer
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
    cut_after: int = 2  # content events a ``stream-cut`` stream sends before it is cut
    retry_after_s: float | None = None  # sent with http-429/503 answers instead of 1 s
    # The mock judge (``mock/judge.py``): the hidden property's word, the models whose answers
    # still pass with it, and whether answer 1 always passes (a position-biased judge).
    judge_marker: str | None = None
    judge_strong: tuple[str, ...] = ()
    judge_bias: bool = False

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
        if not isinstance(self.cut_after, int) or self.cut_after < 0:
            raise ValueError(f"cut_after must be an integer >= 0, got {self.cut_after!r}")
        if self.judge_marker is not None and not (
            isinstance(self.judge_marker, str) and self.judge_marker.strip()
        ):
            raise ValueError("judge_marker must be null or a non-empty string")
        strong = self.judge_strong
        if not isinstance(strong, list | tuple) or not all(isinstance(m, str) for m in strong):
            raise ValueError("judge_strong must be a list of model names")
        self.judge_strong = tuple(strong)
        if not isinstance(self.judge_bias, bool):
            raise ValueError("judge_bias must be a boolean")
        ra = self.retry_after_s
        if ra is not None and (not _is_number(ra) or not math.isfinite(ra) or ra < 0):
            raise ValueError(f"retry_after_s must be null or a number >= 0, got {ra!r}")


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
        # When a test sets it, a streamed cut (stream-cut, reset-body) waits for it after the
        # answer's start is written. Otherwise the bytes and the cut can land together, and a
        # reader that was not waiting at that moment loses the bytes (aiohttp raises the
        # connection error before handing out what it buffered): the race a test must rule out.
        self.cut_gate: asyncio.Event | None = None

    def reset(self) -> None:
        """Restore the creation settings; forget requests, disconnects and the id counter."""
        self.settings = replace(self._initial)
        self.requests.clear()
        self.disconnects = 0
        self._seq = 0
        self.cut_gate = None
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

    async def _hold_cut(self) -> None:
        """Wait for ``cut_gate`` (if a test set one) or for shutdown, whichever is first."""
        gate = self.cut_gate
        if gate is None:
            return
        waits = [asyncio.ensure_future(gate.wait()), asyncio.ensure_future(self._closing.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()

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
_DEFAULT_SETTINGS = MockSettings()
_SETTINGS: contextvars.ContextVar[MockSettings] = contextvars.ContextVar("gearshift_mock_settings")


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
    """The answer: a call of ``tool`` if given, else the text cut to ``limit`` words (a
    judge's request gets the mock judge's verdict)."""
    if tool is not None:
        return _Outcome(None, tool, False, prompt, len(_TOOL_ARGUMENTS.split()) + 1)
    judged = judge.verdict(question, _SETTINGS.get(_DEFAULT_SETTINGS))
    if judged is not None:
        return _Outcome(judged, None, False, prompt, len(judged.split()))
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

    def items(self, behaviour: str | None, cut_after: int = 2) -> list[bytes]:
        whole = True
        if behaviour == "garbage":
            items = [*self.head, self.garbage]
        elif behaviour in ("stream-cut", "reset-body", "stall"):
            n = 1 if behaviour == "stall" else cut_after
            items, whole = [*self.head, *self.content[:n]], False
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
    stall: bool = False,
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
        if stall:
            await state._closing.wait()
            return _drop(request)
        if cut:
            # The transport flushes what was written and closes without the terminating
            # chunk, so the client sees a truncated body, like an upstream that died.
            await state._hold_cut()
            return _drop(request)
        await resp.write_eof()
    except ConnectionResetError:
        # The client left between writes, before the cancellation could reach us.
        state._note_disconnect()
    return resp


_BAD_GATEWAY = "<html><head><title>502 Bad Gateway</title></head><body>bad gateway</body></html>"


def _with_retry_after(problem: _Problem, seconds: float) -> _Problem:
    headers = {k: v for k, v in problem.headers.items() if not k.startswith("retry-after")}
    headers["retry-after"] = str(max(0, math.ceil(seconds)))
    headers["retry-after-ms"] = str(round(seconds * 1000))
    return replace(problem, headers=headers)


async def _half_body(
    request: web.Request, state: MockState, whole: bytes, *, stall: bool
) -> web.StreamResponse:
    """A 200 whose body (of announced length) stops halfway: dropped, or left hanging."""
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    resp.content_length = len(whole)
    try:
        await resp.prepare(request)
        await resp.write(whole[: len(whole) // 2])
        if stall:
            await state._closing.wait()
    except ConnectionResetError:
        state._note_disconnect()
        return resp
    return _drop(request)


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
        _SETTINGS.set(settings)  # (this handler's task only: what ``_outcome`` reads)
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
            if settings.retry_after_s is not None and problem.status in (429, 503, 529):
                problem = _with_retry_after(problem, settings.retry_after_s)
            if behaviour == "withdrawn":  # the providers name the model they do not have
                text = orjson.dumps(problem.body).replace(b"{model}", model.encode())
                return _json(orjson.loads(text), problem.status, headers | problem.headers)
            return _json(problem.body, problem.status, headers | problem.headers)
        if behaviour == "http-502":
            return web.Response(status=502, text=_BAD_GATEWAY, content_type="text/html")
        if behaviour == "hang":
            await state._closing.wait()
            return _drop(request)
        if behaviour == "reset":
            return _drop(request)
        if behaviour == "slow":
            await asyncio.sleep(_SLOW_EXTRA_S)
        if not self.streaming(request, body):
            if behaviour in ("reset-body", "stall"):
                whole = orjson.dumps(self.complete(request, body, model, seq))
                return await _half_body(request, state, whole, stall=behaviour == "stall")
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
            stream.items(behaviour, settings.cut_after),
            delay_s=settings.chunk_delay_ms / 1000,
            cut=behaviour in ("stream-cut", "reset-body"),
            headers=headers,
            content_type=stream.content_type,
            stall=behaviour == "stall",
        )
