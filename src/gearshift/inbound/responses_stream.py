"""Chat answers → the OpenAI Responses API, what goes back to a Responses client: whole
answers (``encode``), the chat message a Response stands for in a later turn's history
(``assistant_message``) and the stream encoder, with what they share (the Response object,
usage, status, the failure object). ``inbound.responses`` holds the request side and
re-exports these.

``encode``: ``content`` → a ``message`` item with an ``output_text`` part (chat
``url_citation`` annotations flattened), ``refusal`` → a ``refusal`` part, each tool call →
a ``function_call`` item after it; an answer with neither text nor calls still has its
(empty) message; ``finish_reason`` ``length`` / ``content_filter`` → ``status: incomplete``,
the last item ``incomplete``.

``StreamEncoder`` turns the relay's chat stream (``chat.completion.chunk`` events, the
usage-only chunk, ``[DONE]``, or an in-band ``{"error": …}`` event; keep-alive comments)
into Responses events, each framed ``event: <type>`` + ``data: {"type", "sequence_number",
…}`` with ``sequence_number`` counting from 0 (``docs/wire-formats.md`` §6.6, §6.8):

- the first event fed → ``response.created`` and ``response.in_progress`` (status
  ``in_progress``, no output, no usage);
- ``delta.content`` / ``delta.refusal`` → a ``message`` item (``output_item.added``), an
  ``output_text`` or ``refusal`` part (``content_part.added``), then ``output_text.delta``
  / ``refusal.delta``; text after a refusal (or the reverse) opens a new part;
- a tool-call fragment with a new chat ``index`` closes the open item and opens a
  ``function_call`` item (``id`` ``fc_…`` minted, ``call_id`` the chat id, kept verbatim so
  a carried state comes back); its argument fragments → ``function_call_arguments.delta``.
  A fragment for a call already closed (no upstream interleaves them) still lands in the
  final Response's arguments;
- ``finish_reason`` closes the open item (``…done`` events with the accumulated text),
  ``incomplete`` when it is ``length`` / ``content_filter``; the usage chunk is noted (its
  ``gearshift`` cost object is kept on the final Response as ``gearshift``);
- ``[DONE]`` → ``response.completed``, or ``response.incomplete`` (``incomplete_details``
  ``max_output_tokens`` / ``content_filter``), carrying the whole Response with ``usage``;
  it is also ``final``. An answer with no item at all gets an empty message, as ``encode``
  gives it;
- an error event → ``response.failed`` (``status: failed``, ``error {code, message}``, the
  items so far); ``end()`` on a stream that never reached ``[DONE]`` or an error → the same
  ``response.failed``, so a client never sees a silent truncation. Nothing follows a
  terminal event.

``error.code`` is one the SDK knows (its ``ResponseError`` enum, plus the
``context_length_exceeded`` / ``insufficient_quota`` that Codex branches on); any other
failure is ``rate_limit_exceeded`` (a rate-limit type) or ``server_error``, the message
saying what happened.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson

from gearshift import sse

if TYPE_CHECKING:
    from gearshift.inbound.responses import ResponsesRequest

_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}

# openai-python's ``ResponseError.code`` enum, and the codes Codex reads besides them.
_ERROR_CODES = frozenset(
    {
        "server_error",
        "rate_limit_exceeded",
        "invalid_prompt",
        "data_residency_mismatch",
        "bio_policy",
        "misalignment_policy_violation",
        "vector_store_timeout",
        "invalid_image",
        "invalid_image_format",
        "invalid_base64_image",
        "invalid_image_url",
        "image_too_large",
        "image_too_small",
        "image_parse_error",
        "image_content_policy_violation",
        "invalid_image_mode",
        "image_file_too_large",
        "unsupported_image_media_type",
        "empty_image_file",
        "failed_to_download_image",
        "image_file_not_found",
        "context_length_exceeded",
        "insufficient_quota",
    }
)
_CUT = {
    "code": "server_error",
    "message": "The answer stream ended before it was complete; the output above is truncated.",
}


def new_id(prefix: str) -> str:
    """An item or response id as OpenAI shapes them: a prefix and 48 hex digits."""
    return prefix + secrets.token_hex(24)


def _count(holder: Any, name: str) -> int:
    value = holder.get(name) if isinstance(holder, Mapping) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def usage(chat: Any) -> dict[str, Any] | None:
    """A chat usage as a Responses usage (None without one): prompt → input (cached reads and
    gearshift's cache writes in its details), completion → output (reasoning included)."""
    if not isinstance(chat, Mapping):
        return None
    inputs, outputs = chat.get("prompt_tokens_details"), chat.get("completion_tokens_details")
    prompt, completion = _count(chat, "prompt_tokens"), _count(chat, "completion_tokens")
    total = chat.get("total_tokens")
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": _count(inputs, "cached_tokens"),
            "cache_write_tokens": _count(inputs, "cache_write_tokens"),
        },
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": _count(outputs, "reasoning_tokens")},
        "total_tokens": total
        if isinstance(total, int) and not isinstance(total, bool)
        else prompt + completion,
    }


