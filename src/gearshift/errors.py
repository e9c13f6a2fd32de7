"""The error taxonomy, and the one OpenAI-shaped body every error leaves the process in.

::

    GearshiftError (status, type, code, param, retryable)
    ├── RequestError                 the client's request is wrong; never retried
    │   ├── BadRequest               400 invalid_request_error
    │   ├── Unauthorized             401 authentication_error / invalid_api_key
    │   ├── NotFound                 404 (model_not_found, unknown path)
    │   ├── MethodNotAllowed         405
    │   ├── RequestTimeout           408 (the body did not arrive in time)
    │   └── PayloadTooLarge          413 request_too_large
    ├── UpstreamError (provider, upstream_status)
    │   ├── Rejected                 upstream 4xx other than 429: passed on, not retried
    │   │   ├── CredentialsRejected  401/403 on gearshift's provider key: the deployment is
    │   │   │                        unusable, not the request; the next model is tried
    │   │   └── ModelNotFound        404: the model does not exist (withdrawn, or not on
    │   │                            this account): the catalog's fault when gearshift chose
    │   │                            it (the next model is tried, the deployment withdrawn);
    │   │                            passed on when the client pinned it
    │   ├── Unsupported              400: this provider's format cannot carry the request
    │   │                            (n > 1 on Anthropic, an image URL for Gemini …): the next
    │   │                            model is tried; not a provider failure
    │   ├── RateLimited              429, retryable, carries retry_after
    │   ├── Unavailable              5xx / 529, retryable (502, or 503 when overloaded)
    │   ├── Timeout                  504, retryable
    │   ├── ConnectError             502, retryable
    │   └── ProtocolError            502 malformed upstream JSON/SSE, retryable
    ├── CircuitOpen                  503, every candidate's breaker is open
    ├── DeadlineExceeded             504, the request's total deadline passed
    └── NoTarget                     503, no usable model for the request

Decisions (fallback, breakers) read ``retryable``, ``transient`` and ``status``; never the
message text. ``retryable``: another attempt (another model) may succeed. ``transient``: the
same deployment may succeed later (a retry after a back-off); a credentials or format
problem is retryable elsewhere but not transient. ``health``: whether the failure says the
deployment is unhealthy (counts for its circuit breaker).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import ClassVar

import orjson


class GearshiftError(Exception):
    """Base of every error gearshift raises on purpose; knows its client-facing shape."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"
    retryable: ClassVar[bool] = False
    transient: ClassVar[bool] = False
    health: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param
        if status is not None:
            # A per-instance status (e.g. an upstream 403 passed on) shadows the class default.
            self.status = status  # type: ignore[misc]

    def body(self) -> bytes:
        """The OpenAI error body: ``{"error": {"message", "type", "param", "code"}}``."""
        return orjson.dumps(
            {
                "error": {
                    "message": self.message,
                    "type": self.type,
                    "param": self.param,
                    "code": self.code,
                }
            }
        )

    def headers(self) -> dict[str, str]:
        """Extra response headers the client should see with this error."""
        return {}


class RequestError(GearshiftError):
    status = 400
    type = "invalid_request_error"


class BadRequest(RequestError):
    status = 400


class Unauthorized(RequestError):
    status = 401
    type = "authentication_error"


class NotFound(RequestError):
    status = 404


class MethodNotAllowed(RequestError):
    status = 405


class PayloadTooLarge(RequestError):
    status = 413


class RequestTimeout(RequestError):
    status = 408


class UpstreamError(GearshiftError):
    """A provider failed; ``provider`` names it, ``upstream_status`` is what it answered."""

    type = "upstream_error"

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        upstream_status: int | None = None,
        code: str | None = None,
        param: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, code=code, param=param, status=status)
        self.provider = provider
        self.upstream_status = upstream_status
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        return {"retry-after": str(max(1, round(self.retry_after)))}

    def scrubbed(self, secrets: tuple[str, ...]) -> UpstreamError:
        """This error with every upstream-given string made safe to forward (``scrub``):
        the one choke point every upstream error passes before it reaches a client."""
        self.message = scrub(self.message, *secrets)
        if self.code is not None:
            self.code = scrub(self.code, *secrets, limit=200)
        if self.param is not None:
            self.param = scrub(self.param, *secrets, limit=200)
        return self


class Rejected(UpstreamError):
    """The upstream refused the request itself (4xx): another model would refuse it too."""

    type = "invalid_request_error"


class CredentialsRejected(Rejected):
    """The upstream refused gearshift's own provider key (401/403): nothing the client can
    fix, and every request to this deployment will fail alike, so another model is tried
    and the breaker counts it; the same deployment is not retried for this request."""

    retryable = True
    health = True


class ModelNotFound(Rejected):
    """The provider says the model does not exist or is not available to this key (OpenAI
    ``model_not_found``, Anthropic ``not_found_error``, Gemini ``NOT_FOUND``: any 404 to a
    generation call). Retryable on another model; not the same deployment's health: the
    router withdraws it for ``reliability.withdrawn_cooldown``."""

    status = 404
    retryable = True


