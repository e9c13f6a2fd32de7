"""What the translating adapters share: reading OpenAI requests, writing OpenAI answers.

Anthropic and Gemini answers become OpenAI ``chat.completion`` objects and
``chat.completion.chunk`` SSE events built here, so both adapters emit the same shapes; the
request side has the small parsers both need (data URLs, tool-call arguments, tool names by
id, the orphan-free pairing of tool calls and results).
"""

from __future__ import annotations

import base64
import binascii
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from gearshift import sse
from gearshift.errors import BadRequest, ProtocolError, Unsupported

IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})


# ---------------------------------------------------------------- reading OpenAI requests


def max_output(body: Mapping[str, Any]) -> int | None:
    """``max_completion_tokens`` (newer) or ``max_tokens``, when a positive integer."""
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def stop_list(body: Mapping[str, Any]) -> list[str]:
    stop = body.get("stop")
    if isinstance(stop, str):
        return [stop] if stop else []
    if isinstance(stop, list):
        return [s for s in stop if isinstance(s, str) and s]
    return []


def data_url(url: str) -> tuple[str, str] | None:
    """``data:<mime>;base64,<data>`` → (mime, data); None for any other URL. A malformed
    data URL is the client's error (400), not something to forward."""
    if not url.startswith("data:"):
        return None
    head, sep, data = url[5:].partition(",")
    mime, _, encoding = head.partition(";")
    if not sep or encoding != "base64" or not mime:
        raise BadRequest(
            "An image data URL must look like data:<media type>;base64,<data>.",
            param="messages",
            code="invalid_image_url",
        )
    try:
        base64.b64decode(data[:64] + "=" * (-len(data[:64]) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(
            "An image data URL carries data that is not base64.",
            param="messages",
            code="invalid_image_url",
        ) from None
    return mime.lower(), data


def image_url(part: Mapping[str, Any]) -> str:
    holder = part.get("image_url")
    url = holder.get("url") if isinstance(holder, dict) else holder
    if not isinstance(url, str) or not url:
        raise BadRequest(
            "An image_url part needs image_url.url.", param="messages", code="invalid_image_url"
        )
    return url


JSON_INSTRUCTION = "Answer with one valid JSON object and nothing else: no prose, no code fence."
"""Added to the system prompt where JSON mode cannot be asked natively."""


def functions(tools: Any) -> list[tuple[str, str | None, Any]]:
    """(name, description, parameters) of each OpenAI ``tools`` entry; 400 for a malformed
    one."""
    out: list[tuple[str, str | None, Any]] = []
    for tool in tools or ():
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise BadRequest(
                "Each tool needs type 'function' and function.name.",
                param="tools",
                code="invalid_value",
            )
        description = fn.get("description")
        out.append(
            (
                fn["name"],
                description if isinstance(description, str) else None,
                fn.get("parameters"),
            )
        )
    return out


def json_or_none(body: bytes) -> Any:
    """An error body parsed, or None when it is not JSON (an HTML page from a proxy …)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def json_object(body: bytes, provider: str) -> dict[str, Any]:
    """A 200 answer parsed; anything but a JSON object is the provider's protocol failure."""
    doc = json_or_none(body)
    if not isinstance(doc, dict):
        raise ProtocolError(
            f"Provider {provider!r} sent a response that is not a JSON object.", provider=provider
        )
    return doc


def file_data(part: Mapping[str, Any]) -> str:
    """The data URL of a ``file`` part; a ``file_id`` (OpenAI's own file store) cannot be
    sent to another provider."""
    holder = part.get("file")
    data = holder.get("file_data") if isinstance(holder, dict) else None
    if not isinstance(data, str) or not data.startswith("data:"):
        raise Unsupported(
            "A file part needs file.file_data as a data URL here (file_id refers to OpenAI's "
            "own file store, which other providers cannot read).",
            provider="openai-files",
            param="messages",
            code="unsupported_content",
        )
    return data


def content_parts(
    content: Any,
    *,
    text: Callable[[str], dict[str, Any]],
    media: Callable[[str], dict[str, Any]],
    provider: str,
) -> list[dict[str, Any]]:
    """A user message's content (a string or OpenAI parts) in a provider's shape: ``text``
    builds a text part, ``media`` one from an image (or file) URL; empty texts are dropped;
    a part type the provider cannot take is ``Unsupported``."""
    if isinstance(content, str):
        return [text(content)] if has_text(content) else []
    out: list[dict[str, Any]] = []
    for part in content if isinstance(content, list) else ():
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "text":
            if has_text(part.get("text")):
                out.append(text(part["text"]))
        elif kind == "image_url":
            out.append(media(image_url(part)))
        elif kind == "file":  # a PDF (or image) as a data URL in file.file_data
            out.append(media(file_data(part)))
        else:
            raise Unsupported(
                f"Content parts of type {kind!r} cannot be sent to {provider} models.",
                provider=provider.lower(),
                param="messages",
                code="unsupported_content",
            )
    return out


def arguments_object(arguments: Any) -> dict[str, Any]:
    """A tool call's ``arguments`` (a JSON string in OpenAI's format) as the object Anthropic
    and Gemini want; text that is not a JSON object is kept as ``{"_raw": text}``."""
    if isinstance(arguments, dict):
        return arguments
    if not isinstance(arguments, str) or not arguments.strip():
        return {}
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {"_raw": arguments}
    return value if isinstance(value, dict) else {"_raw": arguments}


def has_text(text: Any) -> bool:
    """A string with something besides whitespace: Anthropic refuses text blocks that are
    empty or whitespace only, and such text carries nothing for any provider."""
    return isinstance(text, str) and not text.isspace() and bool(text)


def text_parts(content: Any) -> list[str]:
    """The texts of a message content (a string or an array of parts) that are not empty
    or whitespace only."""
    if isinstance(content, str):
        return [content] if has_text(content) else []
    if isinstance(content, list):
        return [
            p["text"]
            for p in content
            if isinstance(p, dict) and p.get("type") == "text" and has_text(p.get("text"))
        ]
    return []


def system_text(messages: Iterable[Any]) -> str:
    """Every system/developer message's text, in order, joined by blank lines (their
    position in the conversation is lost: Anthropic and Gemini take one system prompt)."""
    texts: list[str] = []
    for m in messages:
        if isinstance(m, dict) and m.get("role") in ("system", "developer"):
            texts += text_parts(m.get("content"))
    return "\n\n".join(texts)


@dataclass(slots=True)
class ToolPairs:
    """Which tool calls were answered, by position: a call counts only when a ``tool``
    message with its id follows its assistant turn before the next user or assistant turn,
    and a result only when it answers a call of the assistant turn just before that is not
    answered yet. Orphans on either side (a history cut in the middle of a tool loop, a
    result repeated later) are dropped as whole pairs, never half of one. A malformed
    ``tool_calls`` entry is the client's error (400), as it is for OpenAI."""

    calls: set[tuple[int, int]] = field(default_factory=set)  # (message, call) positions
    # tool message position → (function name, position of its call in ``tool_calls``,
    # position of the assistant message that made the call)
    results: dict[int, tuple[str, int, int]] = field(default_factory=dict)

    def call_kept(self, message: int, call: int) -> bool:
        return (message, call) in self.calls

    def result_name(self, message: int) -> str | None:
        """The function name of the call a ``tool`` message answers; None for an orphan."""
        hit = self.results.get(message)
        return None if hit is None else hit[0]

    def result_call(self, message: int) -> tuple[int, int]:
        """(assistant message, call) positions of the call a kept ``tool`` message answers."""
        hit = self.results[message]
        return hit[2], hit[1]

    def result_order(self, message: int) -> int:
        """The position, in its assistant turn, of the call a ``tool`` message answers."""
        return self.results[message][1]

    @classmethod
    def of(cls, messages: list[Any]) -> ToolPairs:
        pairs = cls()
        open_calls: dict[str, tuple[int, int, str]] = {}  # id → (message, call, name)
        for i, m in enumerate(messages):
            if not isinstance(m, dict):
                continue
            role = m.get("role")
            if role == "assistant":
                open_calls = {}
                for j, (call_id, name) in enumerate(_calls(m.get("tool_calls"), i)):
                    open_calls.setdefault(call_id, (i, j, name))  # a repeated id: the first
            elif role == "tool":
                answers = m.get("tool_call_id")
                hit = open_calls.pop(answers, None) if isinstance(answers, str) else None
                if hit is not None:
                    pairs.calls.add((hit[0], hit[1]))
                    pairs.results[i] = (hit[2], hit[1], hit[0])
            elif role in ("user", "function"):
                open_calls = {}
        return pairs


def _calls(tool_calls: Any, i: int) -> list[tuple[str, str]]:
    """(id, function name) of each entry of an assistant message's ``tool_calls``."""
    if tool_calls is None:
        return []
    where = f"messages[{i}].tool_calls"
    if not isinstance(tool_calls, list):
        raise BadRequest(f"'{where}' must be an array.", param=where, code="invalid_type")
    out: list[tuple[str, str]] = []
    for call in tool_calls:
        fn = call.get("function") if isinstance(call, dict) else None
        call_id = call.get("id") if isinstance(call, dict) else None
        name = fn.get("name") if isinstance(fn, dict) else None
        if not (isinstance(call_id, str) and call_id and isinstance(name, str) and name):
            raise BadRequest(
                f"Each entry of '{where}' needs an id and function.name.",
                param=where,
                code="invalid_value",
            )
        out.append((call_id, name))
    return out


def user_first(turns: list[tuple[str, list[Any]]], placeholder: Any) -> None:
    """Anthropic and Gemini refuse a conversation that is empty or opens with the model's
    turn (OpenAI takes both: a system prompt alone, a greeting first): such a conversation
    is opened with a user turn holding only ``placeholder`` (the text :data:`PLACEHOLDER`)."""
    if not turns or turns[0][0] != "user":
        turns.insert(0, ("user", [placeholder]))


PLACEHOLDER = "."
"""The text of the user turn that opens a conversation which had none (see ``user_first``)."""


def merge_turns(turns: list[tuple[str, list[Any]]]) -> list[tuple[str, list[Any]]]:
    """Consecutive turns of one role become one (their blocks concatenated); empty turns
    are dropped first, so that neighbours they separated merge too."""
    merged: list[tuple[str, list[Any]]] = []
    for role, blocks in turns:
        if not blocks:
            continue
        if merged and merged[-1][0] == role:
            merged[-1][1].extend(blocks)
        else:
            merged.append((role, list(blocks)))
    return merged


# ---------------------------------------------------------------- writing OpenAI answers


def new_call_id() -> str:
    """A tool-call id for providers that give none (Gemini): ``call_`` and 24 hex digits."""
    return "call_" + secrets.token_hex(12)


def usage(
    prompt: int,
    completion: int,
    *,
    cached: int = 0,
    cache_write: int = 0,
    reasoning: int = 0,
    total: int | None = None,
) -> dict[str, Any]:
    """An OpenAI usage object. ``prompt`` counts every input token, cached and cache writes
    included; ``completion`` counts reasoning tokens too (as OpenAI's own do).
    ``cache_write_tokens`` is gearshift's extra field (OpenAI has no slot for it)."""
    details: dict[str, int] = {"cached_tokens": cached}
    if cache_write:
        details["cache_write_tokens"] = cache_write
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion if total is None else total,
        "prompt_tokens_details": details,
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }


def tool_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def message(text: str | None, calls: list[dict[str, Any]]) -> dict[str, Any]:
    """An assistant message: ``content`` is the text, or null when the answer is only tool
    calls (OpenAI's own shape); an answer with neither has content ``""``."""
    out: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None}
    if calls:
        out["tool_calls"] = calls
    out["refusal"] = None
    return out


