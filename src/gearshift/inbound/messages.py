"""The Anthropic Messages API inbound (``POST /v1/messages``): pure decode and encode, no I/O.

A Messages request is decoded into gearshift's chat request (an OpenAI chat body), routed
exactly like chat by whatever provider serves it, and the chat answer is encoded back into
a Messages answer (``encode``) or event stream (``StreamEncoder``, in ``messages_stream``).
``docs/wire-formats.md`` §2 (the format), §4.2 (the request mapping), §7.4 (budget → effort).

Request (``parse``): ``system`` (a string, or text blocks joined by blank lines) → the first
``system`` message. User blocks: ``text`` → text parts; ``image`` → ``image_url`` parts
(base64 as a data URL, a ``url`` source as is); ``document`` → a PDF (base64) as a ``file``
part with a data URL, which the Anthropic outbound turns back into a ``document`` block;
plain text or content-block documents as text parts; ``tool_result`` → one ``tool``
message each, in order, before the rest of that turn (a following ``user`` message): its
text blocks joined by newlines, its images moved into that user message (a tool message
has no image slot), ``is_error`` marked by an ``Error: `` prefix (chat has no flag for it).
Assistant blocks: texts joined → ``content``; ``tool_use`` → ``tool_calls`` (``input`` as
a JSON string); ``thinking`` / ``redacted_thinking`` ride on the id of the turn's next
tool call (``carry.wrap(id, "", {"a": blocks})``: ``m`` empty, made by "an Anthropic model
a Messages client sent back"), and the ``tool_result`` answering it names the same id;
thinking after a turn's last tool call (or in a turn without one) is dropped: only a tool
loop needs it back. ``cache_control`` is dropped everywhere: chat has no such field
(OpenAI-compatible providers cache prefixes by themselves).

Parameters: ``max_tokens`` (required, as Anthropic requires it) → ``max_tokens``;
``temperature`` (0..1), ``top_p``; ``top_k`` dropped (no chat equivalent);
``stop_sequences`` → ``stop``; ``metadata.user_id`` → ``user`` (sticky routing reads it);
``tools`` (name, description, ``input_schema``) → function tools, a server tool
(``web_search_20250305``, ``bash_…``, any ``type`` but ``custom``) and ``mcp_servers``
refused (400): they run on Anthropic's side; ``tool_choice`` ``auto`` / ``any`` / ``tool``
/ ``none`` → ``auto`` / ``required`` / the named function / ``none``, and
``disable_parallel_tool_use`` → ``parallel_tool_calls: false`` (both only with tools).
``thinking``: ``enabled`` → ``reasoning_effort`` from ``budget_tokens`` (§7.4 reversed:
≤0 none, <2048 low, <12000 medium, <32000 high, else xhigh), ``disabled`` → ``none``,
``adaptive`` → nothing; ``output_config.effort`` (low … max) wins over a budget, not over
``disabled``. ``output_config.format`` (or the beta ``output_format``) ``json_schema`` →
``response_format`` ``json_schema`` named ``response`` (not strict: Anthropic's schema
rules are not OpenAI's strict ones). ``stream`` → ``stream`` with
``stream_options.include_usage`` (the usage the answer's ``message_delta`` needs); the
``gearshift`` hints object as in chat. Other fields (``service_tier``, ``container``,
``context_management`` …) are ignored.

Validation is Anthropic's where a request makes no sense (not JSON, missing ``model`` /
``max_tokens`` / ``messages``, empty ``messages``, roles other than user/assistant, blocks
of the wrong shape or in the wrong turn, wrong types, temperature outside 0..1), with its
``<path>: <problem>`` messages; lenient where the outbound adapters already repair a
request (same-role neighbours, an assistant turn first, empty texts, a final prefill).
The chat limits (``Limits``) apply: too many blocks are refused before parsing, as chat's
are, and the built body goes through ``parse_chat``.

Answer (``encode``): ``model`` echoes the model the client asked for (as Anthropic echoes
its request's model; which model served is in ``x-gearshift-model``); content: the first
tool call's carried thinking blocks, the text, then each tool call (preceded by its own
carried thinking) as ``tool_use`` with its plain id; an id carrying another provider's
state (Gemini ``g``, OpenAI ``o``) stays wrapped, so the state survives the round trip.
``stop_reason``: ``stop`` → ``end_turn`` (``stop_sequence`` when the upstream named the
matched sequence), ``length`` → ``max_tokens``, ``tool_calls`` → ``tool_use``,
``content_filter`` (or a refusal) → ``refusal``. Usage: ``input_tokens`` = prompt - cache
reads - cache writes, the cache counts apart, ``output_tokens`` = completion (§4.4).

Errors (``error_body``): Anthropic's shape and statuses: 400 ``invalid_request_error`` (and
other 4xx), 401 ``authentication_error``, 403 ``permission_error``, 404
``not_found_error``, 413 ``request_too_large``, 429 ``rate_limit_error``, 503 → 529
``overloaded_error`` (an upstream overloaded, every breaker open), 504 ``timeout_error``
(the SDK's gateway-timeout type), other 5xx → 500 ``api_error`` — and ``NoTarget`` (no
model can serve the request: retrying will not help) → 500 ``api_error``, not 529, which
clients retry at length. ``count_tokens``: ``{"input_tokens": N}`` by gearshift's own
counter on the decoded chat body (``max_tokens`` not required there, as for Anthropic).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from gearshift.errors import BadRequest
from gearshift.inbound.chat import LIMITS, ChatRequest, Limits, _deeper, parse_chat
from gearshift.inbound.messages_options import (
    _bad,
    _effort,
    _format,
    _sampling,
    _tool_choice,
    _tools,
)
from gearshift.inbound.messages_stream import StreamEncoder, encode, error_body, thinking_block
from gearshift.providers import carry, shapes
from gearshift.routing import tokens

_MEDIA = ("image/jpeg", "image/png", "image/gif", "image/webp")


# ---------------------------------------------------------------- the contract


def parse(raw: bytes | bytearray, limits: Limits = LIMITS) -> ChatRequest:
    """A ``/v1/messages`` body as gearshift's chat request (module docstring); ``BadRequest``
    naming the field as Anthropic names it. ``client_wants_usage`` is always set: every
    Messages answer reports usage."""
    return _decode(raw, limits, counting=False)


def count_tokens(raw: bytes | bytearray, limits: Limits = LIMITS) -> bytes:
    """``POST /v1/messages/count_tokens``: ``{"input_tokens": N}``."""
    chat = _decode(raw, limits, counting=True)
    return orjson.dumps({"input_tokens": tokens.count_request(chat.body)})


# ---------------------------------------------------------------- the request


def _decode(raw: bytes | bytearray, limits: Limits, *, counting: bool) -> ChatRequest:
    _precheck(raw, limits)
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _bad(f"The request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(doc, dict):
        raise _bad("The request body must be a JSON object.", code="invalid_json")
    for key in ("model",) if counting else ("model", "max_tokens"):
        if doc.get(key) is None:
            raise _bad(f"{key}: Field required", key, "missing_required_parameter")
    model = doc["model"]
    if not isinstance(model, str) or not model:
        raise _bad("model: Input should be a valid string", "model", "invalid_type")
    out: dict[str, Any] = {"model": model}
    if not counting:
        out["max_tokens"] = _integer(doc, "max_tokens", minimum=1)
    system = _system(doc.get("system"))
    out["messages"] = ([{"role": "system", "content": system}] if system else []) + _Turns(
        limits
    ).of(doc.get("messages"))
    tools = _tools(doc.get("tools"), doc.get("mcp_servers"))
    if tools:
        out["tools"] = tools
        _tool_choice(out, doc.get("tool_choice"))
    _sampling(out, doc)
    effort = _effort(doc.get("thinking"), doc.get("output_config"))
    if effort is not None:
        out["reasoning_effort"] = effort
    fmt = _format(doc)
    if fmt is not None:
        out["response_format"] = fmt
    user = _user(doc.get("metadata"))
    if user:
        out["user"] = user
    stream = doc.get("stream", False)
    if not isinstance(stream, bool):
        raise _bad("stream: Input should be a valid boolean", "stream", "invalid_type")
    if stream and not counting:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    if "gearshift" in doc:
        out["gearshift"] = doc["gearshift"]  # checked (and taken out) by parse_chat
    try:
        body = orjson.dumps(out)
    except orjson.JSONEncodeError:
        raise _too_deep(limits) from None
    chat = parse_chat(body, limits)
    chat.client_wants_usage = True
    return chat


def _user(metadata: Any) -> str | None:
    """``metadata.user_id``: chat's ``user``, which sticky routing reads."""
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise _bad("metadata: Input should be a valid dictionary", "metadata", "invalid_type")
    user = metadata.get("user_id")
    if user is not None and not isinstance(user, str):
        raise _bad("metadata.user_id: Input should be a valid string", "metadata.user_id")
    return user


