"""Chat answers → Anthropic Messages answers: whole (``encode``), streamed
(``StreamEncoder``) and failed (``error_body``), and what they share (stop reasons, usage,
the thinking blocks a tool-call id carries). What ``encode`` and ``error_body`` map is told
in the ``messages`` module docstring (which re-exports all three); the stream below.

The stream encoder turns the chat SSE pieces the relay yields (``data: {chunk}``, the
usage-only chunk with its ``gearshift`` object, ``data: [DONE]``, or a final in-band
``data: {"error": …}``; ``: ping`` keep-alives) into Anthropic's named events, in the order
Anthropic sends them (``docs/wire-formats.md`` §2.4, §4.5):

- ``message_start`` with the first event: content ``[]``, ``stop_reason`` null and usage
  ``input_tokens`` = the caller's estimate (``input_tokens=``, the planner's prompt count;
  default 0: a chat stream reports usage only at its end), output 0, cache counts 0. The
  real counts follow in ``message_delta``, whose usage carries ``input_tokens`` and the
  cache counts too; Anthropic's SDKs take them from there (counts there are cumulative and
  overwrite ``message_start``'s).
- text → one ``text`` block (``content_block_start`` with ``text: ""``, ``text_delta``s);
  each chat tool call (a new ``index``) → its own ``tool_use`` block (``input: {}``, then
  its argument fragments as ``input_json_delta``s); before a tool call whose id carries
  Anthropic thinking (``providers.carry``, key ``a``), those blocks, streamed as Anthropic
  streams them (``thinking_delta``, one ``signature_delta``; ``redacted_thinking`` whole
  in its start); the tool call then goes with its plain id. So a call's thinking follows
  the text that came before it (a whole answer puts the first call's thinking first).
- a ``finish_reason`` closes the open block; ``[DONE]`` sends ``message_delta``
  (``stop_reason``, ``stop_sequence``, usage, and the usage chunk's ``gearshift`` cost
  object as an extra field) and ``message_stop``.
- a chat error event → ``event: error`` (``{"type": "error", "error": {"type",
  "message"}}``), the last event, as Anthropic ends a failed stream; its type from the chat
  error's code where that tells more (``overloaded_error``, ``circuit_open``,
  ``server_shutting_down`` → ``overloaded_error``), else from its type (``server_error``
  and other failures → ``api_error``); a keep-alive → ``event: ping``.
- ``end()``: a stream that reached neither ``[DONE]`` nor an error ends with an
  ``api_error`` event: a client never takes a cut answer for a whole one.

Not carried: chat ``reasoning_content`` (thinking without a signature cannot go back to
Anthropic), other choices than the first. An argument fragment for a tool call whose block
is already closed (chat interleaving parallel calls; no upstream gearshift speaks does) has
no place in Anthropic's sequential blocks and is dropped.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

import orjson

from gearshift import sse
from gearshift.errors import GearshiftError, NoTarget
from gearshift.inbound.chat import ChatRequest
from gearshift.providers import carry, shapes

_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
_THINKING = ("thinking", "redacted_thinking")

# A chat error type (``GearshiftError.type``) or code → Anthropic's error type; other
# types (server_error, upstream_error, connection_error) are ``api_error``.
_ERROR_TYPES = {
    "invalid_request_error": "invalid_request_error",
    "authentication_error": "authentication_error",
    "permission_error": "permission_error",
    "not_found_error": "not_found_error",
    "rate_limit_error": "rate_limit_error",
    "timeout_error": "timeout_error",
    "overloaded_error": "overloaded_error",
}
_ERROR_CODES = {
    "overloaded_error": "overloaded_error",
    "circuit_open": "overloaded_error",
    "server_shutting_down": "overloaded_error",
    "request_too_large": "request_too_large",
    "model_not_found": "not_found_error",
}


# ---------------------------------------------------------------- shared with whole answers


def stop_reason(
    finish: Any, calls: bool, matched: Any, request: ChatRequest
) -> tuple[str, str | None]:
    """(``stop_reason``, ``stop_sequence``) for a chat ``finish_reason``. A plain stop is a
    ``stop_sequence`` only when the upstream said which one matched (vLLM's choice
    ``stop_reason``): chat does not say otherwise. Tool calls make ``tool_use`` unless the
    answer was cut (``max_tokens``) or refused."""
    reason = _STOP.get(finish, "end_turn") if isinstance(finish, str) else "end_turn"
    if calls and reason == "end_turn":
        return "tool_use", None
    if (
        reason == "end_turn"
        and isinstance(matched, str)
        and matched in shapes.stop_list(request.body)
    ):
        return "stop_sequence", matched
    return reason, None


def usage(raw: Any) -> dict[str, Any]:
    """Anthropic usage from a chat usage (§4.4 reversed): ``prompt_tokens`` counts cache
    reads and writes, Anthropic's ``input_tokens`` does not; the thinking share of
    ``output_tokens`` as ``output_tokens_details.thinking_tokens`` when the upstream said."""
    raw = raw if isinstance(raw, Mapping) else {}
    details = raw.get("prompt_tokens_details")
    details = details if isinstance(details, Mapping) else {}
    out_details = raw.get("completion_tokens_details")
    out_details = out_details if isinstance(out_details, Mapping) else {}
    read, write = _count(details.get("cached_tokens")), _count(details.get("cache_write_tokens"))
    out: dict[str, Any] = {
        "input_tokens": max(0, _count(raw.get("prompt_tokens")) - read - write),
        "cache_creation_input_tokens": write,
        "cache_read_input_tokens": read,
        "output_tokens": _count(raw.get("completion_tokens")),
    }
    thinking = _count(out_details.get("reasoning_tokens"))
    if thinking:
        out["output_tokens_details"] = {"thinking_tokens": thinking}
    return out


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def call_blocks(call_id: Any) -> tuple[list[dict[str, Any]], str]:
    """The thinking blocks a chat tool-call id carries (Anthropic's state, key ``a``) and
    the id the client gets: the plain one for Anthropic state (its blocks go to the client
    as blocks, and come back wrapped again by ``parse``), the id unchanged for any other
    state (Gemini ``g``, OpenAI ``o``: it must survive the round trip) or none."""
    if not isinstance(call_id, str) or not call_id:
        return [], "toolu_gs" + secrets.token_hex(12)
    plain, state = carry.unwrap(call_id)
    if state is None or not isinstance(state.get("a"), list) or "g" in state or "o" in state:
        return [], call_id
    return [b for b in state["a"] if _is_thinking(b)], plain


def _is_thinking(block: Any) -> bool:
    if not isinstance(block, dict):
        return False
    if block.get("type") == "thinking":
        return isinstance(block.get("thinking"), str) and isinstance(block.get("signature"), str)
    return block.get("type") == "redacted_thinking" and isinstance(block.get("data"), str)


def thinking_block(block: Mapping[str, Any]) -> dict[str, Any]:
    """A carried block as the client gets it: only the fields Anthropic defines."""
    if block["type"] == "thinking":
        return {"type": "thinking", "thinking": block["thinking"], "signature": block["signature"]}
    return {"type": "redacted_thinking", "data": block["data"]}


def error_type(error: Any) -> str:
    """Anthropic's error type for a chat error object (its ``type``, else its ``code``)."""
    if not isinstance(error, Mapping):
        return "api_error"
    code = error.get("code")
    by_code = _ERROR_CODES.get(code) if isinstance(code, str) else None
    kind = error.get("type")
    return by_code or (
        _ERROR_TYPES.get(kind, "api_error") if isinstance(kind, str) else "api_error"
    )


def event(kind: str, data: Mapping[str, Any]) -> bytes:
    """One Anthropic SSE event: ``event: <kind>`` and its data (which names the kind)."""
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def error_event(kind: str, message: str) -> bytes:
    return event("error", {"type": "error", "error": {"type": kind, "message": message}})


# ---------------------------------------------------------------- whole answers, errors

# Anthropic status / type by gearshift status (module docstring); others: 4xx → invalid
# request with its own status, 5xx → 500 api_error.
_STATUS: dict[int, tuple[int, str]] = {
    400: (400, "invalid_request_error"),
    401: (401, "authentication_error"),
    403: (403, "permission_error"),
    404: (404, "not_found_error"),
    413: (413, "request_too_large"),
    429: (429, "rate_limit_error"),
    503: (529, "overloaded_error"),
    504: (504, "timeout_error"),
}


def encode(completion: bytes, request: ChatRequest, message_id: str, requested_model: str) -> bytes:
    """A chat completion (bytes an adapter made or passed on) as a Messages answer."""
    doc = orjson.loads(completion)
    choices = doc.get("choices") if isinstance(doc, dict) else None
    choice = choices[0] if isinstance(choices, list) and choices else {}
    choice = choice if isinstance(choice, dict) else {}
    message = choice.get("message")
    message = message if isinstance(message, dict) else {}
    text = "".join(shapes.text_parts(message.get("content")) or [_str(message.get("content"))])
    refusal = _str(message.get("refusal"))
    lead: list[dict[str, Any]] = []
    blocks: list[dict[str, Any]] = []
    calls = message.get("tool_calls")
    calls = [c for c in calls if isinstance(c, dict)] if isinstance(calls, list) else []
    for i, call in enumerate(calls):
        fn = call.get("function")
        fn = fn if isinstance(fn, dict) else {}
        thinking, call_id = call_blocks(call.get("id"))
        (lead if i == 0 else blocks).extend(thinking_block(b) for b in thinking)
        blocks.append(
            {
                "type": "tool_use",
                "id": call_id,
                "name": _str(fn.get("name")),
                "input": shapes.arguments_object(fn.get("arguments")),
            }
        )
    reason, sequence = stop_reason(
        choice.get("finish_reason"), bool(calls), choice.get("stop_reason"), request
    )
    if not text and refusal:
        text, reason = refusal, "refusal"
    answer = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": requested_model,
        "content": [*lead, *([{"type": "text", "text": text}] if text else []), *blocks],
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": usage(doc.get("usage") if isinstance(doc, dict) else None),
    }
    return orjson.dumps(answer)


