"""The mock's OpenAI Responses API: ``POST /v1/responses``, whole and streamed.

Validated as OpenAI does where a translating client can go wrong: unknown parameters (chat's
``messages``, ``max_tokens``, ``stop`` …) are a 400 ``unknown_parameter``; input items need
their own fields (a ``function_call_output`` answers an earlier ``function_call``'s
``call_id``; a ``reasoning`` item sent back with ``store: false`` needs its
``encrypted_content``); function tools are flat (``name`` at the top); assistant message
parts are ``output_text`` / ``refusal``, others ``input_*``; ``max_output_tokens`` is at
least 16.

The answer is the shared mock answer (``flow._outcome``): text, or a call of the named (else
first) function when tools are given and the input does not end with tool results. A
reasoning effort other than ``none`` (sent, or the ``medium`` default of ``gpt-6*`` models)
adds a ``reasoning`` item first (with ``encrypted_content`` when ``include`` asks for it) and
reasoning tokens to ``output_tokens`` (``output_tokens_details.reasoning_tokens``). Streams
are the full event sequence (``event:`` lines, ``sequence_number`` from 0, ending with
``response.completed`` or ``response.incomplete``). The fault behaviours are the chat
mock's: the ``http-*`` errors and ``withdrawn`` in OpenAI's error shape; ``error-event``
ends a stream with ``response.failed`` (a whole answer: a 200 ``failed`` response),
``error-first`` is a stream whose only event is an ``error``.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import orjson
from aiohttp import web

from gearshift.mock.flow import (
    _INVALID,
    _TOOL_ARGUMENTS,
    BEHAVIOURS,
    MOCK_STATE,
    MockSettings,
    _Api,
    _chunks,
    _is_int,
    _limit,
    _outcome,
    _Problem,
    _prompt_tokens,
    _question,
    _slices,
    _Stream,
)
from gearshift.mock.openai import _auth_error, _err, _OpenAI

_PARAMETERS = frozenset(
    {
        "background",
        "context_management",
        "conversation",
        "include",
        "input",
        "instructions",
        "max_output_tokens",
        "max_tool_calls",
        "metadata",
        "model",
        "parallel_tool_calls",
        "previous_response_id",
        "prompt",
        "prompt_cache_key",
        "prompt_cache_retention",
        "reasoning",
        "safety_identifier",
        "service_tier",
        "store",
        "stream",
        "stream_options",
        "temperature",
        "text",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "truncation",
        "user",
    }
)
_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
REASONING_TOKENS = {"minimal": 4, "low": 8, "medium": 16, "high": 32, "xhigh": 64, "max": 128}
"""Reasoning tokens the mock reports per effort."""
_INPUT_PARTS = frozenset({"input_text", "input_image", "input_file"})
_OUTPUT_PARTS = frozenset({"output_text", "refusal"})
_SEQ = b'"sequence_number":-1'  # replaced by each event's number as the stream is framed
_FAILED = {"code": "server_error", "message": "upstream exploded"}


class _Invalid(Exception):
    def __init__(self, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.error = _err(message, _INVALID, param, code)


def _items(body: dict[str, Any]) -> list[Any]:
    value = body.get("input")
    return [{"role": "user", "content": value}] if isinstance(value, str) else list(value or ())


def _check_items(body: dict[str, Any]) -> None:
    value = body.get("input")
    if not isinstance(value, str | list):
        raise _Invalid(
            "Missing required parameter: 'input'.", "input", "missing_required_parameter"
        )
    calls: set[str] = set()
    stored = body.get("store") is not False
    for i, item in enumerate(_items(body)):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise _Invalid(
                f"Invalid type for '{where}': expected an object.", where, "invalid_type"
            )
        kind = item.get("type", "message")
        if kind == "message":
            _check_message(item, where)
        elif kind == "function_call":
            for name in ("call_id", "name", "arguments"):
                if not isinstance(item.get(name), str):
                    raise _Invalid(
                        f"Missing required parameter: '{where}.{name}'.",
                        f"{where}.{name}",
                        "missing_required_parameter",
                    )
            calls.add(item["call_id"])
        elif kind == "function_call_output":
            if item.get("call_id") not in calls:
                raise _Invalid(
                    f"No tool call found for function call output with call_id "
                    f"{item.get('call_id')}.",
                    "input",
                )
        elif kind == "reasoning":
            if not isinstance(item.get("id"), str) or not isinstance(item.get("summary"), list):
                raise _Invalid(f"Missing required parameter: '{where}.summary'.", where)
            if not stored and not item.get("encrypted_content"):
                raise _Invalid(
                    f"Item with id '{item['id']}' not found. Items are not persisted when "
                    "`store` is set to false.",
                    where,
                )
        else:
            raise _Invalid(f"Invalid value: '{kind}'.", f"{where}.type", "invalid_value")


def _check_message(item: dict[str, Any], where: str) -> None:
    role = item.get("role")
    if role not in ("user", "assistant", "system", "developer"):
        raise _Invalid(f"Invalid value: '{role}'.", f"{where}.role", "invalid_value")
    content = item.get("content")
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise _Invalid(f"Invalid type for '{where}.content'.", f"{where}.content", "invalid_type")
    allowed = _OUTPUT_PARTS if role == "assistant" else _INPUT_PARTS
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in allowed:
            names = " and ".join(f"'{k}'" for k in sorted(allowed))
            raise _Invalid(
                f"Invalid value: '{kind}'. Supported values are: {names}.",
                f"{where}.content[{j}].type",
                "invalid_value",
            )


def _check_tools(body: dict[str, Any]) -> None:
    tools = body.get("tools", [])
    if not isinstance(tools, list):
        raise _Invalid("Invalid type for 'tools': expected an array.", "tools", "invalid_type")
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            continue  # built-in tools: not the mock's business
        if "function" in tool:
            raise _Invalid(
                f"Unknown parameter: 'tools[{i}].function'.",
                f"tools[{i}].function",
                "unknown_parameter",
            )
        if not isinstance(tool.get("name"), str):
            raise _Invalid(
                f"Missing required parameter: 'tools[{i}].name'.",
                f"tools[{i}].name",
                "missing_required_parameter",
            )


def _validation_error(body: Any) -> Any | None:
    """OpenAI's 400 error body for a malformed Responses request, or None."""
    if not isinstance(body, dict):
        return _err("We could not parse the JSON body of your request.", _INVALID)
    if not isinstance(body.get("model"), str):
        return _err("Missing required parameter: 'model'.", _INVALID, "model")
    unknown = sorted(set(body) - _PARAMETERS)
    if unknown:
        return _err(
            f"Unknown parameter: '{unknown[0]}'.", _INVALID, unknown[0], "unknown_parameter"
        )
    limit = body.get("max_output_tokens")
    if limit is not None and (not _is_int(limit) or limit < 16):
        msg = (
            "Invalid 'max_output_tokens': integer below minimum value. Expected a value "
            f">= 16, but got {limit} instead."
        )
        return _err(msg, _INVALID, "max_output_tokens", "integer_below_min_value")
    effort = _effort(body)
    if effort is not None and effort not in _EFFORTS:
        msg = f"Invalid value: '{effort}'. Supported values are: {', '.join(_EFFORTS)}."
        return _err(msg, _INVALID, "reasoning.effort", "invalid_value")
    try:
        _check_items(body)
        _check_tools(body)
    except _Invalid as exc:
        return exc.error
    return None


