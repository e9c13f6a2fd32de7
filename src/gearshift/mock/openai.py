"""The mock's OpenAI Chat Completions: ``POST /v1/chat/completions`` and ``GET /v1/models``.

OpenAI's validation and error objects (``_err``, also the shape of the app's own errors), the
completion body and the ``chat.completion.chunk`` SSE stream ending in ``[DONE]``. Models
whose id starts with ``gpt-6`` are as strict as OpenAI's: ``max_tokens`` is a 400 (they take
``max_completion_tokens``), and so are function tools with a reasoning effort other than
``none`` (sent, or their ``medium`` default): those need ``/v1/responses``
(``openai_responses``).
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar

from aiohttp import web

from gearshift.mock.flow import (
    _INVALID,
    _TOOL_ARGUMENTS,
    MOCK_STATE,
    MockSettings,
    RecordedRequest,
    _Api,
    _chunks,
    _is_int,
    _json,
    _key_matches,
    _limit,
    _outcome,
    _Problem,
    _prompt_tokens,
    _question,
    _slices,
    _sse,
    _Stream,
)

MODEL_IDS: tuple[str, ...] = (
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-6.2-astra",
    "gpt-6.2-sol",
    "gpt-6.1-terra",
    "gpt-6-luna",
)
"""Model ids listed by ``GET /v1/models`` (completions accept any model name)."""

_MODEL_CREATED = 1715367049
_GARBAGE_EVENT = b"data: {not json\n\n"
_DONE_EVENT = b"data: [DONE]\n\n"
_EXPLODED = {"message": "upstream exploded", "type": "server_error", "param": None, "code": None}
_BAD_KEY = (
    "Incorrect API key provided: sk-ab***cd. You can find your API key at "
    "https://platform.openai.com/account/api-keys."
)
_NO_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization "
    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)
_TOO_LONG = (
    "This model's maximum context length is 128000 tokens. However, your messages resulted "
    "in 130000 tokens. Please reduce the length of the messages."
)
_RATE_LIMITED = "Rate limit reached for requests (mock). Please try again in 1s."
_PROMPT_DETAILS = {"cached_tokens": 0, "audio_tokens": 0}
_COMPLETION_DETAILS = {
    "reasoning_tokens": 0,
    "audio_tokens": 0,
    "accepted_prediction_tokens": 0,
    "rejected_prediction_tokens": 0,
}


def _err(message: str, type_: str, param: str | None = None, code: str | None = None) -> Any:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


_FAILURES: dict[str, tuple[int, Any]] = {
    "http-500": (500, _err("The server had an error processing your request.", "server_error")),
    "http-503": (503, _err("The server is overloaded", "server_error")),
    # OpenAI's 429 type is the exhausted limit ("requests" / "tokens"); the code is fixed.
    "http-429": (429, _err(_RATE_LIMITED, "requests", code="rate_limit_exceeded")),
    "http-400": (400, _err(_TOO_LONG, _INVALID, "messages", "context_length_exceeded")),
    "http-401": (401, _err(_BAD_KEY, _INVALID, code="invalid_api_key")),
    # As users report it (e.g. github.com/Aider-AI/aider/issues/2030, read 2026-12-07).
    "withdrawn": (
        404,
        _err(
            "The model `{model}` does not exist or you do not have access to it.",
            _INVALID,
            code="model_not_found",
        ),
    ),
}
_FAILURE_HEADERS = {"http-429": {"retry-after": "1", "retry-after-ms": "1000"}}


def _auth_error(request: web.Request, settings: MockSettings) -> Any | None:
    if settings.api_key is None:
        return None
    header = request.headers.get("Authorization", "")
    if not header:
        return _err(_NO_KEY, _INVALID)
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not _key_matches(token, settings.api_key):
        return _err(_BAD_KEY, _INVALID, code="invalid_api_key")
    return None


def _validation_error(body: Any) -> Any | None:
    """OpenAI's 400 error body for a malformed request, or None."""
    if not isinstance(body, dict):
        return _err("We could not parse the JSON body of your request.", _INVALID)
    if "model" not in body:
        return _err("you must provide a model parameter", _INVALID)
    if not isinstance(body["model"], str):
        msg = "Invalid type for 'model': expected a string."
        return _err(msg, _INVALID, "model", "invalid_type")
    messages = body.get("messages")
    if messages is None:
        msg = "Missing required parameter: 'messages'."
        return _err(msg, _INVALID, "messages", "missing_required_parameter")
    if not isinstance(messages, list):
        msg = "Invalid type for 'messages': expected an array of objects."
        return _err(msg, _INVALID, "messages", "invalid_type")
    if not messages:
        msg = "Invalid 'messages': empty array. Expected an array with minimum length 1."
        return _err(msg, _INVALID, "messages", "empty_array")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            msg = f"Invalid type for 'messages[{i}]': expected an object."
            return _err(msg, _INVALID, f"messages[{i}]", "invalid_type")
    n = body.get("n", 1)
    if not _is_int(n) or not 1 <= n <= 128:
        return _err(f"Invalid 'n': expected an integer in [1, 128], got {n!r}.", _INVALID, "n")
    return _reasoning_model_error(body)


