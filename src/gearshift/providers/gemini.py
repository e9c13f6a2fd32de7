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
them, even at 0). A conversation that ends on the model's turn gets a "Continue." user turn.
Schemas are cut to the OpenAPI subset Gemini accepts (local ``$ref``s inlined, type lists →
``nullable``; ``$schema``, ``additionalProperties``, ``default``, ``strict`` … removed;
property names are kept).

Response and stream (Gemini → OpenAI): text parts → ``content`` (thought parts dropped), each
``functionCall`` → a whole tool call with an id of our own when Gemini gives none;
``finish_reason`` is ``tool_calls`` whenever a call appeared (Gemini says STOP); usage:
``completion_tokens`` = candidates + thoughts (``reasoning_tokens`` = thoughts),
``prompt_tokens`` = prompt + tool-use prompt, ``cached_tokens`` = cached content. A Gemini
stream simply ends: the usage chunk and ``[DONE]`` are written at the end of the body once
every candidate has a finish reason. Errors: Google's statuses to OpenAI-shaped errors; a bad
key (HTTP 400, a reason ``API_KEY_*``) reaches the client as 401; ``FAILED_PRECONDITION``
(region, billing) is the provider's failure, 503 and retryable; ``RetryInfo.retryDelay``
becomes the retry-after.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import orjson

from gearshift import sse
from gearshift.config import Model, Provider
from gearshift.errors import (
    ProtocolError,
    Unsupported,
    UpstreamError,
    for_upstream_status,
    retry_after,
)
from gearshift.inbound.chat import ChatRequest
from gearshift.providers import Completion, Outbound, StreamState, cached, shapes

_FILTERED = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "LANGUAGE",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
        "IMAGE_OTHER",
    }
)
# JSON Schema keywords outside the OpenAPI subset Gemini's ``parameters``/``responseSchema``
# accept; removed at every depth.
_SCHEMA_DROP = frozenset(
    {
        "$schema",
        "$id",
        "$ref",
        "$defs",
        "definitions",
        "$comment",
        "additionalProperties",
        "default",
        "strict",
        "examples",
        "const",
        "patternProperties",
        "unevaluatedProperties",
        "dependentRequired",
        "dependentSchemas",
        "if",
        "then",
        "else",
        "not",
    }
)


def finish_reason(reason: Any, called: bool) -> str:
    if called:
        return "tool_calls"
    if not isinstance(reason, str):
        return "stop"
    if reason == "MAX_TOKENS":
        return "length"
    if reason in _FILTERED:
        return "content_filter"
    return "stop"  # STOP, OTHER, MALFORMED_FUNCTION_CALL, unknown: the answer as it is


# ---------------------------------------------------------------- request


def sanitize_schema(schema: Any, defs: Mapping[str, Any] | None = None, depth: int = 0) -> Any:
    """A JSON Schema cut to the OpenAPI subset Gemini takes (see ``_SCHEMA_DROP``): local
    ``$ref``s (``#/$defs/X``, ``#/definitions/X``) are inlined (to a bounded depth: a
    recursive schema ends in a plain object), a type list such as ``["string", "null"]``
    becomes one type with ``nullable``. The keys of ``properties`` are names, not keywords:
    a property called ``default`` stays."""
    if isinstance(schema, list):
        return [sanitize_schema(v, defs, depth) for v in schema]
    if not isinstance(schema, dict):
        return schema
    if defs is None:
        defs = {**(schema.get("definitions") or {}), **(schema.get("$defs") or {})}
    ref = schema.get("$ref")
    if isinstance(ref, str):
        target = defs.get(ref.rsplit("/", 1)[-1]) if ref.startswith("#/") else None
        if isinstance(target, dict) and depth < 8:
            return sanitize_schema(
                {**target, **{k: v for k, v in schema.items() if k != "$ref"}}, defs, depth + 1
            )
        return {"type": "object"}
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _SCHEMA_DROP:
            continue
        if key == "properties" and isinstance(value, dict):
            out[key] = {name: sanitize_schema(sub, defs, depth) for name, sub in value.items()}
        elif key in ("required", "enum"):
            out[key] = value  # lists of names and values, not schemas
        elif key == "type" and isinstance(value, list):
            kinds = [k for k in value if k != "null"]
            out[key] = kinds[0] if kinds else "string"
            if len(kinds) < len(value):
                out["nullable"] = True
        else:
            out[key] = sanitize_schema(value, defs, depth)
    return out


