"""Gemini schema translation under adversarial input: local ``$ref``s are inlined within a
bound (a node and text budget per request, a nesting depth), a recursive schema is refused
(``Unsupported``, so another model of the plan serves it), and nothing blocks the loop."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from gearshift.config import catalog_2024, load
from gearshift.errors import Unsupported
from gearshift.inbound.chat import parse_chat
from gearshift.providers import gemini

CONFIG = load(None, environ={"GEMINI_API_KEY": "g"}, base=catalog_2024())
FLASH = CONFIG.models["gemini-1.5-flash"]
TOOL_PARAM = "tools[0].function.parameters"
FORMAT_PARAM = "response_format.json_schema.schema"


def _tool(parameters: Any, name: str = "f") -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


def _request(**extra: Any) -> Any:
    return parse_chat(
        orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": "hi"}], **extra})
    )


def _encode(**extra: Any) -> bytes:
    return bytes(gemini.encode_request(_request(**extra), FLASH).body)


def _refused(**extra: Any) -> Unsupported:
    with pytest.raises(Unsupported) as info:
        gemini.encode_request(_request(**extra), FLASH)
    error = info.value
    assert error.status == 400
    assert error.type == "invalid_request_error"
    assert error.code == "unsupported_schema"
    assert error.retryable, "another model of the plan may carry it"
    return error


def _timed(fn: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    try:
        out = fn()
    except Unsupported as exc:
        out = exc
    return out, time.perf_counter() - start


# The adversarial probe (under 600 bytes as JSON): three definitions that refer to each other,
# each five times. Inlined to depth 8, as the old code did, it became a 12.7 MB body after 1.6 s
# of blocked event loop; each extra reference multiplied that by ~5.
PROBE: dict[str, Any] = {
    "type": "object",
    "properties": {"r": {"$ref": "#/$defs/A"}},
    "$defs": {
        "A": {
            "type": "object",
            "properties": {
                "b": {"$ref": "#/$defs/B"},
                "c": {"$ref": "#/$defs/C"},
                "a": {"$ref": "#/$defs/A"},
                "b2": {"$ref": "#/$defs/B"},
                "c2": {"$ref": "#/$defs/C"},
            },
        },
        "B": {
            "type": "object",
            "properties": {
                "c": {"$ref": "#/$defs/C"},
                "a": {"$ref": "#/$defs/A"},
                "b": {"$ref": "#/$defs/B"},
                "c2": {"$ref": "#/$defs/C"},
                "a2": {"$ref": "#/$defs/A"},
            },
        },
        "C": {
            "type": "object",
            "properties": {
                "a": {"$ref": "#/$defs/A"},
                "b": {"$ref": "#/$defs/B"},
                "c": {"$ref": "#/$defs/C"},
                "a2": {"$ref": "#/$defs/A"},
                "b2": {"$ref": "#/$defs/B"},
            },
        },
    },
}


def _fan(levels: int, branches: int, leaf: dict[str, Any] | None = None) -> dict[str, Any]:
    """A schema that is not recursive but branches: ``L0`` has ``branches`` properties that
    each refer to ``L1``, and so on to ``L{levels}`` (the leaf); inlined it holds
    ``branches ** levels`` copies of the leaf."""
    defs: dict[str, Any] = {
        f"L{i}": {
            "type": "object",
            "properties": {f"p{j}": {"$ref": f"#/$defs/L{i + 1}"} for j in range(branches)},
        }
        for i in range(levels)
    }
    defs[f"L{levels}"] = leaf or {"type": "string"}
    return {"type": "object", "properties": {"top": {"$ref": "#/$defs/L0"}}, "$defs": defs}


def _leaves(schema: Any) -> list[Any]:
    """The schemas at the ends of ``properties`` chains."""
    props = schema.get("properties") if isinstance(schema, dict) else None
    if not props:
        return [schema]
    return [leaf for sub in props.values() for leaf in _leaves(sub)]


# ---------------------------------------------------------------- recursion is refused


def test_the_probe_is_refused_quickly_as_recursive() -> None:
    assert len(orjson.dumps(PROBE)) < 600
    error, elapsed = _timed(lambda: _encode(tools=[_tool(PROBE)]))
    assert isinstance(error, Unsupported), f"translated to {len(error)} bytes"
    assert elapsed < 1.0  # bounded work (the old code took seconds); a bound, not a benchmark
    assert error.param == TOOL_PARAM
    assert error.code == "unsupported_schema"
    assert "recursive" in error.message
    assert "#/$defs/A" in error.message


def test_a_schema_that_refers_to_itself_is_refused_not_cut_at_a_depth() -> None:
    node = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
        },
    }
    schema = {"type": "object", "properties": {"tree": {"$ref": "#/$defs/Node"}}}
    error = _refused(tools=[_tool({**schema, "$defs": {"Node": node}})])
    assert error.param == TOOL_PARAM
    assert "#/$defs/Node" in error.message
    assert "Gemini" in error.message


def test_recursion_through_other_definitions_is_refused() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"$ref": "#/definitions/A"}},
        "definitions": {
            "A": {"type": "object", "properties": {"b": {"$ref": "#/definitions/B"}}},
            "B": {"type": "object", "properties": {"c": {"$ref": "#/definitions/C"}}},
            "C": {"type": "array", "items": {"$ref": "#/definitions/A"}},
        },
    }
    assert "recursive" in _refused(tools=[_tool(schema)]).message


def test_a_reference_to_the_root_is_recursive() -> None:
    schema = {
        "type": "object",
        "properties": {"next": {"$ref": "#"}, "value": {"type": "integer"}},
    }
    assert "recursive" in _refused(tools=[_tool(schema)]).message


def test_recursion_is_found_whatever_the_spelling_of_the_reference() -> None:
    # "%24defs" is "$defs" percent-encoded (a URI fragment): the same definition.
    schema = {
        "type": "object",
        "properties": {"a": {"$ref": "#/$defs/A"}},
        "$defs": {"A": {"type": "object", "properties": {"again": {"$ref": "#/%24defs/A"}}}},
    }
    assert "recursive" in _refused(tools=[_tool(schema)]).message


def test_a_recursive_response_schema_is_refused_naming_response_format() -> None:
    node = {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}
    fmt = {
        "type": "json_schema",
        "json_schema": {
            "name": "list",
            "schema": {"$ref": "#/$defs/Node", "$defs": {"Node": node}},
        },
    }
    assert _refused(response_format=fmt).param == FORMAT_PARAM


def test_the_param_names_the_tool_that_is_refused() -> None:
    fine = {"type": "object", "properties": {"x": {"type": "string"}}}
    schema = {
        "$ref": "#/$defs/N",
        "$defs": {"N": {"type": "object", "properties": {"n": {"$ref": "#/$defs/N"}}}},
    }
    error = _refused(tools=[_tool(fine, "a"), _tool(fine, "b"), _tool(schema, "c")])
    assert error.param == "tools[2].function.parameters"


# ---------------------------------------------------------------- the expansion is bounded


def test_a_branching_schema_within_the_budget_is_inlined_fully() -> None:
    # 2 ** 11 = 2048 copies of the leaf, 11 references deep: more than the old depth cut (8),
    # within the node budget. Every leaf is the real leaf, none a placeholder object.
    schema = _fan(11, 2, {"type": "string", "description": "leaf"})
    body, _ = _timed(lambda: _encode(tools=[_tool(schema)]))
    assert isinstance(body, bytes), body
    assert len(body) < 1_000_000
    parameters = orjson.loads(body)["tools"][0]["functionDeclarations"][0]["parameters"]
    leaves = _leaves(parameters)
    assert len(leaves) == 2**11
    assert all(leaf == {"type": "string", "description": "leaf"} for leaf in leaves)
    assert b"$ref" not in body
    assert b"$defs" not in body


def test_an_expansion_over_the_node_budget_is_refused_quickly() -> None:
    # 5 ** 8 = 390,625 copies: the old code built them all (seconds, hundreds of MB).
    schema = _fan(8, 5)
    assert len(orjson.dumps(schema)) < 2_000
    error, elapsed = _timed(lambda: _encode(tools=[_tool(schema)]))
    assert isinstance(error, Unsupported), f"translated to {len(error)} bytes"
    assert elapsed < 1.0  # bounded work (the old code took seconds); a bound, not a benchmark
    assert error.param == TOOL_PARAM
    assert error.code == "unsupported_schema"
    assert "too large" in error.message
    assert "Gemini" in error.message


def test_an_expansion_over_the_text_budget_is_refused() -> None:
    # Few nodes, but each copy repeats a long description: 64 copies of 64 KiB = 4 MiB.
    leaf = {"type": "string", "description": "x" * 65_536}
    error, elapsed = _timed(lambda: _encode(tools=[_tool(_fan(6, 2, leaf))]))
    assert isinstance(error, Unsupported), f"translated to {len(error)} bytes"
    assert elapsed < 1.0  # bounded work (the old code took seconds); a bound, not a benchmark
    assert "too large" in error.message


def test_long_enums_repeated_by_references_count_against_the_budget() -> None:
    leaf = {"type": "string", "enum": [f"value-{i}" for i in range(4_000)]}
    error = _refused(tools=[_tool(_fan(6, 2, leaf))])
    assert "too large" in error.message


def test_the_budget_is_for_the_whole_request_not_each_schema() -> None:
    # Each tool alone is within the budget (2 ** 11 = 2048 leaves, ~4,000 nodes); the
    # three together are not: many tools cannot multiply the bound.
    schema = _fan(11, 2)
    _encode(tools=[_tool(schema)])
    tools = [_tool(schema, name) for name in ("a", "b", "c")]
    error = _refused(tools=tools)
    assert error.param in {"tools[1].function.parameters", "tools[2].function.parameters"}


def test_a_large_definition_used_once_is_not_refused() -> None:
    # Inlining a definition once copies no more than the request holds: only repeated
    # copies count against the budget.
    big = {
        "type": "object",
        "properties": {f"p{i}": {"type": "string", "description": "d" * 50} for i in range(20_000)},
    }
    schema = {
        "type": "object",
        "properties": {"big": {"$ref": "#/$defs/Big"}},
        "$defs": {"Big": big},
    }
    body = orjson.loads(_encode(tools=[_tool(schema)]))
    parameters = body["tools"][0]["functionDeclarations"][0]["parameters"]
    assert len(parameters["properties"]["big"]["properties"]) == 20_000


def test_a_definition_used_a_few_times_is_inlined_each_time() -> None:
    address = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    schema = {
        "type": "object",
        "properties": {
            "home": {"$ref": "#/$defs/Address", "description": "where they live"},
            "work": {"$ref": "#/$defs/Address"},
        },
        "$defs": {"Address": address},
    }
    out = gemini.sanitize_schema(schema)
    assert out["properties"]["home"] == {**address, "description": "where they live"}
    assert out["properties"]["work"] == address


def test_a_schema_nested_too_deep_is_refused_not_a_crash() -> None:
    # 110 levels (the inbound parser lets 128 through): deeper than SCHEMA_DEPTH, a clear 400
    # for Gemini like any bound. (Followed $refs count as levels too: see the alias chain.)
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(110):
        schema = {"type": "array", "items": schema}
    error = _refused(tools=[_tool({"type": "object", "properties": {"deep": schema}})])
    assert error.param == TOOL_PARAM
    assert "deep" in error.message


def test_a_long_chain_of_aliases_is_bounded_by_the_depth() -> None:
    defs = {f"A{i}": {"$ref": f"#/$defs/A{i + 1}"} for i in range(5_000)}
    defs["A5000"] = {"type": "string"}
    schema = {"type": "object", "properties": {"x": {"$ref": "#/$defs/A0"}}, "$defs": defs}
    error, elapsed = _timed(lambda: _encode(tools=[_tool(schema)]))
    assert isinstance(error, Unsupported), error
    assert elapsed < 1.0  # bounded work (the old code took seconds); a bound, not a benchmark


def test_an_unresolvable_or_remote_reference_stays_a_plain_object() -> None:
    schema = {
        "type": "object",
        "properties": {
            "missing": {"$ref": "#/$defs/Nowhere"},
            "remote": {"$ref": "https://example.com/schema.json"},
        },
    }
    out = gemini.sanitize_schema(schema)
    assert out["properties"] == {"missing": {"type": "object"}, "remote": {"type": "object"}}
