"""OpenAI Responses → OpenAI Chat Completions, what comes back: the stream decoder, and what
whole answers share with it (finish reasons, usage, carried reasoning, in-band errors).

Each SSE event (``event: <type>`` then one ``data:`` line holding the same ``type``) is
decoded into one ``_Event`` Struct that declares only the fields read here; an event type
OpenAI adds later is ignored, one that is not a JSON object is the provider's protocol
failure (``malformed_stream``). What becomes a chunk:

- ``response.created`` / ``in_progress``: nothing (the id and model are noted): the role
  chunk goes out with the first content, so an error before it can still fall back;
- ``response.output_text.delta`` → ``content``; ``response.refusal.delta`` → ``refusal``;
- ``response.output_item.added`` of a ``function_call`` → a tool call (its ``call_id`` as
  the id, chat ``index`` counting function calls in order of ``output_index``), then
  ``response.function_call_arguments.delta`` → its arguments; a call whose arguments were
  not streamed gets them from ``output_item.done``;
- ``response.completed`` / ``response.incomplete``: the finish chunk; the body's end then
  closes the stream (``end``: the usage chunk, held in ``state.usage_chunk`` when the client
  asked for usage, then ``[DONE]``), so the usage comes after the finish chunk as OpenAI
  orders them; anything after the terminal event is ignored. A body that ends without one
  of them is incomplete (``end`` sends nothing);
- ``response.failed`` and ``error``: ``state.error``, of the class the error's code says
  (a ``rate_limit_exceeded`` is ``RateLimited``, an image or prompt code ``Rejected``);
- reasoning items: never shown; their ``encrypted_content`` rides on the next tool-call id
  (``carry``) when the request asked for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from gearshift import sse
from gearshift.config import Model
from gearshift.errors import ProtocolError, UpstreamError, for_upstream_status
from gearshift.inbound.chat import ChatRequest
from gearshift.providers import StreamState, carry, shapes

CARRY_KEY = "o"
"""The key of the OpenAI reasoning items in a carried state (``carry``: ``a`` Anthropic,
``g`` Gemini): ``[{"id": "rs_…", "encrypted_content": "…"}, …]``."""


def wants_carry(request: ChatRequest, model: Model) -> bool:
    """Whether to ask for encrypted reasoning and carry it in tool-call ids: a reasoning model
    in a request with tools (only a tool loop sends the calls, and their ids, back)."""
    return model.spec.reasoning is not None and bool(request.body.get("tools"))


def carried_item(item: Mapping[str, Any]) -> dict[str, str] | None:
    """What a ``reasoning`` output item carries: its id and encrypted content (None when it
    has none: with ``store: false`` a reasoning item without it cannot be sent back)."""
    rid, blob = item.get("id"), item.get("encrypted_content")
    if isinstance(rid, str) and isinstance(blob, str) and blob:
        return {"id": rid, "encrypted_content": blob}
    return None


def finish_reason(status: Any, details: Any, has_calls: bool) -> str:
    """``incomplete`` → ``length`` (``max_output_tokens`` and any other reason) or
    ``content_filter``; otherwise ``tool_calls`` when the answer calls a function, else
    ``stop``."""
    if status == "incomplete":
        reason = details.get("reason") if isinstance(details, Mapping) else None
        return "content_filter" if reason == "content_filter" else "length"
    return "tool_calls" if has_calls else "stop"


def usage(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A Responses usage as chat usage: input → prompt, output (reasoning included) →
    completion, cached reads and cache writes from ``input_tokens_details``, reasoning from
    ``output_tokens_details`` (accounting prices it at its own rate)."""

    def n(holder: Any, name: str) -> int:
        value = holder.get(name) if isinstance(holder, Mapping) else None
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    inputs, outputs = raw.get("input_tokens_details"), raw.get("output_tokens_details")
    total = raw.get("total_tokens")
    return shapes.usage(
        n(raw, "input_tokens"),
        n(raw, "output_tokens"),
        cached=n(inputs, "cached_tokens"),
        cache_write=n(inputs, "cache_write_tokens"),
        reasoning=n(outputs, "reasoning_tokens"),
        total=total if isinstance(total, int) and not isinstance(total, bool) else None,
    )


# ---------------------------------------------------------------- in-band errors

