"""Reading a request's body: within its time and size limits, decodable, into one buffer the
caller alone holds, large bodies a few at a time; parsed by the inbound format's ``parse``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from gearshift.config import Config
from gearshift.errors import BadRequest, PayloadTooLarge, RequestTimeout
from gearshift.inbound.chat import Limits
from gearshift.serve.appkeys import LARGE_BODIES, LIVE
from gearshift.serve.server import GuardedHandler

LARGE_BODY = 1 << 20  # bodies above 1 MiB (or of unknown length) pass the gate
Parse = Callable[[bytes | bytearray, Limits], Any]


def too_large(config: Config) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The request body is larger than gearshift's limit of "
        f"{config.server.max_body_bytes} bytes.",
        code="request_too_large",
    )


async def read_body(request: web.Request, config: Config) -> bytes | bytearray:
    """The request body, within ``server.body_timeout`` (408 when a client dribbles it),
    at most ``server.max_body_bytes`` once decoded (413), decodable (a ``Content-Encoding``
    it lies about is a 400, not a 500). Read into one buffer that only the caller holds
    (``request.read()`` would keep a copy on the request, alive as long as the connection:
    a 30 MB upload's memory would stay after its answer)."""
    limit = config.server.max_body_bytes
    content = request.content
    try:
        if content.is_eof():  # the usual case: the whole body came with the head
            whole = content.read_nowait()
            if len(whole) > limit:
                raise too_large(config)
            return whole
        body = bytearray()
        async with asyncio.timeout(config.server.body_timeout):
            while chunk := await content.readany():
                body += chunk
                if len(body) > limit:
                    raise too_large(config)
    except TimeoutError:
        if isinstance(request.protocol, GuardedHandler):
            request.protocol.end_unread()
        raise RequestTimeout(
            f"The request body did not arrive within {config.server.body_timeout:g} s.",
            code="request_timeout",
        ) from None
    except RequestPayloadError as exc:
        if isinstance(request.protocol, GuardedHandler):
            request.protocol.end_unread()  # the rest of a broken body is not worth reading
        raise BadRequest(
            f"The request body could not be read: {str(exc).strip().splitlines()[-1][:200]}",
            code="invalid_body",
        ) from None
    return body


def json_body(raw: bytes | bytearray) -> Any:
    """A body parsed as JSON, or a 400 ``invalid_json`` saying why (the endpoints that take
    JSON and are not an inbound format: feedback, embeddings)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(
            f"The request body is not valid JSON: {exc}", code="invalid_json"
        ) from None


async def read_chat(request: web.Request, config: Config, length: int | None, parse: Parse) -> Any:
    """The body read and parsed; its bytes are not kept. Large bodies (over 1 MiB, or of
    unknown length) are read and parsed a few at a time (``server.large_body_parses``): six
    30 MB uploads at once cost no more memory than two."""
    if length is not None and length <= LARGE_BODY:
        return parse(await read_body(request, config), request[LIVE].limits)
    gate = request.app[LARGE_BODIES]
    try:  # waiting for a slot counts against the body's time too: never a hang
        async with asyncio.timeout(config.server.body_timeout):
            await gate.acquire()
    except TimeoutError:
        if isinstance(request.protocol, GuardedHandler):
            request.protocol.end_unread()
        raise RequestTimeout(
            "Too many large request bodies are being read; try again.", code="request_timeout"
        ) from None
    try:
        return parse(await read_body(request, config), request[LIVE].limits)
    finally:
        gate.release()


__all__ = ["LARGE_BODY", "Parse", "json_body", "read_body", "read_chat", "too_large"]