def completion(
    completion_id: str,
    model: str,
    choices: list[tuple[dict[str, Any], str]],
    usage_: dict[str, Any] | None,
) -> bytes:
    """A ``chat.completion`` body from (message, finish_reason) per choice."""
    doc: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": i, "message": m, "logprobs": None, "finish_reason": finish}
            for i, (m, finish) in enumerate(choices)
        ],
    }
    if usage_ is not None:
        doc["usage"] = usage_
    return orjson.dumps(doc)


class Chunks:
    """Writes ``chat.completion.chunk`` SSE events with one id, ``created`` and model.

    The first delta of each choice is preceded by the role chunk (``{"role": "assistant",
    "content": ""}``, as OpenAI opens a stream): a decoder never sends the role alone, so a
    stream whose provider fails before any content has sent nothing and can fall back."""

    __slots__ = ("_head", "_opened", "id", "model")

    def __init__(self, chunk_id: str, model: str) -> None:
        self.id = chunk_id
        self.model = model
        self._opened: set[int] = set()
        created = int(time.time())
        # The fixed fields, pre-encoded once: every event shares them.
        self._head = (
            b'{"id":'
            + orjson.dumps(chunk_id)
            + b',"object":"chat.completion.chunk","created":'
            + str(created).encode()
            + b',"model":'
            + orjson.dumps(model)
        )

    @property
    def started(self) -> bool:
        """Whether any chunk has been written (the stream is then committed)."""
        return bool(self._opened)

    def delta(self, delta: Mapping[str, Any], finish: str | None = None, index: int = 0) -> bytes:
        opening = b""
        if index not in self._opened:
            self._opened.add(index)
            opening = self._event(index, {"role": "assistant", "content": ""}, None)
        return opening + self._event(index, delta, finish)

    def _event(self, index: int, delta: Mapping[str, Any], finish: str | None) -> bytes:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        return sse.encode(self._head + b',"choices":[' + orjson.dumps(choice) + b"]}")

    def usage(self, usage_: Mapping[str, Any]) -> bytes:
        """The usage-only chunk, as a JSON object (``StreamState.usage_chunk``)."""
        return self._head + b',"choices":[],"usage":' + orjson.dumps(usage_) + b"}"

    @staticmethod
    def done() -> bytes:
        return b"data: [DONE]\n\n"


def model_list(body: bytes, key: str, field: str) -> tuple[dict[str, Any], list[str]]:
    """A model list answer: the document and the ``field`` of each entry of its ``key``
    list (``data``/``id`` for OpenAI and Anthropic, ``models``/``name`` for Gemini).
    ``ValueError`` when it is not one."""
    doc = orjson.loads(body)
    entries = doc.get(key) if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f"no {key} list")
    ids = [e[field] for e in entries if isinstance(e, dict) and isinstance(e.get(field), str)]
    return doc, ids
