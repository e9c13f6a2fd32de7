"""Anthropic → OpenAI, what comes back: the stream decoder on typed events, and what whole
answers share with it (stop reasons, usage, the forced JSON tool, thinking blocks carried in
tool-call ids, the error mapping).

Each SSE event's data is decoded into one of the msgspec Structs below, tagged by its
``type`` (``message_start``, ``content_block_start``, ``content_block_delta``,
``content_block_stop``, ``message_delta``, ``message_stop``, ``ping``, ``error``), by one
decoder built at import. Only the fields the translation reads are declared; others are
skipped. An event type Anthropic adds later is ignored, as tensorzero's ``#[serde(other)]``
ignores it; an event that is not JSON, not an object, or whose fields used here have the
wrong type is the provider's protocol failure (``malformed_stream``). Events framed as
Anthropic frames them (``event: <name>`` then one ``data:`` line) are not split into lines:
the data is cut out directly. The rest of the behaviour is described in ``anthropic``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Union

import msgspec

from gearshift import sse
from gearshift.config import Model
from gearshift.errors import (
    ProtocolError,
    Unavailable,
    UpstreamError,
    for_upstream_status,
    retry_after,
)
from gearshift.inbound.chat import ChatRequest
from gearshift.providers import StreamState, carry, shapes

JSON_TOOL = "json_response"
"""The forced tool that carries a ``json_schema`` answer (its input is the JSON)."""

FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "refusal": "content_filter",
}


THINKING = frozenset({"thinking", "redacted_thinking"})
"""The blocks a tool loop must send back unmodified, in order (``providers.carry``)."""


def _wants_json_tool(request: ChatRequest, model: Model) -> bool:
    """Whether ``json_schema`` went as the forced tool: not for a reasoning model, which takes
    native structured output (``output_config.format``) and refuses forced tool use."""
    fmt = request.body.get("response_format")
    return (
        isinstance(fmt, dict)
        and fmt.get("type") == "json_schema"
        and not request.body.get("tools")
        and model.spec.reasoning is None
    )


def carried_id(call_id: str, upstream_id: str, thinking: list[dict[str, Any]]) -> str:
    """The id a ``tool_use`` goes to the client with: its own, carrying the thinking blocks
    that came before it since the previous ``tool_use`` (none: the id unchanged)."""
    return carry.wrap(call_id, upstream_id, {"a": thinking}) if thinking else call_id


def _usage(raw: Mapping[str, Any]) -> dict[str, Any]:
    def n(name: str) -> int:
        value = raw.get(name)
        return value if isinstance(value, int) else 0

    read, write = n("cache_read_input_tokens"), n("cache_creation_input_tokens")
    # Thinking is within output_tokens; newer models also report how much of it was
    # thinking (output_tokens_details.thinking_tokens, a breakdown, not an addition: the
    # SDK reference, anthropics/anthropic-sdk-ruby OutputTokensDetails, read 2026-12-07).
    details = raw.get("output_tokens_details")
    thinking = details.get("thinking_tokens") if isinstance(details, Mapping) else None
    return shapes.usage(
        n("input_tokens") + read + write,
        n("output_tokens"),
        cached=read,
        cache_write=write,
        reasoning=thinking if isinstance(thinking, int) and thinking >= 0 else 0,
    )


# ---------------------------------------------------------------- typed events


class _Usage(msgspec.Struct):
    # A message_delta may say "input_tokens": null: None never erases a count.
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    output_tokens_details: dict[str, Any] | None = None


_USAGE_FIELDS = _Usage.__struct_fields__


class _Message(msgspec.Struct):
    id: str | None = None
    model: str | None = None
    usage: _Usage | None = None


class _Block(msgspec.Struct):
    type: str | None = None  # text, tool_use, thinking, redacted_thinking; others ignored
    text: str | None = None
    id: str | None = None
    name: str | None = None
    thinking: str | None = None
    signature: str | None = None
    data: str | None = None  # redacted_thinking: opaque


class _Delta(msgspec.Struct):
    # text_delta, input_json_delta, thinking_delta, signature_delta; citations … ignored
    type: str | None = None
    text: str | None = None
    partial_json: str | None = None
    thinking: str | None = None
    signature: str | None = None


class _Stop(msgspec.Struct):
    stop_reason: str | None = None


class _MessageStart(msgspec.Struct, tag_field="type", tag="message_start"):
    message: _Message | None = None


class _BlockStart(msgspec.Struct, tag_field="type", tag="content_block_start"):
    index: int
    content_block: _Block


class _BlockDelta(msgspec.Struct, tag_field="type", tag="content_block_delta"):
    delta: _Delta
    index: int | None = None


class _BlockStop(msgspec.Struct, tag_field="type", tag="content_block_stop"):
    index: int | None = None


class _MessageDelta(msgspec.Struct, tag_field="type", tag="message_delta"):
    delta: _Stop | None = None
    usage: _Usage | None = None  # cumulative counts: the last wins


class _MessageStop(msgspec.Struct, tag_field="type", tag="message_stop"):
    pass


class _Ping(msgspec.Struct, tag_field="type", tag="ping"):
    pass


class _Error(msgspec.Struct, tag_field="type", tag="error"):
    error: Any = None  # read by ``_error_from``, which takes any shape


_EVENTS: tuple[type[msgspec.Struct], ...] = (
    _BlockDelta,
    _BlockStart,
    _BlockStop,
    _MessageStart,
    _MessageDelta,
    _MessageStop,
    _Ping,
    _Error,
)
_EVENT: msgspec.json.Decoder[Any] = msgspec.json.Decoder(Union[_EVENTS])  # noqa: UP007
# One per type, for an event whose data names no type (its SSE ``event:`` name does).
_BY_TYPE: dict[Any, msgspec.json.Decoder[Any]] = {
    kind.__struct_config__.tag: msgspec.json.Decoder(kind) for kind in _EVENTS
}


class _Head(msgspec.Struct):
    type: Any = None


_HEAD = msgspec.json.Decoder(_Head)


# ---------------------------------------------------------------- the decoder


class StreamDecoder:
    """Anthropic's named events → OpenAI chunks (see the ``anthropic`` module docstring)."""

    __slots__ = (
        "_blocks",
        "_chunks",
        "_empty",
        "_json_tool",
        "_model",
        "_open",
        "_provider",
        "_raw_usage",
        "_thinking",
        "_tools",
        "_wants_usage",
        "state",
    )

    def __init__(self, request: ChatRequest, model: Model) -> None:
        self.state = StreamState()
        self._chunks: shapes.Chunks | None = None
        self._model = model.upstream_id
        self._provider = model.provider.name
        self._wants_usage = request.client_wants_usage
        self._json_tool = _wants_json_tool(request, model)
        # Anthropic block index → OpenAI tool-call index (-1: the forced JSON tool)
        self._blocks: dict[int, int] = {}
        self._empty: set[int] = set()  # tool blocks that have sent no argument yet
        self._tools = 0
        self._raw_usage: dict[str, int] = {}
        # Thinking blocks being streamed (block index → the block, its thinking pieces) and
        # those complete since the last tool_use: the next tool call's id carries them.
        self._open: dict[int, tuple[dict[str, Any], list[str]]] = {}
        self._thinking: list[dict[str, Any]] = []

    def _malformed(self, what: str) -> bytes:
        self.state.error = ProtocolError(
            f"Provider {self._provider!r} sent a malformed stream event ({what}).",
            provider=self._provider,
            code="malformed_stream",
        )
        return b""

    def feed(self, raw_event: bytes) -> bytes:
        data = sse.named_data(raw_event)
        event: Any = None
        if data is not None:
            try:
                event = _EVENT.decode(data)
            except msgspec.DecodeError:
                event = None  # read again below, to tell why
        if event is None:
            event = self._untyped(raw_event, data)
            if event is None:
                return b""
        chunks = self._chunks
        if type(event) is _BlockDelta and chunks is not None:  # the hot path first
            return self._delta(chunks, event)
        if type(event) is _Ping:
            # A keep-alive for whatever sits between us and the client — once the stream
            # has started: before that, nothing may commit it (a failure can still move on).
            return b": ping\n\n" if chunks is not None and chunks.started else b""
        if type(event) is _Error:
            self.state.error = _error_from(200, {}, {"error": event.error}, self._provider)
            return b""
        if type(event) is _MessageStart:
            message = event.message or _Message()
            self._add_usage(message.usage)
            self._chunks = shapes.Chunks(message.id or "msg", message.model or self._model)
            # The role chunk goes out with the first content (``Chunks.delta``), so that an
            # error right after message_start still finds nothing sent and can fall back.
            return b""
        if chunks is None:
            return self._malformed(f"{event.__struct_config__.tag} before message_start")
        if type(event) is _BlockStart:
            return self._block_start(chunks, event)
        if type(event) is _MessageDelta:
            self._add_usage(event.usage)
            reason = event.delta.stop_reason if event.delta is not None else None
            finish = FINISH.get(reason, "stop") if reason is not None else "stop"
            if self._json_tool and finish == "tool_calls":
                finish = "stop"
            return chunks.delta({}, finish)
        if type(event) is _MessageStop:
            self.state.finished = True
            self.state.usage = _usage(self._raw_usage)
            if self._wants_usage:
                self.state.usage_chunk = chunks.usage(self.state.usage)
            return chunks.done()
        return self._block_stop(chunks, event)

    def _untyped(self, raw_event: bytes, data: bytes | None) -> Any:
        """The event, when the one-step decode did not give it: framed otherwise (``data``
        None), naming its type only in the SSE ``event:`` line, of a type added later (None:
        ignored), or malformed (None, with ``state.error`` set)."""
        if data is None:
            parsed = sse.parse(raw_event)
            if parsed is None:
                return None  # comments
            data, name = parsed.data, parsed.name
        else:  # framed as Anthropic does: the name is the first line's rest
            name = raw_event[7 : raw_event.index(b"\n")].decode("utf-8", "replace")
        try:
            kind = _HEAD.decode(data).type or name
        except msgspec.ValidationError:
            self._malformed("not an object")
            return None
        except msgspec.DecodeError:
            self._malformed("not JSON")
            return None
        decoder = _BY_TYPE.get(kind) if isinstance(kind, str) else None
        if decoder is None:
            if not (isinstance(kind, str) and kind) and self._chunks is None:
                self._malformed(f"{kind} before message_start")
            return None  # an event type added later (or, once started, no type at all)
        try:
            return decoder.decode(data)
        except msgspec.ValidationError as exc:  # a field used here has the wrong type
            self._malformed(f"{kind}: {exc}")
            return None

    def _add_usage(self, usage: _Usage | None) -> None:
        if usage is not None:
            for name in _USAGE_FIELDS:
                value = getattr(usage, name)
                if value is not None:
                    self._raw_usage[name] = value

    def _block_stop(self, chunks: shapes.Chunks, event: _BlockStop) -> bytes:
        """A tool block that streamed no argument at all (a tool without parameters) still
        ends with arguments that parse: ``{}``, as the non-streamed answer has."""
        index = event.index
        if index is not None and index in self._open:
            block, pieces = self._open.pop(index)
            if block["type"] == "thinking":
                block["thinking"] = "".join(pieces)
            self._thinking.append(block)
            return b""
        if index is None or index not in self._empty:
            return b""
        self._empty.discard(index)
        k = self._blocks[index]
        if k < 0:
            return chunks.delta({"content": "{}"})
        return chunks.delta({"tool_calls": [{"index": k, "function": {"arguments": "{}"}}]})

    def _block_start(self, chunks: shapes.Chunks, event: _BlockStart) -> bytes:
        block, index = event.content_block, event.index
        if block.type == "text":
            return chunks.delta({"content": block.text}) if block.text else b""
        if block.type == "thinking":  # not part of the answer: kept for the next tool call
            self._open[index] = (
                {"type": "thinking", "thinking": "", "signature": block.signature or ""},
                [block.thinking] if block.thinking else [],
            )
            return b""
        if block.type == "redacted_thinking":
            self._open[index] = ({"type": "redacted_thinking", "data": block.data or ""}, [])
            return b""
        if block.type != "tool_use":
            return b""  # other blocks: not part of the OpenAI answer
        self._empty.add(index)
        thinking, self._thinking = self._thinking, []
        if self._json_tool and block.name == JSON_TOOL:
            self._blocks[index] = -1
            return b""
        k = self._tools
        self._tools += 1
        self._blocks[index] = k
        call_id = carried_id(str(block.id), self._model, thinking)
        call = shapes.tool_call(call_id, str(block.name), "")
        return chunks.delta({"tool_calls": [{"index": k, **call}]})

    def _delta(self, chunks: shapes.Chunks, event: _BlockDelta) -> bytes:
        delta = event.delta
        if delta.type == "text_delta":
            return chunks.delta({"content": delta.text}) if delta.text else b""
        if delta.type == "input_json_delta":
            piece, index = delta.partial_json, event.index
            if not piece or index is None or (k := self._blocks.get(index)) is None:
                return b""
            self._empty.discard(index)
            if k < 0:  # the forced JSON tool: its input is the answer's content
                return chunks.delta({"content": piece})
            return chunks.delta({"tool_calls": [{"index": k, "function": {"arguments": piece}}]})
        if delta.type == "thinking_delta" or delta.type == "signature_delta":
            opened = self._open.get(event.index) if event.index is not None else None
            if opened is not None and opened[0]["type"] == "thinking":
                if delta.thinking:
                    opened[1].append(delta.thinking)
                if delta.signature is not None:
                    opened[0]["signature"] = delta.signature
        return b""  # citation deltas, and thinking: never part of the answer

    def end(self) -> bytes:
        return b""  # complete only with message_stop


