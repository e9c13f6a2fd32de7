"""The OpenAI Responses API inbound (``POST /v1/responses``): the client's request decoded
into a chat request the router runs like any other, and the chat answer encoded back.
Pure: no I/O, no store (the app keeps responses for ``previous_response_id``, retrieval,
``input_items`` and deletion). ``docs/wire-formats.md`` §6 is the reference.

The app calls exactly these::

    previous_id(raw) -> str | None           # the request's previous_response_id, cheaply
    parse(raw, limits, history) -> ResponsesRequest
    encode(completion, request, response_id, served_model) -> dict   # a whole Response
    StreamEncoder(request, response_id, served_model)                # responses_stream
        .feed(piece) -> bytes, .end() -> bytes, .final (the Response once completed)
    error_body(error) -> bytes               # an error before any answer (OpenAI's shape)
    assistant_message(response) -> dict      # a Response's output as a chat message

Request (§6.2 to 6.4, §6.8) → chat body: ``instructions`` → a leading ``system`` message
(not inherited: ``history``, the stored conversation as chat messages, comes after it and
holds none); then the ``input``: a string is one user message; message items keep their
role (``input_text`` → ``text``, ``input_image`` → ``image_url {url, detail}`` with
``original`` as ``auto``, ``input_file`` → ``file``); an earlier output message (or a
short-form assistant message) → an assistant message, its text joined, its ``refusal``
kept, ``phase`` and annotations dropped; ``function_call`` items → ``tool_calls`` of one
assistant message (consecutive calls, and the assistant text just before them, merged;
``id = call_id``, verbatim, so state ``providers.carry`` put in an id comes back);
``function_call_output`` → a ``tool`` message (images of an array output follow the tool
messages as one user message); ``reasoning`` items dropped (no upstream but OpenAI reads
them, and gearshift's own outputs never hold one). ``item_reference``, custom and built-in
tool items are refused (400). Function tools nested under ``function`` (``strict`` only
when sent: chat's non-strict default never refuses a schema strict mode cannot take),
built-in and custom tools refused (400 ``unsupported_tool``); ``tool_choice`` renested;
``text.format`` → ``response_format`` (``json_schema`` wrapped; ``text``, the default, not
sent); ``text.verbosity`` → ``verbosity``; ``max_output_tokens`` →
``max_completion_tokens``; ``reasoning.effort`` → ``reasoning_effort`` (a ceiling to
gearshift); ``temperature``, ``top_p``, ``parallel_tool_calls``, ``prompt_cache_key`` as
they are; ``safety_identifier`` (else the deprecated ``user``) → ``user``; ``stream`` with
``stream_options.include_usage`` (the encoder needs the usage); the ``gearshift`` hints.
``store``, ``metadata``, ``truncation``, ``include`` stay here; ``conversation``,
``background`` and ``prompt`` (OpenAI's server-side state) are refused; the rest dropped.
The chat body then passes ``parse_chat`` (its limits and checks). Errors are
``BadRequest`` naming the field in Responses terms (``input[2].content[0].type``).

Answers: ``encode`` / ``StreamEncoder`` (``responses_stream``): ``content`` → a ``message``
item with an ``output_text`` part, ``refusal`` → a ``refusal`` part, each tool call → a
``function_call`` item (``fc_…`` minted, ``call_id`` the chat id); ``finish_reason``
``length`` / ``content_filter`` → ``status: incomplete`` with ``incomplete_details``;
usage as Responses usage; the request's settings echoed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from gearshift.config import EFFORT_RANK, EFFORTS
from gearshift.errors import BadRequest, GearshiftError
from gearshift.inbound.chat import LIMITS, ChatRequest, Limits, parse_chat
from gearshift.inbound.responses_items import Input as _Input
from gearshift.inbound.responses_items import bad as _bad
from gearshift.inbound.responses_items import missing as _missing
from gearshift.inbound.responses_items import wrong_type as _wrong_type
from gearshift.inbound.responses_stream import (
    StreamEncoder,
    assistant_message,
    encode,
)

__all__ = [
    "ResponsesRequest",
    "StreamEncoder",
    "assistant_message",
    "encode",
    "error_body",
    "parse",
    "previous_id",
]

_VERBOSITY = frozenset({"low", "medium", "high"})
_SERVER_SIDE = {  # what only OpenAI's own servers hold
    "conversation": "Conversations",
    "background": "Background responses",
    "prompt": "Stored prompt templates",
}


@dataclass(slots=True)
class ResponsesRequest:
    """A decoded Responses request: the chat request to route, and what the Response echoes
    and the store keeps."""

    chat: ChatRequest
    store: bool
    metadata: dict[str, str]
    instructions: str | None
    input_items: list[dict[str, Any]]
    """The request's input as Responses items, normalised (``type``, ``id``, ``status``;
    string content as parts): what ``GET …/input_items`` lists."""
    original: dict[str, Any]
    """The request settings every Response object repeats (defaults filled as OpenAI
    fills them): instructions, tools, tool_choice, text, temperature, top_p, …"""
    previous_response_id: str | None = None


def _optional(body: Mapping[str, Any], name: str, types: type | tuple[type, ...], what: str) -> Any:
    """``body[name]`` when of ``types`` (a bool is no number), None when absent or null."""
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in _tuple(types)):
        raise _wrong_type(name, what, value)
    return value


def _tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


# ---------------------------------------------------------------- the request


def previous_id(raw: bytes | bytearray) -> str | None:
    """The request's ``previous_response_id`` (None when absent or null; a body that is not
    a JSON object is ``parse``'s to refuse). ``BadRequest`` when it is not a string."""
    if b'"previous_response_id"' not in raw:
        return None
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict):
        return None
    value = body.get("previous_response_id")
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise _wrong_type("previous_response_id", "a non-empty string", value)
    return value


