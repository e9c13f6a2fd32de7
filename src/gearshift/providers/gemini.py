"""Google Gemini (generativelanguage v1beta) ⇄ OpenAI Chat Completions: pure encode/decode.

Request (OpenAI → Gemini): system and developer messages → ``systemInstruction``; roles
user/assistant → ``user``/``model``, neighbours of one role merged (Gemini wants them to
alternate); assistant ``tool_calls`` → ``functionCall`` parts; ``tool`` messages →
``functionResponse`` parts in a user turn, in the order of their calls, the function name
recovered from the assistant turn that made the call, the result as ``response`` (a JSON object
as it is, anything else as ``{"result": text}``); tool calls and results without their partner
are dropped as whole pairs; a conversation that is empty or opens with a model turn is opened
with a user turn holding ``"."`` (Gemini wants the user first); data-URL images →
``inlineData``; a web image URL is ``Unsupported`` (generateContent reads ``fileData`` only
from Google's file store), so the attempt loop moves to another model. ``generationConfig``
takes max tokens, temperature, top_p, stop (≤ 5), ``n`` (``candidateCount``), seed and JSON
mode (``responseMimeType``, and ``responseSchema`` for ``json_schema``; beside tools an
instruction instead, as Gemini refuses the pair); penalties are dropped (several models refuse
them, even at 0); a model with a reasoning spec gets ``thinkingConfig`` (``_thinking``), a
model without one never (the client's ``reasoning_effort`` is dropped). A conversation that
ends on the model's turn gets a "Continue." user turn.
Schemas are cut to the OpenAPI subset Gemini accepts (local ``$ref``s inlined, type lists →
``nullable``; ``$schema``, ``additionalProperties``, ``default``, ``strict`` … removed;
property names are kept).

Thought signatures (Gemini 3 and later refuse a tool loop whose calls come back without
them) travel in the tool-call ids handed to the client (``providers.carry``): a signed
``functionCall`` → an id carrying ``{"g": signature}`` for this upstream model; ids the client
sends back are unwrapped (when ``ChatRequest.carried``), the signature restored on its call for
the model that made it, and the first call of an assistant turn with none valid for a
thinking target gets Google's placeholder (``SKIP_SIGNATURE``).

Response and stream (Gemini → OpenAI): text parts → ``content`` (thought parts dropped), each
``functionCall`` → a whole tool call with an id of our own when Gemini gives none;
``finish_reason`` is ``tool_calls`` whenever a call appeared (Gemini says STOP); usage:
``completion_tokens`` = candidates + thoughts (``reasoning_tokens`` = thoughts),
``prompt_tokens`` = prompt + tool-use prompt, ``cached_tokens`` = cached content. A Gemini
stream simply ends: the usage chunk and ``[DONE]`` are written at the end of the body once
every candidate has a finish reason. Errors: Google's statuses to OpenAI-shaped errors; a bad
key (HTTP 400, a reason ``API_KEY_*``) reaches the client as 401; ``FAILED_PRECONDITION``
(region, billing) is the provider's failure, 503 and retryable; ``RetryInfo.retryDelay``
becomes the retry-after. Answers are read as typed Structs (a field used here of the wrong
type is the provider's protocol failure); they, the stream decoder and the error mapping live
in ``gemini_stream``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any
from urllib.parse import quote

import msgspec
import orjson

from gearshift import reasoning
from gearshift.config import EFFORT_RANK, Model, Provider
from gearshift.errors import ProtocolError, Unsupported, UpstreamError
from gearshift.inbound.chat import ChatRequest
from gearshift.providers import Completion, Outbound, cached, carry, gemini_stream, shapes
from gearshift.providers.gemini_schema import SchemaBudget
from gearshift.providers.gemini_schema import sanitize_schema as sanitize_schema

# ---------------------------------------------------------------- request


def encode_request(request: ChatRequest, model: Model) -> Outbound:
    body = request.body
    messages = body.get("messages") or []
    signatures: dict[tuple[int, int], str] = {}
    if request.carried:
        signatures = _signatures(messages, model.upstream_id)
        messages = carry.plain_messages(messages)
    out: dict[str, Any] = {}
    system = shapes.system_text(messages)
    if _json_mode(body) and body.get("tools"):
        system = (system + "\n\n" + shapes.JSON_INSTRUCTION).strip()
    if system:
        out["systemInstruction"] = {"parts": [{"text": system}]}
    # A thinking model refuses a call without a signature (below): placeholders for those.
    out["contents"] = _contents(messages, signatures, model.spec.reasoning is not None)
    budget = SchemaBudget()  # what inlining may add, for the whole request
    tools = _tools(body.get("tools"), budget)
    if tools:
        out["tools"] = [{"functionDeclarations": tools}]
        config = _tool_config(body.get("tool_choice"))
        if config is not None:
            out["toolConfig"] = {"functionCallingConfig": config}
    generation = _generation(body, model.spec.max_output, budget)
    thinking = _thinking(body, model)
    if thinking is not None:
        generation["thinkingConfig"] = thinking
    if generation:
        out["generationConfig"] = generation
    method = ":streamGenerateContent?alt=sse" if request.stream else ":generateContent"
    # The URL names the model: only its base is the provider's (one f-string, nothing to keep).
    provider = model.provider
    url = f"{provider.base_url}/models/{model.upstream_id}{method}"
    headers = cached(provider, "gemini.headers", _headers)
    return Outbound(url=url, headers=headers, body=orjson.dumps(out))


def models_request(provider: Provider, page: str | None) -> Outbound:
    """``GET /v1beta/models``, a page of up to 1,000 (``pageToken``: the previous page's
    ``nextPageToken``)."""
    url = provider.base_url + "/models?pageSize=1000"
    if page:
        url += "&pageToken=" + quote(page, safe="")
    return Outbound(url=url, headers=_headers(provider), body=b"")


def decode_models(body: bytes) -> tuple[list[str], str | None]:
    """``{"models": [{"name": "models/gemini-..."}], "nextPageToken": ...}`` → the ids
    (without ``models/``)."""
    doc, names = shapes.model_list(body, "models", "name")
    ids = [name.removeprefix("models/") for name in names]
    token = doc.get("nextPageToken")
    return ids, token if isinstance(token, str) and token else None


def _headers(provider: Provider) -> Mapping[str, str]:
    headers = {"content-type": "application/json", "accept": "application/json"}
    headers.update(provider.headers)
    if provider.api_key is not None:
        headers["x-goog-api-key"] = provider.api_key.reveal()
    return MappingProxyType(headers)


def _generation(body: Mapping[str, Any], most: int, budget: SchemaBudget) -> dict[str, Any]:
    config: dict[str, Any] = {}
    limit = shapes.max_output(body)
    if limit is not None:
        config["maxOutputTokens"] = min(limit, most)
    # Penalties are not sent: several Gemini models refuse them outright ("Penalty is not
    # enabled"), even at 0, which many clients send by default.
    for ours, theirs in (("temperature", "temperature"), ("top_p", "topP"), ("seed", "seed")):
        value = body.get(ours)
        if isinstance(value, int | float) and not isinstance(value, bool):
            config[theirs] = value
    stop = shapes.stop_list(body)
    if stop:
        config["stopSequences"] = stop[:5]
    n = body.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and n > 1:
        config["candidateCount"] = n
    fmt = body.get("response_format")
    # Gemini refuses a JSON response type together with function calling: with tools the
    # JSON request becomes an instruction (see ``encode_request``).
    if isinstance(fmt, dict) and _json_mode(body) and not body.get("tools"):
        config["responseMimeType"] = "application/json"
        spec = fmt.get("json_schema")
        if isinstance(spec, dict) and isinstance(spec.get("schema"), dict):
            config["responseSchema"] = sanitize_schema(
                spec["schema"], "response_format.json_schema.schema", budget
            )
    return config


# OpenAI effort → Gemini 3+ ``thinkingLevel`` (REST spells the levels in lower case). No
# current model turns thinking off: ``none`` runs at the lowest level. ``effort_for`` has
# already clamped the effort to the model's own list, so a level here is one it accepts.
_LEVEL: Mapping[str, str] = {
    "none": "minimal",
    "minimal": "minimal",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "xhigh",
}


def _thinking(body: Mapping[str, Any], model: Model) -> dict[str, Any] | None:
    """``thinkingConfig`` for a model with a reasoning spec: ``thinkingLevel`` (control
    ``level``) or ``thinkingBudget`` (``budget``, Gemini 2.5), never both (Gemini answers 400
    to both); None when no effort is asked for (the model's default runs) and for a model
    without a reasoning spec (the client's ``reasoning_effort`` is dropped)."""
    reasoning_spec = model.spec.reasoning
    if reasoning_spec is None:
        return None
    effort = reasoning.effort_for(body, model)
    if effort is None:
        return None
    if reasoning.control(model) == "budget":
        return {"thinkingBudget": reasoning.GEMINI_BUDGET[effort]}
    if effort == "max":  # no such level: the highest level the model accepts
        levels = [e for e in reasoning_spec.efforts if e in _LEVEL]
        top = max(levels, key=EFFORT_RANK.__getitem__, default="high")
        return {"thinkingLevel": _LEVEL[top]}
    return {"thinkingLevel": _LEVEL[effort]}


def _json_mode(body: Mapping[str, Any]) -> bool:
    fmt = body.get("response_format")
    return isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema")


def _tools(tools: Any, budget: SchemaBudget) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, (name, description, parameters) in enumerate(shapes.functions(tools)):
        entry: dict[str, Any] = {"name": name}
        if description is not None:
            entry["description"] = description
        # Gemini refuses an object schema without properties: a function without arguments
        # is declared without parameters.
        # (Judged after inlining: the root may be a $ref to an object with properties.)
        if isinstance(parameters, dict):
            schema = sanitize_schema(parameters, f"tools[{i}].function.parameters", budget)
            if isinstance(schema, dict) and schema.get("properties"):
                entry["parameters"] = schema
        out.append(entry)
    return out


def _tool_config(choice: Any) -> dict[str, Any] | None:
    if choice == "none":
        return {"mode": "NONE"}
    if choice == "required":
        return {"mode": "ANY"}
    if choice == "auto":
        return {"mode": "AUTO"}
    if isinstance(choice, dict):
        fn = choice.get("function")
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            return {"mode": "ANY", "allowedFunctionNames": [fn["name"]]}
    return None


def _user_parts(content: Any) -> list[dict[str, Any]]:
    return shapes.content_parts(content, text=_text_part, media=_image, provider="Gemini")


def _text_part(text: str) -> dict[str, Any]:
    return {"text": text}


def _image(url: str) -> dict[str, Any]:
    inline = shapes.data_url(url)
    if inline is not None:
        mime, data = inline
        return {"inlineData": {"mimeType": mime, "data": data}}
    # generateContent reads fileData only from Google's own file store: a web URL there
    # fails at Gemini. Another model takes the request (the attempt loop moves on).
    raise Unsupported(
        "Gemini models read images only as data URLs (data:image/png;base64,…), not from "
        "web addresses.",
        provider="gemini",
        param="messages",
        code="unsupported_image_url",
    )


def _function_response(message: Mapping[str, Any], name: str) -> dict[str, Any]:
    text = "\n".join(shapes.text_parts(message.get("content")))
    response: Any = None
    if text.startswith("{"):
        try:
            response = orjson.loads(text)
        except orjson.JSONDecodeError:
            response = None
    if not isinstance(response, dict):
        response = {"result": text}
    return {"functionResponse": {"name": name, "response": response}}


SKIP_SIGNATURE = "skip_thought_signature_validator"
"""Google's documented placeholder ``thoughtSignature`` for a call the model did not make."""


def _signatures(messages: list[Any], model: str) -> dict[tuple[int, int], str]:
    """The thought signatures that ``model`` (an upstream id) made, carried in the ids of
    assistant tool calls (``providers.carry``), by (message, call) position. A signature is
    valid only for the model that made it: another model's are left out."""
    out: dict[tuple[int, int], str] = {}
    budget = carry.Budget()  # one for all the ids of the request
    for i, m in enumerate(messages):
        calls = m.get("tool_calls") if isinstance(m, dict) else None
        for j, call in enumerate(calls if isinstance(calls, list) else ()):
            call_id = call.get("id") if isinstance(call, dict) else None
            if not isinstance(call_id, str) or carry.MARK not in call_id:
                continue
            state = carry.unwrap(call_id, budget)[1]
            if state is not None and state["m"] == model and isinstance(state.get("g"), str):
                out[(i, j)] = state["g"]
    return out


def _contents(
    messages: list[Any], signatures: Mapping[tuple[int, int], str], thinking: bool
) -> list[dict[str, Any]]:
    """Gemini's ``contents``. ``signatures``: the thought signature to send back on a call,
    by (message, call) position; ``thinking``: the target is a thinking model (a reasoning
    spec), whose first call of each assistant turn must carry a signature, else Gemini 3 and
    later answer 400 ("Function call is missing a thought_signature"): a turn without a
    valid one (another model's, or a client's own history) gets ``SKIP_SIGNATURE``."""
    pairs = shapes.ToolPairs.of(messages)
    turns: list[tuple[str, list[Any]]] = []
    order: dict[int, int] = {}  # id of a functionResponse part → position of its call
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            continue
        role = m.get("role")
        if role == "user":
            turns.append(("user", _user_parts(m.get("content"))))
        elif role == "assistant":
            parts: list[dict[str, Any]] = [{"text": t} for t in shapes.text_parts(m.get("content"))]
            first = True
            for j, call in enumerate(m.get("tool_calls") or ()):
                if pairs.call_kept(i, j):
                    fn = call["function"]
                    args = shapes.arguments_object(fn.get("arguments"))
                    part: dict[str, Any] = {"functionCall": {"name": fn["name"], "args": args}}
                    signature = signatures.get((i, j))
                    if signature is None and first and thinking:
                        signature = SKIP_SIGNATURE
                    if signature is not None:
                        part["thoughtSignature"] = signature
                    parts.append(part)
                    first = False
            turns.append(("model", parts))
        elif role == "tool":
            name = pairs.result_name(i)
            if name is not None:
                part = _function_response(m, name)
                order[id(part)] = pairs.result_order(i)
                turns.append(("user", [part]))
        elif role == "function":
            raise Unsupported(
                "The deprecated 'function' role cannot be sent to Gemini models; use tools.",
                provider="gemini",
                param="messages",
                code="unsupported_role",
            )
    merged = shapes.merge_turns(turns)
    for _, parts in merged:
        if order:  # responses in the order of their calls, as Gemini matches them
            parts.sort(key=lambda p: (0, order[id(p)]) if id(p) in order else (1, 0))
    shapes.user_first(merged, {"text": shapes.PLACEHOLDER})
    if merged[-1][0] == "model":
        # Gemini refuses a conversation that ends on its own turn (OpenAI takes it as a
        # turn to continue): ask it to.
        merged.append(("user", [{"text": CONTINUE}]))
    return [{"role": role, "parts": parts} for role, parts in merged]


CONTINUE = "Continue."
"""The user turn added after a conversation that ended with the assistant's turn."""


# ---------------------------------------------------------------- response, stream, errors


def decode_response(body: bytes, request: ChatRequest, model: Model) -> Completion:
    name = model.provider.name
    try:
        doc = gemini_stream.RESPONSE.decode(body)
    except msgspec.ValidationError as exc:  # not an object, or a field of the wrong type
        raise ProtocolError(
            f"Provider {name!r} sent a response that is not a GenerateContentResponse ({exc}).",
            provider=name,
        ) from None
    except msgspec.DecodeError:
        raise ProtocolError(
            f"Provider {name!r} sent a response that is not a JSON object.", provider=name
        ) from None
    if isinstance(doc.error, dict):
        raise gemini_stream._error_from(200, {}, {"error": doc.error}, name)
    choices: list[tuple[dict[str, Any], str]] = []
    feedback = doc.prompt_feedback
    if doc.candidates:
        for candidate in doc.candidates:
            parts = gemini_stream.parts(candidate)
            calls = [
                gemini_stream.tool_call(p.function_call, p.thought_signature, model.upstream_id)
                for p in parts
                if p.function_call is not None
            ]
            text = "".join(gemini_stream.text(p) for p in parts)
            reason = gemini_stream.finish_reason(candidate.finish_reason, bool(calls))
            choices.append((shapes.message(text, calls), reason))
    elif feedback is not None and feedback.block_reason:
        # The prompt itself was blocked: a 200 without candidates.
        choices.append((shapes.message("", []), "content_filter"))
    else:
        raise ProtocolError(f"Provider {name!r} sent a response without candidates.", provider=name)
    meta = doc.usage_metadata
    usage = gemini_stream.usage(meta) if meta is not None else None
    answer = shapes.completion(
        gemini_stream.completion_id(doc),
        gemini_stream.model_name(doc, model.upstream_id),
        choices,
        usage,
    )
    return Completion(body=answer, usage=usage)


def stream_decoder(request: ChatRequest, model: Model) -> gemini_stream.StreamDecoder:
    return gemini_stream.StreamDecoder(request, model)


def decode_error(
    status: int, headers: Mapping[str, str], body: bytes, provider: Provider
) -> UpstreamError:
    return gemini_stream._error_from(status, headers, shapes.json_or_none(body), provider.name)
