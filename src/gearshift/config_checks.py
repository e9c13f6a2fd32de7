"""The checks ``config.resolve`` runs on what goes on the wire, the files a configuration
names and the secrets it holds. Every error names the place (``t.toml: $.providers[0]...``)
and never a secret: a URL is shown with its credentials replaced by ``***``, a header value
or a key not at all.
"""

from __future__ import annotations

import datetime
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger("gearshift.config")

# RFC 9110 token (a header name); a field value may hold visible characters, spaces, tabs.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_IN_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_BAD_IN_URL = re.compile(r"[\x00-\x20\x7f]")
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*://)?.*@")  # to the last @
# Header names whose literal values are taken for credentials (and warned about).
_CREDENTIAL_WORDS = ("auth", "key", "token", "secret", "passw", "cookie", "credential")


class ConfigError(Exception):
    """The configuration cannot be used; the message names the file and the path."""


def shown_url(url: str) -> str:
    """``url`` fit for a message or a log line: any ``user:password@`` becomes ``***@``."""
    return repr(_USERINFO.sub(lambda m: (m.group(1) or "") + "***@", url))


def check_name(text: str, where: str) -> None:
    """A name that ends up in URLs, headers and log lines: no control characters."""
    if _CONTROL.search(text):
        raise ConfigError(f"{where}: {text!r} holds a control character")


def check_header(name: str, value: str, where: str) -> None:
    """A header gearshift sends: the name an HTTP token, the value fit for the wire."""
    if not _TOKEN.fullmatch(name):
        raise ConfigError(
            f"{where}: {name!r} is not a valid header name (letters, digits and !#$%&'*+-.^_`|~)"
        )
    check_value(value, f"{where}.{name}")


def check_value(value: str, where: str, what: str = "the value") -> None:
    """A header value (a key, a version): no CR, LF, NUL or other control character (a tab
    is allowed), or every call would fail. The value is never shown: it may be a secret."""
    if _BAD_IN_VALUE.search(value):
        raise ConfigError(f"{where}: {what} holds a line break or another control character")


def looks_like_credential(header: str, value: str) -> bool:
    name = header.lower()
    return any(word in name for word in _CREDENTIAL_WORDS) or value.lower().startswith(
        ("bearer ", "basic ")
    )


def warn_literal(where: str, how: str) -> None:
    """One WARNING for one secret written into the file; names its place, never its value."""
    log.warning(
        "%s: a secret written into the configuration file; put it in the environment "
        "and write %s instead",
        where,
        how,
    )


def base_url(value: str, where: str) -> str:
    """The base URL, trailing slash removed: http(s), with a host and a valid port, without
    credentials, query or fragment, spaces or control characters."""
    url = value.strip().rstrip("/")
    shown = shown_url(url)
    if _BAD_IN_URL.search(url):
        raise ConfigError(f"{where}: base_url {shown} holds a space or a control character")
    if "@" in url:  # anywhere: a password with "/" would move the host into the path
        # Refused, not redacted: the URL is in reprs, logs and error messages everywhere,
        # and aiohttp would send the credentials as basic auth that clashes with the key.
        raise ConfigError(
            f"{where}: base_url {shown} must not carry credentials (user:password@); send "
            'them in a header instead: headers = { authorization = "env:NAME" }'
        )
    try:
        parsed = urlsplit(url)
        parsed.port  # noqa: B018 (raises ValueError for a port out of range)
    except ValueError as exc:
        raise ConfigError(f"{where}: base_url {shown} is not a valid URL ({exc})") from None
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError(f"{where}: base_url {shown} must be an http(s) URL with a host")
    if parsed.query or parsed.fragment:
        raise ConfigError(
            f"{where}: base_url must not carry a query or fragment "
            "(use `query = {...}` for parameters such as api-version)"
        )
    return url


def proxy_keys_from_env(environ: Mapping[str, str]) -> list[str]:
    """The keys in ``GEARSHIFT_API_KEYS`` (comma-separated). Set but holding none (blank,
    or only commas) is an error: it would turn proxy authentication off without a word."""
    value = environ.get("GEARSHIFT_API_KEYS")
    if value is None:
        return []
    keys = [k.strip() for k in value.split(",") if k.strip()]
    if not keys:
        raise ConfigError(
            "GEARSHIFT_API_KEYS is set but holds no key; set keys (comma-separated), or "
            "unset it to run without proxy keys"
        )
    return keys


def check_rules(path: str | None, where: str, preset: str | None = None) -> None:
    """Load the rule table at ``path`` (and the lexicons file beside it; None: the shipped
    one) as ``serve`` will, and check that it has the risk ``preset`` the configuration
    names; a relative path is taken from the working directory, as ``load_rules`` does."""
    from gearshift.routing.classify import RulesError, load_rules  # classify is heavy

    try:
        rules = load_rules(path)
        if preset is not None:
            rules.preset_risk(preset)
    except RulesError as exc:
        hint = ""
        if path is not None and not Path(path).is_absolute():
            hint = f" (a relative path is taken from the working directory, {Path.cwd()})"
        raise ConfigError(f"{where}: {exc}{hint}") from None


# Parameters a model may be configured to refuse: never the ones a request is made of.
_NOT_REFUSABLE = frozenset({"model", "messages", "stream"})


def check_model_fields(spec: Any, where: str) -> None:
    """A model entry's dates are days that exist, and its ``refuses`` list leaves the
    request intact."""
    for name in ("checked", "retires"):
        value = getattr(spec, name)
        if value is not None:
            try:
                datetime.date.fromisoformat(value)
            except ValueError:
                raise ConfigError(f"{where}.{name}: {value!r} is not a date") from None
    bad = sorted(_NOT_REFUSABLE.intersection(spec.refuses))
    if bad:
        raise ConfigError(f"{where}.refuses: {', '.join(bad)} cannot be refused")