def _effort(body: dict[str, Any]) -> Any:
    reasoning = body.get("reasoning")
    effort = reasoning.get("effort") if isinstance(reasoning, dict) else None
    if effort is None and str(body.get("model")).startswith("gpt-6"):
        return "medium"  # the GPT-6 family's default effort
    return effort


def _tool_name(body: dict[str, Any], items: list[Any]) -> str | None:
    """The function to call (named by ``tool_choice``, else the first), or None."""
    tools, choice = body.get("tools"), body.get("tool_choice")
    functions = [t for t in tools or () if isinstance(t, dict) and t.get("type") == "function"]
    if not functions or choice == "none":
        return None
    if items and items[-1].get("type") == "function_call_output":
        return None  # answer the tool results, so a tool round trip ends
    if isinstance(choice, dict) and isinstance(choice.get("name"), str):
        return str(choice["name"])
    name = functions[0].get("name")
    return name if isinstance(name, str) else "unnamed_tool"


def _reply(body: dict[str, Any], seq: int) -> dict[str, Any]:
    """The whole response object (as ``response.completed`` carries it)."""
    model, items = body["model"], _items(body)
    messages = [i for i in items if i.get("type", "message") == "message"]
    prompt = _prompt_tokens(m.get("content") for m in messages)
    turns = ((m.get("role"), m.get("content")) for m in messages)
    out = _outcome(
        model,
        _question(turns),
        _limit(body.get("max_output_tokens")),
        _tool_name(body, items),
        prompt,
    )
    reasoning_tokens = REASONING_TOKENS.get(str(_effort(body)), 0)
    output: list[dict[str, Any]] = []
    if reasoning_tokens:
        reasoning: dict[str, Any] = {"id": f"rs_mock{seq}", "type": "reasoning", "summary": []}
        if "reasoning.encrypted_content" in (body.get("include") or ()):
            reasoning["encrypted_content"] = f"gAAAAmock{seq}"
        output.append(reasoning)
    status = "incomplete" if out.truncated else "completed"
    if out.tool is not None:
        call: dict[str, Any] = {"id": f"fc_mock{seq}", "type": "function_call"}
        call["status"] = "completed"
        call |= {"arguments": _TOOL_ARGUMENTS, "call_id": f"call_mock{seq}", "name": out.tool}
        output.append(call)
    else:
        text = {"type": "output_text", "annotations": [], "logprobs": [], "text": out.text or ""}
        message: dict[str, Any] = {"id": f"msg_mock{seq}", "type": "message", "status": status}
        message |= {"content": [text], "role": "assistant"}
        output.append(message)
    now = int(time.time())
    conf = body.get("reasoning")
    reasoning_conf: dict[str, Any] = conf if isinstance(conf, dict) else {}
    response = {
        "id": f"resp_mock{seq}",
        "object": "response",
        "created_at": now,
        "status": status,
        "completed_at": None if out.truncated else now,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if out.truncated else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": model,
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "reasoning": {"effort": _effort(body), "summary": reasoning_conf.get("summary")},
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools", []),
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation", "disabled"),
        "usage": {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": out.completion + reasoning_tokens,
            "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
            "total_tokens": prompt + out.completion + reasoning_tokens,
        },
        "metadata": body.get("metadata") or {},
    }
    return response