def _precheck(raw: bytes | bytearray, limits: Limits) -> None:
    """Far too many messages or blocks refused before parsing, as ``parse_chat`` refuses
    them (every message has a ``"role"`` key, every block a ``"type"``)."""
    size = len(raw)
    if size > 12 * limits.max_messages and raw.count(b'"role"') > 2 * limits.max_messages:
        raise _bad(
            f'The request has more "role" keys than twice gearshift\'s limit of '
            f"{limits.max_messages} messages (server.max_messages).",
            "messages",
            "too_many_messages",
        )
    keys = 2 * limits.max_content_parts + limits.max_messages
    if size > 6 * keys and raw.count(b'"type"') > keys:
        raise _bad(
            f'The request has more "type" keys than twice gearshift\'s limit of '
            f"{limits.max_content_parts} content parts (server.max_content_parts).",
            "messages",
            "too_many_content_parts",
        )


def _too_deep(limits: Limits) -> BadRequest:
    return _bad(
        f"The request body is nested more than {limits.max_nesting} levels deep.",
        code="nesting_too_deep",
    )


def _integer(doc: Mapping[str, Any], key: str, *, minimum: int) -> int:
    value = doc[key]
    if not isinstance(value, int) or isinstance(value, bool):
        raise _bad(f"{key}: Input should be a valid integer", key, "invalid_type")
    if value < minimum:
        raise _bad(f"{key}: Input should be greater than or equal to {minimum}", key)
    return value


