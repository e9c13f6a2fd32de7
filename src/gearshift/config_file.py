"""What a configuration file may say: the strict msgspec Structs ``config.decode`` reads
(unknown keys rejected, every number bounded, errors naming their ``$.path``), and the
``Secret`` that holds a credential. ``config`` resolves them; it re-exports these names."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal

import msgspec

from gearshift.governance.spec import CacheSpec, KeySpec, StateSpec
from gearshift.learn.spec import LearnSpec
from gearshift.serve.store import StoreSpec

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