def _event(kind: str, **fields: Any) -> bytes:
    data = orjson.dumps({"type": kind, "sequence_number": -1, **fields})
    return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"


def _numbered(items: list[bytes], whole: bool) -> list[bytes]:
    """The events as sent: ``sequence_number`` counts up from 0 over what is sent."""
    return [item.replace(_SEQ, b'"sequence_number":%d' % i, 1) for i, item in enumerate(items)]


def _item_events(response: dict[str, Any], words: int) -> list[bytes]:
    """The output items' events, in order (``output_index`` as in the final response)."""
    events: list[bytes] = []
    for index, item in enumerate(response["output"]):
        if item["type"] == "reasoning":
            opened = {k: v for k, v in item.items() if k != "encrypted_content"}
            events.append(_event("response.output_item.added", output_index=index, item=opened))
        elif item["type"] == "function_call":
            opened = {**item, "arguments": "", "status": "in_progress"}
            events.append(_event("response.output_item.added", output_index=index, item=opened))
            for piece in _slices(item["arguments"], 5):
                events.append(
                    _event(
                        "response.function_call_arguments.delta",
                        item_id=item["id"],
                        output_index=index,
                        delta=piece,
                    )
                )
            events.append(
                _event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    name=item["name"],
                    arguments=item["arguments"],
                )
            )
        else:
            events += _message_events(item, index, words)
        events.append(_event("response.output_item.done", output_index=index, item=item))
    return events


