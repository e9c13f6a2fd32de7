"""Configuration: strict msgspec Structs, decoded raw, then resolved against the environment.

``load(path)`` reads a TOML (or YAML) file, or the embedded default catalog when ``path`` is
None, into frozen Structs that reject unknown keys; validation errors keep msgspec's
``$.models[3].price_in`` path. ``resolve`` then merges the file over the default catalog,
reads ``env:NAME`` secret references and ``GEARSHIFT_<PROVIDER>_BASE_URL`` overrides, checks
cross-references, and decides which models are offered (a model whose provider has no key,
or whose wire format is not supported, is not). This is the only module that reads the
environment.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from dataclasses import replace as dc_replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec

from gearshift import config_checks as checks
from gearshift.config_checks import ConfigError as ConfigError
from gearshift.governance.spec import CacheSpec, KeySpec, StateSpec
from gearshift.learn.spec import LearnSpec
from gearshift.serve.store import StoreSpec

if TYPE_CHECKING:
    from gearshift.governance.keys import KeyPolicy

Capability = Literal["tools", "vision", "json_schema", "streaming"]
# Every number has a lower and an upper bound: TOML (and YAML) can write inf and nan, and
# inf fails the upper bound, nan every comparison. The error names the $.path.
Seconds = Annotated[float, msgspec.Meta(gt=0, le=86_400)]  # a day at most
Wait = Annotated[float, msgspec.Meta(ge=0, le=86_400)]
Price = Annotated[float, msgspec.Meta(ge=0, le=100_000)]  # USD per 1M tokens
Tokens = Annotated[int, msgspec.Meta(gt=0, le=100_000_000)]
Bytes = Annotated[int, msgspec.Meta(gt=0, le=1 << 30)]  # 1 GiB, held in memory
Count = Annotated[int, msgspec.Meta(gt=0, le=1_000_000)]
# Reasoning effort, weakest first: OpenAI's values (``reasoning_effort``), which gearshift
# maps to Anthropic's effort or thinking budget and Gemini's thinking level or budget.
Effort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]
EFFORTS: tuple[str, ...] = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
EFFORT_RANK: Mapping[str, int] = {e: i for i, e in enumerate(EFFORTS)}


class Secret:
    """A credential. Its repr and str never show the value; ``reveal()`` does."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class _Strict(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    pass


class Timeouts(_Strict, frozen=True):
    """Seconds. ``first_byte``: until response headers; ``idle``: longest gap between reads."""

    connect: Seconds = 5.0
    first_byte: Seconds = 60.0
    idle: Seconds = 60.0
    total: Seconds = 600.0


class ProviderSpec(_Strict, frozen=True, tag_field="kind"):
    """One upstream endpoint. ``api_key`` and each header value: ``env:NAME`` (recommended)
    or a literal (warned about, for the key and headers that look like credentials)."""

    name: str
    base_url: str | None = None
    api_key: str | None = None
    headers: dict[str, str] = {}
    # Upstream connections at once (a stream holds one for its whole length): beyond it,
    # requests wait for a free one, within their first-byte timeout.
    max_connections: Annotated[int, msgspec.Meta(gt=0, le=65_536)] = 4096
    timeouts: Timeouts = Timeouts()


class OpenAIProviderSpec(ProviderSpec, frozen=True, tag="openai"):
    """OpenAI and every OpenAI-compatible server (Azure, Groq, Together, Ollama, vLLM …).

    ``auth_header = "api-key"`` sends the key the way Azure's deployment endpoints want it;
    ``query`` is appended to the URL (Azure's ``api-version``).
    """

    auth_header: Literal["authorization", "api-key"] = "authorization"
    query: dict[str, str] = {}
    stream_usage: bool = True  # ask for stream_options.include_usage (some servers reject it)
    # Servers that do not know OpenAI's newer ``developer`` role get ``system`` instead.
    developer_as_system: bool = False
    # The name the output limit is sent under: as the client sent it, or always one of the
    # two (OpenAI's reasoning models refuse max_tokens; older servers know only max_tokens).
    max_tokens_field: Literal["as_sent", "max_tokens", "max_completion_tokens"] = "as_sent"
    # Tool-call ids rewritten to 9 letters and digits, consistently in calls and results
    # (Mistral refuses any other shape).
    tool_call_ids: Literal["as_sent", "alnum9"] = "as_sent"
    # What the server cannot take goes to another model instead: images only as data URLs
    # (Ollama), one choice per call (Groq).
    data_url_images_only: bool = False
    single_choice: bool = False


