"""OpenAI Chat Completions, and every OpenAI-compatible server: pure encode/decode.

The request passes through untouched except ``model`` (set to the upstream id) and, for
streams, ``stream_options.include_usage`` (always asked for, so gearshift can account for
the cost). Streams are forwarded as the upstream's own bytes; the decoder only looks into the
final usage chunk, and drops it when the client did not ask for usage.

A model with ``api = "responses"`` is spoken to through ``<base_url>/responses`` instead
(``openai_responses``: the request, the answer and the stream are translated); the headers
and the error mapping are the same for both APIs.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any
from urllib.parse import urlencode

import orjson

from gearshift import reasoning, sse
from gearshift.config import Model, OpenAIProviderSpec, Provider
from gearshift.errors import (
    ProtocolError,
    Unsupported,
    UpstreamError,
    for_upstream_status,
    retry_after,
)
from gearshift.inbound.chat import ChatRequest
from gearshift.providers import (
    Completion,
    Outbound,
    StreamDecoder,
    StreamState,
    cached,
    carry,
    openai_responses,
    shapes,
)


def encode_request(request: ChatRequest, model: Model) -> Outbound:
    """The upstream call: same body with ``model`` rewritten and stream usage requested (a
    Responses model: the body ``openai_responses`` builds, to ``/responses``)."""
    if model.spec.api == "responses":
        provider = model.provider
        return Outbound(
            url=cached(provider, "openai.responses_url", _responses_url),
            headers=cached(provider, "openai.headers", _headers),
            body=openai_responses.encode_body(request, model),
        )
    body = dict(request.body)
    body["model"] = model.upstream_id
    if request.carried:  # reasoning state is for other providers' models: plain ids here
        body["messages"] = carry.plain_messages(body["messages"])
    if model.spec.reasoning is not None:
        _reasoning(body, request, model)
    spec = model.provider.spec
    compat = spec if isinstance(spec, OpenAIProviderSpec) else None
    if compat is not None:
        _adapt(body, compat)
    if compat is not None and not compat.stream_usage:
        # A server that refuses stream_options gets none, the client's own included.
        body.pop("stream_options", None)
    elif request.stream and not request.client_wants_usage:
        options = dict(body.get("stream_options") or {})
        options["include_usage"] = True
        body["stream_options"] = options
    provider = model.provider
    return Outbound(
        url=cached(provider, "openai.url", _url),
        headers=cached(provider, "openai.headers", _headers),
        body=orjson.dumps(body),
    )


def _reasoning(body: dict[str, Any], request: ChatRequest, model: Model) -> None:
    """A reasoning model: the effort chosen (``reasoning.effort_for``) as ``reasoning_effort``
    (none sent: the model's default), and ``max_tokens`` under the name reasoning models
    take, ``max_completion_tokens`` (it bounds reasoning and answer together)."""
    effort = reasoning.effort_for(request.body, model)
    if effort is None:
        body.pop("reasoning_effort", None)
    else:
        body["reasoning_effort"] = effort
    if "max_tokens" in body:
        limit = body.pop("max_tokens")
        body.setdefault("max_completion_tokens", limit)


def _adapt(body: dict[str, Any], spec: OpenAIProviderSpec) -> None:
    """The per-server quirks a provider's configuration asks for (rarely any: the body is
    copied only where one applies)."""
    if spec.single_choice and isinstance(body.get("n"), int) and body["n"] > 1:
        raise Unsupported(
            f"n={body['n']} is not supported by provider {spec.name!r} (one choice per call).",
            provider=spec.name,
            param="n",
            code="unsupported_parameter",
        )
    if spec.data_url_images_only and _web_image(body["messages"]):
        raise Unsupported(
            f"Provider {spec.name!r} reads images only as data URLs, not from web addresses.",
            provider=spec.name,
            param="messages",
            code="unsupported_image_url",
        )
    if spec.developer_as_system:
        body["messages"] = [
            {**m, "role": "system"} if isinstance(m, dict) and m.get("role") == "developer" else m
            for m in body["messages"]
        ]
    if spec.max_tokens_field != "as_sent":
        other = (
            "max_tokens"
            if spec.max_tokens_field == "max_completion_tokens"
            else ("max_completion_tokens")
        )
        if other in body:
            value = body.pop(other)
            body.setdefault(spec.max_tokens_field, value)
    if spec.tool_call_ids == "alnum9":
        body["messages"] = [_alnum9_ids(m) for m in body["messages"]]


def _web_image(messages: Any) -> bool:
    for m in messages if isinstance(messages, list) else ():
        content = m.get("content") if isinstance(m, dict) else None
        for part in content if isinstance(content, list) else ():
            holder = part.get("image_url") if isinstance(part, dict) else None
            url = holder.get("url") if isinstance(holder, dict) else holder
            if isinstance(url, str) and not url.startswith("data:"):
                return True
    return False


_ALNUM9 = re.compile(r"[A-Za-z0-9]{9}")


def alnum9(call_id: str) -> str:
    """A tool-call id as 9 letters and digits: kept when it already is, else a stable hash
    (the same id in a call and its result maps to the same value)."""
    if _ALNUM9.fullmatch(call_id):
        return call_id
    digest = hashlib.blake2b(call_id.encode(), digest_size=8).digest()
    return base64.b32encode(digest).decode()[:9].replace("=", "A")


def _alnum9_ids(message: Any) -> Any:
    if not isinstance(message, dict):
        return message
    if message.get("role") == "tool" and isinstance(message.get("tool_call_id"), str):
        return {**message, "tool_call_id": alnum9(message["tool_call_id"])}
    calls = message.get("tool_calls")
    if message.get("role") == "assistant" and isinstance(calls, list):
        return {
            **message,
            "tool_calls": [
                {**c, "id": alnum9(c["id"])}
                if isinstance(c, dict) and isinstance(c.get("id"), str)
                else c
                for c in calls
            ],
        }
    return message


def _url(provider: Provider) -> str:
    return _endpoint(provider, "/chat/completions")


def _responses_url(provider: Provider) -> str:
    return _endpoint(provider, "/responses")


def _endpoint(provider: Provider, path: str) -> str:
    url = provider.base_url + path
    spec = provider.spec
    if isinstance(spec, OpenAIProviderSpec) and spec.query:
        url += "?" + urlencode(spec.query)
    return url


def models_request(provider: Provider, page: str | None) -> Outbound:
    """``GET /models`` (one page: OpenAI's list is not paginated)."""
    url = provider.base_url + "/models"
    spec = provider.spec
    if isinstance(spec, OpenAIProviderSpec) and spec.query:
        url += "?" + urlencode(spec.query)
    return Outbound(url=url, headers=_headers(provider), body=b"")


def decode_models(body: bytes) -> tuple[list[str], str | None]:
    """``{"object": "list", "data": [{"id": ...}, ...]}`` → the ids."""
    return shapes.model_list(body, "data", "id")[1], None


def _headers(provider: Provider) -> Mapping[str, str]:
    headers = {"content-type": "application/json", "accept": "application/json"}
    headers.update(provider.headers)
    if provider.api_key is not None:
        spec = provider.spec
        if isinstance(spec, OpenAIProviderSpec) and spec.auth_header == "api-key":
            headers["api-key"] = provider.api_key.reveal()
        else:
            headers["authorization"] = "Bearer " + provider.api_key.reveal()
    return MappingProxyType(headers)


def decode_response(body: bytes, request: ChatRequest, model: Model) -> Completion:
    """Check the answer is a JSON object and take its usage; the bytes go out unchanged (a
    Responses model's answer is translated by ``openai_responses``)."""
    if model.spec.api == "responses":
        return openai_responses.decode_response(body, request, model)
    provider = model.provider
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ProtocolError(
            f"Provider {provider.name!r} sent a response that is not JSON.", provider=provider.name
        ) from None
    if not isinstance(doc, dict) or "choices" not in doc:
        raise ProtocolError(
            f"Provider {provider.name!r} sent a response without choices.", provider=provider.name
        )
    usage = doc.get("usage")
    return Completion(body=body, usage=usage if isinstance(usage, dict) else None)


class PassThrough:
    """Forwards OpenAI SSE bytes as they are; notes usage, [DONE] and in-band errors."""

    __slots__ = ("_drop_usage", "_provider", "state")

    def __init__(self, request: ChatRequest, model: Model) -> None:
        self.state = StreamState()
        self._drop_usage = not request.client_wants_usage
        self._provider = model.provider.name

    def feed(self, raw_event: bytes) -> bytes:
        # Cheap byte tests first: only the rare events (usage, error, [DONE]) are parsed.
        if b'"usage"' in raw_event and b'"usage":null' not in raw_event:
            return self._usage_event(raw_event)
        if b'"error"' in raw_event and self._error_event(raw_event):
            return b""
        payload = sse.data_payload(raw_event)
        if payload is None:
            if sse.no_content(raw_event):  # a keep-alive: passed on
                return raw_event
            # Lines that are no SSE at all (a text or HTML body labelled as a stream): never
            # bytes for the client, whatever they hold.
            self.state.error = ProtocolError(
                f"Provider {self._provider!r} sent a stream that is not server-sent events.",
                provider=self._provider,
                code="malformed_stream",
            )
            return b""
        if payload == sse.DONE:
            self.state.finished = True
        elif not (payload.startswith(b"{") and payload.endswith(b"}")):
            # A cheap shape check instead of a full parse: catches cut or garbled events.
            self.state.error = ProtocolError(
                f"Provider {self._provider!r} sent a malformed stream event.",
                provider=self._provider,
                code="malformed_stream",
            )
            return b""
        if self._drop_usage:
            # The usage: null that the injected include_usage adds to every chunk (quotes
            # inside JSON strings are escaped, so this byte run cannot be content).
            return raw_event.replace(b',"usage":null', b"")
        return raw_event

    def end(self) -> bytes:
        return b""  # an OpenAI stream is complete only with its own [DONE]

    def _usage_event(self, raw_event: bytes) -> bytes:
        chunk = _load_event(raw_event)
        if chunk is None:
            return raw_event
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.state.usage = usage
            if not self._drop_usage:
                # Held for the relay, which adds gearshift's cost object to it (the usage
                # may ride on the last content chunk too: that chunk is held whole).
                payload = sse.data_payload(raw_event)
                assert payload is not None  # it parsed as an object
                self.state.usage_chunk = payload.rstrip()
                return b""
            # The usage-only chunk (empty choices) exists because gearshift asked for it.
            if not chunk.get("choices"):
                return b""
        return raw_event

    def _error_event(self, raw_event: bytes) -> bool:
        """Note an in-band error, of the class its type or code says (the relay sends it)."""
        chunk = _load_event(raw_event)
        error = chunk.get("error") if chunk else None
        if not isinstance(error, dict):
            return False
        code = error.get("code")
        message = error.get("message")
        self.state.error = for_upstream_status(
            _inband_status(error),
            message if isinstance(message, str) else "upstream error in stream",
            provider=self._provider,
            code=code if isinstance(code, str) else None,
        )
        return True


# An error event inside a 200 stream has no HTTP status: its type or code says what it was.
_INBAND_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "rate_limit_error": 429,
    "rate_limit_exceeded": 429,
    "insufficient_quota": 429,
    "overloaded_error": 503,
    "service_unavailable": 503,
    "timeout": 504,
}