# The HTTP status an error inside a 200 stands for (``response.failed``'s ``error.code``,
# the enum of openai-python's ``types/responses/response_error.py``; an ``error`` event's
# ``code`` or ``type``): the model failed on OpenAI's side, a limit was hit, or the request
# itself (prompt, images) was refused.
_CODE_STATUS: Mapping[str, int] = {
    "server_error": 500,
    "rate_limit_exceeded": 429,
    "insufficient_quota": 429,
    "vector_store_timeout": 504,
    "context_length_exceeded": 400,
    **dict.fromkeys(
        (
            "invalid_prompt",
            "data_residency_mismatch",
            "bio_policy",
            "misalignment_policy_violation",
            "invalid_image",
            "invalid_image_format",
            "invalid_base64_image",
            "invalid_image_url",
            "image_too_large",
            "image_too_small",
            "image_parse_error",
            "image_content_policy_violation",
            "invalid_image_mode",
            "image_file_too_large",
            "unsupported_image_media_type",
            "empty_image_file",
            "failed_to_download_image",
            "image_file_not_found",
        ),
        400,
    ),
    # error types (OpenAI's HTTP error bodies, 1.7)
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "rate_limit_error": 429,
    "service_unavailable": 503,
    "timeout": 504,
}


def error_from(error: Any, provider: str) -> UpstreamError:
    """The error an in-band Responses error object means (``{"code", "message", "param",
    "type"?}``): its numeric status when it has one, else its code, else its type, else 500.
    The message is the upstream's own (the serving path scrubs it)."""
    err: Mapping[str, Any] = error if isinstance(error, Mapping) else {}
    status = 0
    for field in ("status", "code"):
        value = err.get(field)
        if isinstance(value, int) and not isinstance(value, bool) and 400 <= value < 600:
            status = value
            break
    if not status:
        for field in ("code", "type"):
            value = err.get(field)
            if isinstance(value, str) and value in _CODE_STATUS:
                status = _CODE_STATUS[value]
                break
    code, param, message = err.get("code"), err.get("param"), err.get("message")
    return for_upstream_status(
        status or 500,
        message if isinstance(message, str) else f"Provider {provider!r} failed the response.",
        provider=provider,
        code=code if isinstance(code, str) else None,
        param=param if isinstance(param, str) else None,
    )


# ---------------------------------------------------------------- the decoder


class _Event(msgspec.Struct):
    type: Any = None
    output_index: Any = None
    delta: Any = None
    item: Any = None
    response: Any = None
    # an ``error`` event: flat fields, and (as the live API has sent it) a nested object
    code: Any = None
    message: Any = None
    param: Any = None
    error: Any = None


_EVENT = msgspec.json.Decoder(_Event)


