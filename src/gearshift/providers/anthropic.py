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
Anthropic equivalent): ``seed``, penalties, ``logit_bias``, ``logprobs``, and
``reasoning_effort`` for a model without a reasoning spec.

Reasoning models (a ``reasoning`` spec; ``docs/wire-formats.md`` §7.2, §7.4): the effort
``reasoning.effort_for`` chose is sent per ``reasoning.control``. ``effort``: ``none`` →
``thinking: {"type": "disabled"}``; any other → ``output_config.effort`` (``minimal`` → ``low``)
with ``thinking: {"type": "adaptive", "display": "omitted"}`` (an OpenAI client never sees
thinking: only its signature is needed). ``budget`` (manual thinking, Haiku 4.5 and older):
``thinking: {"type": "enabled", "budget_tokens": ANTHROPIC_BUDGET[effort]}``, ``max_tokens``
raised to the budget + 1,024 within ``max_output`` (the budget lowered when that does not
fit; under 1,024 left: no thinking), ``temperature`` not sent and ``top_p`` only within
0.95..1; ``none``: no thinking. No effort chosen: nothing is sent, the model's default runs
(adaptive thinking with display omitted on the current models; a ``thinking`` sent anyway
would turn thinking on where a model's default is off, and a changed thinking setting
invalidates cached message prefixes). With thinking on (adaptive: unless ``disabled`` was
sent; manual: when ``enabled`` was), a forced tool choice (``required``, a named tool) goes as
``auto``: Anthropic refuses forced tool use with thinking (400), and nothing is added to the
system prompt for it, as a changed prefix would invalidate the thinking signatures of the
tool loop. ``json_schema`` goes as native structured output (``output_config.format``), with
or without tools, never as the forced tool.

