"""Provider adapters: one module per wire format, pure functions, no I/O.

An adapter turns gearshift's inbound OpenAI request into the bytes its upstream wants
(``encode_request``), and the upstream's answer back into OpenAI bytes
(``decode_response``, a ``StreamDecoder`` fed one raw SSE event at a time, ``decode_error``).
``REGISTRY`` is the only place a wire-format name appears; adding one is one module and one
line here. OpenAI-compatible servers (Azure, Groq, Together, Ollama, vLLM …) are configuration
of the ``openai`` kind, not code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

from gearshift.config import Model, Provider
from gearshift.errors import UpstreamError
from gearshift.inbound.chat import ChatRequest


@dataclass(frozen=True, slots=True)
class Outbound:
    """What to send upstream: the full URL, the headers and the encoded body."""

    url: str
    headers: Mapping[str, str]
    body: bytes


_T = TypeVar("_T")


def cached(provider: Provider, key: str, build: Callable[[Provider], _T]) -> _T:
    """The per-provider value ``key`` (an adapter's URL, its headers), built by ``build`` on
    first use and kept in ``provider.cache``: never rebuilt per request. What is kept is
    shared by every request to the provider, so it must not be mutated (headers are kept as
    a read-only mapping; aiohttp copies them into its own multidict)."""
    value = provider.cache.get(key)
    if value is None:
        value = provider.cache[key] = build(provider)
    return cast(_T, value)


@dataclass(slots=True)
class Completion:
    """A decoded non-streaming answer: the OpenAI bytes for the client and the usage."""

    body: bytes
    usage: dict[str, Any] | None


@dataclass(slots=True)
class StreamState:
    """What a stream decoder learned so far; read by the relay.

    ``usage_chunk``: the usage-only chunk the client asked for (``stream_options.
    include_usage``), as the JSON object's bytes, held back by the decoder: the relay sends
    it, with gearshift's own accounting added, just before the bytes that the same ``feed``
    or ``end`` call returned. ``error``: the upstream's failure, of its own class (a
    streamed 429 is ``RateLimited``, a 400 ``Rejected``); the decoder sends nothing for it,
    the relay ends the client's stream with it.
    """

    finished: bool = False
    usage: dict[str, Any] | None = None
    usage_chunk: bytes | None = None
    error: UpstreamError | None = None


class StreamDecoder(Protocol):
    """Turns raw upstream SSE events into OpenAI SSE bytes for the client."""

    state: StreamState

    def feed(self, raw_event: bytes) -> bytes:
        """Bytes to send to the client for this event (may be empty)."""
        ...

    def end(self) -> bytes:
        """The upstream body ended: bytes to close the client's stream with (the usage chunk
        and ``[DONE]`` for a provider whose stream simply ends, as Gemini's does), setting
        ``state.finished``; empty when the stream ended incomplete (the caller reports it)."""
        ...


class Adapter(Protocol):
    def encode_request(self, request: ChatRequest, model: Model) -> Outbound: ...

    def decode_response(self, body: bytes, request: ChatRequest, model: Model) -> Completion: ...

    def stream_decoder(self, request: ChatRequest, model: Model) -> StreamDecoder: ...

    def decode_error(
        self, status: int, headers: Mapping[str, str], body: bytes, provider: Provider
    ) -> UpstreamError: ...

    # The provider's model list (``gearshift doctor``): a GET for one page (``page``: the
    # previous page's token), and the ids on a page with the next page's token.
    def models_request(self, provider: Provider, page: str | None) -> Outbound: ...

    def decode_models(self, body: bytes) -> tuple[list[str], str | None]: ...


def _registry() -> dict[str, Adapter]:
    from gearshift.providers import anthropic, gemini, openai

    return {"openai": openai, "anthropic": anthropic, "gemini": gemini}


REGISTRY: Mapping[str, Adapter] = _registry()