def encode_request(request: ChatRequest, model: Model) -> Outbound:
    body = request.body
    messages = body.get("messages") or []
    out: dict[str, Any] = {}
    system = shapes.system_text(messages)
    if _json_mode(body) and body.get("tools"):
        system = (system + "\n\n" + shapes.JSON_INSTRUCTION).strip()
    if system:
        out["systemInstruction"] = {"parts": [{"text": system}]}
    out["contents"] = _contents(messages)
    tools = _tools(body.get("tools"))
    if tools:
        out["tools"] = [{"functionDeclarations": tools}]
        config = _tool_config(body.get("tool_choice"))
        if config is not None:
            out["toolConfig"] = {"functionCallingConfig": config}
    generation = _generation(body, model.spec.max_output)
    if generation:
        out["generationConfig"] = generation
    method = ":streamGenerateContent?alt=sse" if request.stream else ":generateContent"
    # The URL names the model: only its base is the provider's (one f-string, nothing to keep).
    provider = model.provider
    url = f"{provider.base_url}/models/{model.upstream_id}{method}"
    headers = cached(provider, "gemini.headers", _headers)
    return Outbound(url=url, headers=headers, body=orjson.dumps(out))


def _headers(provider: Provider) -> Mapping[str, str]:
    headers = {"content-type": "application/json", "accept": "application/json"}
    headers.update(provider.headers)
    if provider.api_key is not None:
        headers["x-goog-api-key"] = provider.api_key.reveal()
    return MappingProxyType(headers)


def _generation(body: Mapping[str, Any], most: int) -> dict[str, Any]:
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
            config["responseSchema"] = sanitize_schema(spec["schema"])
    return config


def _json_mode(body: Mapping[str, Any]) -> bool:
    fmt = body.get("response_format")
    return isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema")


