"""Proxy keys with a policy: ``[[keys]]`` resolved into ``KeyPolicy`` objects, known by the
digest of the key (the key itself is never kept beside them, nor logged)."""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from gearshift.config import Secret, is_reference, secret
from gearshift.config_checks import ConfigError, warn_literal
from gearshift.governance.spec import KeySpec

UNNAMED = "unnamed"  # the label of keys without a policy (server.api_keys, GEARSHIFT_API_KEYS)


@dataclass(frozen=True, slots=True)
class KeyPolicy:
    """What one proxy key may do (``KeySpec``, resolved). ``name`` is its label in metrics,
    stats and logs: never the key."""

    name: str
    team: str | None = None
    budget_daily_usd: float | None = None
    budget_monthly_usd: float | None = None
    over_budget: str = "refuse"
    rpm: int | None = None
    tpm: int | None = None
    tiers: frozenset[str] = frozenset()
    models: frozenset[str] = frozenset()
    default_tier: str | None = None

    @property
    def budgeted(self) -> bool:
        return self.budget_daily_usd is not None or self.budget_monthly_usd is not None

    @property
    def limited(self) -> bool:
        return self.rpm is not None or self.tpm is not None


NO_POLICY = KeyPolicy(UNNAMED)


def digest(key: str) -> bytes:
    """The form a key is known by: SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


def resolve(
    specs: Sequence[KeySpec],
    environ: Mapping[str, str],
    *,
    source: str,
    tiers: Collection[str],
    models: Collection[str],
) -> list[tuple[Secret, KeyPolicy]]:
    """Each ``[[keys]]`` entry's secret and policy; a ``ConfigError`` naming the entry for
    an unset key, a repeated name or key, or a tier or model the configuration lacks."""
    out: list[tuple[Secret, KeyPolicy]] = []
    names: set[str] = set()
    seen: set[bytes] = set()
    for i, spec in enumerate(specs):
        where = f"{source}: $.keys[{i}]"
        try:
            found = secret(spec.key.strip(), environ)
        except ConfigError as exc:
            raise ConfigError(f"{where}.key: {exc}") from None
        value = found.reveal() if found is not None else ""
        if not is_reference(spec.key):
            warn_literal(f"{where}.key", '"env:NAME"')
        if not value:
            raise ConfigError(f"{where}.key: {spec.key!r} is empty or unset")
        if spec.name in names or spec.name == UNNAMED:
            raise ConfigError(f"{where}.name: {spec.name!r} is used twice (or reserved)")
        if digest(value) in seen:
            raise ConfigError(f"{where}.key: the same key as an earlier entry")
        names.add(spec.name)
        seen.add(digest(value))
        for tier in [*spec.tiers, *([spec.default_tier] if spec.default_tier else [])]:
            if tier not in tiers:
                raise ConfigError(f"{where}: unknown tier {tier!r} (tiers: {', '.join(tiers)})")
        unknown = sorted(set(spec.models) - set(models))
        if unknown:
            raise ConfigError(f"{where}.models: unknown models {unknown}")
        out.append(
            (
                Secret(value),
                KeyPolicy(
                    name=spec.name,
                    team=spec.team,
                    budget_daily_usd=spec.budget_daily_usd,
                    budget_monthly_usd=spec.budget_monthly_usd,
                    over_budget=spec.over_budget,
                    rpm=spec.rpm,
                    tpm=spec.tpm,
                    tiers=frozenset(spec.tiers),
                    models=frozenset(spec.models),
                    default_tier=spec.default_tier,
                ),
            )
        )
    return out


__all__ = ["NO_POLICY", "UNNAMED", "KeyPolicy", "digest", "resolve"]