def failure(error: Any) -> dict[str, Any]:
    """The Response ``error`` for a chat error object (``{"message", "type", "code", …}``)."""
    err: Mapping[str, Any] = error if isinstance(error, Mapping) else {}
    code, kind, message = err.get("code"), err.get("type"), err.get("message")
    if not (isinstance(code, str) and code in _ERROR_CODES):
        code = "rate_limit_exceeded" if kind == "rate_limit_error" else "server_error"
    if not isinstance(message, str) or not message:
        message = "The model failed to produce a response."
    return {"code": code, "message": message}


def incomplete_reason(finish: Any) -> str | None:
    """``incomplete_details.reason`` for a chat ``finish_reason`` (None: complete)."""
    return _INCOMPLETE.get(finish) if isinstance(finish, str) else None


def response_object(
    request: ResponsesRequest,
    response_id: str,
    model: str,
    created_at: int,
    status: str,
    output: list[dict[str, Any]],
    used: dict[str, Any] | None,
    *,
    reason: str | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A Response object: its own fields, then the request's settings it echoes."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": False,
        "completed_at": int(time.time()) if status == "completed" else None,
        "error": error,
        "incomplete_details": {"reason": reason} if reason else None,
        "model": model,
        "output": output,
        **request.original,
        "usage": used,
    }


def output_text(text: str, annotations: list[Any] | None = None) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": annotations or [], "logprobs": []}


def item_id(item: Mapping[str, Any], prefix: str) -> str:
    value = item.get("id")
    return value if isinstance(value, str) and value else new_id(prefix)