class AnthropicProviderSpec(ProviderSpec, frozen=True, tag="anthropic"):
    version: str = "2023-06-01"


class GeminiProviderSpec(ProviderSpec, frozen=True, tag="gemini"):
    pass


AnyProviderSpec = OpenAIProviderSpec | AnthropicProviderSpec | GeminiProviderSpec


class VariantSpec(_Strict, frozen=True):
    """One effort level of a model, offered to the planner as a choice of its own: the tier
    it meets, and the output it spends against the model's default effort (reasoning tokens
    are billed as output), e.g. ``{tier = "frontier", output_factor = 2.0}``."""

    tier: str
    output_factor: Annotated[float, msgspec.Meta(gt=0, le=100)] = 1.0


class ReasoningSpec(_Strict, frozen=True):
    """A reasoning model: the efforts it accepts (any other is clamped to the nearest of
    these, downwards), the provider's default (what runs when none is sent), how the effort
    is sent (``effort``: OpenAI ``reasoning_effort`` / Anthropic ``output_config.effort``;
    ``budget``: Anthropic ``thinking.budget_tokens`` / Gemini ``thinkingBudget``; ``level``:
    Gemini ``thinkingLevel``; default by wire format: effort, effort, level), and the
    efforts offered to the planner as ``variants``."""

    efforts: list[Effort]
    default: Effort | None = None
    control: Literal["effort", "budget", "level"] | None = None
    variants: dict[Effort, VariantSpec] = {}


class ModelSpec(_Strict, frozen=True):
    """A model the router may choose. Prices are USD per 1M tokens."""

    name: str
    provider: str
    tier: str
    price_in: Price
    price_out: Price
    upstream_id: str | None = None
    # Optional prices (USD per 1M) for token kinds billed differently; default: price_in
    # (cached reads, cache writes) and price_out (reasoning tokens).
    price_cached_in: Price | None = None
    price_cache_write_in: Price | None = None
    price_reasoning_out: Price | None = None
    context_window: Tokens = 128_000
    max_output: Tokens = 4096
    capabilities: list[Capability] = msgspec.field(
        default_factory=lambda: ["tools", "vision", "json_schema", "streaming"]
    )
    enabled: bool = True
    # Where the id, prices and limits come from (a provider's page, a price file) and the
    # day they were checked: what `gearshift catalog` shows.
    source: str | None = None
    checked: Annotated[str, msgspec.Meta(pattern=r"^\d{4}-\d{2}-\d{2}$")] | None = None
    # Request parameters this model refuses (reasoning models refuse sampling parameters:
    # "temperature", "top_p", …): never sent to fail upstream. "drop": sent without them
    # (named in x-gearshift-dropped-params); "error": the next model is tried, and the
    # client gets 400 unsupported_parameter when none is left.
    refuses: list[str] = []
    on_refused: Literal["drop", "error"] = "drop"
    # The provider's announced retirement day, when known (`gearshift doctor` reports it).
    retires: Annotated[str, msgspec.Meta(pattern=r"^\d{4}-\d{2}-\d{2}$")] | None = None
    # Reasoning models: their efforts and the variants the planner may choose.
    reasoning: ReasoningSpec | None = None
    # OpenAI kind only: the API spoken to it. "responses" for the models that take function
    # tools with reasoning only there (OpenAI's GPT-6 family).
    api: Literal["chat", "responses"] = "chat"


class EmbeddingSpec(_Strict, frozen=True):
    """An embedding model (``POST /v1/embeddings``): no tier, no routing; USD per 1M input
    tokens."""

    name: str
    provider: str
    price_in: Price
    upstream_id: str | None = None
    enabled: bool = True
    source: str | None = None
    checked: Annotated[str, msgspec.Meta(pattern=r"^\d{4}-\d{2}-\d{2}$")] | None = None


