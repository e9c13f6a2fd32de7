"""OpenAI Chat Completions → OpenAI's Responses API (``POST /v1/responses``), requests and
whole answers: pure encode/decode, no I/O. ``providers.openai`` dispatches here for models
with ``api = "responses"`` (OpenAI's GPT-6 family takes function tools with reasoning only
there); the URL, headers and error bodies are the chat adapter's.

Request (``docs/wire-formats.md`` §6.2 to 6.4, §6.8): messages become ``input`` items in order:
system, developer and user messages keep their role with ``input_text`` / ``input_image``
(``detail`` defaults to ``auto``) / ``input_file`` parts; an assistant turn becomes its text
(a string message) followed by one ``function_call`` item per tool call (``call_id`` = the
chat id, always plain); a ``tool`` message becomes ``function_call_output``. Function tools
are flattened and ``strict`` is always sent (the chat tool's, default false: Responses would
otherwise default to strict); ``tool_choice`` and ``allowed_tools`` lose the ``function``
nesting; ``response_format`` → ``text.format`` (``json_schema`` flattened), ``verbosity`` →
``text.verbosity``; ``max_completion_tokens`` / ``max_tokens`` → ``max_output_tokens``; the
effort ``reasoning.effort_for`` chooses → ``reasoning.effort`` (none: the model's default);
``user`` → ``safety_identifier`` and ``prompt_cache_key`` (what the deprecated field was
split into), unless the client sent those; ``temperature``, ``top_p``,
``parallel_tool_calls``, ``metadata``, ``service_tier`` as they are; ``store: false`` always
(a proxy keeps nothing upstream); ``stream``.

What Responses cannot carry is refused (``Unsupported``, 400: the attempt loop tries the
next model) where dropping it would change the answer the client gets: ``n`` > 1, ``stop``,
``logprobs``, audio output, ``web_search_options``, the deprecated ``functions``, tools of
another type than ``function``, the deprecated ``function`` role, audio input. Dropped, as
they only tune sampling or transport: ``seed``, ``logit_bias``, ``frequency_penalty``,
``presence_penalty``, ``prediction``, ``stream_options`` (usage always comes with the final
event), and any field this module does not name.

Reasoning across a tool loop: for a reasoning model with tools, ``include:
["reasoning.encrypted_content"]`` is asked, and the reasoning items of an answer ride in the
id of its first tool call (``carry``, key ``o``); they are sent back as ``reasoning`` input
items before that turn's calls to the same upstream model only (any other model gets the
plain id).

Response: ``output_text`` parts → ``content``, ``refusal`` parts → ``refusal``,
``function_call`` items → ``tool_calls``, reasoning items not shown; ``status`` /
``incomplete_details`` → ``finish_reason``; usage as ``openai_responses_stream.usage``; a
``failed`` response is its error's class. The stream decoder is in
``openai_responses_stream``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from gearshift import reasoning
from gearshift.config import Model
from gearshift.errors import BadRequest, ProtocolError, Unsupported
from gearshift.inbound.chat import ChatRequest
from gearshift.providers import Completion, carry, shapes
from gearshift.providers.openai_responses_stream import (
    CARRY_KEY,
    StreamDecoder,
    carried_item,
    error_from,
    finish_reason,
    usage,
    wants_carry,
)

_EMPTY_PARAMETERS = {"type": "object", "properties": {}}
_PASSED = ("parallel_tool_calls", "metadata", "service_tier")

# ---------------------------------------------------------------- request


def encode_body(request: ChatRequest, model: Model) -> bytes:
    """The Responses request body for a chat request (see the module docstring)."""
    body = request.body
    _refuse(body, model.provider.name)
    out: dict[str, Any] = {
        "model": model.upstream_id,
        "input": _input(body.get("messages") or [], model, request.carried),
    }
    tools = _tools(body.get("tools"), model.provider.name)
    if tools:
        out["tools"] = tools
        if body.get("tool_choice") is not None:
            out["tool_choice"] = _tool_choice(body["tool_choice"])
    text: dict[str, Any] = {}
    fmt = _text_format(body.get("response_format"))
    if fmt is not None:
        text["format"] = fmt
    if isinstance(body.get("verbosity"), str):
        text["verbosity"] = body["verbosity"]
    if text:
        out["text"] = text
    limit = shapes.max_output(body)
    if limit is not None:
        # The Responses API refuses fewer than 16 ("integer_below_min_value"); a probe with
        # max_tokens 1, routed here, gets up to 16 rather than a 400 another model never sees.
        out["max_output_tokens"] = max(_MIN_OUTPUT, limit)
    effort = reasoning.effort_for(body, model)
    if effort is not None:
        out["reasoning"] = {"effort": effort}
    for name in ("temperature", "top_p"):
        value = body.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = value
    for name in _PASSED:
        if body.get(name) is not None and (name != "parallel_tool_calls" or tools):
            out[name] = body[name]
    user = body.get("user")
    for name in ("safety_identifier", "prompt_cache_key"):
        value = body.get(name)
        if isinstance(value, str) or isinstance(user, str):
            out[name] = value if isinstance(value, str) else user
    out["store"] = False
    if wants_carry(request, model):
        out["include"] = ["reasoning.encrypted_content"]
    if request.stream:
        out["stream"] = True
    return orjson.dumps(out)


def _unsupported(what: str, param: str, provider: str) -> Unsupported:
    return Unsupported(
        f"{what} cannot be sent to OpenAI's Responses API.",
        provider=provider,
        param=param,
        code="unsupported_parameter",
    )


def _refuse(body: Mapping[str, Any], provider: str) -> None:
    n = body.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and n > 1:
        raise _unsupported(f"n={n} (one answer per call)", "n", provider)
    if shapes.stop_list(body):
        raise _unsupported("Stop sequences", "stop", provider)
    if body.get("logprobs") is True:
        raise _unsupported("logprobs", "logprobs", provider)
    modalities = body.get("modalities")
    if body.get("audio") is not None or (isinstance(modalities, list) and "audio" in modalities):
        raise _unsupported("Audio output", "audio", provider)
    for name in ("web_search_options", "functions"):
        if body.get(name):
            raise _unsupported(f"{name!r}", name, provider)


_MIN_OUTPUT = 16  # the Responses API's least max_output_tokens


def _input(messages: list[Any], model: Model, carried: bool) -> list[dict[str, Any]]:
    budget = carry.Budget() if carried else None  # one for all the ids of the request
    items: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            continue
        role = m.get("role")
        if role in ("system", "developer", "user"):
            parts = _parts(m.get("content"), model.provider.name)
            items.append({"type": "message", "role": role, "content": parts})
        elif role == "assistant":
            items += _assistant(m, i, model, budget)
        elif role == "tool":
            content = m.get("content")
            output = content if isinstance(content, str) else _parts(content, model.provider.name)
            call_id = carry.plain_id(m.get("tool_call_id"))
            items.append({"type": "function_call_output", "call_id": call_id, "output": output})
        else:  # the deprecated "function" role
            raise _unsupported(f"The {role!r} role", "messages", model.provider.name)
    return items


def _parts(content: Any, provider: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "input_text", "text": content}]
    out: list[dict[str, Any]] = []
    for part in content if isinstance(content, list) else ():
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            out.append({"type": "input_text", "text": str(part.get("text") or "")})
        elif kind == "image_url":
            holder = part.get("image_url")
            detail = holder.get("detail") if isinstance(holder, dict) else None
            out.append(
                {
                    "type": "input_image",
                    "image_url": shapes.image_url(part),
                    "detail": detail or "auto",
                }
            )
        elif kind == "file":
            holder = part.get("file")
            fields = holder if isinstance(holder, dict) else {}
            out.append({"type": "input_file", **fields})
        elif kind is not None:
            raise _unsupported(f"Content parts of type {kind!r}", "messages", provider)
    return out


def _assistant(
    m: Mapping[str, Any], i: int, model: Model, budget: carry.Budget | None
) -> list[dict[str, Any]]:
    """An assistant turn: the reasoning it carries for this model, its text, its calls."""
    content = m.get("content")
    if isinstance(content, list):
        content = "".join(
            p["text"]
            for p in content
            if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        )
    restored: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    raw_calls = m.get("tool_calls")
    where = f"messages[{i}].tool_calls"
    if raw_calls is not None and not isinstance(raw_calls, list):
        raise BadRequest(f"'{where}' must be an array.", param=where, code="invalid_type")
    for call in raw_calls or ():
        fn = call.get("function") if isinstance(call, dict) else None
        call_id = call.get("id") if isinstance(call, dict) else None
        if not (
            isinstance(call_id, str) and isinstance(fn, dict) and isinstance(fn.get("name"), str)
        ):
            raise BadRequest(
                f"Each entry of '{where}' needs an id and function.name.",
                param=where,
                code="invalid_value",
            )
        if budget is not None:
            call_id, state = carry.unwrap(call_id, budget)
            if state is not None and state["m"] == model.upstream_id:
                restored += _reasoning_items(state.get(CARRY_KEY))
        arguments = fn.get("arguments")
        if not isinstance(arguments, str):
            arguments = orjson.dumps(arguments if arguments is not None else {}).decode()
        calls.append(
            {
                "type": "function_call",
                "call_id": call_id,
                "name": fn["name"],
                "arguments": arguments,
            }
        )
    text = [{"type": "message", "role": "assistant", "content": content}] if content else []
    return restored + text + calls


def _reasoning_items(kept: Any) -> list[dict[str, Any]]:
    out = []
    for entry in kept if isinstance(kept, list) else ():
        item = carried_item(entry) if isinstance(entry, dict) else None
        if item is not None:
            out.append({"type": "reasoning", "id": item["id"], "summary": [], **item})
    return out


def _tools(tools: Any, provider: str) -> list[dict[str, Any]]:
    if tools is not None and not isinstance(tools, list):
        raise BadRequest("'tools' must be an array.", param="tools", code="invalid_type")
    out: list[dict[str, Any]] = []
    for tool in tools or ():
        kind = tool.get("type", "function") if isinstance(tool, dict) else None
        if kind != "function":
            raise _unsupported(f"Tools of type {kind!r}", "tools", provider)
        fn = tool.get("function")
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise BadRequest(
                "Each tool needs type 'function' and function.name.",
                param="tools",
                code="invalid_value",
            )
        entry: dict[str, Any] = {"type": "function", "name": fn["name"]}
        if isinstance(fn.get("description"), str):
            entry["description"] = fn["description"]
        parameters = fn.get("parameters")
        entry["parameters"] = parameters if isinstance(parameters, dict) else _EMPTY_PARAMETERS
        entry["strict"] = fn.get("strict") is True
        out.append(entry)
    return out


def _named(tool: Any) -> Any:
    """``{"type": "function", "function": {"name"}}`` → ``{"type": "function", "name"}``."""
    if isinstance(tool, dict) and isinstance(tool.get("function"), dict):
        return {"type": "function", "name": tool["function"].get("name")}
    return tool


def _tool_choice(choice: Any) -> Any:
    if not isinstance(choice, dict):
        return choice  # "none" / "auto" / "required"
    if choice.get("type") == "allowed_tools" and isinstance(choice.get("allowed_tools"), dict):
        allowed = choice["allowed_tools"]
        tools = allowed.get("tools")
        return {
            "type": "allowed_tools",
            "mode": allowed.get("mode", "auto"),
            "tools": [_named(t) for t in tools] if isinstance(tools, list) else [],
        }
    return _named(choice)


def _text_format(fmt: Any) -> dict[str, Any] | None:
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind in ("text", "json_object"):
        return {"type": kind}
    if kind != "json_schema":
        return None
    assert isinstance(fmt, dict)
    schema = fmt.get("json_schema")
    flat = {k: v for k, v in schema.items() if v is not None} if isinstance(schema, dict) else {}
    return {"type": "json_schema", **flat}


# ---------------------------------------------------------------- response


def decode_response(body: bytes, request: ChatRequest, model: Model) -> Completion:
    """A Responses object → a ``chat.completion`` (see the module docstring)."""
    provider = model.provider.name
    doc = shapes.json_object(body, provider)
    if doc.get("status") == "failed" or isinstance(doc.get("error"), dict):
        raise error_from(doc.get("error"), provider)
    output = doc.get("output")
    if doc.get("object") != "response" or not isinstance(output, list):
        raise ProtocolError(
            f"Provider {provider!r} sent a response without output.", provider=provider
        )
    texts: list[str] = []
    refusals: list[str] = []
    calls: list[dict[str, Any]] = []
    kept: list[dict[str, str]] = []
    for item in output:
        kind = item.get("type") if isinstance(item, dict) else None
        if kind == "message":
            for part in item.get("content") or ():
                if not isinstance(part, dict):
                    continue
                if part.get("type") == "output_text" and isinstance(part.get("text"), str):
                    texts.append(part["text"])
                elif part.get("type") == "refusal" and isinstance(part.get("refusal"), str):
                    refusals.append(part["refusal"])
        elif kind == "function_call":
            call_id = str(item.get("call_id") or item.get("id"))
            if kept and not calls:  # the reasoning before the first call rides on its id
                call_id = carry.wrap(call_id, model.upstream_id, {CARRY_KEY: kept})
            arguments = item.get("arguments")
            calls.append(
                shapes.tool_call(
                    call_id,
                    str(item.get("name")),
                    arguments if isinstance(arguments, str) else "{}",
                )
            )
        elif kind == "reasoning" and wants_carry(request, model) and not calls:
            entry = carried_item(item)
            if entry is not None:
                kept.append(entry)
    message = shapes.message("".join(texts), calls)
    if refusals:
        message["refusal"] = "".join(refusals)
        if not texts:
            message["content"] = None
    finish = finish_reason(doc.get("status"), doc.get("incomplete_details"), bool(calls))
    raw_usage = doc.get("usage")
    used = usage(raw_usage) if isinstance(raw_usage, dict) else None
    rid, name = doc.get("id"), doc.get("model")
    answer = shapes.completion(
        rid if isinstance(rid, str) else "resp",
        name if isinstance(name, str) else model.upstream_id,
        [(message, finish)],
        used,
    )
    return Completion(body=answer, usage=used)


def stream_decoder(request: ChatRequest, model: Model) -> StreamDecoder:
    return StreamDecoder(request, model)
