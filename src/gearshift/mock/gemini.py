"""The mock's Gemini v1beta: ``:generateContent``, ``:streamGenerateContent`` and models.

Validation as strict as the real API (unknown fields, part oneofs, turn order, function
call/response pairing), Google's error objects (401 is a 400 ``API_KEY_INVALID``), the
response body and its stream: SSE with ``?alt=sse``, else one JSON array.

Models of the current families (``gemini-3.*``, ``gemini-4-*``) think, as the real ones do,
where gearshift depends on it: ``thinkingConfig`` is validated (budget and level together,
or a level the model does not accept: 400 ``INVALID_ARGUMENT``), every answer reports
``thoughtsTokenCount`` (more for a higher level), the first ``functionCall`` part of an
answer carries a ``thoughtSignature`` (naming the model and a hash of the call), and a
request whose latest model turn holds function calls is refused, as Gemini 3 refuses it,
unless the first of them carries a signature of this model for that very call, or Google's
placeholder ``skip_thought_signature_validator``.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any, ClassVar, NoReturn

import orjson
from aiohttp import web

from gearshift.mock.flow import (
    _GARBAGE_JSON,
    _TOOL_INPUT,
    MOCK_STATE,
    MockSettings,
    _Api,
    _chunks,
    _data_line,
    _fail,
    _Invalid,
    _is_base64,
    _json,
    _key_matches,
    _limit,
    _Outcome,
    _outcome,
    _Problem,
    _prompt_tokens,
    _question,
    _require,
    _Stream,
)

GEMINI_MODEL_IDS: tuple[str, ...] = (
    *("gemini-1.5-flash", "gemini-2.5-flash"),
    *("gemini-4-carbon", "gemini-4-hydrogen", "gemini-3.8-flash", "gemini-3.5-flash-lite"),
)
"""Model ids listed by ``GET /v1beta/models`` (generateContent accepts any model name)."""

# Thinking models of the current families, by id prefix (the first match wins): the levels
# each accepts and the level it runs at when none is sent (docs/research/models-gemini-*.md:
# 3.8 Flash and Gemini 4 start at low and refuse minimal; Hydrogen and Neon add xhigh).
_THINKERS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("gemini-4-hydrogen", ("low", "medium", "high", "xhigh"), "high"),
    ("gemini-4-neon", ("low", "medium", "high", "xhigh"), "high"),
    ("gemini-4-", ("low", "medium", "high"), "medium"),
    ("gemini-3.8-", ("low", "medium", "high"), "medium"),
    ("gemini-3.7-", ("low", "medium", "high"), "medium"),
    ("gemini-3.5-flash-lite", ("minimal", "low", "medium", "high"), "minimal"),
    ("gemini-3.1-flash-lite", ("minimal", "low", "medium", "high"), "minimal"),
    ("gemini-3.", ("minimal", "low", "medium", "high"), "medium"),
)
_LEVEL_THOUGHTS = {"minimal": 2, "low": 8, "medium": 24, "high": 64, "xhigh": 128}
_THINKING_FIELDS = frozenset({"thinkingBudget", "thinkingLevel", "includeThoughts"})
SKIP_SIGNATURE = "skip_thought_signature_validator"
"""Google's placeholder signature for a call the model did not make (accepted as valid)."""
_MISSING_SIGNATURE = (
    "Function call is missing a thought_signature in functionCall parts. This is required "
    "for tools to work correctly, and missing thought_signature may lead to degraded model "
    "performance. Additional data, function call `default_api:{name}` , position {position}. "
    "Please refer to https://ai.google.dev/gemini-api/docs/thought-signatures for more details."
)