class ServerSpec(_Strict, frozen=True):
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8787
    max_body_bytes: Bytes = 32 * 1024 * 1024
    max_response_bytes: Bytes = 64 * 1024 * 1024  # an upstream answer larger is refused
    api_keys: list[str] = []
    # The key of POST /gearshift/reload (env:NAME or file:PATH); without one, SIGHUP only.
    admin_key: str | None = None
    # On SIGTERM: stop accepting, let requests and streams in flight finish this long.
    shutdown_grace: Annotated[float, msgspec.Meta(ge=0, le=3_600)] = 30.0
    log_prompts: bool = False  # the access log line carries the messages (keys masked)
    # What a client may cost (docs/security.md): a request's head and body must arrive in
    # time, an idle keep-alive connection closes, half-sent requests are capped in all and
    # per peer (0: half the open-file limit, at most 512; per peer half of that), and one
    # request may hold so many messages, content parts and levels of nesting.
    header_timeout: Seconds = 10.0
    body_timeout: Seconds = 60.0
    keepalive_timeout: Seconds = 75.0
    max_pending: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 0
    max_pending_per_peer: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 0
    max_messages: Count = 10_000
    max_content_parts: Count = 20_000
    max_nesting: Annotated[int, msgspec.Meta(ge=8, le=200)] = 128
    large_body_parses: Annotated[int, msgspec.Meta(ge=1, le=64)] = 2  # bodies over 1 MiB


class ThresholdSpec(_Strict, frozen=True):
    """Score cut-offs overriding the rule table's (0 <= standard <= frontier <= 1)."""

    standard: Annotated[float, msgspec.Meta(ge=0, le=1)]
    frontier: Annotated[float, msgspec.Meta(ge=0, le=1)]


class StickySpec(_Strict, frozen=True):
    """Sticky routing (``routing/sticky.py``): a conversation's turns stay on the model that
    served its previous turn, so the provider's prompt cache keeps hitting, unless the
    required tier rises above it. ``ttl``: seconds a session is remembered after its last
    answer; ``max_sessions``: sessions remembered per process (least recently answered
    forgotten first; about 250 bytes each: 25 MB at the default)."""

    enabled: bool = True
    ttl: Seconds = 3600.0
    max_sessions: Count = 100_000


class RoutingSpec(_Strict, frozen=True):
    """How requests are routed. ``auto`` (and ``auto_aliases``) choose freely; a concrete
    model is the ceiling; ``gearshift/<tier>`` asks for a tier."""

    tiers: list[str] = msgspec.field(default_factory=lambda: ["light", "standard", "frontier"])
    classifier: bool = True
    default_model: str | None = None  # what `auto` serves when classifier = false
    auto_aliases: list[str] = msgspec.field(default_factory=lambda: ["auto", "gearshift/auto"])
    rules: str | None = None  # a rule table from `gearshift calibrate`; default: shipped
    # The knob: the highest probability, as the table's calibrated risk, that a request sent
    # below the frontier tier is answered worse than the frontier would (frontier from this
    # risk, standard from the table's share of it). Or a named preset of the table: safe |
    # balanced | thrifty. At most one of max_risk, preset and thresholds (cut-offs) is set.
    max_risk: Annotated[float, msgspec.Meta(gt=0, le=1)] | None = None
    preset: Literal["safe", "balanced", "thrifty"] | None = None
    # How far an uncertain request's accepted risk is cut (most of its words unknown to the
    # table); None: the table's own (0.5 in the shipped one); 0 turns leaning off.
    uncertainty_lean: Annotated[float, msgspec.Meta(ge=0, lt=1)] | None = None
    thresholds: ThresholdSpec | None = None
    allow_upgrade: bool = False  # may a concrete request go to a higher tier than its model?
    expected_output_tokens: Tokens = 400  # for cost estimates without max_tokens
    baseline_model: str | None = None  # what `auto` is compared with; default: the priciest
    sticky: StickySpec = msgspec.field(default_factory=StickySpec)


class BreakerSpec(_Strict, frozen=True):
    """One circuit breaker per deployment (provider + model). It opens after ``failures``
    failures in a row, or when at least ``min_calls`` calls in the last ``window`` seconds
    failed at ``failure_ratio`` or more; stays open ``cooldown`` seconds (at least any
    Retry-After, at most ``max_cooldown``); then lets ``probes`` requests through at a time
    (half-open): a success closes it, a failure opens it again."""

    failures: Count = 5
    failure_ratio: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.5
    min_calls: Count = 20
    window: Seconds = 30.0
    cooldown: Seconds = 30.0
    max_cooldown: Seconds = 600.0
    probes: Count = 1


