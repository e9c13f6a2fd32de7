"""Configuration: strict msgspec Structs, decoded raw, then resolved against the environment.

``load(path)`` reads a TOML (or YAML) file, or the embedded default catalog when ``path`` is
None, into frozen Structs that reject unknown keys (``config_file.py``, re-exported here);
validation errors keep msgspec's ``$.models[3].price_in`` path. ``resolve`` then merges the
file over the default catalog, reads ``env:NAME`` secret references and
``GEARSHIFT_<PROVIDER>_BASE_URL`` overrides, checks cross-references, and decides which
models are offered (a model whose provider has no key, or whose wire format is not
supported, is not). This is the only module that reads the environment.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from dataclasses import replace as dc_replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from gearshift import config_checks as checks
from gearshift.config_checks import ConfigError as ConfigError
from gearshift.config_file import (  # what the file may say
    EFFORT_RANK,
    EFFORTS,
    AnthropicProviderSpec,
    AnyProviderSpec,
    BreakerSpec,
    ConfigFile,
    EmbeddingSpec,
    ModelSpec,
    OpenAIProviderSpec,
    ProviderSpec,
    ReasoningSpec,
    ReliabilitySpec,
    RoutingSpec,
    Secret,
    ServerSpec,
    StickySpec,
    Timeouts,
)
from gearshift.governance.spec import CacheSpec, StateSpec
from gearshift.learn.spec import LearnSpec
from gearshift.serve.store import StoreSpec

if TYPE_CHECKING:
    from gearshift.governance.keys import KeyPolicy


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


__all__ = [  # (what the file may say too: config_file.py)
    "EFFORTS",
    "EFFORT_RANK",
    "AnthropicProviderSpec",
    "AnyProviderSpec",
    "BreakerSpec",
    "Config",
    "ConfigError",
    "ConfigFile",
    "EmbeddingSpec",
    "Model",
    "ModelSpec",
    "OpenAIProviderSpec",
    "Provider",
    "ProviderSpec",
    "ReasoningSpec",
    "ReliabilitySpec",
    "RoutingSpec",
    "Secret",
    "ServerSpec",
    "StickySpec",
    "Timeouts",
    "catalog_2024",
    "decode",
    "default_catalog",
    "is_reference",
    "load",
    "resolve",
]