def message_item(
    role: str, parts: list[Any], item: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    item = item or {}
    if role == "assistant":  # an earlier output: its text parts as output_text shapes them
        parts = [
            {"annotations": [], **p}
            if isinstance(p, dict) and p.get("type") == "output_text"
            else p
            for p in parts
        ]
    return {
        "id": item_id(item, "msg_"),
        "type": "message",
        "role": role,
        "content": parts,
        "status": item.get("status") or "completed",
    }


def encode(
    completion: bytes, request: ResponsesRequest, response_id: str, served_model: str
) -> dict[str, Any]:
    """The Response object for a whole chat completion (see the module docstring)."""
    doc = orjson.loads(completion)
    if not isinstance(doc, dict):
        doc = {}
    choices = doc.get("choices")
    choice = next((c for c in choices or () if isinstance(c, dict) and c.get("index", 0) == 0), {})
    message = choice.get("message")
    message = message if isinstance(message, dict) else {}
    content = message.get("content")
    if isinstance(content, list):  # some servers answer with text parts
        content = "".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    parts: list[dict[str, Any]] = []
    if isinstance(content, str) and content:
        parts.append(output_text(content, _annotations(message.get("annotations"))))
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        parts.append({"type": "refusal", "refusal": refusal})
    calls = message.get("tool_calls")
    calls = [c for c in calls if isinstance(c, dict)] if isinstance(calls, list) else []
    output: list[dict[str, Any]] = []
    if parts or not calls:
        output.append(message_item("assistant", parts or [output_text("")]))
    for call in calls:
        fn = call.get("function")
        fn = fn if isinstance(fn, dict) else {}
        call_id, name, arguments = call.get("id"), fn.get("name"), fn.get("arguments")
        output.append(
            {
                "id": new_id("fc_"),
                "type": "function_call",
                "status": "completed",
                "call_id": call_id if isinstance(call_id, str) else new_id("call_"),
                "name": name if isinstance(name, str) else "",
                "arguments": arguments if isinstance(arguments, str) else "{}",
            }
        )
    reason = incomplete_reason(choice.get("finish_reason"))
    if reason:
        output[-1]["status"] = "incomplete"  # the item the answer was cut in
    status = "incomplete" if reason else "completed"
    created = int(time.time())
    used = usage(doc.get("usage"))
    return response_object(
        request, response_id, served_model, created, status, output, used, reason=reason
    )


def _annotations(value: Any) -> list[dict[str, Any]]:
    """Chat ``url_citation`` annotations, flattened as Responses shapes them."""
    out = []
    for entry in value if isinstance(value, list) else ():
        cite = entry.get("url_citation") if isinstance(entry, dict) else None
        if isinstance(cite, dict):
            fields = ("url", "title", "start_index", "end_index")
            out.append({"type": "url_citation", **{k: cite.get(k) for k in fields}})
    return out


def assistant_message(response: Mapping[str, Any]) -> dict[str, Any]:
    """A Response's output as the chat assistant message a later turn's history holds:
    its text joined, its refusal, its function calls (``id = call_id``)."""
    texts: list[str] = []
    refusals: list[str] = []
    calls: list[dict[str, Any]] = []
    for item in response.get("output") or ():
        if not isinstance(item, dict):
            continue
        if item.get("type") == "message":
            for part in item.get("content") or ():
                if isinstance(part, dict) and part.get("type") == "output_text":
                    texts.append(str(part.get("text") or ""))
                elif isinstance(part, dict) and part.get("type") == "refusal":
                    refusals.append(str(part.get("refusal") or ""))
        elif item.get("type") == "function_call":
            fn = {"name": item.get("name"), "arguments": item.get("arguments")}
            calls.append({"id": item.get("call_id"), "type": "function", "function": fn})
    text = "".join(texts)
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if not text and not calls and not refusals:
        message["content"] = ""
    if calls:
        message["tool_calls"] = calls
    if refusals:
        message["refusal"] = "".join(refusals)
    return message


def _frame(kind: str, seq: int, fields: dict[str, Any]) -> bytes:
    data = orjson.dumps({"type": kind, "sequence_number": seq, **fields})
    return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"


class StreamEncoder:
    """The relay's chat stream → Responses events (see the module docstring)."""

    __slots__ = (
        "_calls",
        "_created_at",
        "_extra",
        "_finish",
        "_framer",
        "_model",
        "_open",
        "_out",
        "_output",
        "_part",
        "_pieces",
        "_request",
        "_response_id",
        "_seq",
        "_usage",
        "ended",
        "final",
    )

    def __init__(self, request: ResponsesRequest, response_id: str, served_model: str) -> None:
        self._request = request
        self._response_id = response_id
        self._model = served_model
        self._created_at = int(time.time())
        self._framer = sse.Framer()
        self._seq = 0
        self._out: list[bytes] = []
        self._output: list[dict[str, Any]] = []  # every item, by output_index
        self._open: int | None = None  # the output_index of the open item
        self._part: dict[str, Any] | None = None  # the open message's open part
        self._calls: dict[int, int] = {}  # chat tool-call index → output_index
        # The open text part's and each call's pieces, joined when read (a string grown by
        # += in a dict is copied whole every time: quadratic over a long answer).
        self._pieces: dict[int, list[str]] = {}  # -1: the open part; else an output_index
        self._finish: str | None = None
        self._usage: dict[str, Any] | None = None
        self._extra: Any = None  # the usage chunk's gearshift object
        self.final: dict[str, Any] | None = None
        """The completed (or incomplete) Response, once ``[DONE]`` was fed."""
        self.ended = False
        """A terminal event was sent: nothing more will be."""

    # ------------------------------------------------------------ the interface

    def feed(self, piece: bytes) -> bytes:
        """Responses SSE bytes for a piece of the chat stream (whole events or not)."""
        if self.ended:
            return b""
        for event in self._framer.feed(piece):
            self._event(event)
            if self.ended:
                break
        return self._flush()

    def end(self) -> bytes:
        """The chat stream has ended: a ``response.failed`` when it did not complete."""
        if not self.ended:
            pending = self._framer.pending
            if pending.strip():
                self._event(pending + b"\n\n")
        if not self.ended:
            self._fail(_CUT)
        return self._flush()

    # ------------------------------------------------------------ events in

    def _flush(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    def _emit(self, kind: str, **fields: Any) -> None:
        self._out.append(_frame(kind, self._seq, fields))
        self._seq += 1

    def _event(self, raw: bytes) -> None:
        if sse.no_content(raw):
            if self._seq:  # a keep-alive, once the stream has started
                self._out.append(b": keep-alive\n\n")
            return
        if not self._seq:
            self._start()
        data = sse.data_payload(raw)
        if data == sse.DONE:
            self._complete()
            return
        try:
            chunk = orjson.loads(data or b"")
        except orjson.JSONDecodeError:
            chunk = None
        if not isinstance(chunk, dict):
            self._fail({"message": "gearshift's answer stream held a malformed event."})
            return
        if chunk.get("error") is not None:
            self._fail(chunk["error"])
            return
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                self._choice(choice)
        if isinstance(chunk.get("usage"), dict):
            self._usage = usage(chunk["usage"])
            self._extra = chunk.get("gearshift")

    def _choice(self, choice: dict[str, Any]) -> None:
        delta = choice.get("delta")
        if isinstance(delta, dict):
            for kind, field in (("output_text", "content"), ("refusal", "refusal")):
                piece = delta.get(field)
                if isinstance(piece, str) and piece:
                    self._text(kind, piece)
            calls = delta.get("tool_calls")
            for fragment in calls if isinstance(calls, list) else ():
                if isinstance(fragment, dict):
                    self._call(fragment)
        finish = choice.get("finish_reason")
        if isinstance(finish, str) and finish:
            self._finish = finish
            self._close("incomplete" if incomplete_reason(finish) else "completed")

    # ------------------------------------------------------------ items

    def _start(self) -> None:
        started = self._response("in_progress", [], None)
        self._emit("response.created", response=started)
        self._emit("response.in_progress", response=started)

    def _response(
        self, status: str, output: list[dict[str, Any]], used: dict[str, Any] | None, **kw: Any
    ) -> dict[str, Any]:
        request, rid, model = self._request, self._response_id, self._model
        return response_object(request, rid, model, self._created_at, status, output, used, **kw)

    def _add(self, item: dict[str, Any]) -> int:
        index = len(self._output)
        self._output.append(item)
        self._open = index
        self._emit("response.output_item.added", output_index=index, item=item)
        return index

    def _text(self, kind: str, piece: str) -> None:
        index = self._open
        if index is None or self._output[index]["type"] != "message":
            self._close("completed")
            message = {"id": new_id("msg_"), "type": "message", "status": "in_progress"}
            index = self._add(message | {"role": "assistant", "content": []})
        item = self._output[index]
        at = {"item_id": item["id"], "output_index": index}
        part = self._part
        if part is None or part["type"] != kind:
            self._close_part()
            part = self._part = (
                output_text("") if kind == "output_text" else {"type": "refusal", "refusal": ""}
            )
            item["content"].append(part)
            empty = {k: v for k, v in part.items() if k != "logprobs"}
            self._emit("response.content_part.added", **at, content_index=self._k(), part=empty)
        if not piece:
            return
        self._pieces.setdefault(-1, []).append(piece)
        if kind == "output_text":
            self._emit(
                "response.output_text.delta",
                **at,
                content_index=self._k(),
                delta=piece,
                logprobs=[],
            )
        else:
            self._emit("response.refusal.delta", **at, content_index=self._k(), delta=piece)

    def _k(self) -> int:
        """The content_index of the open part."""
        assert self._open is not None
        return len(self._output[self._open]["content"]) - 1

    def _call(self, fragment: dict[str, Any]) -> None:
        k = fragment.get("index")
        k = k if isinstance(k, int) and not isinstance(k, bool) else 0
        fn = fragment.get("function")
        fn = fn if isinstance(fn, dict) else {}
        index = self._calls.get(k)
        if index is None:
            self._close("completed")
            call_id = fragment.get("id")
            name = fn.get("name")
            index = self._calls[k] = self._add(
                {
                    "id": new_id("fc_"),
                    "type": "function_call",
                    "status": "in_progress",
                    "call_id": call_id if isinstance(call_id, str) else new_id("call_"),
                    "name": name if isinstance(name, str) else "",
                    "arguments": "",
                }
            )
        piece = fn.get("arguments")
        if not isinstance(piece, str) or not piece:
            return
        item = self._output[index]
        self._pieces.setdefault(index, []).append(piece)
        if index == self._open:
            self._emit(
                "response.function_call_arguments.delta",
                item_id=item["id"],
                output_index=index,
                delta=piece,
            )

    def _joined(self) -> None:
        """The pieces so far written into the open part and the calls (before they are read:
        closing, a final or failed Response)."""
        for key, pieces in self._pieces.items():
            if not pieces:
                continue
            if key == -1:
                if self._part is not None:
                    field = "text" if self._part["type"] == "output_text" else "refusal"
                    self._part[field] += "".join(pieces)
            else:
                self._output[key]["arguments"] += "".join(pieces)
            pieces.clear()

    def _close_part(self) -> None:
        self._joined()
        part, self._part = self._part, None
        if part is None:
            return
        index = self._open
        assert index is not None
        at = {"item_id": self._output[index]["id"], "output_index": index}
        k = self._k()
        if part["type"] == "output_text":
            self._emit(
                "response.output_text.done", **at, content_index=k, text=part["text"], logprobs=[]
            )
        else:
            self._emit("response.refusal.done", **at, content_index=k, refusal=part["refusal"])
        self._emit("response.content_part.done", **at, content_index=k, part=part)

    def _close(self, status: str) -> None:
        self._joined()
        index, item = self._open, None
        if index is not None:
            item = self._output[index]
        if item is None:
            return
        if item["type"] == "function_call":
            self._emit(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=index,
                name=item["name"],
                arguments=item["arguments"],
            )
        else:
            self._close_part()
        item["status"] = status
        self._open = None
        self._emit("response.output_item.done", output_index=index, item=item)

    # ------------------------------------------------------------ the end

    def _complete(self) -> None:
        reason = incomplete_reason(self._finish)
        self._close("incomplete" if reason else "completed")
        if not self._output:  # an empty answer still has its message, as ``encode`` gives it
            self._text("output_text", "")
            self._close("incomplete" if reason else "completed")
        status = "incomplete" if reason else "completed"
        final = self._response(status, self._output, self._usage, reason=reason)
        if self._extra is not None:
            final["gearshift"] = self._extra
        self.final = final
        self.ended = True
        self._emit(f"response.{status}", response=final)

    def _fail(self, error: Any) -> None:
        self._joined()
        if not self._seq:
            self._start()
        failed = self._response("failed", self._output, self._usage, error=failure(error))
        self.ended = True
        self._emit("response.failed", response=failed)