class ReliabilitySpec(_Strict, frozen=True):
    """Fallbacks, retries and deadlines, for every request.

    ``max_attempts``: upstream calls per request, fallbacks included. Between rounds over the
    plan: full-jitter back-off ``uniform(0, min(backoff_max, backoff_base * 2**round))``; a
    Retry-After up to ``retry_after_max`` seconds is waited for, a longer one takes that
    model out of the request. ``deadline``: the whole request, waits and streams included
    (a client may ask for less with ``x-gearshift-timeout``). ``degrade``: when every model
    at the required tier failed, try lower tiers (the response says so in
    ``x-gearshift-degraded``) instead of failing.
    """

    # At most 100: the back-off doubles per round (2.0**round overflows past ~1000).
    max_attempts: Annotated[int, msgspec.Meta(gt=0, le=100)] = 4
    backoff_base: Seconds = 0.1
    backoff_max: Seconds = 2.0
    retry_after_max: Wait = 5.0
    deadline: Seconds = 600.0
    # A model the provider says does not exist (withdrawn, not on this account) is out of
    # rotation this long before one probe; a catalog fault, logged loudly.
    withdrawn_cooldown: Seconds = 900.0
    degrade: bool = False
    breaker: BreakerSpec = BreakerSpec()


class ConfigFile(_Strict, frozen=True):
    server: ServerSpec = ServerSpec()
    routing: RoutingSpec = RoutingSpec()
    reliability: ReliabilitySpec = ReliabilitySpec()
    use_default_catalog: bool = True
    # LiteLLM's model_prices_and_context_window.json (or a file like it): its prices and
    # context windows replace the catalog's for matching ids (gearshift.prices).
    price_file: str | None = None
    providers: list[AnyProviderSpec] = []
    models: list[ModelSpec] = []
    # Models POST /v1/embeddings passes requests to (no routing), on OpenAI-compatible
    # providers; priced per input token.
    embeddings: list[EmbeddingSpec] = []
    # The Responses API's store (previous_response_id, retrieve, delete): embedded SQLite.
    store: StoreSpec = msgspec.field(default_factory=StoreSpec)
    # Proxy keys with budgets, rate limits and allowed tiers; where their state lives; the
    # response cache (gearshift.governance).
    keys: list[KeySpec] = []
    state: StateSpec = StateSpec()
    cache: CacheSpec = CacheSpec()
    learn: LearnSpec = LearnSpec()  # shadow comparisons and the outcome store (gearshift.learn)


@dataclass(frozen=True, slots=True)
class Provider:
    """A resolved provider: final base URL, key (or None), extra headers (treated as
    secrets: never in a repr) and the kind-specific spec with its secrets redacted."""

    name: str
    kind: str
    base_url: str
    api_key: Secret | None
    spec: AnyProviderSpec
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    # Per-adapter values built once, on first use (URL, headers; ``providers.cached``), and
    # shared by every request to this provider: never rebuilt per request, never mutated.
    cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def timeouts(self) -> Timeouts:
        return self.spec.timeouts


@dataclass(frozen=True, slots=True)
class Model:
    """A resolved model. ``offered`` is False (with ``why_not``) when it cannot be served."""

    name: str
    upstream_id: str
    provider: Provider
    tier: str
    tier_rank: int
    spec: ModelSpec
    offered: bool
    why_not: str | None = None
    # An effort variant (``ReasoningSpec.variants``): the effort it sends and its output
    # relative to the default. Same name, provider and breaker as its model; the plan lists
    # it as a target of its own, after the model in catalog order.
    effort: str | None = None
    output_factor: float = 1.0

    @property
    def label(self) -> str:
        """``name``, or ``name[effort]`` for a variant (attempt logs, the catalog table)."""
        return self.name if self.effort is None else f"{self.name}[{self.effort}]"


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerSpec
    routing: RoutingSpec
    providers: Mapping[str, Provider]
    models: Mapping[str, Model]
    proxy_keys: tuple[Secret, ...]
    source: str
    offered: tuple[Model, ...] = field(default=())
    reliability: ReliabilitySpec = field(default_factory=ReliabilitySpec)
    # PROMETHEUS_MULTIPROC_DIR, set by `serve --workers` for its workers: metrics are
    # summed over every worker through it.
    metrics_dir: str | None = None
    embeddings: Mapping[str, Model] = field(default_factory=dict)
    store: StoreSpec = field(default_factory=StoreSpec)
    # Each proxy key's policy, by the key's digest (keys without one: none here).
    key_policies: Mapping[bytes, KeyPolicy] = field(default_factory=dict)
    state: StateSpec = field(default_factory=StateSpec)
    state_url: Secret | None = None
    cache: CacheSpec = field(default_factory=CacheSpec)
    admin_key: Secret | None = None  # server.admin_key, resolved
    learn: LearnSpec = field(default_factory=LearnSpec)

    def redacted(self) -> dict[str, object]:
        """The resolved configuration as plain data with every secret replaced by ``***``."""
        return {
            "source": self.source,
            "server": msgspec.to_builtins(self.server)
            | {"api_keys": ["***"] * len(self.proxy_keys)},
            "proxy_auth": bool(self.proxy_keys),
            "keys": [msgspec.to_builtins(p) for p in self.key_policies.values()],
            "state": msgspec.to_builtins(self.state),
            "cache": msgspec.to_builtins(self.cache),
            "learn": msgspec.to_builtins(self.learn),
            "routing": msgspec.to_builtins(self.routing),
            "reliability": msgspec.to_builtins(self.reliability),
            "providers": [
                {
                    "name": p.name,
                    "kind": p.kind,
                    "base_url": p.base_url,
                    "api_key": "***" if p.api_key else None,
                }
                for p in self.providers.values()
            ],
            "models": [
                {
                    "name": m.name,
                    "provider": m.provider.name,
                    "upstream_id": m.upstream_id,
                    "tier": m.tier,
                    "price_in": m.spec.price_in,
                    "price_out": m.spec.price_out,
                    "context_window": m.spec.context_window,
                    "capabilities": list(m.spec.capabilities),
                    "offered": m.offered,
                    "why_not": m.why_not,
                }
                for m in self.models.values()
            ],
        }


