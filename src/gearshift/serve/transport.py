"""The transport seam: ``Transport.send`` is the one way a request reaches an upstream,
for whole and streamed answers alike; ``HTTPTransport`` is the real one (one pooled
``aiohttp.ClientSession`` per provider), and ``translated`` the one place where aiohttp's
and asyncio's exceptions become gearshift errors.

Nothing here parses a provider's JSON: callers get the status, headers and bytes.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from typing import Protocol

import aiohttp
from yarl import URL

from gearshift.config import Provider
from gearshift.errors import (
    ConnectError,
    GearshiftError,
    ProtocolError,
    Timeout,
    Unavailable,
)
from gearshift.providers import Outbound

# An error body larger than this is cut: it is read only to build a message.
_ERROR_BODY_LIMIT = 64 * 1024


@contextmanager
def translated(provider: str, phase: str) -> Iterator[None]:
    """Turn aiohttp/asyncio failures into gearshift's taxonomy; ``phase`` goes in the message."""
    try:
        yield
    except GearshiftError:
        raise
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise Timeout(f"Provider {provider!r} timed out ({phase}).", provider=provider) from exc
    except aiohttp.ClientConnectorError as exc:
        raise ConnectError(
            f"Cannot connect to provider {provider!r}: {exc.strerror or type(exc).__name__}.",
            provider=provider,
        ) from exc
    except aiohttp.ClientPayloadError as exc:
        raise ProtocolError(
            f"Provider {provider!r} cut the connection or sent a malformed body ({phase}).",
            provider=provider,
        ) from exc
    except (aiohttp.ClientError, ConnectionError) as exc:
        raise Unavailable(
            f"Connection to provider {provider!r} failed ({phase}): {type(exc).__name__}.",
            provider=provider,
        ) from exc


async def _read_limited(
    response: aiohttp.ClientResponse, limit: int, provider: str, *, truncate: bool
) -> bytes:
    """The body, up to ``limit`` bytes once decompressed: cut there (``truncate``) or a
    ``ProtocolError``; never more than ``limit`` plus one read is held."""
    length = response.content_length
    if not truncate and (length or 0) > limit:
        raise ProtocolError(
            f"Provider {provider!r} sent a response over {limit} bytes.", provider=provider
        )
    if length is not None and length <= limit and "content-encoding" not in response.headers:
        # The usual case: announced and small, one read. A compressed body's length says
        # nothing of what it inflates to: it is counted as it inflates, below.
        return await response.read()
    parts: list[bytes] = []
    size = 0
    async for data in response.content.iter_any():
        parts.append(data)
        size += len(data)
        if size >= limit:
            if not truncate:
                raise ProtocolError(
                    f"Provider {provider!r} sent a response over {limit} bytes.", provider=provider
                )
            break
    return b"".join(parts)[:limit]


class Reply(Protocol):
    """An upstream's answer, once its status and headers are in. ``read()`` gives the whole
    body (bounded); ``chunks()`` the body as it arrives; ``close()`` always, when done."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    async def read(self) -> bytes: ...

    def chunks(self) -> AsyncIterator[bytes]: ...

    def close(self) -> None: ...


class Transport(Protocol):
    """The one way a request reaches an upstream (as httpx's ``AsyncBaseTransport``): send
    the encoded request, get a ``Reply``. Every failure comes out as an ``UpstreamError``.

    ``stream``: the answer is read as it arrives (``chunks()``), within ``total`` seconds
    in all; otherwise ``read()`` gives it whole. ``first_byte``: the most seconds to wait
    for the answer's headers (default: the provider's ``total`` bounds it all). Tests
    script one (``ScriptedTransport`` in the tests) and drive the router with a fake
    clock."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def send(
        self,
        provider: Provider,
        out: Outbound,
        *,
        stream: bool,
        total: float = math.inf,
        first_byte: float | None = None,
    ) -> Reply: ...


class Whole:
    """A non-streaming answer, read whole before ``send`` returned."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    async def read(self) -> bytes:
        return self.body

    async def chunks(self) -> AsyncIterator[bytes]:
        if self.body:
            yield self.body

    def close(self) -> None:
        pass


class UpstreamStream:
    """An open streaming response. Iterate ``chunks()``; always ``close()`` when done."""

    __slots__ = ("_provider", "_response", "_total")

    def __init__(self, provider: str, response: aiohttp.ClientResponse, total: float) -> None:
        self._provider = provider
        self._response = response
        self._total = total

    @property
    def status(self) -> int:
        return self._response.status

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    async def read(self) -> bytes:
        """The body, read whole: only ever an error body here, so it is cut at 64 KiB."""
        with translated(self._provider, "reading an error body"):
            return await _read_limited(
                self._response, _ERROR_BODY_LIMIT, self._provider, truncate=True
            )

    async def chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive; raises ``UpstreamError`` on a cut, on an idle gap
        longer than ``idle`` and when the whole stream outlasts ``total``.

        ``total`` is one timer for the whole stream, which closes the response when it fires
        (the pending read then ends), not a timeout context per read: a stream relays
        thousands of chunks, and each context cost a timer of its own."""
        content = self._response.content
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            self._response.close()

        handle = None
        if not math.isinf(self._total):
            handle = asyncio.get_running_loop().call_later(self._total, expire)
        try:
            with translated(self._provider, "streaming"):
                while True:
                    try:
                        data = await content.readany()
                    except (aiohttp.ClientError, ConnectionError):
                        if expired:
                            raise TimeoutError from None
                        raise
                    if not data:
                        if expired:
                            raise TimeoutError
                        return
                    yield data
        finally:
            if handle is not None:
                handle.cancel()

    def close(self) -> None:
        """Drop the upstream connection (a stream not read to its end cannot be reused)."""
        if not self._response.closed:
            if self._response.content.at_eof():
                self._response.release()
            else:
                self._response.close()


