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
from urllib.parse import quote, unquote

import msgspec
import orjson

from gearshift import reasoning
from gearshift.config import EFFORT_RANK, Model, Provider
from gearshift.errors import ProtocolError, Unsupported, UpstreamError
from gearshift.inbound.chat import ChatRequest
from gearshift.providers import Completion, Outbound, cached, carry, gemini_stream, shapes

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


# ---------------------------------------------------------------- request


# Bounds of ``$ref`` inlining (see ``sanitize_schema``). References may repeat a definition
# many times over, each copy referring on: written out in full that is exponential (a 0.5 KB
# schema became a 13 MB body after 1.6 s of blocked event loop, one a little wider 51 MB).
# What inlining may add to one request beyond what the request holds: SCHEMA_NODES schema
# objects and about SCHEMA_BYTES of JSON (a node bound alone would let a long description be
# copied 5,000 times). Fixed rather than proportional to the input, so that the worst case is
# known whatever the request (32 MiB bodies are allowed): about 30 ms of work (measured: a
# 5-way fan 8 deep is refused in 29 ms, the old code took seconds) and about 1 MiB of body
# at most, while schemas written for tools and structured output repeat a
# definition a few dozen times, not thousands. SCHEMA_DEPTH bounds the walk's nesting (levels
# of the output and ``$ref``s followed): deeper than realistic schemas go, well within
# Python's recursion limit and orjson's encoding limit (254 levels, which a deeper schema used
# to hit: a 500).
SCHEMA_NODES = 5_000
SCHEMA_BYTES = 1 << 20
SCHEMA_DEPTH = 100

# Gemini's own JSON Schema fields: since November 2025 (Google's announcement, early that
# month: https://blog.google/technology/developers/gemini-api-structured-outputs) the API takes
# plain JSON Schema, ``$ref`` for recursive schemas included, in ``parametersJsonSchema`` (a
# FunctionDeclaration field, exclusive with ``parameters``) and ``responseJsonSchema`` (exclusive
# with ``responseSchema``; https://googleapis.github.io/js-genai/release_docs/interfaces/
# types.FunctionDeclaration.html). Google's forum (discuss.ai.google.dev/t/68607) says recursion
# is only partly supported there (unrolled to a finite depth, the recursive property optional).
# Checked 2026-12-07. These adapters still send the OpenAPI-subset ``parameters`` and
# ``responseSchema`` (accepted by every Gemini model), so ``$ref``s are inlined here.


class SchemaBudget:
    """What ``$ref`` inlining may still add to one request: schema objects and bytes of JSON.
    One per request, shared by its tools and its response format."""

    __slots__ = ("nodes", "size")

    def __init__(self, nodes: int = SCHEMA_NODES, size: int = SCHEMA_BYTES) -> None:
        self.nodes = nodes
        self.size = size


def sanitize_schema(schema: Any, param: str = "schema", budget: SchemaBudget | None = None) -> Any:
    """A JSON Schema cut to the OpenAPI subset Gemini takes (see ``_SCHEMA_DROP``): local
    ``$ref``s (``#``, ``#/$defs/X``, ``#/definitions/X``, any JSON pointer into the schema) are
    inlined, a type list such as ``["string", "null"]`` becomes one type with ``nullable``.
    The keys of ``properties`` are names, not keywords: a property called ``default`` stays.
    A reference that cannot be resolved (missing, or to another document) becomes
    ``{"type": "object"}``.

    ``Unsupported`` (400 ``unsupported_schema``, ``param`` naming where the schema is) when
    the schema cannot be written out for Gemini: a recursive one (a ``$ref`` that reaches a
    schema containing it, directly or through others), one whose repeated references expand
    beyond ``budget`` (the first copy of each of the root's definitions is free, since the
    definitions themselves are dropped: only further copies make the body larger than the
    request), or
    one nesting deeper than ``SCHEMA_DEPTH``. The walk stops as soon as a bound is crossed,
    so its work is bounded by the input's size plus the budget."""
    return _Inliner(schema, param, budget or SchemaBudget()).walk(schema, (id(schema),), 0, False)