def _system(system: Any) -> str:
    if system is None or isinstance(system, str):
        return system or ""
    if not isinstance(system, list):
        raise _bad("system: Input should be a valid string or a valid list", "system")
    texts = []
    for k, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text":
            raise _bad(f"system.{k}: Input should be a text block", f"system.{k}")
        texts.append(_text(block, f"system.{k}"))
    return "\n\n".join(t for t in texts if t)


def _text(block: Mapping[str, Any], at: str) -> str:
    text = block.get("text")
    if not isinstance(text, str):
        raise _bad(f"{at}.text: Field required", f"{at}.text", "missing_required_parameter")
    return text


class _Turns:
    """Messages turns → chat messages; remembers the chat id each ``tool_use`` id became
    (wrapped with its thinking), for the ``tool_result`` that answers it."""

    __slots__ = ("ids", "limits")

    def __init__(self, limits: Limits) -> None:
        self.ids: dict[str, str] = {}
        self.limits = limits

    def of(self, messages: Any) -> list[dict[str, Any]]:
        if messages is None:
            raise _bad("messages: Field required", "messages", "missing_required_parameter")
        if not isinstance(messages, list):
            raise _bad("messages: Input should be a valid list", "messages", "invalid_type")
        if not messages:
            raise _bad("messages: at least one message is required", "messages", "empty_array")
        out: list[dict[str, Any]] = []
        for i, message in enumerate(messages):
            at = f"messages.{i}"
            if not isinstance(message, dict):
                raise _bad(f"{at}: Input should be a valid dictionary", at, "invalid_type")
            role = message.get("role")
            if role not in ("user", "assistant"):
                raise _bad(f"{at}.role: Input should be 'user' or 'assistant'", f"{at}.role")
            if "content" not in message:
                raise _bad(f"{at}.content: Field required", f"{at}.content")
            content = message["content"]
            if isinstance(content, str):
                out.append({"role": role, "content": content})
            elif not isinstance(content, list):
                msg = f"{at}.content: Input should be a valid string or a valid list"
                raise _bad(msg, f"{at}.content", "invalid_type")
            elif role == "user":
                out += self._user(content, at)
            else:
                turn = self._assistant(content, at)
                if turn is not None:
                    out.append(turn)
        return out

    def _user(self, blocks: list[Any], at: str) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        parts: list[dict[str, Any]] = []
        moved: list[dict[str, Any]] = []  # images of tool results
        for j, block in enumerate(blocks):
            where = f"{at}.content.{j}"
            kind = _kind(block, where)
            if kind == "tool_result":
                results.append(self._result(block, where, moved))
            elif kind in ("tool_use", "thinking", "redacted_thinking"):
                raise _bad(f"{where}: {kind} blocks are only allowed in assistant messages", where)
            else:
                parts.append(_part(block, kind, where))
        rest = moved + parts  # an empty turn: nothing to say (Anthropic would refuse it)
        return results + ([{"role": "user", "content": rest}] if rest else [])

    def _result(
        self, block: Mapping[str, Any], at: str, moved: list[dict[str, Any]]
    ) -> dict[str, Any]:
        call_id = block.get("tool_use_id")
        if not isinstance(call_id, str) or not call_id:
            msg = f"{at}.tool_use_id: Field required"
            raise _bad(msg, f"{at}.tool_use_id", "missing_required_parameter")
        content = block.get("content")
        if content is None or isinstance(content, str):
            text = content or ""
        elif isinstance(content, list):
            texts = []
            for k, inner in enumerate(content):
                where = f"{at}.content.{k}"
                kind = _kind(inner, where)
                part = _part(inner, kind, where)
                if part["type"] == "text":
                    texts.append(part["text"])
                else:
                    moved.append(part)
            text = "\n".join(texts)
        else:
            msg = f"{at}.content: Input should be a valid string or a valid list"
            raise _bad(msg, f"{at}.content", "invalid_type")
        if block.get("is_error") is True:
            text = "Error: " + text
        return {"role": "tool", "tool_call_id": self.ids.get(call_id, call_id), "content": text}

    def _assistant(self, blocks: list[Any], at: str) -> dict[str, Any] | None:
        texts: list[str] = []
        calls: list[dict[str, Any]] = []
        thinking: list[dict[str, Any]] = []  # since the previous tool_use
        for j, block in enumerate(blocks):
            where = f"{at}.content.{j}"
            kind = _kind(block, where)
            if kind == "text":
                texts.append(_text(block, where))
            elif kind in ("thinking", "redacted_thinking"):
                thinking.append(_thinking(block, kind, where))
            elif kind == "tool_use":
                calls.append(self._call(block, where, thinking))
                thinking = []
            elif kind == "tool_result":
                raise _bad(f"{where}: tool_result blocks are only allowed in user messages", where)
            else:
                raise _bad(f"{where}: {kind} blocks are not allowed in assistant messages", where)
        text = "".join(texts)
        if not text and not calls:
            return None  # nothing a chat turn can hold (an empty prefill, thinking alone)
        turn: dict[str, Any] = {"role": "assistant", "content": text or None}
        if calls:
            turn["tool_calls"] = calls
        return turn

    def _call(
        self, block: Mapping[str, Any], at: str, thinking: list[dict[str, Any]]
    ) -> dict[str, Any]:
        for key in ("id", "name"):
            if not isinstance(block.get(key), str) or not block[key]:
                raise _bad(
                    f"{at}.{key}: Field required", f"{at}.{key}", "missing_required_parameter"
                )
        arguments = block.get("input")
        if not isinstance(arguments, dict):
            raise _bad(f"{at}.input: Input should be a valid dictionary", f"{at}.input")
        call_id = block["id"]
        if thinking and carry.MARK not in call_id:
            self.ids[call_id] = call_id = carry.wrap(call_id, "", {"a": thinking})
        # A tool input becomes a string, out of reach of the chat body's nesting check: its
        # own is here (counted first: the walk is for inputs with that many brackets).
        try:
            text = orjson.dumps(arguments).decode()
        except orjson.JSONEncodeError:  # deeper than orjson encodes
            raise _too_deep(self.limits) from None
        depth = self.limits.max_nesting
        if (
            len(text) > 2 * depth
            and text.count("{") + text.count("[") > depth
            and _deeper(arguments, depth)
        ):
            raise _too_deep(self.limits)
        return {
            "id": call_id,
            "type": "function",
            "function": {"name": block["name"], "arguments": text},
        }