def _message_events(item: dict[str, Any], index: int, words: int) -> list[bytes]:
    part = item["content"][0]
    at = {"item_id": item["id"], "output_index": index}
    opened = {**item, "status": "in_progress", "content": []}
    empty = {**part, "text": ""}
    return [
        _event("response.output_item.added", output_index=index, item=opened),
        _event("response.content_part.added", **at, content_index=0, part=empty),
        *(
            _event("response.output_text.delta", **at, content_index=0, delta=d, logprobs=[])
            for d in _chunks(part["text"], words)
        ),
        _event("response.output_text.done", **at, content_index=0, text=part["text"], logprobs=[]),
        _event("response.content_part.done", **at, content_index=0, part=part),
    ]


_FAILED_RESPONSE = {
    "id": "resp_mockfailed",
    "object": "response",
    "created_at": 1765000000,
    "status": "failed",
    "error": _FAILED,
    "incomplete_details": None,
    "model": "mock",
    "output": [],
    "parallel_tool_calls": True,
    "tool_choice": "auto",
    "tools": [],
    "usage": None,
}


class _Responses(_Api):
    name = "openai-responses"
    id_header = "x-request-id"
    garbage_body = b'{"id": "resp_x", "object": "response", "output": ['
    error_body: ClassVar[Any] = _FAILED_RESPONSE

    def check(
        self, request: web.Request, settings: MockSettings, body: Any, seq: int
    ) -> dict[str, Any] | _Problem:
        problem = _auth_error(request, settings)
        if problem is not None:
            return _Problem(401, problem)
        problem = _validation_error(body)
        if problem is not None:
            return _Problem(400, problem)
        return dict(body)

    def model(self, request: web.Request, body: dict[str, Any]) -> str:
        return str(body["model"])

    def failure(self, behaviour: str, seq: int) -> _Problem | None:
        return _OpenAI().failure(behaviour, seq)  # the same errors, in the same shape

    def streaming(self, request: web.Request, body: dict[str, Any]) -> bool:
        return body.get("stream") is True

    def complete(self, request: web.Request, body: dict[str, Any], model: str, seq: int) -> Any:
        return _reply(body, seq)

    def stream(
        self, request: web.Request, body: dict[str, Any], model: str, seq: int, words: int
    ) -> _Stream:
        final = _reply(body, seq)
        started = {**final, "status": "in_progress", "completed_at": None, "output": []}
        started |= {"incomplete_details": None, "usage": None}
        events = [
            _event("response.created", response=started),
            _event("response.in_progress", response=started),
            *_item_events(final, words),
        ]
        terminal = (
            "response.incomplete" if final["status"] == "incomplete" else "response.completed"
        )
        events.append(_event(terminal, response=final))
        # As the chat mock splits its stream: the deltas are the content (a cut or an error
        # comes after some of them), what precedes them the head, what follows the tail.
        deltas = [i for i, e in enumerate(events) if e.split(b"\n", 1)[0].endswith(b".delta")]
        first = deltas[0] if deltas else len(events) - 1
        last = deltas[-1] + 1 if deltas else first
        settings = request.app[MOCK_STATE].settings
        behaviour = settings.fail or next((b for b in BEHAVIOURS if b in model), None)
        if behaviour == "error-first":
            flat = {"code": "server_error", "message": _FAILED["message"], "param": None}
            error = _event("error", **flat, error={"type": "server_error", **flat})
        else:
            failed = {**started, "status": "failed", "error": _FAILED}
            error = _event("response.failed", response=failed)
        garbage = b"event: response.output_text.delta\ndata: {not json\n\n"
        return _Stream(
            events[:first],
            events[first:last],
            events[last:],
            error,
            garbage,
            frame=_numbered,
        )