Thinking across a tool loop (``providers.carry``): each tool call of an answer goes to the
client with its id carrying the ``thinking`` / ``redacted_thinking`` blocks that came before
its ``tool_use`` block since the previous one (text blocks are in ``content``), as received.
When a request comes back with such ids (``ChatRequest.carried``), every id is unwrapped,
and the blocks are put back before their ``tool_use`` only for the model that made them
(``m`` is the target's upstream id; a signature is not valid for another model): a turn's
first blocks open the assistant message, before its text, since Anthropic wants a thinking
turn to start with its thinking block ("a final assistant message must start with a
thinking block"), then the text, then each tool call preceded by its own blocks.

Response and stream (Anthropic → OpenAI): text blocks → ``content``, ``tool_use`` →
``tool_calls`` (arguments as a JSON string; in streams the OpenAI ``index`` counts tool
blocks only), ``stop_reason`` → ``finish_reason``, usage with cache reads and writes counted
in ``prompt_tokens`` (``cached_tokens`` = reads; ``cache_write_tokens`` = writes). Thinking
is never shown: its blocks ride in the next tool call's id (above), else are dropped. In
streams nothing is written before the first content (the role chunk
goes with it; pings before it are dropped), so an error right after ``message_start`` still
falls back; a tool block that streamed no argument ends with ``{}``; an event type added
later is ignored. Errors: Anthropic's types to OpenAI-shaped errors, classified by status and
type, never by message text; 529 → 503, retryable; a billing error (402 ``billing_error``) is
the provider's failure (503, retryable: another provider may serve), not the client's. The
stream decoder (on typed events) and what whole answers share with it live in
``anthropic_stream``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any
from urllib.parse import quote

import orjson

from gearshift import reasoning
from gearshift.config import AnthropicProviderSpec, Model, Provider
from gearshift.errors import ProtocolError, Unsupported, UpstreamError
from gearshift.inbound.chat import ChatRequest
from gearshift.providers import Completion, Outbound, cached, carry, shapes
from gearshift.providers.anthropic_stream import (
    FINISH,
    JSON_TOOL,
    THINKING,
    StreamDecoder,
    _error_from,
    _usage,
    _wants_json_tool,
    carried_id,
)

# gearshift's effort → Anthropic's output_config.effort (low | medium | high | xhigh | max).
_EFFORT = {"minimal": "low"}
_MIN_BUDGET = 1024  # budget_tokens: at least this, and under max_tokens by at least this
_FORCED = ("any", "tool")

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
    thinking: dict[tuple[int, int], list[Any]] = {}
    if request.carried:
        messages, thinking = _uncarried(messages, model.upstream_id)
    out: dict[str, Any] = {
        "model": model.upstream_id,
        "max_tokens": min(shapes.max_output(body) or model.spec.max_output, model.spec.max_output),
    }
    system = shapes.system_text(messages)
    tools = _tools(body.get("tools"))
    forced_json = False
    fmt = body.get("response_format")
    fmt_type = fmt.get("type") if isinstance(fmt, dict) else None
    schema = fmt.get("json_schema") if isinstance(fmt, dict) else None
    schema = schema if isinstance(schema, dict) else {}
    if fmt_type == "json_schema" and model.spec.reasoning is not None:
        json_format = {"type": "json_schema", "schema": _object_schema(schema.get("schema"))}
        out["output_config"] = {"format": json_format}
    elif fmt_type == "json_schema" and not tools:
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
    out["messages"] = _messages(messages, thinking)
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
    if model.spec.reasoning is not None:
        _reasoning(out, body, model)
    if isinstance(body.get("user"), str):
        out["metadata"] = {"user_id": body["user"]}
    if request.stream:
        out["stream"] = True
    provider = model.provider
    return Outbound(
        url=cached(provider, "anthropic.url", _url),
        headers=_with_beta(cached(provider, "anthropic.headers", _headers), request.hints),
        body=orjson.dumps(out),
    )


def _reasoning(out: dict[str, Any], body: Mapping[str, Any], model: Model) -> None:
    """The effort of a reasoning model, and what thinking on rules out (module docstring)."""
    effort = reasoning.effort_for(body, model)
    if reasoning.control(model) == "budget":
        thinks = effort not in (None, "none") and _budget(out, str(effort), model)
    elif effort == "none":
        out["thinking"] = {"type": "disabled"}
        thinks = False
    else:
        thinks = True  # adaptive thinking: the current models' default, or asked for below
        if effort is not None:
            out["thinking"] = {"type": "adaptive", "display": "omitted"}
            config = out.setdefault("output_config", {})
            config["effort"] = _EFFORT.get(effort, effort)
    choice = out.get("tool_choice")
    if thinks and choice is not None and choice["type"] in _FORCED:
        out["tool_choice"] = {k: v for k, v in choice.items() if k != "name"} | {"type": "auto"}


def _budget(out: dict[str, Any], effort: str, model: Model) -> bool:
    """Manual thinking at ``ANTHROPIC_BUDGET[effort]`` tokens, under a ``max_tokens`` raised
    to fit within the model's ``max_output``; False when no budget of 1,024 fits."""
    budget = reasoning.ANTHROPIC_BUDGET.get(effort)
    if budget is None:
        return False
    cap = model.spec.max_output
    limit = max(out["max_tokens"], min(budget + _MIN_BUDGET, cap))
    budget = min(budget, limit - _MIN_BUDGET)
    if budget < _MIN_BUDGET:
        return False
    out["max_tokens"] = limit
    out["thinking"] = {"type": "enabled", "budget_tokens": budget}
    # With thinking on, temperature and top_k may not be set, top_p only within 0.95..1.
    out.pop("temperature", None)
    top_p = out.get("top_p")
    if top_p is not None and not 0.95 <= top_p <= 1:
        del out["top_p"]
    return True


def _uncarried(
    messages: list[Any], upstream_id: str
) -> tuple[list[Any], dict[tuple[int, int], list[Any]]]:
    """``messages`` with every tool-call id unwrapped (new dicts only where one changes), and
    the thinking blocks each call carries for ``upstream_id`` by (message, call) position;
    state made for another model is dropped."""
    out: list[Any] = []
    blocks: dict[tuple[int, int], list[Any]] = {}
    budget = carry.Budget()  # one for all the ids of the request
    for i, m in enumerate(messages):
        if isinstance(m, dict):
            calls = m.get("tool_calls")
            if isinstance(calls, list) and any(_is_carried(c) for c in calls):
                plain = []
                for j, call in enumerate(calls):
                    if _is_carried(call):
                        call_id, state = carry.unwrap(call["id"], budget)
                        kept = _thinking_of(state, upstream_id)
                        if kept:
                            blocks[(i, j)] = kept
                        call = {**call, "id": call_id}
                    plain.append(call)
                m = {**m, "tool_calls": plain}
            ref = m.get("tool_call_id")
            if isinstance(ref, str) and carry.MARK in ref:
                m = {**m, "tool_call_id": carry.plain_id(ref)}
        out.append(m)
    return out, blocks


def _is_carried(call: Any) -> bool:
    return isinstance(call, dict) and isinstance(call.get("id"), str) and carry.MARK in call["id"]


def _thinking_of(state: Mapping[str, Any] | None, upstream_id: str) -> list[Any]:
    """The thinking blocks of a carried state when made by ``upstream_id``, or sent back by a
    Messages-API client (``m`` empty: the client saw the blocks and returns them; the model
    is the one sticky routing keeps the conversation on). The id is the client's: anything
    but thinking blocks is ignored."""
    if (
        state is None
        or state.get("m") not in (upstream_id, "")
        or not isinstance(state.get("a"), list)
    ):
        return []
    return [b for b in state["a"] if isinstance(b, dict) and b.get("type") in THINKING]


def _url(provider: Provider) -> str:
    return provider.base_url + "/messages"


def _with_beta(headers: Mapping[str, str], hints: Mapping[str, Any]) -> Mapping[str, str]:
    """The provider's headers, plus the ``anthropic-beta`` a Messages-API client sent
    (``hints["anthropic_beta"]``, set by the inbound Messages route): betas go to Anthropic
    only; other providers never see them."""
    beta = hints.get("anthropic_beta")
    if not isinstance(beta, str) or not beta or not beta.isprintable() or len(beta) > 1024:
        return headers
    return {**headers, "anthropic-beta": beta}


def models_request(provider: Provider, page: str | None) -> Outbound:
    """``GET /v1/models``, a page of up to 1,000 (``after_id``: the last id of the previous)."""
    url = provider.base_url + "/models?limit=1000"
    if page:
        url += "&after_id=" + quote(page, safe="")
    return Outbound(url=url, headers=_headers(provider), body=b"")


def decode_models(body: bytes) -> tuple[list[str], str | None]:
    """``{"data": [{"type": "model", "id": ...}], "has_more": ..., "last_id": ...}``."""
    doc, ids = shapes.model_list(body, "data", "id")
    last = doc.get("last_id")
    return ids, last if doc.get("has_more") is True and isinstance(last, str) else None


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


def _messages(
    messages: list[Any], thinking: Mapping[tuple[int, int], list[Any]]
) -> list[dict[str, Any]]:
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
            lead: list[Any] = []  # the first kept call's thinking: it opens the turn
            first = True
            blocks: list[dict[str, Any]] = [
                {"type": "text", "text": t} for t in shapes.text_parts(m.get("content"))
            ]
            for j, call in enumerate(m.get("tool_calls") or ()):
                if pairs.call_kept(i, j):
                    fn = call["function"]
                    carried = thinking.get((i, j), ())
                    if first:
                        lead, first = list(carried), False
                    else:
                        blocks.extend(carried)
                    blocks.append(
                        {
                            "type": "tool_use",
                            "id": ids[(i, j)],
                            "name": fn["name"],
                            "input": shapes.arguments_object(fn.get("arguments")),
                        }
                    )
            turns.append(("assistant", [*lead, *blocks]))
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
    json_tool = _wants_json_tool(request, model)
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    thinking: list[dict[str, Any]] = []  # since the last tool_use, as received
    for block in content:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind in THINKING:
            thinking.append(block)
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            if json_tool and block.get("name") == JSON_TOOL:
                texts.append(arguments)
            else:
                call_id = carried_id(str(block.get("id")), model.upstream_id, thinking)
                calls.append(shapes.tool_call(call_id, str(block.get("name")), arguments))
            thinking = []
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


# ---------------------------------------------------------------- stream and errors


def stream_decoder(request: ChatRequest, model: Model) -> StreamDecoder:
    return StreamDecoder(request, model)


def decode_error(
    status: int, headers: Mapping[str, str], body: bytes, provider: Provider
) -> UpstreamError:
    return _error_from(status, headers, shapes.json_or_none(body), provider.name)