def decode(data: bytes, *, source: str, fmt: Literal["toml", "yaml"] = "toml") -> ConfigFile:
    """Decode raw config bytes; errors name the source and the ``$.path``."""
    try:
        if fmt == "yaml":
            return msgspec.yaml.decode(data, type=ConfigFile)
        return msgspec.toml.decode(data, type=ConfigFile)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{source}: not valid {fmt.upper()}: {exc}") from None
    except ImportError as exc:  # msgspec.yaml needs PyYAML, an optional extra
        raise ConfigError(f"{source}: YAML needs PyYAML (pip install 'gearshift[yaml]')") from exc


def default_catalog() -> ConfigFile:
    """The embedded default catalog shipped as ``catalog.toml`` in the package."""
    data = resources.files("gearshift").joinpath("catalog.toml").read_bytes()
    return decode(data, source="<default catalog>")


def catalog_2024() -> ConfigFile:
    """The seed's 2024 launch catalog, an example config shipped as ``catalog_2024.toml``
    (gpt-4o, Claude 3, Gemini 1.5: mostly withdrawn since; the demo and the tests use it)."""
    data = resources.files("gearshift").joinpath("catalog_2024.toml").read_bytes()
    return decode(data, source="<2024 catalog>")


def load(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    kinds: Collection[str] = ("openai", "anthropic", "gemini"),
    assume_keys: bool = False,
    base: ConfigFile | None = None,
) -> Config:
    """Load, merge over the default catalog (or ``base``, e.g. ``catalog_2024()``: then
    ``path`` None loads ``base`` itself), and resolve. ``kinds``: supported wire formats;
    ``assume_keys``: offer models whose provider has no key (for offline what-ifs)."""
    if path is None and base is not None:
        raw, source = base, "<catalog>"
    elif path is None:
        raw, source = default_catalog(), "<default catalog>"
    else:
        source = str(path)
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read: {exc.strerror}") from None
        fmt: Literal["toml", "yaml"] = "yaml" if source.endswith((".yaml", ".yml")) else "toml"
        raw = decode(data, source=source, fmt=fmt)
    return resolve(
        raw,
        source=source,
        environ=os.environ if environ is None else environ,
        kinds=kinds,
        assume_keys=assume_keys,
        base=base,
    )


def _secret(ref: str | None, environ: Mapping[str, str], where: str = "") -> Secret | None:
    """A secret from its reference: ``env:NAME`` (the variable), ``file:PATH`` (the file's
    content, stripped: a Kubernetes secret mounted as a file, read again on every reload) or
    the value itself; None when empty or unset. An unreadable file is a ``ConfigError``."""
    if not ref:
        return None
    if ref.startswith("env:"):
        value = environ.get(ref[4:], "").strip()
        return Secret(value) if value else None
    if ref.startswith("file:"):
        try:
            value = Path(ref[5:]).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            why = getattr(exc, "strerror", None) or type(exc).__name__
            place = f"{where}: " if where else ""
            raise ConfigError(f"{place}{ref!r}: cannot read the secret: {why}") from None
        return Secret(value) if value else None
    return Secret(ref)


secret = _secret


def is_reference(ref: str) -> bool:
    """``env:NAME`` or ``file:PATH``: not a secret written into the file itself."""
    return ref.startswith(("env:", "file:"))


