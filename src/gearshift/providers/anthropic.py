"""Anthropic Messages API ⇄ OpenAI Chat Completions: pure encode/decode, no I/O.

Request (OpenAI → Anthropic): system and developer messages become the top-level ``system``
(their position is lost); ``tool`` messages become ``tool_result`` blocks, first in the next
user turn; assistant ``tool_calls`` become ``tool_use`` blocks (arguments parsed; text that is
not a JSON object is kept as ``{"_raw": …}``); neighbours of one role are merged; tool calls
and results without their partner are dropped as whole pairs; empty texts are dropped.
``max_tokens`` is always set (the request's, else the model's ``max_output``); temperature is
clamped to Anthropic's 0..1 and wins over ``top_p`` (newer models refuse both); stop
sequences of whitespace only are dropped; tool-call ids Anthropic refuses (other characters,
repeated) are rewritten by position, the same in the call and its result; ``json_object``
becomes an instruction, ``json_schema`` a forced tool whose input comes back as the message
content (finish ``stop``, never a tool call).
A conversation that is empty or opens with an assistant turn (Anthropic wants a user turn
first) is opened with a user turn holding ``"."``; a final assistant turn (a prefill) loses
its trailing whitespace (Anthropic refuses it). Whitespace-only texts are dropped.
``n`` > 1 is refused (400): Anthropic has one answer per call. Dropped without notice (no
Anthropic equivalent): ``seed``, penalties, ``logit_bias``, ``logprobs``, ``reasoning_effort``.

Response and stream (Anthropic → OpenAI): text blocks → ``content``, ``tool_use`` →
``tool_calls`` (arguments as a JSON string; in streams the OpenAI ``index`` counts tool
blocks only), ``stop_reason`` → ``finish_reason``, usage with cache reads and writes counted
in ``prompt_tokens`` (``cached_tokens`` = reads; ``cache_write_tokens`` = writes). Thinking
blocks are dropped. In streams nothing is written before the first content (the role chunk
goes with it; pings before it are dropped), so an error right after ``message_start`` still
falls back; a tool block that streamed no argument ends with ``{}``. Errors: Anthropic's
types to OpenAI-shaped errors, classified by status and type, never by message text;
529 → 503, retryable; a billing error (402 ``billing_error``) is the provider's failure (503,
retryable: another provider may serve), not the client's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import orjson

from gearshift import sse
from gearshift.config import AnthropicProviderSpec, Model, Provider
from gearshift.errors import (
    ProtocolError,
    Unavailable,
    Unsupported,
    UpstreamError,
    for_upstream_status,
    retry_after,
)
from gearshift.inbound.chat import ChatRequest
from gearshift.providers import Completion, Outbound, StreamState, cached, shapes

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


# ---------------------------------------------------------------- request


def encode_request(request: ChatRequest, model: Model) -> Outbound:
    body = request.body
    n = body.get("n")
    if isinstance(n, int) and n > 1:
        raise Unsupported(
            f"n={n} is not supported by {model.name!r} (Anthropic answers once per call).",
            provider="anthropic",
            param="n",
            code="unsupported_parameter",
        )
    messages = body.get("messages") or []
    out: dict[str, Any] = {
        "model": model.upstream_id,
        "max_tokens": min(shapes.max_output(body) or model.spec.max_output, model.spec.max_output),
    }
    system = shapes.system_text(messages)
    tools = _tools(body.get("tools"))
    forced_json = False
    fmt = body.get("response_format")
    fmt_type = fmt.get("type") if isinstance(fmt, dict) else None
    if fmt_type == "json_schema" and not tools:
        schema = fmt.get("json_schema") if isinstance(fmt, dict) else None
        schema = schema if isinstance(schema, dict) else {}
        tools = [
            {
                "name": JSON_TOOL,
                "description": str(schema.get("description") or "Give the answer as JSON."),
                "input_schema": _object_schema(schema.get("schema")),
            }
        ]
        forced_json = True
    elif fmt_type in ("json_object", "json_schema"):
        system = (system + "\n\n" + shapes.JSON_INSTRUCTION).strip()
    if system:
        out["system"] = system
    out["messages"] = _messages(messages)
    if tools:
        out["tools"] = tools
        choice: dict[str, Any] = (
            {"type": "tool", "name": JSON_TOOL}
            if forced_json
            else _tool_choice(body.get("tool_choice"))
        )
        if body.get("parallel_tool_calls") is False and choice["type"] != "none":
            choice["disable_parallel_tool_use"] = True
        out["tool_choice"] = choice
    # Anthropic refuses stop sequences of whitespace only ("\n").
    stop = [s for s in shapes.stop_list(body) if s.strip()]
    if stop:
        out["stop_sequences"] = stop
    temperature = body.get("temperature")
    if isinstance(temperature, int | float) and not isinstance(temperature, bool):
        out["temperature"] = min(1.0, max(0.0, float(temperature)))
    top_p = body.get("top_p")
    # Newer Claude models refuse temperature and top_p together: temperature wins.
    if isinstance(top_p, int | float) and not isinstance(top_p, bool) and "temperature" not in out:
        out["top_p"] = top_p
    if isinstance(body.get("user"), str):
        out["metadata"] = {"user_id": body["user"]}
    if request.stream:
        out["stream"] = True
    provider = model.provider
    return Outbound(
        url=cached(provider, "anthropic.url", _url),
        headers=cached(provider, "anthropic.headers", _headers),
        body=orjson.dumps(out),
    )


def _url(provider: Provider) -> str:
    return provider.base_url + "/messages"


def _headers(provider: Provider) -> Mapping[str, str]:
    spec = provider.spec
    version = spec.version if isinstance(spec, AnthropicProviderSpec) else "2023-06-01"
    headers = {
        "content-type": "application/json",
        "accept": "application/json",
        "anthropic-version": version,
    }
    headers.update(provider.headers)
    if provider.api_key is not None:
        headers["x-api-key"] = provider.api_key.reveal()
    return MappingProxyType(headers)


def _object_schema(schema: Any) -> dict[str, Any]:
    if isinstance(schema, dict) and schema:
        return schema
    return {"type": "object", "properties": {}}


def _tools(tools: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for name, description, parameters in shapes.functions(tools):
        entry: dict[str, Any] = {"name": name}
        if description is not None:
            entry["description"] = description
        entry["input_schema"] = _object_schema(parameters)
        out.append(entry)
    return out


def _tool_choice(choice: Any) -> dict[str, Any]:
    if choice == "none":
        return {"type": "none"}
    if choice == "required":
        return {"type": "any"}
    if isinstance(choice, dict):
        fn = choice.get("function")
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            return {"type": "tool", "name": fn["name"]}
    return {"type": "auto"}


def _user_blocks(content: Any) -> list[dict[str, Any]]:
    return shapes.content_parts(content, text=_text_block, media=_image, provider="Anthropic")


def _text_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _image(url: str) -> dict[str, Any]:
    inline = shapes.data_url(url)
    if inline is None:
        return {"type": "image", "source": {"type": "url", "url": url}}
    mime, data = inline
    if mime == "application/pdf":
        return {"type": "document", "source": {"type": "base64", "media_type": mime, "data": data}}
    if mime not in shapes.IMAGE_TYPES:
        raise Unsupported(
            f"Images of type {mime!r} cannot be sent to Anthropic models (jpeg, png, gif, webp).",
            provider="anthropic",
            param="messages",
            code="invalid_image_format",
        )
    return {"type": "image", "source": {"type": "base64", "media_type": mime, "data": data}}


def _tool_result(message: Mapping[str, Any], tool_use_id: str) -> dict[str, Any]:
    texts = shapes.text_parts(message.get("content"))
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_use_id}
    if texts:
        block["content"] = "\n".join(texts)
    return block


_TOOL_ID = re.compile(r"[A-Za-z0-9_-]+")


def _tool_ids(messages: list[Any], pairs: shapes.ToolPairs) -> dict[tuple[int, int], str]:
    """The id each kept call goes upstream with: its own when Anthropic accepts it
    (``[A-Za-z0-9_-]+``, unique in the request), else one made from its position — the same
    for the call and its result, which are paired by position."""
    ids: dict[tuple[int, int], str] = {}
    seen: set[str] = set()
    for message, call in sorted(pairs.calls):
        own = messages[message]["tool_calls"][call]["id"]
        if not _TOOL_ID.fullmatch(own) or own in seen:
            own = f"toolu_gs{message}x{call}"
        seen.add(own)
        ids[(message, call)] = own
    return ids


def _messages(messages: list[Any]) -> list[dict[str, Any]]:
    pairs = shapes.ToolPairs.of(messages)
    ids = _tool_ids(messages, pairs)
    turns: list[tuple[str, list[Any]]] = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            continue
        role = m.get("role")
        if role == "user":
            turns.append(("user", _user_blocks(m.get("content"))))
        elif role == "assistant":
            blocks: list[dict[str, Any]] = [
                {"type": "text", "text": t} for t in shapes.text_parts(m.get("content"))
            ]
            for j, call in enumerate(m.get("tool_calls") or ()):
                if pairs.call_kept(i, j):
                    fn = call["function"]
                    blocks.append(
                        {
                            "type": "tool_use",
                            "id": ids[(i, j)],
                            "name": fn["name"],
                            "input": shapes.arguments_object(fn.get("arguments")),
                        }
                    )
            turns.append(("assistant", blocks))
        elif role == "tool":
            if pairs.result_name(i) is not None:
                turns.append(("user", [_tool_result(m, ids[pairs.result_call(i)])]))
        elif role == "function":
            raise Unsupported(
                "The deprecated 'function' role cannot be sent to Anthropic models; use tools.",
                provider="anthropic",
                param="messages",
                code="unsupported_role",
            )
    merged = shapes.merge_turns(turns)
    if merged and merged[-1][0] == "assistant":
        _trim_prefill(merged)
    shapes.user_first(merged, {"type": "text", "text": shapes.PLACEHOLDER})
    out = []
    for role, blocks in merged:
        if role == "user":  # tool results first, as Anthropic requires
            blocks.sort(key=lambda b: b["type"] != "tool_result")
        out.append({"role": role, "content": blocks})
    return out


def _trim_prefill(turns: list[tuple[str, list[Any]]]) -> None:
    """A final assistant turn is a prefill Anthropic continues, and it refuses one that ends
    in whitespace: the trailing whitespace is cut (a block left empty goes, then a turn)."""
    blocks = turns[-1][1]
    last = blocks[-1]
    if last["type"] == "text":
        text = last["text"].rstrip()
        if text:
            blocks[-1] = {**last, "text": text}
        else:
            blocks.pop()
    if not blocks:
        turns.pop()


# ---------------------------------------------------------------- response


def _usage(raw: Mapping[str, Any]) -> dict[str, Any]:
    def n(name: str) -> int:
        value = raw.get(name)
        return value if isinstance(value, int) else 0

    read, write = n("cache_read_input_tokens"), n("cache_creation_input_tokens")
    return shapes.usage(
        n("input_tokens") + read + write, n("output_tokens"), cached=read, cache_write=write
    )


def _wants_json_tool(request: ChatRequest) -> bool:
    fmt = request.body.get("response_format")
    return (
        isinstance(fmt, dict) and fmt.get("type") == "json_schema" and not request.body.get("tools")
    )


def decode_response(body: bytes, request: ChatRequest, model: Model) -> Completion:
    provider = model.provider
    doc = shapes.json_object(body, provider.name)
    if doc.get("type") == "error":
        raise _error_from(200, {}, doc, provider.name)
    content = doc.get("content")
    if doc.get("type") != "message" or not isinstance(content, list):
        raise ProtocolError(
            f"Provider {provider.name!r} sent a response without message content.",
            provider=provider.name,
        )
    json_tool = _wants_json_tool(request)
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in content:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif block.get("type") == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            if json_tool and block.get("name") == JSON_TOOL:
                texts.append(arguments)
            else:
                calls.append(
                    shapes.tool_call(str(block.get("id")), str(block.get("name")), arguments)
                )
    stop_reason = doc.get("stop_reason")
    finish = FINISH.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"
    if json_tool and finish == "tool_calls":
        finish = "stop"
    raw_usage = doc.get("usage")
    usage = _usage(raw_usage) if isinstance(raw_usage, dict) else None
    answer = shapes.completion(
        str(doc.get("id") or "msg"),
        str(doc.get("model") or model.upstream_id),
        [(shapes.message("".join(texts), calls), finish)],
        usage,
    )
    return Completion(body=answer, usage=usage)


# ---------------------------------------------------------------- stream


class StreamDecoder:
    """Anthropic's named events → OpenAI chunks (see the module docstring)."""

    __slots__ = (
        "_blocks",
        "_chunks",
        "_empty",
        "_json_tool",
        "_model",
        "_provider",
        "_raw_usage",
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
        self._json_tool = _wants_json_tool(request)
        # Anthropic block index → OpenAI tool-call index (-1: the forced JSON tool)
        self._blocks: dict[int, int] = {}
        self._empty: set[int] = set()  # tool blocks that have sent no argument yet
        self._tools = 0
        self._raw_usage: dict[str, Any] = {}

    def _malformed(self, what: str) -> bytes:
        self.state.error = ProtocolError(
            f"Provider {self._provider!r} sent a malformed stream event ({what}).",
            provider=self._provider,
            code="malformed_stream",
        )
        return b""

    def feed(self, raw_event: bytes) -> bytes:
        event = sse.parse(raw_event)
        if event is None:
            return b""  # comments
        try:
            data = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            return self._malformed("not JSON")
        if not isinstance(data, dict):
            return self._malformed("not an object")
        kind = data.get("type") or event.name
        if kind == "ping":
            # A keep-alive for whatever sits between us and the client — once the stream
            # has started: before that, nothing may commit it (a failure can still move on).
            return b": ping\n\n" if self._chunks is not None and self._chunks.started else b""
        if kind == "error":
            self.state.error = _error_from(200, {}, data, self._provider)
            return b""
        if kind == "message_start":
            message = data.get("message") if isinstance(data.get("message"), dict) else {}
            assert isinstance(message, dict)
            self._add_usage(message.get("usage"))
            self._chunks = shapes.Chunks(
                str(message.get("id") or "msg"), str(message.get("model") or self._model)
            )
            # The role chunk goes out with the first content (``Chunks.delta``), so that an
            # error right after message_start still finds nothing sent and can fall back.
            return b""
        chunks = self._chunks
        if chunks is None:
            return self._malformed(f"{kind} before message_start")
        if kind == "content_block_delta":
            return self._delta(chunks, data)
        if kind == "content_block_start":
            return self._block_start(chunks, data)
        if kind == "message_delta":
            delta = data.get("delta") if isinstance(data.get("delta"), dict) else {}
            assert isinstance(delta, dict)
            self._add_usage(data.get("usage"))  # cumulative counts: the last wins
            reason = delta.get("stop_reason")
            finish = FINISH.get(reason, "stop") if isinstance(reason, str) else "stop"
            if self._json_tool and finish == "tool_calls":
                finish = "stop"
            return chunks.delta({}, finish)
        if kind == "message_stop":
            self.state.finished = True
            self.state.usage = _usage(self._raw_usage)
            if self._wants_usage:
                self.state.usage_chunk = chunks.usage(self.state.usage)
            return chunks.done()
        if kind == "content_block_stop":
            return self._block_stop(chunks, data)
        return b""  # event types added later

    def _add_usage(self, usage: Any) -> None:
        # Only numbers: a message_delta may carry "input_tokens": null, which must not erase
        # what message_start said.
        if isinstance(usage, dict):
            self._raw_usage.update((k, v) for k, v in usage.items() if isinstance(v, int))

    def _block_stop(self, chunks: shapes.Chunks, data: Mapping[str, Any]) -> bytes:
        """A tool block that streamed no argument at all (a tool without parameters) still
        ends with arguments that parse: ``{}``, as the non-streamed answer has."""
        index = data.get("index")
        if not isinstance(index, int) or index not in self._empty:
            return b""
        self._empty.discard(index)
        k = self._blocks[index]
        if k < 0:
            return chunks.delta({"content": "{}"})
        return chunks.delta({"tool_calls": [{"index": k, "function": {"arguments": "{}"}}]})

    def _block_start(self, chunks: shapes.Chunks, data: Mapping[str, Any]) -> bytes:
        block = data.get("content_block")
        index = data.get("index")
        if not isinstance(block, dict) or not isinstance(index, int):
            return self._malformed("content_block_start without a block")
        if block.get("type") == "text":
            text = block.get("text")
            return chunks.delta({"content": text}) if isinstance(text, str) and text else b""
        if block.get("type") != "tool_use":
            return b""  # thinking and other blocks: not part of the OpenAI answer
        self._empty.add(index)
        if self._json_tool and block.get("name") == JSON_TOOL:
            self._blocks[index] = -1
            return b""
        k = self._tools
        self._tools += 1
        self._blocks[index] = k
        call = shapes.tool_call(str(block.get("id")), str(block.get("name")), "")
        return chunks.delta({"tool_calls": [{"index": k, **call}]})

    def _delta(self, chunks: shapes.Chunks, data: Mapping[str, Any]) -> bytes:
        delta = data.get("delta")
        if not isinstance(delta, dict):
            return self._malformed("content_block_delta without a delta")
        kind = delta.get("type")
        if kind == "text_delta":
            text = delta.get("text")
            return chunks.delta({"content": text}) if isinstance(text, str) and text else b""
        if kind == "input_json_delta":
            piece = delta.get("partial_json")
            index = data.get("index")
            k = self._blocks.get(index) if isinstance(index, int) else None
            if not isinstance(piece, str) or not piece or k is None:
                return b""
            self._empty.discard(index)
            if k < 0:  # the forced JSON tool: its input is the answer's content
                return chunks.delta({"content": piece})
            return chunks.delta({"tool_calls": [{"index": k, "function": {"arguments": piece}}]})
        return b""  # thinking, signature and citation deltas

    def end(self) -> bytes:
        return b""  # complete only with message_stop


def stream_decoder(request: ChatRequest, model: Model) -> StreamDecoder:
    return StreamDecoder(request, model)


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


def decode_error(
    status: int, headers: Mapping[str, str], body: bytes, provider: Provider
) -> UpstreamError:
    return _error_from(status, headers, shapes.json_or_none(body), provider.name)