def parse(
    raw: bytes | bytearray, limits: Limits = LIMITS, history: list[dict[str, Any]] | None = None
) -> ResponsesRequest:
    """Decode and check a ``/v1/responses`` body (see the module docstring); ``history``:
    the chat messages of the conversation ``previous_response_id`` continues."""
    body = _load(raw, limits)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        if model is None:
            raise _missing("model")
        raise _wrong_type("model", "a non-empty string", model)
    for name, what in _SERVER_SIDE.items():
        if body.get(name) not in (None, False):
            raise _bad(
                f"{what} ('{name}') live on OpenAI's servers, which gearshift does not keep; "
                "send the request without it.",
                name,
                "unsupported_parameter",
            )
    instructions = _optional(body, "instructions", str, "a string")
    messages: list[dict[str, Any]] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    messages += history or []
    items = _Input(history or [])
    items.read(body.get("input"))
    messages += items.messages
    if not messages:
        raise _missing("input")

    chat: dict[str, Any] = {"model": model, "messages": messages}
    original = _settings(body, chat)
    stream = _optional(body, "stream", bool, "a boolean") is True
    if stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    if "gearshift" in body:
        chat["gearshift"] = body["gearshift"]
    request = _checked(chat, limits)
    request.client_wants_usage = True  # the encoders need the usage for the Response
    store = _optional(body, "store", bool, "a boolean")
    metadata = _metadata(body.get("metadata"))
    previous = _optional(body, "previous_response_id", str, "a string")
    original |= {
        "instructions": instructions,
        "metadata": metadata,
        "previous_response_id": previous,
        "store": store is not False,
    }
    return ResponsesRequest(
        chat=request,
        store=store is not False,
        metadata=metadata,
        instructions=instructions,
        input_items=items.items,
        original=original,
        previous_response_id=previous,
    )


def _load(raw: bytes | bytearray, limits: Limits) -> dict[str, Any]:
    """The body as an object; one far over the limits is refused before it is parsed (as
    ``parse_chat`` does: every item has a ``"type"`` or ``"role"`` key, every part a
    ``"type"``; both counted, twice the limit)."""
    bound = 2 * (2 * limits.max_messages + limits.max_content_parts)
    if len(raw) > 6 * bound and raw.count(b'"type"') + raw.count(b'"role"') > bound:
        raise _bad(
            f"The request has far more input items or content parts than gearshift's limits "
            f"({limits.max_messages} items, {limits.max_content_parts} parts).",
            "input",
            "too_many_input_items",
        )
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _bad(f"The request body is not valid JSON: {exc}", None, "invalid_json") from None
    if not isinstance(body, dict):
        raise _bad("The request body must be a JSON object.", None, "invalid_json")
    return body


# chat parameter → its Responses name, for what ``parse_chat`` may still refuse
_CHAT_PARAMS = {
    "max_completion_tokens": "max_output_tokens",
    "reasoning_effort": "reasoning.effort",
    "response_format": "text.format",
    "user": "safety_identifier",
}