# ---------------------------------------------------------------- errors

# The HTTP status each Anthropic error type stands for, from Anthropic's error reference
# (https://platform.claude.com/docs/en/api/errors, read 2026-12-07; 504 ``timeout_error`` as
# listed by catalogues of that page). Used where the status is lost (an in-band stream error
# arrives in a 200) and to classify by type, never by message text.
_TYPE_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "conflict_error": 409,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


def _error_from(status: int, headers: Mapping[str, str], doc: Any, provider: str) -> UpstreamError:
    """The error an Anthropic error body means (``{"type": "error", "error": {"type",
    "message"}}``); ``status`` 200 for an error inside a 200 (a stream's error event, an
    error body in a 200 answer), whose type then says the status. The message is the
    upstream's own (the serving path scrubs it)."""
    error = doc.get("error") if isinstance(doc, dict) else None
    kind = error.get("type") if isinstance(error, dict) else None
    kind = kind if isinstance(kind, str) else None
    text = error.get("message") if isinstance(error, dict) else None
    if status == 200:
        status = _TYPE_STATUS.get(kind or "", 500)
    message = text if isinstance(text, str) else f"Provider {provider!r} answered HTTP {status}."
    if status == 402 or kind == "billing_error":
        # The provider account cannot pay: not the client's request — another provider may.
        return Unavailable(
            message,
            provider=provider,
            upstream_status=status,
            code="provider_billing",
            status=503,
        )
    return for_upstream_status(
        status, message, provider=provider, code=kind, retry_after=retry_after(headers)
    )