def _reasoning_model_error(body: dict[str, Any]) -> Any | None:
    """What OpenAI's GPT-6 models refuse on chat completions (``docs/wire-formats.md`` 7.1)."""
    model = body["model"]
    if not model.startswith("gpt-6"):
        return None
    if "max_tokens" in body:
        msg = (
            "Unsupported parameter: 'max_tokens' is not supported with this model. "
            "Use 'max_completion_tokens' instead."
        )
        return _err(msg, _INVALID, "max_tokens", "unsupported_parameter")
    tools = body.get("tools")
    functions = isinstance(tools, list) and any(
        isinstance(t, dict) and t.get("type") == "function" for t in tools
    )
    if functions and body.get("reasoning_effort", "medium") != "none":
        msg = (
            f"Function tools with reasoning_effort are not supported for {model} in "
            "/v1/chat/completions. To use function tools, use /v1/responses or set "
            "reasoning_effort to 'none'."
        )
        return _err(msg, _INVALID, "reasoning_effort")
    return None


def _tool_name(body: dict[str, Any]) -> str | None:
    """The function to call (named by ``tool_choice``, else the first tool), or None."""
    tools, choice = body.get("tools"), body.get("tool_choice")
    if not isinstance(tools, list) or not tools or choice == "none":
        return None
    if body["messages"][-1].get("role") == "tool":
        return None  # answer the tool results, so a tool round trip ends
    for holder in (choice, tools[0]):
        function = holder.get("function") if isinstance(holder, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if isinstance(name, str):
            return name
    return "unnamed_tool"


@dataclass(frozen=True)
class _Reply:
    meta: dict[str, Any]  # id, object, created, model, system_fingerprint, in OpenAI's order
    text: str | None  # None when answering with a tool call
    tool_call: dict[str, Any] | None
    finish: str
    choices: int
    usage: dict[str, Any]


def _reply(body: dict[str, Any], seq: int, obj: str) -> _Reply:
    model, messages, n = body["model"], body["messages"], body.get("n", 1)
    meta = {"id": f"chatcmpl-mock{seq}", "object": obj, "created": int(time.time())}
    meta |= {"model": model, "system_fingerprint": "fp_mock"}
    prompt = _prompt_tokens(m.get("content") for m in messages)
    limit = _limit(body.get("max_tokens"), body.get("max_completion_tokens"))
    turns = ((m.get("role"), m.get("content")) for m in messages)
    out = _outcome(model, _question(turns), limit, _tool_name(body), prompt)
    call = None
    if out.tool is not None:
        function = {"name": out.tool, "arguments": _TOOL_ARGUMENTS}
        call = {"id": f"call_mock{seq}", "type": "function", "function": function}
    finish = "tool_calls" if call else "length" if out.truncated else "stop"
    completion = out.completion * n
    usage = {"prompt_tokens": prompt, "completion_tokens": completion}
    usage |= {"total_tokens": prompt + completion, "prompt_tokens_details": _PROMPT_DETAILS}
    usage["completion_tokens_details"] = _COMPLETION_DETAILS
    return _Reply(meta, out.text, call, finish, n, usage)


def _completion(reply: _Reply) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text}
    if reply.tool_call is not None:
        message["tool_calls"] = [reply.tool_call]
    message["refusal"] = None
    choice = {"message": message, "logprobs": None, "finish_reason": reply.finish}
    choices = [{"index": i, **choice} for i in range(reply.choices)]
    return {**reply.meta, "choices": choices, "usage": reply.usage}


