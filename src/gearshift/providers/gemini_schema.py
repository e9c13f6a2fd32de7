"""JSON Schemas cut to the OpenAPI subset Gemini's ``parameters`` and ``responseSchema``
take: local ``$ref``s inlined under fixed bounds, type lists → ``nullable``, keywords outside
the subset dropped, property names kept (``sanitize_schema``; ``gemini`` re-exports it)."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import orjson

from gearshift.errors import Unsupported

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