_GEMINI_FIELDS = frozenset(
    {
        *("contents", "systemInstruction", "tools", "toolConfig", "generationConfig"),
        *("safetySettings", "cachedContent"),
    }
)
_GENERATION_FIELDS = frozenset(
    {
        *("temperature", "topP", "topK", "maxOutputTokens", "stopSequences", "candidateCount"),
        *("seed", "presencePenalty", "frequencyPenalty", "responseMimeType", "responseSchema"),
        *("responseJsonSchema", "responseLogprobs", "logprobs", "thinkingConfig"),
    }
)
_PART_DATA = (
    *("text", "inlineData", "fileData", "functionCall", "functionResponse"),
    *("executableCode", "codeExecutionResult"),
)
_PART_FIELDS = frozenset({*_PART_DATA, "thought", "thoughtSignature", "videoMetadata"})
_CALLING_MODES = ("AUTO", "ANY", "NONE", "VALIDATED")
_MAX_STOP_SEQUENCES = 5
_THOUGHT_TOKENS = 7
_CACHED_CONTENT_TOKENS = 50
_ALTERNATE = "Please ensure that multiturn requests alternate between user and model."
_GOOGLE_KEY_INVALID = "API key not valid. Please pass a valid API key."
_GOOGLE_INTERNAL = (
    "An internal error has occurred. Please retry or report in "
    "https://developers.generativeai.google/guide/troubleshooting"
)


def _google_error(code: int, status: str, message: str, *details: Any) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = list(details)
    return {"error": error}