def _merge(base: list[Any], extra: list[Any], where: str, source: str) -> list[tuple[Any, str]]:
    """Entries of ``extra`` replace same-named entries of ``base`` (order kept). Each entry
    comes with the place it was written, for error messages."""
    merged: dict[str, tuple[Any, str]] = {
        item.name: (item, f"<default catalog>: $.{where}[{i}]") for i, item in enumerate(base)
    }
    seen: set[str] = set()
    for i, item in enumerate(extra):
        if item.name in seen:
            raise ConfigError(f"{source}: $.{where}[{i}].name: {item.name!r} appears twice")
        seen.add(item.name)
        merged[item.name] = (item, f"{source}: $.{where}[{i}]")
    return list(merged.values())


def _headers(
    raw: Mapping[str, str], where: str, environ: Mapping[str, str]
) -> tuple[dict[str, str], str | None]:
    """A provider's headers, ``env:NAME`` values read; with why it cannot be used (a header
    whose variable is unset) or None. Literal values that look like credentials are warned
    about."""
    headers: dict[str, str] = {}
    missing = None
    for name, value in raw.items():
        checks.check_header(name, value, f"{where}.headers")
        if value.startswith("env:"):
            resolved = environ.get(value[4:], "").strip()
            if not resolved:
                missing = missing or f"its header {name!r} is unset ({value})"
                continue
            checks.check_value(resolved, f"{where}.headers.{name}", f"the value ({value})")
            value = resolved
        elif checks.looks_like_credential(name, value):
            checks.warn_literal(f"{where}.headers.{name}", '"env:NAME"')
        headers[name] = value
    return headers, missing


def _has_credential(provider: Provider) -> bool:
    """Authentication in a header instead of ``api_key`` (``authorization = "env:NAME"``)."""
    return any(checks.looks_like_credential(n, v) for n, v in provider.headers.items())


def _env_name(provider: str) -> str:
    return "GEARSHIFT_" + "".join(c if c.isalnum() else "_" for c in provider.upper())


