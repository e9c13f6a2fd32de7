"""The Responses API's ``input`` read into chat messages and normalised items
(``responses.parse``'s half that walks the items, §6.3): message items with their parts,
earlier output messages, ``function_call`` / ``function_call_output``; what no upstream but
OpenAI reads is refused. Errors name the field in Responses terms."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gearshift.errors import BadRequest
from gearshift.inbound.chat import _json_type
from gearshift.inbound.responses_stream import item_id, message_item, output_text

_ROLES = ("user", "system", "developer", "assistant")
_IMAGE_DETAIL = {"low": "low", "high": "high", "auto": "auto", "original": "auto"}


def bad(message: str, param: str | None, code: str = "invalid_value") -> BadRequest:
    return BadRequest(message, param=param, code=code)


def wrong_type(param: str, expected: str, value: Any) -> BadRequest:
    return bad(
        f"Invalid type for '{param}': expected {expected}, got {_json_type(value)}.",
        param,
        "invalid_type",
    )


def missing(param: str) -> BadRequest:
    return bad(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")


class Input:
    """The ``input`` read into chat messages and normalised items."""

    def __init__(self, history: list[dict[str, Any]]) -> None:
        self.messages: list[dict[str, Any]] = []
        self.items: list[dict[str, Any]] = []
        self._images: list[dict[str, Any]] = []  # of tool outputs: a user message after them
        # The message a function_call joins (this input's only: history is the app's).
        self._last: dict[str, Any] | None = None
        self._calls: set[str] = {
            call["id"]
            for m in history
            if isinstance(m, dict) and isinstance(m.get("tool_calls"), list)
            for call in m["tool_calls"]
            if isinstance(call, dict) and isinstance(call.get("id"), str)
        }

    def read(self, value: Any) -> None:
        if isinstance(value, str):
            self._append({"role": "user", "content": value})
            self.items.append(message_item("user", [{"type": "input_text", "text": value}]))
            return
        if value is None:
            return
        if not isinstance(value, list):
            raise wrong_type("input", "a string or an array of items", value)
        for i, item in enumerate(value):
            self._item(i, item)
        self._flush_images()

    def _append(self, message: dict[str, Any]) -> None:
        if message["role"] != "tool":
            self._flush_images()
        self.messages.append(message)
        self._last = message

    def _flush_images(self) -> None:
        if self._images:
            parts, self._images = self._images, []
            self._append({"role": "user", "content": parts})

    def _item(self, i: int, item: Any) -> None:
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise wrong_type(where, "an object", item)
        kind = item.get("type")
        if kind is None:
            kind = "message" if "role" in item else "item_reference" if "id" in item else None
        if kind == "message":
            self._message(item, where)
        elif kind == "function_call":
            self._function_call(item, where)
        elif kind == "function_call_output":
            self._function_output(item, where)
        elif kind == "reasoning":  # dropped: see the module docstring
            if not isinstance(item.get("id"), str):
                raise missing(f"{where}.id")
            self.items.append(item)
        elif kind == "item_reference":
            raise bad(
                f"'{where}' is an item reference: gearshift keeps no items apart from whole "
                "responses; send the item itself, or continue with previous_response_id.",
                where,
                "unsupported_value",
            )
        elif isinstance(kind, str) and ("_call" in kind or kind.startswith("mcp_")):
            raise bad(
                f"'{where}' is a {kind!r} item: built-in and custom tools are not supported "
                "(gearshift serves function tools only).",
                f"{where}.type",
                "unsupported_tool",
            )
        else:
            raise bad(
                f"Invalid value for '{where}.type': {kind!r}; expected message, function_call, "
                "function_call_output or reasoning.",
                f"{where}.type",
            )

    def _message(self, item: dict[str, Any], where: str) -> None:
        role = item.get("role")
        if role not in _ROLES:
            if role is None:
                raise missing(f"{where}.role")
            raise bad(
                f"Invalid value for '{where}.role': {role!r}; expected one of {', '.join(_ROLES)}.",
                f"{where}.role",
            )
        content = item.get("content")
        if isinstance(content, str):
            kind = "output_text" if role == "assistant" else "input_text"
            parts = [
                output_text(content) if kind == "output_text" else {"type": kind, "text": content}
            ]
        elif isinstance(content, list):
            parts = content
        elif content is None:
            raise missing(f"{where}.content")
        else:
            raise wrong_type(f"{where}.content", "a string or an array of parts", content)
        if role == "assistant":
            self._assistant(parts, f"{where}.content")
        else:
            chat_parts = [_input_part(p, f"{where}.content[{j}]") for j, p in enumerate(parts)]
            self._append(
                {"role": role, "content": content if isinstance(content, str) else chat_parts}
            )
        self.items.append({**item, **message_item(str(role), parts, item)})

    def _assistant(self, parts: list[Any], where: str) -> None:
        texts: list[str] = []
        refusals: list[str] = []
        for j, part in enumerate(parts):
            kind = part.get("type") if isinstance(part, dict) else None
            at = f"{where}[{j}]"
            if kind in ("output_text", "input_text"):
                texts.append(_string_field(part, "text", at))
            elif kind == "refusal":
                refusals.append(_string_field(part, "refusal", at))
            else:
                raise bad(
                    f"Invalid value for '{at}.type': {kind!r}; an assistant message holds "
                    "output_text and refusal parts.",
                    f"{at}.type",
                )
        # content null only beside a refusal (or, once merged, tool calls)
        text = "".join(texts) if texts else None if refusals else ""
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if refusals:
            message["refusal"] = "".join(refusals)
        self._append(message)

    def _function_call(self, item: dict[str, Any], where: str) -> None:
        call_id = _string_field(item, "call_id", where)
        name = _string_field(item, "name", where)
        arguments = _string_field(item, "arguments", where)
        call = {
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        }
        self._calls.add(call_id)
        last = self._last
        if last is not None and last["role"] == "assistant" and not self._images:
            last.setdefault("tool_calls", []).append(call)
        else:
            self._append({"role": "assistant", "content": None, "tool_calls": [call]})
        self.items.append(
            {**item, "id": item_id(item, "fc_"), "status": item.get("status") or "completed"}
        )

    def _function_output(self, item: dict[str, Any], where: str) -> None:
        call_id = _string_field(item, "call_id", where)
        if call_id not in self._calls:
            raise bad(
                f"No tool call found for function call output with call_id {call_id}.",
                f"{where}.call_id",
            )
        output = item.get("output")
        content: Any
        if isinstance(output, str):
            content = output
        elif isinstance(output, list):
            parts = [_input_part(p, f"{where}.output[{j}]") for j, p in enumerate(output)]
            content = [p for p in parts if p["type"] == "text"]
            self._images += [p for p in parts if p["type"] != "text"]
            if not content:
                content = ""
        elif output is None:
            raise missing(f"{where}.output")
        else:
            raise wrong_type(f"{where}.output", "a string or an array of parts", output)
        self._append({"role": "tool", "tool_call_id": call_id, "content": content})
        self.items.append(
            {**item, "id": item_id(item, "fco_"), "status": item.get("status") or "completed"}
        )


def _string_field(holder: Mapping[str, Any], name: str, where: str) -> str:
    value = holder.get(name)
    if isinstance(value, str):
        return value
    if value is None:
        raise missing(f"{where}.{name}")
    raise wrong_type(f"{where}.{name}", "a string", value)


def _input_part(part: Any, where: str) -> dict[str, Any]:
    """An ``input_*`` part as a chat content part."""
    if not isinstance(part, dict):
        raise wrong_type(where, "an object", part)
    kind = part.get("type")
    if kind == "input_text":
        return {"type": "text", "text": _string_field(part, "text", where)}
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str) or not url:
            raise bad(
                f"'{where}' needs an image_url (an https or data: URL); images by file_id are "
                "not supported by gearshift.",
                f"{where}.image_url",
                "unsupported_value" if part.get("file_id") else "missing_required_parameter",
            )
        given = part.get("detail") or "auto"
        detail = _IMAGE_DETAIL.get(given) if isinstance(given, str) else None
        if detail is None:
            raise bad(
                f"Invalid value for '{where}.detail': {part.get('detail')!r}; expected low, "
                "high, auto or original.",
                f"{where}.detail",
            )
        return {"type": "image_url", "image_url": {"url": url, "detail": detail}}
    if kind == "input_file":
        fields = {
            k: _string_field(part, k, where)
            for k in ("file_id", "file_data", "filename")
            if part.get(k) is not None
        }
        if "file_id" not in fields and "file_data" not in fields:
            raise bad(
                f"'{where}' needs file_id or file_data (file_url is not supported by gearshift).",
                where,
                "unsupported_value" if "file_url" in part else "missing_required_parameter",
            )
        return {"type": "file", "file": fields}
    raise bad(
        f"Invalid value for '{where}.type': {kind!r}; expected input_text, input_image or "
        "input_file.",
        f"{where}.type",
    )