def _tools(tools: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for name, description, parameters in shapes.functions(tools):
        entry: dict[str, Any] = {"name": name}
        if description is not None:
            entry["description"] = description
        # Gemini refuses an object schema without properties: a function without arguments
        # is declared without parameters.
        if isinstance(parameters, dict) and parameters.get("properties"):
            entry["parameters"] = sanitize_schema(parameters)
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


def _contents(messages: list[Any]) -> list[dict[str, Any]]:
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
            for j, call in enumerate(m.get("tool_calls") or ()):
                if pairs.call_kept(i, j):
                    fn = call["function"]
                    args = shapes.arguments_object(fn.get("arguments"))
                    parts.append({"functionCall": {"name": fn["name"], "args": args}})
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


# ---------------------------------------------------------------- response


def _usage(meta: Mapping[str, Any]) -> dict[str, Any]:
    def n(name: str) -> int:
        value = meta.get(name)
        return value if isinstance(value, int) else 0

    thoughts = n("thoughtsTokenCount")
    prompt = n("promptTokenCount") + n("toolUsePromptTokenCount")
    completion = n("candidatesTokenCount") + thoughts
    total = n("totalTokenCount") or None
    return shapes.usage(
        prompt, completion, cached=n("cachedContentTokenCount"), reasoning=thoughts, total=total
    )


def _parts(candidate: Mapping[str, Any]) -> list[dict[str, Any]]:
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    return [p for p in parts if isinstance(p, dict)] if isinstance(parts, list) else []


def _call(part: Mapping[str, Any]) -> dict[str, Any] | None:
    fn = part.get("functionCall")
    if not isinstance(fn, dict):
        return None
    call_id = fn.get("id") if isinstance(fn.get("id"), str) and fn.get("id") else None
    arguments = orjson.dumps(fn.get("args") or {}).decode()
    return shapes.tool_call(call_id or shapes.new_call_id(), str(fn.get("name") or ""), arguments)


def _text(part: Mapping[str, Any]) -> str:
    text = part.get("text")
    return text if isinstance(text, str) and not part.get("thought") else ""


def _completion_id(doc: Mapping[str, Any]) -> str:
    rid = doc.get("responseId")
    return "chatcmpl-" + (rid if isinstance(rid, str) and rid else shapes.new_call_id()[5:])


def decode_response(body: bytes, request: ChatRequest, model: Model) -> Completion:
    provider = model.provider
    doc = shapes.json_object(body, provider.name)
    if isinstance(doc.get("error"), dict):
        raise _error_from(200, {}, doc, provider.name)
    candidates = doc.get("candidates")
    choices: list[tuple[dict[str, Any], str]] = []
    if isinstance(candidates, list) and candidates:
        for candidate in candidates:
            if not isinstance(candidate, dict):
                continue
            parts = _parts(candidate)
            calls = [c for c in map(_call, parts) if c is not None]
            text = "".join(_text(p) for p in parts)
            reason = finish_reason(candidate.get("finishReason"), bool(calls))
            choices.append((shapes.message(text, calls), reason))
    elif isinstance(doc.get("promptFeedback"), dict) and doc["promptFeedback"].get("blockReason"):
        # The prompt itself was blocked: a 200 without candidates.
        choices.append((shapes.message("", []), "content_filter"))
    else:
        raise ProtocolError(
            f"Provider {provider.name!r} sent a response without candidates.",
            provider=provider.name,
        )
    meta = doc.get("usageMetadata")
    usage = _usage(meta) if isinstance(meta, dict) else None
    name = doc.get("modelVersion")
    answer = shapes.completion(
        _completion_id(doc), name if isinstance(name, str) else model.upstream_id, choices, usage
    )
    return Completion(body=answer, usage=usage)


# ---------------------------------------------------------------- stream


class StreamDecoder:
    """Gemini's SSE responses (each holding only new parts) → OpenAI chunks."""

    __slots__ = (
        "_calls",
        "_choices",
        "_chunks",
        "_finished",
        "_model",
        "_provider",
        "_usage",
        "_wants_usage",
        "state",
    )

    def __init__(self, request: ChatRequest, model: Model) -> None:
        self.state = StreamState()
        self._chunks: shapes.Chunks | None = None
        self._model = model.upstream_id
        self._provider = model.provider.name
        self._wants_usage = request.client_wants_usage
        self._calls: dict[int, int] = {}  # candidate index → tool calls so far
        self._finished: set[int] = set()
        n = request.body.get("n")
        # Every candidate asked for must finish before the end of the body is a clean end.
        self._choices = n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1
        self._usage: dict[str, Any] | None = None

    def feed(self, raw_event: bytes) -> bytes:
        payload = sse.data_payload(raw_event)
        if payload is None:
            return b""
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError:
            doc = None
        if not isinstance(doc, dict):
            self.state.error = ProtocolError(
                f"Provider {self._provider!r} sent a malformed stream event.",
                provider=self._provider,
                code="malformed_stream",
            )
            return b""
        if isinstance(doc.get("error"), dict):
            self.state.error = _error_from(200, {}, doc, self._provider)
            return b""
        out: list[bytes] = []
        chunks = self._chunks
        if chunks is None:
            name = doc.get("modelVersion")
            chunks = self._chunks = shapes.Chunks(
                _completion_id(doc), name if isinstance(name, str) else self._model
            )
        if isinstance(doc.get("usageMetadata"), dict):
            self._usage = _usage(doc["usageMetadata"])  # cumulative: the last one wins
        candidates = doc.get("candidates")
        feedback = doc.get("promptFeedback")
        if not candidates and isinstance(feedback, dict) and feedback.get("blockReason"):
            self._finished.add(0)
            out.append(chunks.delta({}, "content_filter"))
        for candidate in candidates if isinstance(candidates, list) else ():
            if isinstance(candidate, dict):
                out.append(self._candidate(chunks, candidate))
        return b"".join(out)

    def _candidate(self, chunks: shapes.Chunks, candidate: Mapping[str, Any]) -> bytes:
        index = candidate.get("index")
        index = index if isinstance(index, int) else 0
        out: list[bytes] = []
        text = ""
        for part in _parts(candidate):
            call = _call(part)
            if call is None:
                text += _text(part)
                continue
            if text:
                out.append(chunks.delta({"content": text}, index=index))
                text = ""
            k = self._calls.get(index, 0)
            self._calls[index] = k + 1
            out.append(chunks.delta({"tool_calls": [{"index": k, **call}]}, index=index))
        if text:
            out.append(chunks.delta({"content": text}, index=index))
        reason = candidate.get("finishReason")
        if isinstance(reason, str) and reason and reason != "FINISH_REASON_UNSPECIFIED":
            self._finished.add(index)
            finish = finish_reason(reason, self._calls.get(index, 0) > 0)
            out.append(chunks.delta({}, finish, index=index))
        return b"".join(out)

    def end(self) -> bytes:
        """Gemini never says ``[DONE]``: the body's end completes a stream whose candidates
        all finished (a finish reason seen); anything else is a cut the caller reports."""
        chunks = self._chunks
        if chunks is None or len(self._finished) < self._choices:
            return b""
        self.state.finished = True
        self.state.usage = usage = self._usage
        if self._wants_usage and usage:
            self.state.usage_chunk = chunks.usage(usage)
        return chunks.done()


def stream_decoder(request: ChatRequest, model: Model) -> StreamDecoder:
    return StreamDecoder(request, model)


# ---------------------------------------------------------------- errors

_STATUS_CODES = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 429,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}