class StreamDecoder:
    """Responses events → chat chunks (see the module docstring)."""

    __slots__ = (
        "_calls",
        "_carry",
        "_chunks",
        "_model",
        "_provider",
        "_reasoning",
        "_streamed",
        "_terminal",
        "_wants_usage",
        "state",
    )

    def __init__(self, request: ChatRequest, model: Model) -> None:
        self.state = StreamState()
        self._chunks: shapes.Chunks | None = None
        self._model = model.upstream_id
        self._provider = model.provider.name
        self._wants_usage = request.client_wants_usage
        self._carry = wants_carry(request, model)
        self._calls: dict[int, int] = {}  # output_index → chat tool-call index
        self._streamed: set[int] = set()  # function calls whose arguments were sent
        self._reasoning: list[dict[str, str]] = []  # encrypted items for the next call id
        self._terminal = False  # response.completed or response.incomplete seen

    def feed(self, raw_event: bytes) -> bytes:
        if self._terminal:
            return b""
        data = sse.named_data(raw_event)
        if data is None:
            parsed = sse.parse(raw_event)
            if parsed is None:  # a comment: a keep-alive, once the stream has started
                started = self._chunks is not None and self._chunks.started
                return b": keep-alive\n\n" if started else b""
            data = parsed.data
        try:
            event = _EVENT.decode(data)
        except msgspec.DecodeError:  # not JSON, or not an object
            return self._malformed()
        kind = event.type
        if kind == "response.output_text.delta":  # the hot path first
            return self._delta({"content": event.delta})
        if kind == "response.function_call_arguments.delta":
            return self._arguments(event.output_index, event.delta)
        if kind in ("response.created", "response.in_progress"):
            self._open(event.response)
            return b""
        if kind == "response.output_item.added":
            return self._item_added(event.output_index, event.item)
        if kind == "response.output_item.done":
            return self._item_done(event.output_index, event.item)
        if kind == "response.refusal.delta":
            return self._delta({"refusal": event.delta})
        if kind in ("response.completed", "response.incomplete"):
            return self._finish(event.response)
        if kind == "response.failed":
            response = event.response if isinstance(event.response, dict) else {}
            self.state.error = error_from(response.get("error"), self._provider)
            return b""
        if kind == "error":
            nested = event.error if isinstance(event.error, dict) else None
            flat = {"code": event.code, "message": event.message, "param": event.param}
            self.state.error = error_from(nested or flat, self._provider)
            return b""
        if not isinstance(kind, str):
            return self._malformed()
        return b""  # content_part, *.done, reasoning summaries, events added later

    def end(self) -> bytes:
        """The usage chunk and ``[DONE]`` after a terminal event; nothing otherwise (the
        stream was cut)."""
        if not self._terminal or self._chunks is None:
            return b""
        self.state.finished = True
        if self._wants_usage and self.state.usage is not None:
            self.state.usage_chunk = self._chunks.usage(self.state.usage)
        return self._chunks.done()

    def _malformed(self) -> bytes:
        self.state.error = ProtocolError(
            f"Provider {self._provider!r} sent a malformed stream event.",
            provider=self._provider,
            code="malformed_stream",
        )
        return b""

    def _open(self, response: Any) -> shapes.Chunks:
        if self._chunks is None:
            doc = response if isinstance(response, dict) else {}
            rid, model = doc.get("id"), doc.get("model")
            self._chunks = shapes.Chunks(
                rid if isinstance(rid, str) else "resp",
                model if isinstance(model, str) else self._model,
            )
        return self._chunks

    def _delta(self, delta: dict[str, Any]) -> bytes:
        piece = next(iter(delta.values()))
        if not isinstance(piece, str) or not piece:
            return b""
        return self._open(None).delta(delta)

    def _item_added(self, index: Any, item: Any) -> bytes:
        if not isinstance(item, dict) or item.get("type") != "function_call":
            return b""
        if not isinstance(index, int):
            return self._malformed()
        k = self._calls[index] = len(self._calls)
        call_id = str(item.get("call_id") or item.get("id"))
        if self._reasoning:  # the reasoning that led to these calls, for the next turn
            call_id = carry.wrap(call_id, self._model, {CARRY_KEY: self._reasoning})
            self._reasoning = []
        arguments = item.get("arguments")
        arguments = arguments if isinstance(arguments, str) else ""
        if arguments:
            self._streamed.add(index)
        call = shapes.tool_call(call_id, str(item.get("name")), arguments)
        return self._open(None).delta({"tool_calls": [{"index": k, **call}]})

    def _arguments(self, index: Any, piece: Any) -> bytes:
        k = self._calls.get(index) if isinstance(index, int) else None
        if k is None or not isinstance(piece, str) or not piece:
            return b""
        self._streamed.add(index)
        return self._open(None).delta(
            {"tool_calls": [{"index": k, "function": {"arguments": piece}}]}
        )

    def _item_done(self, index: Any, item: Any) -> bytes:
        if not isinstance(item, dict):
            return b""
        if item.get("type") == "reasoning":
            kept = carried_item(item) if self._carry else None
            if kept is not None:
                self._reasoning.append(kept)
            return b""
        k = self._calls.get(index) if isinstance(index, int) else None
        if k is None or index in self._streamed:
            return b""
        # No argument was streamed: the finished item's, or {} (a function without
        # parameters), so that the client's arguments always parse.
        self._streamed.add(index)
        arguments = item.get("arguments")
        whole = arguments if isinstance(arguments, str) and arguments else "{}"
        return self._open(None).delta(
            {"tool_calls": [{"index": k, "function": {"arguments": whole}}]}
        )

    def _finish(self, response: Any) -> bytes:
        doc = response if isinstance(response, dict) else {}
        chunks = self._open(doc)
        finish = finish_reason(doc.get("status"), doc.get("incomplete_details"), bool(self._calls))
        self._terminal = True
        raw = doc.get("usage")
        self.state.usage = usage(raw) if isinstance(raw, dict) else None
        return chunks.delta({}, finish)