def _kind(block: Any, at: str) -> str:
    if not isinstance(block, dict):
        raise _bad(f"{at}: Input should be a valid dictionary", at, "invalid_type")
    kind = block.get("type")
    if not isinstance(kind, str):
        raise _bad(f"{at}.type: Field required", f"{at}.type", "missing_required_parameter")
    return kind


def _thinking(block: Mapping[str, Any], kind: str, at: str) -> dict[str, Any]:
    keys = ("thinking", "signature") if kind == "thinking" else ("data",)
    for key in keys:
        if not isinstance(block.get(key), str):
            raise _bad(f"{at}.{key}: Field required", f"{at}.{key}", "missing_required_parameter")
    return thinking_block(block)


def _part(block: Mapping[str, Any], kind: str, at: str) -> dict[str, Any]:
    """A user block (or a tool result's) as a chat content part."""
    if kind == "text":
        return {"type": "text", "text": _text(block, at)}
    if kind not in ("image", "document"):
        raise _bad(
            f"{at}: content blocks of type {kind!r} are not supported by gearshift (text, "
            "image, document, tool_result; tool_use and thinking in assistant turns).",
            f"{at}.type",
            "unsupported_content",
        )
    source = block.get("source")
    if not isinstance(source, dict):
        raise _bad(f"{at}.source: Field required", f"{at}.source", "missing_required_parameter")
    origin = source.get("type")
    if kind == "image" and origin == "url" and isinstance(source.get("url"), str):
        return {"type": "image_url", "image_url": {"url": source["url"]}}
    if origin == "base64":
        media, data = source.get("media_type"), source.get("data")
        allowed = _MEDIA if kind == "image" else ("application/pdf",)
        if media not in allowed:
            names = ", ".join(f"'{m}'" for m in allowed)
            raise _bad(f"{at}.source.media_type: Input should be {names}", f"{at}.source")
        if not isinstance(data, str) or not data:
            raise _bad(f"{at}.source.data: Field required", f"{at}.source.data")
        url = f"data:{media};base64,{data}"
        try:
            shapes.data_url(url)  # its data checked: base64
        except BadRequest:
            raise _bad(f"{at}.source.data: invalid base64 data", f"{at}.source.data") from None
        if kind == "image":
            return {"type": "image_url", "image_url": {"url": url}}
        title = block.get("title")
        name = title if isinstance(title, str) and title else "document.pdf"
        return {"type": "file", "file": {"filename": name, "file_data": url}}
    if kind == "document" and origin == "text" and isinstance(source.get("data"), str):
        return {"type": "text", "text": source["data"]}
    if kind == "document" and origin == "content" and isinstance(source.get("content"), str):
        return {"type": "text", "text": source["content"]}
    if kind == "document" and origin == "content" and isinstance(source.get("content"), list):
        texts = [_text(b, f"{at}.source.content") for b in source["content"] if _is_text(b)]
        return {"type": "text", "text": "\n".join(texts)}
    raise _bad(
        f"{at}.source: {kind} sources of type {origin!r} are not supported by gearshift "
        + ("(base64, url)." if kind == "image" else "(base64 PDF, text, content)."),
        f"{at}.source",
        "unsupported_content",
    )


def _is_text(block: Any) -> bool:
    return isinstance(block, dict) and block.get("type") == "text"


__all__ = ["StreamEncoder", "count_tokens", "encode", "error_body", "parse"]
