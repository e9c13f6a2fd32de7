"""The mock's Anthropic Messages: ``POST /v1/messages`` (and ``/messages``).

Validation as strict as the real API (role order, tool_use/tool_result pairing, empty or
malformed blocks), Anthropic's error objects (503 becomes 529 ``overloaded_error``), the
message body and its named SSE events (``message_start`` ... ``message_stop``).

Current models (ids starting ``claude-opus-5``, ``claude-sonnet-5``, ``claude-haiku-5``,
``claude-fable``) follow the rules gearshift depends on (``docs/wire-formats.md`` §7.2): 400
``invalid_request_error`` for ``temperature``/``top_p``/``top_k``, for manual thinking
(``thinking.type`` ``enabled``), for ``disabled`` on the always-thinking ones (Opus 5.5,
Fable) and for a forced ``tool_choice`` with thinking on; ``output_config.effort`` and
``output_config.format`` are taken. Thinking is on unless ``disabled``: a tool call comes
after a ``thinking`` block (text ``""`` unless ``display`` is ``summarized``; its signature
names the model and hashes the text), streamed as ``thinking_delta``s (not when omitted) and
one ``signature_delta``, and ``usage.output_tokens_details.thinking_tokens`` is reported. A
request whose last assistant turn has ``tool_use`` blocks must open that turn with its
thinking block, unmodified and signed for this model, or gets a 400 as from the real API.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from dataclasses import replace
from typing import Any, ClassVar, NoReturn

import orjson
from aiohttp import web

from gearshift.mock.flow import (
    _GARBAGE_JSON,
    _INVALID,
    _TOOL_ARGUMENTS,
    _TOOL_INPUT,
    MOCK_STATE,
    MockSettings,
    _Api,
    _chunks,
    _data_line,
    _fail,
    _Invalid,
    _is_base64,
    _is_int,
    _is_number,
    _json,
    _key_matches,
    _Outcome,
    _outcome,
    _Problem,
    _prompt_tokens,
    _question,
    _require,
    _slices,
    _Stream,
    _text_of,
)

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
    # not_found_error, 404 (https://platform.claude.com/docs/en/api/errors, read 2026-12-07);
    # the message names the model as users report it.
    "withdrawn": (404, "not_found_error", "model: {model}"),
}
_CACHE_WRITE_TOKENS = 11
_CACHE_READ_TOKENS = 100
_CURRENT = ("claude-opus-5", "claude-sonnet-5", "claude-haiku-5", "claude-fable")
_ALWAYS_THINKING = ("claude-opus-5-5", "claude-fable")
_EFFORTS = ("low", "medium", "high", "xhigh", "max")
_THINKING_TOKENS = 9
_THOUGHT = "The user needs a tool for this; calling it."
_THINKING_FIRST = (
    "{at}.content.0.type: Expected `thinking` or `redacted_thinking`, but found `{found}`. "
    "When `thinking` is enabled, a final `assistant` message must start with a thinking block "
    "(preceeding the lastmost set of `tool_use` and `tool_result` blocks). We recommend you "
    "include thinking blocks from previous turns. To avoid this requirement, disable "
    "`thinking`. Please consult our documentation at "
    "https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
)


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
    elif kind == "thinking":
        for key in ("thinking", "signature"):
            _require(isinstance(block.get(key), str), f"{at}.thinking.{key}: Field required")
    elif kind == "redacted_thinking":
        _require(isinstance(block.get("data"), str), f"{at}.redacted_thinking.data: Field required")
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
    if body["model"].startswith(_CURRENT):
        _check_current(body)
    return body


# ---------------------------------------------------------------- current models


def _thinks(body: dict[str, Any]) -> bool:
    """Thinking is on for a current model unless the request turns it off."""
    thinking = body.get("thinking")
    return body["model"].startswith(_CURRENT) and not (
        isinstance(thinking, dict) and thinking.get("type") == "disabled"
    )


def _display(body: dict[str, Any]) -> str:
    thinking = body.get("thinking")
    shown = thinking.get("display") if isinstance(thinking, dict) else None
    return "summarized" if shown == "summarized" else "omitted"


def _signature(model: str, thought: str, seq: int) -> str:
    """A signature the mock can check: the model, a nonce and a hash of the thinking."""
    digest = hashlib.sha256(f"{model}|{seq}|{thought}".encode()).hexdigest()[:24]
    return base64.b64encode(f"{model}|{seq}|{digest}".encode()).decode()


def _signed_for(signature: str, model: str, thought: str) -> bool:
    try:
        made_for, seq, _ = base64.b64decode(signature, validate=True).decode().rsplit("|", 2)
    except (ValueError, UnicodeDecodeError):
        return False
    return made_for == model and _signature(model, thought, int(seq)) == signature


def _check_current(body: dict[str, Any]) -> None:
    model = body["model"]
    for name in ("temperature", "top_p", "top_k"):
        _require(name not in body, f"`{name}` is deprecated for this model.")
    thinking = body.get("thinking", {"type": "adaptive"})
    _require(isinstance(thinking, dict), "thinking: Input should be a valid dictionary")
    kind = thinking.get("type")
    if kind not in ("enabled", "adaptive", "disabled"):
        _tag_error("thinking", kind, ("enabled", "adaptive", "disabled"))
    _require(
        kind != "enabled",
        '"thinking.type.enabled" is not supported for this model. Use '
        '"thinking.type.adaptive" and "output_config.effort" to control thinking behavior.',
    )
    _require(
        not (kind == "disabled" and model.startswith(_ALWAYS_THINKING)),
        "thinking.type: thinking cannot be disabled for this model.",
    )
    display = thinking.get("display")
    if display is not None:
        _require(kind != "disabled", "thinking.disabled.display: Extra inputs are not permitted")
        msg = "thinking.adaptive.display: Input should be 'summarized' or 'omitted'"
        _require(display in ("summarized", "omitted"), msg)
    config = body.get("output_config", {})
    _require(isinstance(config, dict), "output_config: Input should be a valid dictionary")
    if "effort" in config:
        effort = config["effort"]
        _require(effort in _EFFORTS, "output_config.effort: Input should be " + _tags(_EFFORTS))
    if "format" in config:
        fmt = config["format"]
        ok = isinstance(fmt, dict) and fmt.get("type") == "json_schema"
        _require(ok, "output_config.format.type: Input should be 'json_schema'")
        msg = "output_config.format.schema: Input should be a valid dictionary"
        _require(isinstance(fmt.get("schema"), dict), msg)
    if _thinks(body):
        choice = body.get("tool_choice", {"type": "auto"})
        msg = "Thinking may not be enabled when tool_choice forces tool use."
        _require(choice["type"] not in ("any", "tool"), msg)
        _check_thinking_kept(body["messages"], model)


def _check_thinking_kept(messages: list[Any], model: str) -> None:
    """The last assistant turn, when it called tools, opens with its thinking, unmodified
    and signed for this model."""
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    if last is None or not isinstance(messages[last]["content"], list):
        return
    blocks = messages[last]["content"]
    if not _ids(blocks, "tool_use", "id"):
        return
    at = f"messages.{last}"
    first = blocks[0]["type"]
    _require(first in ("thinking", "redacted_thinking"), _THINKING_FIRST.format(at=at, found=first))
    for j, block in enumerate(blocks):
        if block["type"] == "thinking":
            ok = _signed_for(block["signature"], model, block["thinking"])
            _require(ok, f"{at}.content.{j}: Invalid `signature` in `thinking` block")


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
    out = _outcome(model, _question(turns), body["max_tokens"], _anthropic_tool(body), prompt)
    if out.text is not None and "format" in body.get("output_config", {}):
        return replace(out, text=_TOOL_ARGUMENTS, truncated=False)  # the structured answer
    return out


def _anthropic_usage(model: str, input_tokens: int, output_tokens: int) -> dict[str, int]:
    cached = "cache" in model
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": _CACHE_WRITE_TOKENS if cached else 0,
        "cache_read_input_tokens": _CACHE_READ_TOKENS if cached else 0,
    }


def _output_usage(body: dict[str, Any], out: _Outcome, thought: bool) -> dict[str, Any]:
    """``output_tokens`` (thinking included) and, for a current model thinking, how much of
    it was thinking."""
    if not _thinks(body):
        return {"output_tokens": out.completion}
    thinking = _THINKING_TOKENS if thought else 0
    details = {"thinking_tokens": thinking}
    return {"output_tokens": out.completion + thinking, "output_tokens_details": details}


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

    def _thinking(self, body: dict[str, Any], out: _Outcome, seq: int) -> dict[str, Any] | None:
        """The thinking block before a tool call, when thinking is on (None otherwise)."""
        if out.tool is None or not _thinks(body):
            return None
        thought = _THOUGHT if _display(body) == "summarized" else ""
        signature = _signature(body["model"], thought, seq)
        return {"type": "thinking", "thinking": thought, "signature": signature}

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
        thinking = self._thinking(body, out, seq)
        usage = _anthropic_usage(model, out.prompt, out.completion)
        return {
            "id": f"msg_mock{seq}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [*([thinking] if thinking else []), self._block(out, seq, streamed=False)],
            "stop_reason": self._stop(out),
            "stop_sequence": None,
            "usage": usage | _output_usage(body, out, thinking is not None),
        }

    def stream(
        self, request: web.Request, body: dict[str, Any], model: str, seq: int, words: int
    ) -> _Stream:
        out = _anthropic_outcome(body, model)
        message: dict[str, Any] = {"id": f"msg_mock{seq}", "type": "message", "role": "assistant"}
        message |= {"content": [], "model": model, "stop_reason": None, "stop_sequence": None}
        message["usage"] = _anthropic_usage(model, out.prompt, 1)
        head = [_event("message_start", message=message)]
        thinking = self._thinking(body, out, seq)
        index = 0
        if thinking is not None:
            head += self._thinking_events(thinking)
            index = 1
        block = self._block(out, seq, streamed=True)
        head += [
            _event("content_block_start", index=index, content_block=block),
            _event("ping"),
        ]
        if out.text is not None:
            deltas = [{"type": "text_delta", "text": c} for c in _chunks(out.text, words)]
        else:
            # Anthropic starts with an empty fragment, then streams the JSON in pieces.
            pieces = ["", *_slices(_TOOL_ARGUMENTS, 4)]
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in pieces]
        content = [_event("content_block_delta", index=index, delta=d) for d in deltas]
        tail = [
            _event("content_block_stop", index=index),
            _event(
                "message_delta",
                delta={"stop_reason": self._stop(out), "stop_sequence": None},
                usage=_output_usage(body, out, thinking is not None),
            ),
            _event("message_stop"),
        ]
        error = _event("error", error=_OVERLOADED)
        garbage = b"event: content_block_delta\n" + _data_line(_GARBAGE_JSON)
        return _Stream(head, content, tail, error, garbage)

    @staticmethod
    def _thinking_events(block: dict[str, Any]) -> list[bytes]:
        """A thinking block streamed: its start, its text (none when omitted), then one
        ``signature_delta`` just before its stop."""
        start = {"type": "thinking", "thinking": "", "signature": ""}
        events = [_event("content_block_start", index=0, content_block=start)]
        for piece in _chunks(block["thinking"], 3):
            delta = {"type": "thinking_delta", "thinking": piece}
            events.append(_event("content_block_delta", index=0, delta=delta))
        delta = {"type": "signature_delta", "signature": block["signature"]}
        events.append(_event("content_block_delta", index=0, delta=delta))
        events.append(_event("content_block_stop", index=0))
        return events


ANTHROPIC_MODEL_IDS: tuple[str, ...] = (
    "claude-3-5-sonnet-20241022",
    "claude-3-haiku-20240307",
    "claude-opus-5-5",
    "claude-sonnet-5-5",
    "claude-haiku-5-5",
)
"""Model ids listed by ``GET /v1/models`` with ``anthropic-version`` (messages accept any)."""


async def anthropic_models(request: web.Request) -> web.Response:
    """Anthropic's model list: ``{"data": [{"type": "model", "id", "display_name",
    "created_at"}], "has_more", "first_id", "last_id"}``, paged by ``limit``/``after_id``."""
    settings = request.app[MOCK_STATE].settings
    given = request.headers.get("x-api-key")
    if settings.api_key is not None and not _key_matches(given or "", settings.api_key):
        return _json(_anthropic_error("authentication_error", "invalid x-api-key", 0), 401)
    ids = list(ANTHROPIC_MODEL_IDS)
    after = request.query.get("after_id")
    if after in ids:
        ids = ids[ids.index(after) + 1 :]
    limit = int(request.query.get("limit", "20"))
    page, more = ids[:limit], len(ids) > limit
    data = [
        {"type": "model", "id": m, "display_name": m, "created_at": "2024-10-22T00:00:00Z"}
        for m in page
    ]
    first, last = (page[0], page[-1]) if page else (None, None)
    return _json({"data": data, "has_more": more, "first_id": first, "last_id": last})