def _retry_delay(details: Any) -> float | None:
    for detail in details if isinstance(details, list) else ():
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return max(0.0, float(delay[:-1]))
            except ValueError:
                return None
    return None


def _error_from(status: int, headers: Mapping[str, str], doc: Any, provider: str) -> UpstreamError:
    """The error a Google error body means (``{"error": {"code", "message", "status",
    "details"}}``); ``status`` 200 for an error inside a 200 (a stream's event, an error body
    in a 200 answer), whose own code or status then says the status. The message is the
    upstream's own (the serving path scrubs it)."""
    error = doc.get("error") if isinstance(doc, dict) else None
    error = error if isinstance(error, dict) else {}
    kind = error.get("status") if isinstance(error.get("status"), str) else None
    if status == 200:  # in-band: the error's own code or status tells
        code = error.get("code")
        status = (
            code if isinstance(code, int) and code >= 400 else _STATUS_CODES.get(kind or "", 500)
        )
    details = error.get("details")
    reasons = {
        d.get("reason")
        for d in (details if isinstance(details, list) else ())
        if isinstance(d, dict) and isinstance(d.get("reason"), str)
    }
    answered = status
    if status == 400 and any(str(r).startswith("API_KEY_") for r in reasons):
        status = 401  # Gemini says 400 for a bad or expired key: an auth failure
    elif status == 400 and kind == "FAILED_PRECONDITION":
        # The provider account cannot serve (region, billing): not the client's request —
        # another provider may.
        status = 503
    text = error.get("message")
    message = text if isinstance(text, str) else f"Provider {provider!r} answered HTTP {status}."
    wait = retry_after(headers)
    out = for_upstream_status(
        status,
        message,
        provider=provider,
        code=kind,
        retry_after=wait if wait is not None else _retry_delay(details),
    )
    out.upstream_status = answered  # what Gemini said, even when the client sees another
    return out


def decode_error(
    status: int, headers: Mapping[str, str], body: bytes, provider: Provider
) -> UpstreamError:
    return _error_from(status, headers, shapes.json_or_none(body), provider.name)