def resolve(
    raw: ConfigFile,
    *,
    source: str,
    environ: Mapping[str, str],
    kinds: Collection[str] = ("openai", "anthropic", "gemini"),
    assume_keys: bool = False,
    base: ConfigFile | None = None,
) -> Config:
    """Merge ``raw`` over ``base`` (default: the default catalog), unless it opts out, and
    resolve references."""
    if raw.use_default_catalog and source != "<default catalog>":
        base = base or default_catalog()
        provider_specs = _merge(list(base.providers), list(raw.providers), "providers", source)
        model_specs = _merge(list(base.models), list(raw.models), "models", source)
        embedding_specs = _merge(list(base.embeddings), list(raw.embeddings), "embeddings", source)
    else:
        provider_specs = _merge([], list(raw.providers), "providers", source)
        model_specs = _merge([], list(raw.models), "models", source)
        embedding_specs = _merge([], list(raw.embeddings), "embeddings", source)

    keys = [Secret(k) for k in checks.proxy_keys_from_env(environ)]
    for i, ref in enumerate(raw.server.api_keys):
        secret = _secret(ref, environ, f"{source}: $.server.api_keys[{i}]")
        if secret is None:
            # A missing proxy key must not silently turn authentication off.
            raise ConfigError(f"{source}: $.server.api_keys[{i}]: {ref!r} is empty or unset")
        if not is_reference(ref):
            checks.warn_literal(f"{source}: $.server.api_keys[{i}]", '"env:NAME"')
        keys.append(secret)

    if len(set(raw.routing.tiers)) != len(raw.routing.tiers) or not raw.routing.tiers:
        raise ConfigError(f"{source}: $.routing.tiers must be a non-empty list of unique names")
    for i, name in enumerate([*raw.routing.tiers, *raw.routing.auto_aliases]):
        n = len(raw.routing.tiers)
        checks.check_name(
            name, f"{source}: $.routing." + (f"tiers[{i}]" if i < n else f"auto_aliases[{i - n}]")
        )
    ranks = {tier: i for i, tier in enumerate(raw.routing.tiers)}

    providers: dict[str, Provider] = {}
    unusable: dict[str, str] = {}  # provider name → why its models cannot be offered
    env_names: dict[str, str] = {}
    for spec, where in provider_specs:
        assert isinstance(spec, ProviderSpec)
        checks.check_name(spec.name, f"{where}.name")
        env = _env_name(spec.name)
        if env in env_names:
            raise ConfigError(
                f"{where}.name: {spec.name!r} and {env_names[env]!r} would "
                f"share the variable {env}_BASE_URL; rename one"
            )
        env_names[env] = spec.name
        override = environ.get(f"{env}_BASE_URL")
        base_url = override or spec.base_url
        if not base_url:
            raise ConfigError(
                f"{where}: provider {spec.name!r} has no base_url (set it or {env}_BASE_URL)"
            )
        base_url = checks.base_url(base_url, f"{env}_BASE_URL" if override else f"{where}.base_url")
        if isinstance(spec, AnthropicProviderSpec):
            checks.check_value(spec.version, f"{where}.version")
        api_key = _secret(spec.api_key, environ, f"{where}.api_key")
        if api_key is not None and spec.api_key:
            ref = spec.api_key if is_reference(spec.api_key) else "literal"
            checks.check_value(api_key.reveal(), f"{where}.api_key", f"the key ({ref})")
            if ref == "literal":
                checks.warn_literal(f"{where}.api_key", 'api_key = "env:NAME"')
        headers, missing = _headers(spec.headers, where, environ)
        if missing:
            unusable[spec.name] = missing
        # The stored spec keeps no secret: a literal key and header values are redacted.
        redacted = msgspec.structs.replace(
            spec,
            api_key=spec.api_key if not spec.api_key or is_reference(spec.api_key) else "***",
            headers={name: "***" for name in spec.headers},
        )
        providers[spec.name] = Provider(
            name=spec.name,
            kind=type(spec).__struct_config__.tag,  # type: ignore[arg-type]
            base_url=base_url,
            api_key=api_key,
            spec=redacted,  # type: ignore[arg-type]
            headers=headers,
        )

    price_file = None
    if raw.price_file is not None:
        from gearshift import prices

        price_file = prices.load(raw.price_file, f"{source}: $.price_file")
    models: dict[str, Model] = {}
    for mspec, where in model_specs:
        assert isinstance(mspec, ModelSpec)
        checks.check_name(mspec.name, f"{where}.name")
        checks.check_model_fields(mspec, where)
        checks.check_name(mspec.upstream_id or "", f"{where}.upstream_id")
        provider = providers.get(mspec.provider)
        if provider is None:
            raise ConfigError(f"{where}.provider: unknown provider {mspec.provider!r}")
        if mspec.tier not in ranks:
            raise ConfigError(
                f"{where}.tier: unknown tier {mspec.tier!r} (tiers: {', '.join(ranks)})"
            )
        if mspec.reasoning is not None:
            for effort, variant in mspec.reasoning.variants.items():
                if variant.tier not in ranks:
                    raise ConfigError(
                        f"{where}.reasoning.variants.{effort}.tier: unknown tier "
                        f"{variant.tier!r} (tiers: {', '.join(ranks)})"
                    )
        if price_file is not None:
            mspec = price_file.apply(mspec, provider.name, provider.kind)
        why_not = None
        if not mspec.enabled:
            why_not = "disabled in the configuration"
        elif provider.kind not in kinds:
            why_not = f"wire format {provider.kind!r} is not supported by this build"
        elif provider.name in unusable and not assume_keys:
            why_not = f"provider {provider.name!r}: {unusable[provider.name]}"
        elif provider.api_key is None and not assume_keys and not _has_credential(provider):
            ref = provider.spec.api_key or "none set"
            why_not = f"provider {provider.name!r} has no API key ({ref})"
        models[mspec.name] = Model(
            name=mspec.name,
            upstream_id=mspec.upstream_id or mspec.name,
            provider=provider,
            tier=mspec.tier,
            tier_rank=ranks[mspec.tier],
            spec=mspec,
            offered=why_not is None,
            why_not=why_not,
        )

    embeddings: dict[str, Model] = {}
    for espec, where in embedding_specs:
        assert isinstance(espec, EmbeddingSpec)
        checks.check_name(espec.name, f"{where}.name")
        if espec.name in models:
            raise ConfigError(f"{where}.name: {espec.name!r} is also a chat model's name")
        provider = providers.get(espec.provider)
        if provider is None:
            raise ConfigError(f"{where}.provider: unknown provider {espec.provider!r}")
        if provider.kind != "openai":
            raise ConfigError(
                f"{where}.provider: embeddings are passed to OpenAI-compatible providers only "
                f"({espec.provider!r} is {provider.kind!r})"
            )
        why_not = None
        if not espec.enabled:
            why_not = "disabled in the configuration"
        elif provider.name in unusable and not assume_keys:
            why_not = f"provider {provider.name!r}: {unusable[provider.name]}"
        elif provider.api_key is None and not assume_keys and not _has_credential(provider):
            why_not = (
                f"provider {provider.name!r} has no API key ({provider.spec.api_key or 'none set'})"
            )
        spec = ModelSpec(
            name=espec.name,
            provider=espec.provider,
            tier=raw.routing.tiers[0],
            price_in=espec.price_in,
            price_out=0.0,
            upstream_id=espec.upstream_id,
            capabilities=[],
            source=espec.source,
            checked=espec.checked,
        )
        embeddings[espec.name] = Model(
            name=espec.name,
            upstream_id=espec.upstream_id or espec.name,
            provider=provider,
            tier=spec.tier,
            tier_rank=0,
            spec=spec,
            offered=why_not is None,
            why_not=why_not,
        )

    for key in ("default_model", "baseline_model"):
        name = getattr(raw.routing, key)
        if name is not None and name not in models:
            raise ConfigError(f"{source}: $.routing.{key}: unknown model {name!r}")
    knobs = [k for k in ("max_risk", "preset", "thresholds") if getattr(raw.routing, k) is not None]
    if len(knobs) > 1:
        raise ConfigError(
            f"{source}: $.routing: set one of max_risk, preset and thresholds, not "
            + " and ".join(knobs)
        )
    t = raw.routing.thresholds
    if t is not None and t.standard > t.frontier:
        raise ConfigError(f"{source}: $.routing.thresholds: standard must be <= frontier")
    for alias in [*raw.routing.auto_aliases, *(f"gearshift/{t}" for t in raw.routing.tiers)]:
        if alias in models:
            raise ConfigError(f"{source}: $.routing.auto_aliases: {alias!r} is also a model name")
    if raw.routing.rules is not None or raw.routing.preset is not None:
        # Loaded as `serve` will, so that it cannot fail there.
        where = "rules" if raw.routing.rules is not None else "preset"
        checks.check_rules(raw.routing.rules, f"{source}: $.routing.{where}", raw.routing.preset)
    from gearshift.governance import keys as key_policies  # it imports this module

    named = key_policies.resolve(
        raw.keys, environ, source=source, tiers=raw.routing.tiers, models=models
    )
    keys += [secret for secret, _ in named]
    for field_name in ("reference", "cheap_reference", "judge"):
        name = getattr(raw.learn, field_name)
        if name is not None and name not in models:
            raise ConfigError(f"{source}: $.learn.{field_name}: unknown model {name!r}")
    state_url = _secret(raw.state.url, environ, f"{source}: $.state.url")
    admin_key = _secret(raw.server.admin_key, environ, f"{source}: $.server.admin_key")
    if raw.server.admin_key is not None and admin_key is None:
        raise ConfigError(
            f"{source}: $.server.admin_key: {raw.server.admin_key!r} is empty or unset"
        )
    if raw.state.backend == "redis" and state_url is None:
        raise ConfigError(f"{source}: $.state.url: the redis backend needs a URL (or env:NAME)")
    return Config(
        server=msgspec.structs.replace(
            raw.server,
            api_keys=["***"] * len(raw.server.api_keys),
            admin_key="***" if raw.server.admin_key else None,
        ),
        routing=raw.routing,
        providers=providers,
        models=models,
        proxy_keys=tuple(keys),
        source=source,
        offered=tuple(_with_variants([m for m in models.values() if m.offered], ranks)),
        reliability=raw.reliability,
        metrics_dir=environ.get("PROMETHEUS_MULTIPROC_DIR") or None,
        embeddings=embeddings,
        store=raw.store,
        key_policies={key_policies.digest(s.reveal()): p for s, p in named},
        state=msgspec.structs.replace(raw.state, url="***" if raw.state.url else None),
        state_url=state_url,
        cache=raw.cache,
        admin_key=admin_key,
        learn=raw.learn,
    )


def _with_variants(models: Iterable[Model], ranks: Mapping[str, int]) -> Iterator[Model]:
    """Each model, then its effort variants (``ReasoningSpec.variants``) as models of their
    own: same name, provider and upstream id, the variant's tier, effort and output factor."""
    for model in models:
        yield model
        reasoning = model.spec.reasoning
        for effort, variant in (reasoning.variants if reasoning else {}).items():
            yield dc_replace(
                model,
                tier=variant.tier,
                tier_rank=ranks[variant.tier],
                effort=effort,
                output_factor=variant.output_factor,
            )