class Unsupported(UpstreamError):
    """The request uses something the target's wire format cannot carry; raised by an
    adapter before anything is sent. Another model may serve it, so the attempt loop moves
    on (``retryable``); it says nothing about the provider's health. ``provider`` is the
    wire format's name."""

    status = 400
    type = "invalid_request_error"
    retryable = True


class RateLimited(UpstreamError):
    status = 429
    type = "rate_limit_error"
    retryable = True
    transient = True
    health = True


class Unavailable(UpstreamError):
    status = 502
    type = "server_error"
    retryable = True
    transient = True
    health = True


class Timeout(UpstreamError):
    status = 504
    type = "timeout_error"
    retryable = True
    transient = True
    health = True


class ConnectError(UpstreamError):
    status = 502
    type = "connection_error"
    retryable = True
    transient = True
    health = True


class ProtocolError(UpstreamError):
    status = 502
    type = "server_error"
    retryable = True
    transient = True
    health = True


class CircuitOpen(GearshiftError):
    """Every model that may serve the request is cut off by its breaker; ``retry_after``:
    seconds until the first of them lets a probe through."""

    status = 503
    type = "server_error"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message, code="circuit_open")
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        return {"retry-after": str(max(1, round(self.retry_after)))}


class DeadlineExceeded(GearshiftError):
    """The request's total deadline passed (all attempts and waits included)."""

    status = 504
    type = "timeout_error"


class NoTarget(GearshiftError):
    status = 503
    type = "server_error"


class OverLimit(GearshiftError):
    """A proxy key's own limit (gearshift's, not a provider's): a rate limit or a budget.
    ``retry_after``: seconds until the request would fit; ``limit_headers``: the
    ``x-ratelimit-*`` headers, as OpenAI sends them."""

    status = 429

    def __init__(
        self,
        message: str,
        *,
        code: str,
        kind: str,
        retry_after: float,
        limit_headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.type = kind  # type: ignore[misc]
        self.retry_after = retry_after
        self.limit_headers = dict(limit_headers or {})

    def headers(self) -> dict[str, str]:
        return {**self.limit_headers, "retry-after": str(max(1, math.ceil(self.retry_after)))}


class Forbidden(RequestError):
    """The proxy key may not use what it asked for (a model outside its list)."""

    status = 403
    type = "permission_error"


def error_event(error: GearshiftError) -> bytes:
    """The SSE event that ends a stream which failed after its first byte was sent."""
    return b"data: " + error.body() + b"\n\n"


def for_upstream_status(
    status: int,
    message: str,
    *,
    provider: str,
    code: str | None = None,
    param: str | None = None,
    retry_after: float | None = None,
) -> UpstreamError:
    """The error an upstream HTTP status means, with the status an OpenAI client expects.

    429 → 429 (retryable); 500/502 → 502, 503/529 → 503 (overloaded; never leak 529),
    408/504 → 504 (all retryable); 401/403 → same status, with a message of our own (an
    upstream's auth message may echo part of gearshift's key); 404 → ``ModelNotFound``;
    other 4xx pass through.
    """
    if status < 400:
        # A redirect or an odd 1xx/2xx: gearshift does not follow redirects (they could
        # carry a provider key elsewhere), so it is a protocol failure.
        return ProtocolError(
            f"Provider {provider!r} answered HTTP {status} instead of 200.",
            provider=provider,
            upstream_status=status,
        )
    if status == 429:
        return RateLimited(
            message,
            provider=provider,
            upstream_status=status,
            code=code or "rate_limit_exceeded",
            retry_after=retry_after,
        )
    if status in (408, 504):
        return Timeout(message, provider=provider, upstream_status=status, code=code)
    if status >= 500:
        overloaded = status in (503, 529)
        return Unavailable(
            message,
            provider=provider,
            upstream_status=status,
            code=code,
            status=503 if overloaded else 502,
            retry_after=retry_after,
        )
    if status in (401, 403):
        return CredentialsRejected(
            f"Provider {provider!r} rejected gearshift's credentials (HTTP {status}); "
            "check the provider key gearshift is configured with.",
            provider=provider,
            upstream_status=status,
            status=status,
            code="upstream_auth_failed",
        )
    if status == 404:
        return ModelNotFound(
            message,
            provider=provider,
            upstream_status=status,
            code=code,
            param=param,
        )
    return Rejected(
        message, provider=provider, upstream_status=status, status=status, code=code, param=param
    )


_KEYLIKE = re.compile(r"(sk-[A-Za-z0-9_\-*.]{4,}|AIza[0-9A-Za-z_\-]{10,})")


def scrub(message: str, *secrets: str, limit: int = 1000) -> str:
    """Upstream text made safe to show: the given secrets and key-like tokens masked, length
    bounded (the secrets are replaced before cutting, so a cut cannot expose a prefix)."""
    for secret in secrets:
        if secret:
            message = message.replace(secret, "[redacted]")
    return _KEYLIKE.sub("[redacted]", message)[:limit]


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds), if present."""
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            return max(0.0, float(value) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is not None:
        try:
            return max(0.0, float(value))
        except ValueError:
            return None  # an HTTP date: rare from these APIs; treat as unknown
    return None