def _inband_status(error: Mapping[str, Any]) -> int:
    """The HTTP status an in-band error stands for: a numeric ``code`` or ``status`` (vLLM
    and others put the status there), else its ``type`` or ``code`` name, else 500."""
    for field in ("code", "status"):
        value = error.get(field)
        if isinstance(value, int) and not isinstance(value, bool) and 400 <= value < 600:
            return value
    for field in ("code", "type"):
        value = error.get(field)
        if isinstance(value, str) and value in _INBAND_STATUS:
            return _INBAND_STATUS[value]
    return 500


def _load_event(raw_event: bytes) -> dict[str, Any] | None:
    payload = sse.data_payload(raw_event)
    if not payload or payload == sse.DONE:
        return None
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def stream_decoder(request: ChatRequest, model: Model) -> StreamDecoder:
    if model.spec.api == "responses":
        return openai_responses.stream_decoder(request, model)
    return PassThrough(request, model)


def decode_error(
    status: int, headers: Mapping[str, str], body: bytes, provider: Provider
) -> UpstreamError:
    """Map an upstream error (OpenAI's ``{"error": {…}}`` or vLLM/Mistral's flat shape)."""
    message, code, param = f"Provider {provider.name!r} answered HTTP {status}.", None, None
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = None
    if isinstance(doc, dict):
        inner = doc.get("error")
        err: dict[str, Any] = inner if isinstance(inner, dict) else doc
        if isinstance(err.get("message"), str):
            message = err["message"]
        code = err.get("code") if isinstance(err.get("code"), str) else None
        param = err.get("param") if isinstance(err.get("param"), str) else None
    return for_upstream_status(
        status,
        message,
        provider=provider.name,
        code=code,
        param=param,
        retry_after=retry_after(headers),
    )
