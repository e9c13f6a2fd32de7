"""Gemini → OpenAI, what comes back: ``GenerateContentResponse`` as typed msgspec Structs,
read by the stream decoder and by ``gemini.decode_response`` alike, and the error mapping.

Gemini has no tag field: a response (whole, or one streamed chunk holding only new parts) is
one plain Struct with optional fields, decoded by one decoder built at import; only the
fields the translation reads are declared, others are skipped. A chunk that is not JSON, not
an object, or whose fields used here have the wrong type is the provider's protocol failure
(``malformed_stream``). The behaviour is described in ``gemini``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
import orjson

from gearshift import sse
from gearshift.config import Model
from gearshift.errors import ProtocolError, UpstreamError, for_upstream_status, retry_after
from gearshift.inbound.chat import ChatRequest
from gearshift.providers import StreamState, carry, shapes

# ---------------------------------------------------------------- typed responses


class _FunctionCall(msgspec.Struct):
    name: str | None = None
    args: dict[str, Any] | None = None
    id: str | None = None


class _Part(msgspec.Struct, rename="camel"):
    text: str | None = None
    thought: bool | None = None  # a thought summary: not part of the answer
    function_call: _FunctionCall | None = None
    # Opaque, on (the first of) a thinking model's function calls: wanted back with the call.
    thought_signature: str | None = None


class _Content(msgspec.Struct):
    parts: list[_Part] | None = None


class _Candidate(msgspec.Struct, rename="camel"):
    content: _Content | None = None
    finish_reason: str | None = None
    index: int | None = None


class _UsageMetadata(msgspec.Struct, rename="camel"):
    prompt_token_count: int | None = None
    tool_use_prompt_token_count: int | None = None
    candidates_token_count: int | None = None
    thoughts_token_count: int | None = None
    cached_content_token_count: int | None = None
    total_token_count: int | None = None


class _PromptFeedback(msgspec.Struct, rename="camel"):
    block_reason: str | None = None


class Response(msgspec.Struct, rename="camel"):
    """A ``GenerateContentResponse`` (or a streamed chunk of one); ``error``: Google's error
    object when the 200 carries one instead (read by ``_error_from``, any shape)."""

    candidates: list[_Candidate] | None = None
    usage_metadata: _UsageMetadata | None = None
    prompt_feedback: _PromptFeedback | None = None
    model_version: str | None = None
    response_id: str | None = None
    error: Any = None


RESPONSE = msgspec.json.Decoder(Response)

_FILTERED = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "LANGUAGE",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
        "IMAGE_OTHER",
    }
)


def finish_reason(reason: str | None, called: bool) -> str:
    if called:
        return "tool_calls"
    if reason is None:
        return "stop"
    if reason == "MAX_TOKENS":
        return "length"
    if reason in _FILTERED:
        return "content_filter"
    return "stop"  # STOP, OTHER, MALFORMED_FUNCTION_CALL, unknown: the answer as it is


def usage(meta: _UsageMetadata) -> dict[str, Any]:
    thoughts = meta.thoughts_token_count or 0
    prompt = (meta.prompt_token_count or 0) + (meta.tool_use_prompt_token_count or 0)
    completion = (meta.candidates_token_count or 0) + thoughts
    return shapes.usage(
        prompt,
        completion,
        cached=meta.cached_content_token_count or 0,
        reasoning=thoughts,
        total=meta.total_token_count or None,
    )


def parts(candidate: _Candidate) -> list[_Part]:
    content = candidate.content
    return (content.parts or []) if content is not None else []


def tool_call(fn: _FunctionCall, signature: str | None, model: str) -> dict[str, Any]:
    """The OpenAI tool call of a ``functionCall`` part (Gemini's id, else one of ours). A
    part with a ``thoughtSignature`` gets an id carrying it for ``model`` (its upstream id):
    the client sends the id back with the call, and ``gemini.encode_request`` restores the
    signature from it (``providers.carry``)."""
    call_id = fn.id or shapes.new_call_id()
    if signature:
        call_id = carry.wrap(call_id, model, {"g": signature})
    arguments = orjson.dumps(fn.args or {}).decode()
    return shapes.tool_call(call_id, fn.name or "", arguments)


def text(part: _Part) -> str:
    return part.text if part.text is not None and not part.thought else ""


def completion_id(doc: Response) -> str:
    return "chatcmpl-" + (doc.response_id or shapes.new_call_id()[5:])


def model_name(doc: Response, default: str) -> str:
    return doc.model_version if doc.model_version is not None else default


# ---------------------------------------------------------------- the decoder


class StreamDecoder:
    """Gemini's SSE responses (each holding only new parts) → OpenAI chunks."""

    __slots__ = (
        "_calls",
        "_choices",
        "_chunks",
        "_finished",
        "_meta",
        "_model",
        "_provider",
        "_wants_usage",
        "state",
    )

    def __init__(self, request: ChatRequest, model: Model) -> None:
        self.state = StreamState()
        self._chunks: shapes.Chunks | None = None
        self._model = model.upstream_id
        self._provider = model.provider.name
        self._wants_usage = request.client_wants_usage
        self._calls: dict[int, int] = {}  # candidate index → tool calls so far
        self._finished: set[int] = set()
        n = request.body.get("n")
        # Every candidate asked for must finish before the end of the body is a clean end.
        self._choices = n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1
        self._meta: _UsageMetadata | None = None  # cumulative: the last one wins

    def feed(self, raw_event: bytes) -> bytes:
        payload = sse.data_payload(raw_event)
        if payload is None:
            return b""
        try:
            doc = RESPONSE.decode(payload)
        except msgspec.DecodeError:  # not JSON, not an object, a field of the wrong type
            self.state.error = ProtocolError(
                f"Provider {self._provider!r} sent a malformed stream event.",
                provider=self._provider,
                code="malformed_stream",
            )
            return b""
        if isinstance(doc.error, dict):
            self.state.error = _error_from(200, {}, {"error": doc.error}, self._provider)
            return b""
        chunks = self._chunks
        if chunks is None:
            chunks = self._chunks = shapes.Chunks(completion_id(doc), model_name(doc, self._model))
        if doc.usage_metadata is not None:
            self._meta = doc.usage_metadata
        candidates = doc.candidates
        if candidates is not None and len(candidates) == 1:  # the usual chunk
            return self._candidate(chunks, candidates[0])
        feedback = doc.prompt_feedback
        if not candidates and feedback is not None and feedback.block_reason:
            self._finished.add(0)
            return chunks.delta({}, "content_filter")
        return b"".join(self._candidate(chunks, c) for c in candidates or ())

    def _candidate(self, chunks: shapes.Chunks, candidate: _Candidate) -> bytes:
        index = candidate.index if candidate.index is not None else 0
        out: list[bytes] = []
        pending = ""
        for part in parts(candidate):
            fn = part.function_call
            if fn is None:
                pending += text(part)
                continue
            if pending:
                out.append(chunks.delta({"content": pending}, index=index))
                pending = ""
            k = self._calls.get(index, 0)
            self._calls[index] = k + 1
            call = tool_call(fn, part.thought_signature, self._model)
            out.append(chunks.delta({"tool_calls": [{"index": k, **call}]}, index=index))
        if pending:
            out.append(chunks.delta({"content": pending}, index=index))
        reason = candidate.finish_reason
        if reason and reason != "FINISH_REASON_UNSPECIFIED":
            self._finished.add(index)
            finish = finish_reason(reason, self._calls.get(index, 0) > 0)
            out.append(chunks.delta({}, finish, index=index))
        return b"".join(out)

    def end(self) -> bytes:
        """Gemini never says ``[DONE]``: the body's end completes a stream whose candidates
        all finished (a finish reason seen); anything else is a cut the caller reports."""
        chunks = self._chunks
        if chunks is None or len(self._finished) < self._choices:
            return b""
        self.state.finished = True
        self.state.usage = used = usage(self._meta) if self._meta is not None else None
        if self._wants_usage and used:
            self.state.usage_chunk = chunks.usage(used)
        return chunks.done()


# ---------------------------------------------------------------- errors

_STATUS_CODES = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 429,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}