class HTTPTransport:
    """The real transport: pooled ``aiohttp`` sessions, one per provider, created in
    ``start`` and closed in ``close``."""

    def __init__(
        self, providers: Mapping[str, Provider], max_response_bytes: int = 64 * 1024 * 1024
    ) -> None:
        self._providers = dict(providers)
        self._max_response = max_response_bytes
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self._urls: dict[str, URL] = {}

    async def start(self) -> None:
        for name, provider in self._providers.items():
            self._sessions[name] = self._open(provider)

    @staticmethod
    def _open(provider: Provider) -> aiohttp.ClientSession:
        t = provider.timeouts
        connector = aiohttp.TCPConnector(
            limit=provider.spec.max_connections,
            limit_per_host=0,
            ttl_dns_cache=300,
            keepalive_timeout=30,
        )
        return aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=t.total, sock_connect=t.connect),
            auto_decompress=True,
            trust_env=False,
            # An API needs no cookies; a jar would be filtered for every request and
            # would carry one client's cookies into another's calls.
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def close(self) -> None:
        sessions, self._sessions = self._sessions, {}
        await asyncio.gather(*(s.close() for s in sessions.values()), return_exceptions=True)

    def _session(self, provider: Provider) -> aiohttp.ClientSession:
        session = self._sessions.get(provider.name)
        if session is None:  # a provider a reload added: its pool opens on first use
            self._providers[provider.name] = provider
            session = self._sessions[provider.name] = self._open(provider)
        return session

    def _url(self, url: str) -> URL:
        """``url`` parsed once: aiohttp would parse the string on every call (an adapter's
        URLs are few: one or two per model)."""
        parsed = self._urls.get(url)
        if parsed is None:
            if len(self._urls) >= 4096:
                self._urls.clear()
            parsed = self._urls[url] = URL(url)
        return parsed

    async def send(
        self,
        provider: Provider,
        out: Outbound,
        *,
        stream: bool,
        total: float = math.inf,
        first_byte: float | None = None,
    ) -> Reply:
        if stream:
            return await self._open_stream(provider, out, total)
        return await self._post(provider, out, first_byte)

    async def _post(self, provider: Provider, out: Outbound, first_byte: float | None) -> Whole:
        """Send a non-streaming request and read the whole answer (bounded by ``total``,
        and its headers by ``first_byte`` when given)."""
        session = self._session(provider)
        with translated(provider.name, "request"):
            if first_byte is None:  # the usual case: the provider's total bounds it all
                response = await session.post(
                    self._url(out.url), data=out.body, headers=out.headers, allow_redirects=False
                )
            else:
                async with asyncio.timeout(first_byte):
                    response = await session.post(
                        self._url(out.url),
                        data=out.body,
                        headers=out.headers,
                        allow_redirects=False,
                    )
            async with response:
                limit = self._max_response if response.status == 200 else _ERROR_BODY_LIMIT
                body = await _read_limited(
                    response, limit, provider.name, truncate=response.status != 200
                )
                return Whole(response.status, response.headers, body)

    async def _open_stream(self, provider: Provider, out: Outbound, total: float) -> UpstreamStream:
        """Send a streaming request; return once the response headers are in.

        ``first_byte`` bounds the wait for headers, ``idle`` every later read, and the
        provider's ``total`` (or ``total`` here, when shorter: the request's deadline) the
        whole stream.
        """
        t = provider.timeouts
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=t.connect, sock_read=t.idle)
        with translated(provider.name, "waiting for the first byte"):
            async with asyncio.timeout(t.first_byte):
                response = await self._session(provider).post(
                    self._url(out.url),
                    data=out.body,
                    headers=out.headers,
                    timeout=timeout,
                    allow_redirects=False,
                )
        return UpstreamStream(provider.name, response, min(t.total, total))


__all__ = ["HTTPTransport", "Reply", "Transport", "UpstreamStream", "Whole", "translated"]