def _checked(chat: dict[str, Any], limits: Limits) -> ChatRequest:
    """``parse_chat`` over the built body: its limits and checks, errors in Responses terms."""
    try:
        return parse_chat(orjson.dumps(chat), limits)
    except BadRequest as exc:
        param = exc.param or ""
        if param.startswith("messages"):
            exc.param = "input"
            exc.message = re.sub(r"\bmessages\b", "input items", exc.message)
        elif param in _CHAT_PARAMS:
            exc.param = _CHAT_PARAMS[param]
        raise
    except TypeError:  # orjson: nested past its limit
        raise _bad(
            f"The request body is nested more than {limits.max_nesting} levels deep.",
            None,
            "nesting_too_deep",
        ) from None


def _metadata(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _wrong_type("metadata", "an object", value)
    if len(value) > 16:
        raise _bad("'metadata' holds at most 16 pairs.", "metadata")
    for key, entry in value.items():
        if len(key) > 64 or not isinstance(entry, str) or len(entry) > 512:
            raise _bad(
                f"Invalid 'metadata.{key[:64]}': keys are at most 64 characters and values "
                "strings of at most 512.",
                "metadata",
            )
    return value


def _settings(body: Mapping[str, Any], chat: dict[str, Any]) -> dict[str, Any]:
    """Every setting but the input into ``chat``; the settings a Response echoes."""
    tools = _tools(body.get("tools"))
    if tools:
        chat["tools"] = tools
    choice = body.get("tool_choice")
    if choice is not None:
        chat_choice = _tool_choice(choice)
        if tools:
            chat["tool_choice"] = chat_choice
    parallel = _optional(body, "parallel_tool_calls", bool, "a boolean")
    if parallel is not None and tools:
        chat["parallel_tool_calls"] = parallel
    text = _text(body.get("text"), chat)
    limit = _optional(body, "max_output_tokens", int, "an integer")
    if limit is not None:
        if limit < 1:
            raise _bad(
                f"Invalid 'max_output_tokens': {limit}; expected at least 1.", "max_output_tokens"
            )
        chat["max_completion_tokens"] = limit
    sampling = {}
    for name in ("temperature", "top_p"):
        value = _optional(body, name, (int, float), "a number")
        if value is not None:
            chat[name] = sampling[name] = value
    reasoning = _reasoning(body.get("reasoning"), chat)
    cache_key = _optional(body, "prompt_cache_key", str, "a string")
    if cache_key is not None:
        chat["prompt_cache_key"] = cache_key
    safety = _optional(body, "safety_identifier", str, "a string")
    user = _optional(body, "user", str, "a string")
    if safety is not None or user is not None:
        chat["user"] = safety if safety is not None else user
    truncation = body.get("truncation")
    return {
        "max_output_tokens": limit,
        "parallel_tool_calls": parallel is not False,
        "prompt_cache_key": cache_key,
        "reasoning": reasoning,
        "safety_identifier": safety,
        "temperature": sampling.get("temperature", 1.0),
        "text": text,
        "tool_choice": choice if choice is not None else "auto",
        "tools": body.get("tools") or [],
        "top_p": sampling.get("top_p", 1.0),
        "truncation": truncation if truncation in ("auto", "disabled") else "disabled",
        "user": user,
    }


def _tools(tools: Any) -> list[dict[str, Any]]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise _wrong_type("tools", "an array", tools)
    out = []
    for j, tool in enumerate(tools):
        where = f"tools[{j}]"
        if not isinstance(tool, dict):
            raise _wrong_type(where, "an object", tool)
        kind = tool.get("type")
        if kind != "function":
            raise _unsupported_tool(kind, f"{where}.type")
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise (
                _missing(f"{where}.name")
                if name is None
                else _wrong_type(f"{where}.name", "a string", name)
            )
        fn: dict[str, Any] = {"name": name}
        for field, types, what in (
            ("description", str, "a string"),
            ("parameters", dict, "an object"),
            ("strict", bool, "a boolean"),
        ):
            value = tool.get(field)
            if value is not None:
                if not isinstance(value, types):
                    raise _wrong_type(f"{where}.{field}", what, value)
                fn[field] = value
        out.append({"type": "function", "function": fn})
    return out


def _unsupported_tool(kind: Any, param: str) -> BadRequest:
    return _bad(
        f"Tools of type {kind!r} are not supported: gearshift routes to many providers and "
        "serves function tools only ('type': 'function'); built-in tools run on OpenAI's "
        "servers.",
        param,
        "unsupported_tool",
    )


def _function_name(choice: Mapping[str, Any], param: str) -> dict[str, Any]:
    if choice.get("type") != "function":
        raise _unsupported_tool(choice.get("type"), f"{param}.type")
    name = choice.get("name")
    if not isinstance(name, str) or not name:
        raise _missing(f"{param}.name")
    return {"type": "function", "function": {"name": name}}


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            raise _bad(
                f"Invalid value for 'tool_choice': {choice!r}; expected none, auto or required.",
                "tool_choice",
            )
        return choice
    if not isinstance(choice, dict):
        raise _wrong_type("tool_choice", "a string or an object", choice)
    if choice.get("type") != "allowed_tools":
        return _function_name(choice, "tool_choice")
    mode, tools = choice.get("mode"), choice.get("tools")
    if mode not in ("auto", "required"):
        raise _bad("'tool_choice.mode' must be auto or required.", "tool_choice.mode")
    if not isinstance(tools, list):
        raise _wrong_type("tool_choice.tools", "an array", tools)
    named = [
        _function_name(t if isinstance(t, dict) else {}, f"tool_choice.tools[{j}]")
        for j, t in enumerate(tools)
    ]
    return {"type": "allowed_tools", "allowed_tools": {"mode": mode, "tools": named}}


def _text(text: Any, chat: dict[str, Any]) -> dict[str, Any]:
    """``text.format`` → ``response_format``, ``text.verbosity`` → ``verbosity``; the echo."""
    if text is None:
        return {"format": {"type": "text"}}
    if not isinstance(text, dict):
        raise _wrong_type("text", "an object", text)
    verbosity = text.get("verbosity")
    if verbosity is not None:
        if not isinstance(verbosity, str) or verbosity not in _VERBOSITY:
            raise _bad(
                f"Invalid value for 'text.verbosity': {verbosity!r}; expected low, medium or high.",
                "text.verbosity",
            )
        chat["verbosity"] = verbosity
    fmt = text.get("format")
    if fmt is None:
        return {"format": {"type": "text"}, **text}
    if not isinstance(fmt, dict):
        raise _wrong_type("text.format", "an object", fmt)
    kind = fmt.get("type")
    if kind == "json_object":
        chat["response_format"] = {"type": "json_object"}
    elif kind == "json_schema":
        name, schema = fmt.get("name"), fmt.get("schema")
        if not isinstance(name, str) or not name:
            raise _missing("text.format.name")
        if not isinstance(schema, dict):
            raise (
                _missing("text.format.schema")
                if schema is None
                else _wrong_type("text.format.schema", "an object", schema)
            )
        wrapped: dict[str, Any] = {"name": name, "schema": schema}
        for field, types, what in (("strict", bool, "a boolean"), ("description", str, "a string")):
            value = fmt.get(field)
            if value is not None:
                if not isinstance(value, types):
                    raise _wrong_type(f"text.format.{field}", what, value)
                wrapped[field] = value
        chat["response_format"] = {"type": "json_schema", "json_schema": wrapped}
    elif kind != "text":
        raise _bad(
            f"Invalid value for 'text.format.type': {kind!r}; expected text, json_object or "
            "json_schema.",
            "text.format.type",
        )
    return dict(text)


def _reasoning(value: Any, chat: dict[str, Any]) -> dict[str, Any]:
    if value is None:
        return {"effort": None, "summary": None}
    if not isinstance(value, dict):
        raise _wrong_type("reasoning", "an object", value)
    effort = value.get("effort")
    if effort is not None:
        if not isinstance(effort, str) or effort not in EFFORT_RANK:
            raise _bad(
                f"Invalid value for 'reasoning.effort': {effort!r}; expected one of "
                f"{', '.join(EFFORTS)}.",
                "reasoning.effort",
            )
        chat["reasoning_effort"] = effort
    summary = value.get("summary", value.get("generate_summary"))
    return {"effort": effort, "summary": summary if isinstance(summary, str) else None}


def error_body(error: GearshiftError) -> bytes:
    """The body of an error answered before any Response: OpenAI's ``{"error": {…}}``, the
    same envelope as chat (§6.7)."""
    return error.body()