_KEY_INVALID_ERROR = _google_error(
    400,
    "INVALID_ARGUMENT",
    _GOOGLE_KEY_INVALID,
    {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "API_KEY_INVALID",
        "domain": "googleapis.com",
    },
)
_GEMINI_FAILURES: dict[str, tuple[int, Any]] = {
    "http-500": (500, _google_error(500, "INTERNAL", _GOOGLE_INTERNAL)),
    "http-503": (
        503,
        _google_error(503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
    ),
    "http-429": (
        429,
        _google_error(
            429,
            "RESOURCE_EXHAUSTED",
            "You exceeded your current quota, please check your plan and billing details.",
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"},
        ),
    ),
    "http-400": (
        400,
        _google_error(
            400,
            "INVALID_ARGUMENT",
            "The input token count (1100000) exceeds the maximum number of tokens allowed "
            "(1048576).",
        ),
    ),
    "http-401": (400, _KEY_INVALID_ERROR),
    # As users report it after Gemini 1.5's retirement (e.g.
    # github.com/PixelPlayerHQ/PixelPlayer/issues/193, read 2026-12-07).
    "withdrawn": (
        404,
        _google_error(
            404,
            "NOT_FOUND",
            "models/{model} is not found for API version v1beta, or is not supported "
            "for generateContent. Call ListModels to see the list of available models and "
            "their supported methods.",
        ),
    ),
}


def _unknown_field(name: str, where: str | None = None) -> NoReturn:
    at = f" at '{where}'" if where else ""
    _fail(f'Invalid JSON payload received. Unknown name "{name}"{at}: Cannot find field.')


def _check_part(part: Any, at: str) -> None:
    if not isinstance(part, dict):
        _fail(f"Invalid value at '{at}': expected an object.")
    for name in part:
        if name not in _PART_FIELDS:
            _unknown_field(name, at)
    data = [name for name in _PART_DATA if name in part]
    msg = f"* GenerateContentRequest.{at}.data: required oneof field 'data' must have one "
    _require(bool(data), msg + "initialized field")
    _require(
        len(data) == 1,
        f"Invalid value at '{at}': oneof field 'data' is already set. Cannot set '{data[-1]}'",
    )
    value = part[data[0]]
    if data[0] == "text":
        _require(isinstance(value, str), f"Invalid value at '{at}.text' (TYPE_STRING)")
        _require(
            value != "",
            "Unable to submit request because it has an empty text parameter. Add a value to "
            "the parameter and try again.",
        )
        return
    _require(isinstance(value, dict), f"Invalid value at '{at}.{data[0]}': expected an object.")
    if data[0] == "inlineData":
        msg = f"* GenerateContentRequest.{at}.inline_data.mime_type: mime_type is not specified"
        _require(isinstance(value.get("mimeType"), str) and bool(value["mimeType"]), msg)
        msg = f"Invalid value at '{at}.inline_data.data' (TYPE_BYTES), Base64 decoding failed"
        _require(_is_base64(value.get("data")), msg)
    elif data[0] == "fileData":
        msg = f"* GenerateContentRequest.{at}.file_data.file_uri: file_uri is not specified"
        _require(isinstance(value.get("fileUri"), str), msg)
    elif data[0] in ("functionCall", "functionResponse"):
        msg = f"* GenerateContentRequest.{at}.{data[0]}.name: Name cannot be empty."
        _require(isinstance(value.get("name"), str) and bool(value["name"]), msg)
        key = "args" if data[0] == "functionCall" else "response"
        kind = "type.googleapis.com/google.protobuf.Struct"
        msg = f"Invalid value at '{at}.{data[0]}.{key}' ({kind}), {value.get(key)!r}"
        _require(isinstance(value.get(key, {}), dict), msg)
        _require(key in value or key == "args", msg)


def _check_parts(parts: Any, at: str) -> list[dict[str, Any]]:
    msg = f"* GenerateContentRequest.{at}.parts: contents.parts must not be empty."
    _require(isinstance(parts, list) and bool(parts), msg)
    for j, part in enumerate(parts):
        _check_part(part, f"{at}.parts[{j}]")
    return list(parts)


def _calls(parts: list[dict[str, Any]], kind: str) -> list[str]:
    return [p[kind]["name"] for p in parts if kind in p]


def _check_contents(contents: Any) -> None:
    msg = "* GenerateContentRequest.contents: contents is not specified"
    _require(isinstance(contents, list) and bool(contents), msg)
    previous: tuple[str, list[str]] | None = None  # role and function calls of the last turn
    for i, content in enumerate(contents):
        at = f"contents[{i}]"
        _require(isinstance(content, dict), f"Invalid value at '{at}': expected an object.")
        for name in content:
            if name not in ("role", "parts"):
                _unknown_field(name, at)
        role = content.get("role", "user")
        _require(role in ("user", "model"), "Please use a valid role: user, model.")
        _require(previous is None or previous[0] != role, _ALTERNATE)
        parts = _check_parts(content.get("parts"), at)
        calls = _calls(parts, "functionCall")
        answers = _calls(parts, "functionResponse")
        asked = previous[1] if previous else []
        if calls:
            msg = (
                "Please ensure that function call turn comes immediately after a user turn "
                "or after a function response turn."
            )
            _require(role == "model" and previous is not None, msg)
        if answers:
            msg = "Please ensure that function response turn comes immediately after a function "
            msg += "call turn."
            _require(role == "user" and bool(asked), msg)
        if role == "user" and asked:
            _require(
                len(answers) == len(asked),
                "Please ensure that the number of function response parts is equal to the "
                "number of function call parts of the function call turn.",
            )
            _require(
                sorted(answers) == sorted(asked),
                "Please ensure that the name of each function response part matches a "
                f"function call of the function call turn (calls: {', '.join(asked)}; "
                f"responses: {', '.join(answers)}).",
            )
        previous = (role, calls)


def _check_generation(config: Any) -> None:
    where = "generation_config"
    _require(isinstance(config, dict), f"Invalid value at '{where}': expected an object.")
    for name in config:
        if name not in _GENERATION_FIELDS:
            _unknown_field(name, where)
    stops = config.get("stopSequences", [])
    msg = f"Invalid value at '{where}.stop_sequences': expected a list of strings."
    _require(isinstance(stops, list) and all(isinstance(s, str) for s in stops), msg)
    _require(
        len(stops) <= _MAX_STOP_SEQUENCES,
        f"* GenerateContentRequest.{where}.stop_sequences: at most "
        f"{_MAX_STOP_SEQUENCES} stop sequences are allowed, got {len(stops)}.",
    )


def _thinker(model: str) -> tuple[tuple[str, ...], str] | None:
    """The levels a current-family model accepts and its default; None for older models."""
    for prefix, levels, default in _THINKERS:
        if model.startswith(prefix):
            return levels, default
    return None


def _check_thinking(body: dict[str, Any], model: str) -> None:
    config = body.get("generationConfig", {}).get("thinkingConfig")
    if config is None:
        return
    where = "generation_config.thinking_config"
    _require(isinstance(config, dict), f"Invalid value at '{where}': expected an object.")
    for name in config:
        if name not in _THINKING_FIELDS:
            _unknown_field(name, where)
    budget, level = config.get("thinkingBudget"), config.get("thinkingLevel")
    _require(
        budget is None or level is None,
        "You can only set one of thinking budget and thinking level.",
    )
    msg = f"Invalid value at '{where}.thinking_budget' (TYPE_INT32), {budget!r}"
    _require(budget is None or (isinstance(budget, int) and not isinstance(budget, bool)), msg)
    if level is None:
        return
    kind = "type.googleapis.com/google.ai.generativelanguage.v1beta.ThinkingConfig.ThinkingLevel"
    msg = f"Invalid value at '{where}.thinking_level' ({kind}), {level!r}"
    _require(isinstance(level, str) and level.lower() in _LEVEL_THOUGHTS, msg)
    thinker = _thinker(model)
    if thinker is None:
        return  # a test's own model name: any level
    _require(
        level.lower() in thinker[0],
        f"Thinking level {level.upper()} is not supported for model {model}. Supported "
        f"levels: {', '.join(a.upper() for a in thinker[0])}.",
    )


def _signature(model: str, call: dict[str, Any]) -> str:
    """The mock's thought signature of ``call`` made by ``model``: opaque to clients, tied
    to the model and to the call, as a real one is to the model's thoughts."""
    digest = hashlib.sha256(
        orjson.dumps([model, call.get("name"), call.get("args", {})], option=orjson.OPT_SORT_KEYS)
    ).hexdigest()[:16]
    return base64.b64encode(f"mock-thought:{model}:{digest}".encode()).decode()


def _check_signatures(body: dict[str, Any], model: str) -> None:
    """Gemini 3's rule: the first function call of the latest model turn carries its
    signature (only the first of parallel calls has one), or the placeholder."""
    contents = body["contents"]
    latest = next((c for c in reversed(contents) if c.get("role") == "model"), None)
    if latest is None:
        return
    calls = [p for p in latest["parts"] if "functionCall" in p]
    if not calls:
        return
    first = calls[0]
    signature = first.get("thoughtSignature")
    call = first["functionCall"]
    if signature is None:
        position = contents.index(latest) + 1
        _fail(_MISSING_SIGNATURE.format(name=call["name"], position=position))
    _require(
        signature in (SKIP_SIGNATURE, _signature(model, call)),
        "Corrupted thought signature.",
    )


def _check_gemini_tools(body: dict[str, Any]) -> None:
    tools = body.get("tools", [])
    _require(isinstance(tools, list), "Invalid value at 'tools': expected a list.")
    for t, tool in enumerate(tools):
        _require(isinstance(tool, dict), f"Invalid value at 'tools[{t}]': expected an object.")
        declarations = tool.get("functionDeclarations", [])
        msg = f"Invalid value at 'tools[{t}].function_declarations': expected a list."
        _require(isinstance(declarations, list), msg)
        for k, declaration in enumerate(declarations):
            at = f"tools[{t}].function_declarations[{k}]"
            ok = isinstance(declaration, dict) and isinstance(declaration.get("name"), str)
            _require(
                ok and bool(declaration["name"]),
                f"* GenerateContentRequest.{at}.name: Name cannot be empty.",
            )
    config = body.get("toolConfig", {})
    _require(isinstance(config, dict), "Invalid value at 'tool_config': expected an object.")
    calling = config.get("functionCallingConfig", {})
    where = "tool_config.function_calling_config"
    _require(isinstance(calling, dict), f"Invalid value at '{where}': expected an object.")
    mode = calling.get("mode", "AUTO")
    kind = "type.googleapis.com/google.ai.generativelanguage.v1beta.FunctionCallingConfig.Mode"
    _require(mode in _CALLING_MODES, f"Invalid value at '{where}.mode' ({kind}), {mode!r}")


def _check_gemini(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        _fail("Invalid JSON payload received. Unexpected token.")
    for name in body:
        if name not in _GEMINI_FIELDS:
            _unknown_field(name)
    if "systemInstruction" in body:
        system = body["systemInstruction"]
        msg = "Invalid value at 'system_instruction': expected an object."
        _require(isinstance(system, dict), msg)
        _check_parts(system.get("parts"), "system_instruction")
    if "generationConfig" in body:
        _check_generation(body["generationConfig"])
    _check_gemini_tools(body)
    _check_contents(body.get("contents"))
    return body


def _gemini_tool(body: dict[str, Any]) -> str | None:
    names = [
        d["name"] for tool in body.get("tools", []) for d in tool.get("functionDeclarations", [])
    ]
    calling = body.get("toolConfig", {}).get("functionCallingConfig", {})
    if not names or calling.get("mode") == "NONE":
        return None
    if _calls(body["contents"][-1]["parts"], "functionResponse"):
        return None  # answer the function responses, so a tool round trip ends
    allowed = calling.get("allowedFunctionNames")
    return str(allowed[0]) if isinstance(allowed, list) and allowed else names[0]


def _thoughts(body: dict[str, Any], model: str) -> int:
    """Thought tokens: a current-family model always thinks (at its level, or its default;
    a ``thinkingBudget`` caps it, 0 turns it off); an older one when its name says ``think``."""
    thinker = _thinker(model)
    if thinker is None:
        return _THOUGHT_TOKENS if "think" in model else 0
    config = body.get("generationConfig", {}).get("thinkingConfig", {})
    level = config.get("thinkingLevel")
    thoughts = _LEVEL_THOUGHTS[level.lower() if isinstance(level, str) else thinker[1]]
    budget = config.get("thinkingBudget")
    if isinstance(budget, int) and budget >= 0:
        thoughts = min(thoughts, budget)
    return thoughts


def _gemini_usage(prompt: int, candidates: int, thoughts: int, model: str) -> dict[str, int]:
    usage = {"promptTokenCount": prompt, "candidatesTokenCount": candidates}
    usage["totalTokenCount"] = prompt + candidates + thoughts
    if "cache" in model:
        usage["cachedContentTokenCount"] = _CACHED_CONTENT_TOKENS
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts
    return usage


def _gemini_array(items: list[bytes], whole: bool) -> list[bytes]:
    """Frame streamed responses as one JSON array, as without ``alt=sse``."""
    framed = [(b"," if i else b"[") + item + b"\n" for i, item in enumerate(items)]
    if whole:
        framed.append(b"]" if framed else b"[]")
    return framed


def _gemini_sse(items: list[bytes], whole: bool) -> list[bytes]:
    return [_data_line(item) for item in items]


class _Gemini(_Api):
    name = "gemini"
    garbage_body = b'{"candidates": [{"content": {"parts": ['
    error_body: ClassVar[Any] = _google_error(500, "INTERNAL", _GOOGLE_INTERNAL)

    def check(
        self, request: web.Request, settings: MockSettings, body: Any, seq: int
    ) -> dict[str, Any] | _Problem:
        if not _gemini_key_ok(request, settings):
            return _Problem(400, _KEY_INVALID_ERROR)
        try:
            checked = _check_gemini(body)
            model = request.match_info["model"]
            _check_thinking(checked, model)
            if _thinker(model) is not None:
                _check_signatures(checked, model)
            return checked
        except _Invalid as exc:
            return _Problem(400, _google_error(400, "INVALID_ARGUMENT", str(exc)))

    def model(self, request: web.Request, body: dict[str, Any]) -> str:
        return request.match_info["model"]

    def failure(self, behaviour: str, seq: int) -> _Problem | None:
        if behaviour not in _GEMINI_FAILURES:
            return None
        return _Problem(*_GEMINI_FAILURES[behaviour])

    def streaming(self, request: web.Request, body: dict[str, Any]) -> bool:
        return request.path.endswith(":streamGenerateContent")

    @staticmethod
    def _outcome(body: dict[str, Any], model: str) -> _Outcome:
        contents = body["contents"]
        system = [body["systemInstruction"]["parts"]] if "systemInstruction" in body else []
        prompt = _prompt_tokens([*system, *(c["parts"] for c in contents)])
        prompt += _CACHED_CONTENT_TOKENS if "cache" in model else 0  # cached input counts too
        turns = ((c.get("role", "user"), c["parts"]) for c in contents)
        limit = _limit(body.get("generationConfig", {}).get("maxOutputTokens"))
        return _outcome(model, _question(turns), limit, _gemini_tool(body), prompt)

    @staticmethod
    def _response(
        parts: list[dict[str, Any]], finish: str | None, usage: dict[str, int], model: str, seq: int
    ) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}}
        if finish is not None:
            candidate["finishReason"] = finish
        candidate["index"] = 0
        return {
            "candidates": [candidate],
            "usageMetadata": usage,
            "modelVersion": model,
            "responseId": f"mock{seq}",
        }

    def complete(self, request: web.Request, body: dict[str, Any], model: str, seq: int) -> Any:
        out = self._outcome(body, model)
        parts: list[dict[str, Any]]
        thoughts = _thoughts(body, model)
        if out.tool is not None:
            call = {"name": out.tool, "args": _TOOL_INPUT}
            parts = [{"functionCall": call}]
            if _thinker(model) is not None:
                parts[0]["thoughtSignature"] = _signature(model, call)
        else:
            parts = [{"text": out.text}]
        finish = "MAX_TOKENS" if out.truncated else "STOP"  # STOP for calls too, as Gemini does
        usage = _gemini_usage(out.prompt, out.completion, thoughts, model)
        return self._response(parts, finish, usage, model, seq)

    def stream(
        self, request: web.Request, body: dict[str, Any], model: str, seq: int, words: int
    ) -> _Stream:
        out = self._outcome(body, model)
        if out.text is None:
            responses = [self.complete(request, body, model, seq)]  # calls arrive whole
        else:
            chunks = _chunks(out.text, words)
            finish = "MAX_TOKENS" if out.truncated else "STOP"
            responses = []
            for k, chunk in enumerate(chunks, 1):
                so_far = len("".join(chunks[:k]).split())  # usage is cumulative
                usage = _gemini_usage(out.prompt, so_far, _thoughts(body, model), model)
                last = finish if k == len(chunks) else None
                responses.append(self._response([{"text": chunk}], last, usage, model, seq))
        *content, last_response = (orjson.dumps(r) for r in responses)
        sse = request.query.get("alt") == "sse"
        return _Stream(
            [],
            content,
            [last_response],
            orjson.dumps(self.error_body),
            _GARBAGE_JSON,
            _gemini_sse if sse else _gemini_array,
            "text/event-stream" if sse else "application/json",
        )


def _gemini_key_ok(request: web.Request, settings: MockSettings) -> bool:
    if settings.api_key is None:
        return True
    given = request.headers.get("x-goog-api-key") or request.query.get("key") or ""
    return _key_matches(given, settings.api_key)


async def _gemini_models(request: web.Request) -> web.Response:
    if not _gemini_key_ok(request, request.app[MOCK_STATE].settings):
        return _json(_KEY_INVALID_ERROR, 400)
    methods = ["generateContent", "streamGenerateContent", "countTokens"]
    models = [
        {
            "name": f"models/{m}",
            "version": "001",
            "displayName": m,
            "inputTokenLimit": 1048576,
            "outputTokenLimit": 8192,
            "supportedGenerationMethods": methods,
        }
        for m in GEMINI_MODEL_IDS
    ]
    return _json({"models": models})