def error_body(error: GearshiftError, request_id: str | None = None) -> tuple[int, bytes]:
    """(status, body) of ``error`` as Anthropic answers it (module docstring)."""
    status = error.status
    if isinstance(error, NoTarget):
        status, kind = 500, "api_error"
    else:
        status, kind = _STATUS.get(
            status, (status, "invalid_request_error") if status < 500 else (500, "api_error")
        )
    doc: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": error.message}}
    if request_id is not None:
        doc["request_id"] = request_id
    return status, orjson.dumps(doc)


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


# ---------------------------------------------------------------- the stream encoder

_PING = event("ping", {"type": "ping"})
_DELTA = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'
_CUT = "The answer stream ended before it was complete; the content above is truncated."


class StreamEncoder:
    """Chat SSE pieces → Anthropic Messages events (see the module docstring). ``feed``
    takes one or more whole chat events at a time (bytes split anywhere also work);
    ``end`` once every piece was fed."""

    __slots__ = (
        "_done",
        "_extra",
        "_finish",
        "_framer",
        "_index",
        "_input",
        "_matched",
        "_message_id",
        "_model",
        "_open",
        "_refused",
        "_request",
        "_seen",
        "_started",
        "_tool",
        "_usage",
    )

    def __init__(
        self,
        request: ChatRequest,
        message_id: str,
        requested_model: str,
        *,
        input_tokens: int = 0,
    ) -> None:
        self._request = request
        self._message_id = message_id
        self._model = requested_model
        self._input = input_tokens
        self._framer = sse.Framer()
        self._done = False  # message_stop or an error sent: nothing may follow
        self._index = -1  # Anthropic block index of the last block started (-1: none yet)
        self._open: str | None = None  # "text" | "tool": the block still open
        self._tool = -1  # chat tool-call index of the open tool block
        self._seen: set[int] = set()  # chat tool-call indexes that had a block
        self._finish: Any = None
        self._matched: Any = None
        self._refused = False
        self._usage: Any = None
        self._extra: Any = None
        self._started = False  # message_start sent (with the first event)

    def feed(self, piece: bytes) -> bytes:
        if self._done:
            return b""
        out: list[bytes] = []
        for raw in self._framer.feed(piece):
            out.append(self._event(raw))
            if self._done:
                break
        return b"".join(out)

    def end(self) -> bytes:
        """Nothing more comes: an ``api_error`` event unless the stream already ended."""
        if self._done:
            return b""
        self._done = True
        return self._start() + error_event("api_error", _CUT)

    # ------------------------------------------------------------ one chat event

    def _event(self, raw: bytes) -> bytes:
        data = sse.data_payload(raw)
        if data is None:  # a comment: a keep-alive, passed on once the message started
            return _PING if self._started else b""
        head = self._start()
        if data == sse.DONE:
            return head + self._stop()
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            doc = None
        if not isinstance(doc, dict):
            self._done = True
            return head + error_event("api_error", "The answer stream sent a malformed event.")
        if "error" in doc and "choices" not in doc:
            self._done = True
            error = doc["error"]
            message = error.get("message") if isinstance(error, dict) else None
            return head + error_event(
                error_type(error), message if isinstance(message, str) else "Upstream error."
            )
        if isinstance(doc.get("usage"), dict):
            self._usage = doc["usage"]
        if isinstance(doc.get("gearshift"), dict):
            self._extra = doc["gearshift"]
        choices = doc.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices else None
        if not isinstance(choice, dict):
            return head
        out = [head]
        delta = choice.get("delta")
        if isinstance(delta, dict):
            text = delta.get("content")
            if isinstance(text, str) and text:
                out.append(self._text(text))
            refusal = delta.get("refusal")
            if isinstance(refusal, str) and refusal:
                self._refused = True
                out.append(self._text(refusal))
            calls = delta.get("tool_calls")
            if isinstance(calls, list):
                for position, call in enumerate(calls):
                    if isinstance(call, dict):
                        out.append(self._call(call, position))
        finish = choice.get("finish_reason")
        if isinstance(finish, str):
            self._finish = finish
            self._matched = choice.get("stop_reason")
            out.append(self._close())
        return b"".join(out)

    def _start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        message: dict[str, Any] = {
            "id": self._message_id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": self._input,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": 0,
            },
        }
        return event("message_start", {"type": "message_start", "message": message})

    def _stop(self) -> bytes:
        """``[DONE]``: the open block closed, then ``message_delta`` and ``message_stop``."""
        self._done = True
        reason, sequence = stop_reason(self._finish, bool(self._seen), self._matched, self._request)
        if self._refused and reason == "end_turn":
            reason = "refusal"
        delta: dict[str, Any] = {
            "type": "message_delta",
            "delta": {"stop_reason": reason, "stop_sequence": sequence},
            "usage": usage(self._usage),
        }
        if self._extra is not None:
            delta["gearshift"] = self._extra
        return (
            self._close()
            + event("message_delta", delta)
            + event("message_stop", {"type": "message_stop"})
        )

    # ------------------------------------------------------------ blocks

    def _begin(self, block: Mapping[str, Any]) -> bytes:
        self._index += 1
        start = {"type": "content_block_start", "index": self._index, "content_block": block}
        return event("content_block_start", start)

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        return event("content_block_stop", {"type": "content_block_stop", "index": self._index})

    def _delta(self, body: bytes) -> bytes:
        """A ``content_block_delta`` of the open block (``body``: the delta object)."""
        return _DELTA + str(self._index).encode() + b',"delta":' + body + b"}\n\n"

    def _text(self, text: str) -> bytes:
        head = b""
        if self._open != "text":
            head = self._close() + self._begin({"type": "text", "text": ""})
            self._open = "text"
        return head + self._delta(b'{"type":"text_delta","text":' + orjson.dumps(text) + b"}")

    def _call(self, call: Mapping[str, Any], position: int) -> bytes:
        k = call.get("index")
        k = k if isinstance(k, int) and not isinstance(k, bool) else position
        fn = call.get("function")
        fn = fn if isinstance(fn, Mapping) else {}
        head = b""
        if self._open != "tool" or k != self._tool:
            if k in self._seen:
                return b""  # its block is closed: no place for it (module docstring)
            self._seen.add(k)
            head = self._close()
            thinking, call_id = call_blocks(call.get("id"))
            for block in thinking:
                head += self._thinking(block)
            name = fn.get("name")
            block = {
                "type": "tool_use",
                "id": call_id,
                "name": name if isinstance(name, str) else "",
                "input": {},
            }
            head += self._begin(block)
            self._open, self._tool = "tool", k
        arguments = fn.get("arguments")
        if not isinstance(arguments, str) or not arguments:
            return head
        piece = b'{"type":"input_json_delta","partial_json":' + orjson.dumps(arguments) + b"}"
        return head + self._delta(piece)

    def _thinking(self, block: Mapping[str, Any]) -> bytes:
        """A carried thinking block, streamed whole: start, its text, its signature, stop."""
        if block["type"] == "redacted_thinking":
            out = self._begin(thinking_block(block))
        else:
            out = self._begin({"type": "thinking", "thinking": "", "signature": ""})
            if block["thinking"]:
                text = orjson.dumps(block["thinking"])
                out += self._delta(b'{"type":"thinking_delta","thinking":' + text + b"}")
            signature = orjson.dumps(block["signature"])
            out += self._delta(b'{"type":"signature_delta","signature":' + signature + b"}")
        return out + event(
            "content_block_stop", {"type": "content_block_stop", "index": self._index}
        )


__all__ = [
    "StreamEncoder",
    "call_blocks",
    "encode",
    "error_body",
    "error_event",
    "error_type",
    "event",
    "stop_reason",
    "thinking_block",
    "usage",
]