def _retry_delay(details: Any) -> float | None:
    for detail in details if isinstance(details, list) else ():
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return max(0.0, float(delay[:-1]))
            except ValueError:
                return None
    return None


def _error_from(status: int, headers: Mapping[str, str], doc: Any, provider: str) -> UpstreamError:
    """The error a Google error body means (``{"error": {"code", "message", "status",
    "details"}}``); ``status`` 200 for an error inside a 200 (a stream's event, an error body
    in a 200 answer), whose own code or status then says the status. The message is the
    upstream's own (the serving path scrubs it)."""
    error = doc.get("error") if isinstance(doc, dict) else None
    error = error if isinstance(error, dict) else {}
    kind = error.get("status") if isinstance(error.get("status"), str) else None
    if status == 200:  # in-band: the error's own code or status tells
        code = error.get("code")
        status = (
            code if isinstance(code, int) and code >= 400 else _STATUS_CODES.get(kind or "", 500)
        )
    details = error.get("details")
    reasons = {
        d.get("reason")
        for d in (details if isinstance(details, list) else ())
        if isinstance(d, dict) and isinstance(d.get("reason"), str)
    }
    answered = status
    if status == 400 and any(str(r).startswith("API_KEY_") for r in reasons):
        status = 401  # Gemini says 400 for a bad or expired key: an auth failure
    elif status == 400 and kind == "FAILED_PRECONDITION":
        # The provider account cannot serve (region, billing): not the client's request —
        # another provider may.
        status = 503
    text = error.get("message")
    message = text if isinstance(text, str) else f"Provider {provider!r} answered HTTP {status}."
    wait = retry_after(headers)
    out = for_upstream_status(
        status,
        message,
        provider=provider,
        code=kind,
        retry_after=wait if wait is not None else _retry_delay(details),
    )
    out.upstream_status = answered  # what Gemini said, even when the client sees another
    return out