class _Inliner:
    __slots__ = ("budget", "free", "param", "root")

    def __init__(self, root: Any, param: str, budget: SchemaBudget) -> None:
        self.root = root
        self.param = param
        self.budget = budget
        # The definitions (by identity) whose first copy is free: those of the root's
        # ``$defs`` and ``definitions``, disjoint parts of the request, dropped from the output.
        # (Not any schema a pointer can reach: nested targets overlap, and one free copy of
        # each would multiply the output by their nesting.)
        self.free: set[int] = set()
        if isinstance(root, dict):
            for name in ("$defs", "definitions"):
                defs = root.get(name)
                if isinstance(defs, dict):
                    self.free.update(id(d) for d in defs.values() if isinstance(d, dict))

    def walk(self, schema: Any, within: tuple[int, ...], depth: int, copy: bool) -> Any:
        """``schema`` sanitized. ``within``: the schemas being expanded (their ids), to find
        recursion; ``copy``: whether this output repeats a definition (charged to the budget)."""
        if depth > SCHEMA_DEPTH:
            raise self._refuse(
                f"nests deeper than {SCHEMA_DEPTH} levels (objects, arrays and $refs followed)"
            )
        if isinstance(schema, list):
            if copy:
                self._charge(0, 2 + len(schema))
            return [self.walk(v, within, depth + 1, copy) for v in schema]
        if not isinstance(schema, dict):
            if copy:
                self._charge(0, _scalar_size(schema))
            return schema
        ref = schema.get("$ref")
        if isinstance(ref, str):
            target = _resolve(self.root, ref)
            if not isinstance(target, dict):
                if copy:
                    self._charge(1, 16)
                return {"type": "object"}
            key = id(target)
            if key in within:
                raise self._refuse(
                    f"is recursive ({ref!r} refers to a schema that contains it), and Gemini "
                    "models take schemas only written out in full, without $ref; a model whose "
                    "API accepts $ref (OpenAI, Anthropic) can carry it"
                )
            first = key in self.free
            self.free.discard(key)
            merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
            return self.walk(merged, (*within, key), depth + 1, copy or not first)
        out: dict[str, Any] = {}
        for key, value in schema.items():
            if key in _SCHEMA_DROP:
                continue
            if key == "properties" and isinstance(value, dict):
                if copy:
                    self._charge(0, 2 + sum(len(name) + 4 for name in value))
                out[key] = {
                    name: self.walk(sub, within, depth + 2, copy) for name, sub in value.items()
                }
            elif key in ("required", "enum"):
                if copy:  # lists of names and values, not schemas: kept as they are
                    self._charge(0, len(orjson.dumps(value)))
                out[key] = value
            elif key == "type" and isinstance(value, list):
                kinds = [k for k in value if k != "null"]
                out[key] = kinds[0] if kinds else "string"
                if len(kinds) < len(value):
                    out["nullable"] = True
            else:
                out[key] = self.walk(value, within, depth + 1, copy)
        if copy:
            self._charge(1, 2 + sum(len(key) + 4 for key in out))
        return out

    def _charge(self, nodes: int, size: int) -> None:
        budget = self.budget
        budget.nodes -= nodes
        budget.size -= size
        if budget.nodes < 0 or budget.size < 0:
            raise self._refuse(
                f"is too large to inline for Gemini models: its $refs expand to more than "
                f"{SCHEMA_NODES} schema objects or {SCHEMA_BYTES >> 10} KiB in this request"
            )

    def _refuse(self, why: str) -> Unsupported:
        return Unsupported(
            f"The schema at {self.param} {why}.",
            provider="gemini",
            param=self.param,
            code="unsupported_schema",
        )


def _resolve(root: Any, ref: str) -> Any:
    """What a local ``$ref`` (a URI fragment holding a JSON pointer) designates in ``root``;
    None for a reference elsewhere or to nothing."""
    if not ref.startswith("#"):
        return None
    pointer = unquote(ref[1:])
    if not pointer:
        return root
    if not pointer.startswith("/"):
        return None  # a plain-name fragment (an $anchor): not resolved
    node = root
    for token in pointer[1:].split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isascii() and token.isdigit():
            index = int(token)
            if index >= len(node):
                return None
            node = node[index]
        else:
            return None
    return node


def _scalar_size(value: Any) -> int:
    """About the bytes of a scalar in JSON (a non-ASCII character takes up to four)."""
    if isinstance(value, str):
        return 2 + (len(value) if value.isascii() else 4 * len(value))
    return 8


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
