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
from gearshift.inbound.chat import LIMITS, ChatRequest, Limits, _json_type, parse_chat
from gearshift.inbound.responses_stream import (
    StreamEncoder,
    assistant_message,
    encode,
    item_id,
    message_item,
    output_text,
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

_ROLES = ("user", "system", "developer", "assistant")
_IMAGE_DETAIL = {"low": "low", "high": "high", "auto": "auto", "original": "auto"}
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


def _bad(message: str, param: str | None, code: str = "invalid_value") -> BadRequest:
    return BadRequest(message, param=param, code=code)


def _wrong_type(param: str, expected: str, value: Any) -> BadRequest:
    return _bad(
        f"Invalid type for '{param}': expected {expected}, got {_json_type(value)}.",
        param,
        "invalid_type",
    )


def _missing(param: str) -> BadRequest:
    return _bad(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")


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


# ---------------------------------------------------------------- input items


class _Input:
    """The ``input`` read into chat messages and normalised items."""

    def __init__(self, history: list[dict[str, Any]]) -> None:
        self.messages: list[dict[str, Any]] = []
        self.items: list[dict[str, Any]] = []
        self._images: list[dict[str, Any]] = []  # of tool outputs: a user message after them
        # The message a function_call joins (this input's only: history is the app's).
        self._last: dict[str, Any] | None = None
        self._calls: set[str] = {
            call["id"]
            for m in history
            if isinstance(m, dict) and isinstance(m.get("tool_calls"), list)
            for call in m["tool_calls"]
            if isinstance(call, dict) and isinstance(call.get("id"), str)
        }

    def read(self, value: Any) -> None:
        if isinstance(value, str):
            self._append({"role": "user", "content": value})
            self.items.append(message_item("user", [{"type": "input_text", "text": value}]))
            return
        if value is None:
            return
        if not isinstance(value, list):
            raise _wrong_type("input", "a string or an array of items", value)
        for i, item in enumerate(value):
            self._item(i, item)
        self._flush_images()

    def _append(self, message: dict[str, Any]) -> None:
        if message["role"] != "tool":
            self._flush_images()
        self.messages.append(message)
        self._last = message

    def _flush_images(self) -> None:
        if self._images:
            parts, self._images = self._images, []
            self._append({"role": "user", "content": parts})

    def _item(self, i: int, item: Any) -> None:
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise _wrong_type(where, "an object", item)
        kind = item.get("type")
        if kind is None:
            kind = "message" if "role" in item else "item_reference" if "id" in item else None
        if kind == "message":
            self._message(item, where)
        elif kind == "function_call":
            self._function_call(item, where)
        elif kind == "function_call_output":
            self._function_output(item, where)
        elif kind == "reasoning":  # dropped: see the module docstring
            if not isinstance(item.get("id"), str):
                raise _missing(f"{where}.id")
            self.items.append(item)
        elif kind == "item_reference":
            raise _bad(
                f"'{where}' is an item reference: gearshift keeps no items apart from whole "
                "responses; send the item itself, or continue with previous_response_id.",
                where,
                "unsupported_value",
            )
        elif isinstance(kind, str) and ("_call" in kind or kind.startswith("mcp_")):
            raise _bad(
                f"'{where}' is a {kind!r} item: built-in and custom tools are not supported "
                "(gearshift serves function tools only).",
                f"{where}.type",
                "unsupported_tool",
            )
        else:
            raise _bad(
                f"Invalid value for '{where}.type': {kind!r}; expected message, function_call, "
                "function_call_output or reasoning.",
                f"{where}.type",
            )

    def _message(self, item: dict[str, Any], where: str) -> None:
        role = item.get("role")
        if role not in _ROLES:
            if role is None:
                raise _missing(f"{where}.role")
            raise _bad(
                f"Invalid value for '{where}.role': {role!r}; expected one of {', '.join(_ROLES)}.",
                f"{where}.role",
            )
        content = item.get("content")
        if isinstance(content, str):
            kind = "output_text" if role == "assistant" else "input_text"
            parts = [
                output_text(content) if kind == "output_text" else {"type": kind, "text": content}
            ]
        elif isinstance(content, list):
            parts = content
        elif content is None:
            raise _missing(f"{where}.content")
        else:
            raise _wrong_type(f"{where}.content", "a string or an array of parts", content)
        if role == "assistant":
            self._assistant(parts, f"{where}.content")
        else:
            chat_parts = [_input_part(p, f"{where}.content[{j}]") for j, p in enumerate(parts)]
            self._append(
                {"role": role, "content": content if isinstance(content, str) else chat_parts}
            )
        self.items.append({**item, **message_item(str(role), parts, item)})

    def _assistant(self, parts: list[Any], where: str) -> None:
        texts: list[str] = []
        refusals: list[str] = []
        for j, part in enumerate(parts):
            kind = part.get("type") if isinstance(part, dict) else None
            at = f"{where}[{j}]"
            if kind in ("output_text", "input_text"):
                texts.append(_string_field(part, "text", at))
            elif kind == "refusal":
                refusals.append(_string_field(part, "refusal", at))
            else:
                raise _bad(
                    f"Invalid value for '{at}.type': {kind!r}; an assistant message holds "
                    "output_text and refusal parts.",
                    f"{at}.type",
                )
        # content null only beside a refusal (or, once merged, tool calls)
        text = "".join(texts) if texts else None if refusals else ""
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if refusals:
            message["refusal"] = "".join(refusals)
        self._append(message)

    def _function_call(self, item: dict[str, Any], where: str) -> None:
        call_id = _string_field(item, "call_id", where)
        name = _string_field(item, "name", where)
        arguments = _string_field(item, "arguments", where)
        call = {
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        }
        self._calls.add(call_id)
        last = self._last
        if last is not None and last["role"] == "assistant" and not self._images:
            last.setdefault("tool_calls", []).append(call)
        else:
            self._append({"role": "assistant", "content": None, "tool_calls": [call]})
        self.items.append(
            {**item, "id": item_id(item, "fc_"), "status": item.get("status") or "completed"}
        )

    def _function_output(self, item: dict[str, Any], where: str) -> None:
        call_id = _string_field(item, "call_id", where)
        if call_id not in self._calls:
            raise _bad(
                f"No tool call found for function call output with call_id {call_id}.",
                f"{where}.call_id",
            )
        output = item.get("output")
        content: Any
        if isinstance(output, str):
            content = output
        elif isinstance(output, list):
            parts = [_input_part(p, f"{where}.output[{j}]") for j, p in enumerate(output)]
            content = [p for p in parts if p["type"] == "text"]
            self._images += [p for p in parts if p["type"] != "text"]
            if not content:
                content = ""
        elif output is None:
            raise _missing(f"{where}.output")
        else:
            raise _wrong_type(f"{where}.output", "a string or an array of parts", output)
        self._append({"role": "tool", "tool_call_id": call_id, "content": content})
        self.items.append(
            {**item, "id": item_id(item, "fco_"), "status": item.get("status") or "completed"}
        )


def _string_field(holder: Mapping[str, Any], name: str, where: str) -> str:
    value = holder.get(name)
    if isinstance(value, str):
        return value
    if value is None:
        raise _missing(f"{where}.{name}")
    raise _wrong_type(f"{where}.{name}", "a string", value)


def _input_part(part: Any, where: str) -> dict[str, Any]:
    """An ``input_*`` part as a chat content part."""
    if not isinstance(part, dict):
        raise _wrong_type(where, "an object", part)
    kind = part.get("type")
    if kind == "input_text":
        return {"type": "text", "text": _string_field(part, "text", where)}
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str) or not url:
            raise _bad(
                f"'{where}' needs an image_url (an https or data: URL); images by file_id are "
                "not supported by gearshift.",
                f"{where}.image_url",
                "unsupported_value" if part.get("file_id") else "missing_required_parameter",
            )
        given = part.get("detail") or "auto"
        detail = _IMAGE_DETAIL.get(given) if isinstance(given, str) else None
        if detail is None:
            raise _bad(
                f"Invalid value for '{where}.detail': {part.get('detail')!r}; expected low, "
                "high, auto or original.",
                f"{where}.detail",
            )
        return {"type": "image_url", "image_url": {"url": url, "detail": detail}}
    if kind == "input_file":
        fields = {
            k: _string_field(part, k, where)
            for k in ("file_id", "file_data", "filename")
            if part.get(k) is not None
        }
        if "file_id" not in fields and "file_data" not in fields:
            raise _bad(
                f"'{where}' needs file_id or file_data (file_url is not supported by gearshift).",
                where,
                "unsupported_value" if "file_url" in part else "missing_required_parameter",
            )
        return {"type": "file", "file": fields}
    raise _bad(
        f"Invalid value for '{where}.type': {kind!r}; expected input_text, input_image or "
        "input_file.",
        f"{where}.type",
    )


def error_body(error: GearshiftError) -> bytes:
    """The body of an error answered before any Response: OpenAI's ``{"error": {…}}``, the
    same envelope as chat (§6.7)."""
    return error.body()