def _stream_steps(reply: _Reply, chunk_words: int, with_usage: bool) -> list[bytes]:
    """SSE steps (one event per choice each): role, content pieces, finish."""
    extra: dict[str, Any] = {"usage": None} if with_usage else {}

    def step(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"delta": delta, "logprobs": None, "finish_reason": finish}
        return b"".join(
            _sse({**reply.meta, "choices": [{"index": i, **choice}], **extra})
            for i in range(reply.choices)
        )

    deltas: list[dict[str, Any]]
    if reply.tool_call is not None:
        # As OpenAI does: id and name come with the role, then the arguments in fragments.
        fn = reply.tool_call["function"]
        head = {"index": 0, **reply.tool_call, "function": {"name": fn["name"], "arguments": ""}}
        first = {"role": "assistant", "content": None, "tool_calls": [head], "refusal": None}
        deltas = [
            {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
            for piece in _slices(fn["arguments"], 5)
        ]
    else:
        first = {"role": "assistant", "content": "", "refusal": None}
        deltas = [{"content": chunk} for chunk in _chunks(reply.text or "", chunk_words)]
    return [step(first), *(step(d) for d in deltas), step({}, reply.finish)]


class _OpenAI(_Api):
    name = "openai"
    id_header = "x-request-id"
    garbage_body = b'{"id": "chatcmpl-x", "choices": ['
    error_body: ClassVar[Any] = {"error": _EXPLODED}

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
        if behaviour not in _FAILURES:
            return None
        status, error = _FAILURES[behaviour]
        return _Problem(status, error, _FAILURE_HEADERS.get(behaviour, {}))

    def streaming(self, request: web.Request, body: dict[str, Any]) -> bool:
        return body.get("stream") is True

    def complete(self, request: web.Request, body: dict[str, Any], model: str, seq: int) -> Any:
        return _completion(_reply(body, seq, "chat.completion"))

    def stream(
        self, request: web.Request, body: dict[str, Any], model: str, seq: int, words: int
    ) -> _Stream:
        options = body.get("stream_options")
        with_usage = isinstance(options, dict) and options.get("include_usage") is True
        reply = _reply(body, seq, "chat.completion.chunk")
        role, *content, finish = _stream_steps(reply, words, with_usage)
        tail = [finish]
        if with_usage:
            tail.append(_sse({**reply.meta, "choices": [], "usage": reply.usage}))
        tail.append(_DONE_EVENT)
        error = _sse(self.error_body)
        return _Stream([role], content, tail, error, _GARBAGE_EVENT)


async def _models(request: web.Request) -> web.Response:
    problem = _auth_error(request, request.app[MOCK_STATE].settings)
    if problem is not None:
        return _json(problem, 401)
    model = {"object": "model", "created": _MODEL_CREATED, "owned_by": "mock"}
    return _json({"object": "list", "data": [{"id": m, **model} for m in MODEL_IDS]})


async def embeddings(request: web.Request) -> web.Response:
    """``POST /v1/embeddings``: OpenAI's list of ``embedding`` objects, one per input (a
    string, a list of strings, or token arrays), each a small deterministic unit vector
    (``dimensions`` long, default 8) drawn from the input's hash; usage counts four
    characters a token. Recorded like the chat requests."""
    state = request.app[MOCK_STATE]
    problem = _auth_error(request, state.settings)
    if problem is not None:
        return _json(problem, 401)
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        return _json(_embedding_error("'model' and 'input' are required."), 400)
    state.requests.append(
        RecordedRequest(
            path=request.path,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            query=request.query_string,
        )
    )
    raw = body.get("input")
    inputs = [raw] if isinstance(raw, str) else raw
    if not isinstance(inputs, list) or not inputs:
        return _json(_embedding_error("'input' must be a string or a non-empty array."), 400)
    size = body.get("dimensions", 8)
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= 4096:
        return _json(_embedding_error("'dimensions' must be an integer from 1 to 4096."), 400)
    data, tokens = [], 0
    for i, item in enumerate(inputs):
        text = item if isinstance(item, str) else " ".join(str(t) for t in item)
        tokens += max(1, len(text) // 4)
        seed = hashlib.sha256(text.encode()).digest()
        vector = [(seed[j % 32] - 127.5) / 127.5 for j in range(size)]
        norm = math.sqrt(sum(v * v for v in vector)) or 1.0
        data.append({"object": "embedding", "index": i, "embedding": [v / norm for v in vector]})
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return _json({"object": "list", "data": data, "model": body["model"], "usage": usage})


def _embedding_error(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "param": "input",
                      "code": None}}  # fmt: skip
