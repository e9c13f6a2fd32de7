"""The Messages API's options as Chat Completions fields: tools (client tools; server tools
and MCP servers refused), ``tool_choice``, sampling, ``thinking`` and ``output_config``
effort, and the output format; and the 400s their bad values get (``messages`` reads the
rest of the request)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gearshift.errors import BadRequest

_EFFORTS = ("low", "medium", "high", "xhigh", "max")
_CHOICES = {"auto": "auto", "any": "required", "none": "none"}


def _bad(message: str, param: str | None = None, code: str = "invalid_value") -> BadRequest:
    return BadRequest(message, param=param, code=code)


def _number(doc: Mapping[str, Any], key: str, low: float, high: float) -> float | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _bad(f"{key}: Input should be a valid number", key, "invalid_type")
    if value < low:
        raise _bad(f"{key}: Input should be greater than or equal to {low:g}", key)
    if value > high:
        raise _bad(f"{key}: Input should be less than or equal to {high:g}", key)
    return value


def _tools(tools: Any, servers: Any) -> list[dict[str, Any]]:
    if servers:
        raise _bad(
            "mcp_servers: MCP servers run on Anthropic's side and are not supported by "
            "gearshift; connect them in the client and pass their tools as tools.",
            "mcp_servers",
            "unsupported_parameter",
        )
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise _bad("tools: Input should be a valid list", "tools", "invalid_type")
    out = []
    for t, tool in enumerate(tools):
        at = f"tools.{t}"
        if not isinstance(tool, dict):
            raise _bad(f"{at}: Input should be a valid dictionary", at, "invalid_type")
        kind, name = tool.get("type"), tool.get("name")
        if kind not in (None, "custom"):
            raise _bad(
                f"{at}: the server tool {name!r} (type {kind!r}) is not supported by "
                "gearshift: server tools run on Anthropic's side, and gearshift may route the "
                "request to another provider. Define it as a client tool with an input_schema.",
                f"{at}.type",
                "unsupported_tool",
            )
        if not isinstance(name, str) or not name:
            raise _bad(f"{at}.name: Field required", f"{at}.name", "missing_required_parameter")
        schema = tool.get("input_schema")
        if not isinstance(schema, dict):
            msg = f"{at}.custom.input_schema: Field required"
            raise _bad(msg, f"{at}.input_schema", "missing_required_parameter")
        fn: dict[str, Any] = {"name": name}
        if isinstance(tool.get("description"), str):
            fn["description"] = tool["description"]
        fn["parameters"] = schema
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(out: dict[str, Any], choice: Any) -> None:
    if choice is None:
        return
    if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none"):
        raise _bad(
            "tool_choice: Input should be an object of type 'auto', 'any', 'tool' or 'none'",
            "tool_choice",
        )
    kind = choice["type"]
    if kind == "tool":
        name = choice.get("name")
        if not isinstance(name, str) or not name:
            raise _bad("tool_choice.tool.name: Field required", "tool_choice.name")
        out["tool_choice"] = {"type": "function", "function": {"name": name}}
    else:
        out["tool_choice"] = _CHOICES[kind]
    if choice.get("disable_parallel_tool_use") is True and kind != "none":
        out["parallel_tool_calls"] = False


def _sampling(out: dict[str, Any], doc: Mapping[str, Any]) -> None:
    for key in ("temperature", "top_p"):
        value = _number(doc, key, 0.0, 1.0)
        if value is not None:
            out[key] = value
    top_k = doc.get("top_k")  # no chat equivalent: dropped, once checked
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool)):
        raise _bad("top_k: Input should be a valid integer", "top_k", "invalid_type")
    stop = doc.get("stop_sequences")
    if stop is not None:
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise _bad("stop_sequences: Input should be a valid list of strings", "stop_sequences")
        if stop:
            out["stop"] = stop


def _effort(thinking: Any, config: Any) -> str | None:
    """``reasoning_effort`` from ``thinking`` and ``output_config.effort`` (module docstring)."""
    effort: str | None = None
    disabled = False
    if thinking is not None:
        if not isinstance(thinking, dict) or thinking.get("type") not in (
            "enabled",
            "adaptive",
            "disabled",
        ):
            raise _bad(
                "thinking: Input should be an object of type 'enabled', 'adaptive' or 'disabled'",
                "thinking",
            )
        kind = thinking["type"]
        disabled = kind == "disabled"
        if kind == "enabled":
            budget = thinking.get("budget_tokens")
            if not isinstance(budget, int) or isinstance(budget, bool):
                raise _bad(
                    "thinking.enabled.budget_tokens: Field required", "thinking.budget_tokens"
                )
            effort = _budget_effort(budget)
    if config is not None:
        if not isinstance(config, dict):
            raise _bad("output_config: Input should be a valid dictionary", "output_config")
        given = config.get("effort")
        if given is not None:
            if given not in _EFFORTS:
                names = ", ".join(f"'{e}'" for e in _EFFORTS)
                raise _bad(f"output_config.effort: Input should be {names}", "output_config.effort")
            effort = given
    return "none" if disabled else effort


def _budget_effort(budget: int) -> str:
    """§7.4's reverse mapping."""
    if budget <= 0:
        return "none"
    if budget < 2048:
        return "low"
    if budget < 12000:
        return "medium"
    if budget < 32000:
        return "high"
    return "xhigh"


def _format(doc: Mapping[str, Any]) -> dict[str, Any] | None:
    config = doc.get("output_config")
    fmt = config.get("format") if isinstance(config, dict) else None
    if fmt is None:
        fmt = doc.get("output_format")  # the structured-outputs beta's name
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        raise _bad("output_config.format.type: Input should be 'json_schema'", "output_config")
    schema = fmt.get("schema")
    if not isinstance(schema, dict):
        msg = "output_config.format.schema: Input should be a valid dictionary"
        raise _bad(msg, "output_config.format.schema")
    return {"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}
