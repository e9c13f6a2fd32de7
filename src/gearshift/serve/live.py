"""What a reload swaps: the configuration and everything built from it that requests read
(the rule table's policy, the proxy keys and their policies, the body limits), as one
immutable ``Live`` object. ``Current`` holds the one in force; each request reads it once,
as it arrives, and keeps that one to its end: a reload never changes the rules of a request
under way, and a request never sees half of one configuration and half of another.

``Reloader.reload`` (SIGHUP, ``POST /gearshift/reload``) loads the configuration and the
rule table again, off the event loop, validates them by building a ``Live``, and swaps it
in; anything wrong (a parse error, an unset key, an unknown tier, an unreadable rule table)
rejects the new one with the reason, logged, and the old one stays.

Some settings are bound to what was built at start-up (the listening socket, the worker
processes, the connection to the shared state, the Responses store's file, the sticky
sessions' and breakers' tables): a reload keeps their running values and says which of them
changed in the file and need a restart (``RESTART_ONLY``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from dataclasses import replace as dc_replace
from typing import Any

import msgspec

from gearshift.config import Config, ConfigError
from gearshift.inbound.chat import Limits
from gearshift.routing import policy
from gearshift.routing.classify import Rules, RulesError, load_rules

log = logging.getLogger("gearshift.reload")

# What a reload leaves as it was at start-up, and why (docs/governance.md, "Hot reload").
RESTART_ONLY = {
    "server": "the listener, its guards and the worker processes",
    "state": "the connection to the shared state",
    "store": "the Responses store's database",
    "routing.sticky": "the sticky sessions' table",
    "reliability.breaker": "the circuit breakers",
    "cache.max_entries": "the in-process state's size bound",
    "cache.max_bytes": "the in-process state's size bound",
    "learn": "the outcome store and the shadow sampler",
}


@dataclass(frozen=True, slots=True)
class Live:
    """One configuration and what requests read from it; never changed once built."""

    config: Config
    policy: policy.Policy
    key_digests: tuple[bytes, ...]  # SHA-256 of each proxy key (none: no auth)
    aliases: frozenset[str]  # auto aliases and ``gearshift/<tier>`` (none: nothing offered)
    alias_list: tuple[str, ...]
    limits: Limits
    governed: bool  # some key has a budget or a rate limit
    generation: int = 1
    admin_digest: bytes | None = None


def build(config: Config, rules: Rules, generation: int = 1) -> Live:
    """The ``Live`` for ``config`` and ``rules`` (raises what ``Policy.build`` raises)."""
    aliases: list[str] = []
    if config.offered:
        aliases = [*config.routing.auto_aliases, *(f"gearshift/{t}" for t in config.routing.tiers)]
    admin = config.admin_key
    return Live(
        config=config,
        policy=policy.Policy.build(config, rules),
        key_digests=tuple(hashlib.sha256(k.reveal().encode()).digest() for k in config.proxy_keys),
        aliases=frozenset(aliases),
        alias_list=tuple(aliases),
        limits=Limits(
            max_messages=config.server.max_messages,
            max_content_parts=config.server.max_content_parts,
            max_nesting=config.server.max_nesting,
        ),
        governed=any(p.budgeted or p.limited for p in config.key_policies.values()),
        generation=generation,
        admin_digest=hashlib.sha256(admin.reveal().encode()).digest() if admin else None,
    )


def carry_over(running: Config, new: Config) -> tuple[Config, list[str]]:
    """``new`` with the restart-only settings of ``running``; and which of them differ."""
    differ = [
        name
        for name, (a, b) in {
            "server": (_bound(running.server), _bound(new.server)),
            "state": ((running.state, running.state_url), (new.state, new.state_url)),
            "store": (running.store, new.store),
            "routing.sticky": (running.routing.sticky, new.routing.sticky),
            "reliability.breaker": (running.reliability.breaker, new.reliability.breaker),
            "cache.max_entries": (running.cache.max_entries, new.cache.max_entries),
            "cache.max_bytes": (running.cache.max_bytes, new.cache.max_bytes),
            "learn": (running.learn, new.learn),
        }.items()
        if a != b
    ]
    kept = dc_replace(
        new,
        server=msgspec.structs.replace(
            running.server, api_keys=new.server.api_keys, admin_key=new.server.admin_key
        ),
        state=running.state,
        state_url=running.state_url,
        store=running.store,
        metrics_dir=running.metrics_dir,
        learn=running.learn,
        routing=msgspec.structs.replace(new.routing, sticky=running.routing.sticky),
        reliability=msgspec.structs.replace(new.reliability, breaker=running.reliability.breaker),
        cache=msgspec.structs.replace(
            new.cache, max_entries=running.cache.max_entries, max_bytes=running.cache.max_bytes
        ),
    )
    return kept, differ


def _bound(server: Any) -> Any:
    """The server settings a reload keeps (the keys are not among them: they are reloaded)."""
    return msgspec.structs.replace(server, api_keys=[], admin_key=None)


def changed_sections(old: Config, new: Config) -> list[str]:
    """The top-level sections whose resolved values differ (secrets compared by digest)."""
    a, b = old.redacted(), new.redacted()
    out = [name for name in a if name != "source" and a.get(name) != b.get(name)]
    if _secrets(old) != _secrets(new):
        out.append("secrets")
    return out


def _secrets(config: Config) -> frozenset[bytes]:
    values = [k.reveal() for k in config.proxy_keys]
    values += [p.api_key.reveal() for p in config.providers.values() if p.api_key is not None]
    return frozenset(hashlib.sha256(v.encode()).digest() for v in values)


class Current:
    """The ``Live`` in force (the app's one mutable reference to it)."""

    __slots__ = ("live",)

    def __init__(self, live: Live) -> None:
        self.live = live


@dataclass(slots=True)
class Outcome:
    """What one reload did: ``ok`` (swapped in) or the ``reason`` it was rejected."""

    ok: bool
    generation: int
    trigger: str
    reason: str | None = None
    changed: list[str] = field(default_factory=list)
    needs_restart: list[str] = field(default_factory=list)

    def doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"reloaded": self.ok, "generation": self.generation}
        if self.ok:
            doc |= {"changed": self.changed, "needs_restart": self.needs_restart}
        else:
            doc["reason"] = self.reason
        return doc


Loader = Callable[[], Config]  # the configuration again, from where it came (raises ConfigError)
Swapped = Callable[[Live], None]  # told of each new ``Live`` once it is in force


class Reloader:
    """Loads, validates and swaps in a new ``Live``; one reload at a time."""

    def __init__(self, current: Current, load: Loader | None, on_swap: list[Swapped]) -> None:
        self._current = current
        self._load = load
        self._on_swap = on_swap
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Outcome]] = set()
        self.last: Outcome | None = None

    def hangup(self) -> None:
        """SIGHUP: a reload in a task of its own (a signal handler cannot wait)."""
        task = asyncio.get_running_loop().create_task(self.reload("SIGHUP"))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def reload(self, trigger: str) -> Outcome:
        async with self._lock:
            running = self._current.live
            try:
                if self._load is None:
                    raise ConfigError(
                        "this gearshift's configuration did not come from a file it can read again"
                    )
                fresh, needs_restart = await asyncio.to_thread(self._prepare, running)
            except (ConfigError, RulesError, OSError, ValueError, KeyError) as exc:
                outcome = Outcome(False, running.generation, trigger, reason=str(exc))
            except Exception as exc:  # a bug: still never the server's end
                log.exception("reload (%s): unexpected error; the running one is kept", trigger)
                outcome = Outcome(
                    False, running.generation, trigger, reason=f"{type(exc).__name__}: {exc}"
                )
            else:
                changed = changed_sections(running.config, fresh.config)
                if fresh.policy.rules.spec != running.policy.rules.spec:
                    changed.append("rule table")  # (a refit written over the same file)
                self._current.live = fresh  # the swap: requests from here on read this one
                for hook in self._on_swap:
                    hook(fresh)
                outcome = Outcome(True, fresh.generation, trigger, None, changed, needs_restart)
            self.last = outcome
        if outcome.ok:
            log.info(
                "configuration reloaded (%s, pid %d): generation %d; changed: %s%s",
                trigger, os.getpid(), outcome.generation, ", ".join(outcome.changed) or "nothing",
                f"; these take a restart and keep their running values: "
                f"{', '.join(outcome.needs_restart)}" if outcome.needs_restart else "",
            )  # fmt: skip
        else:
            log.error(
                "configuration reload rejected (%s, pid %d): %s; generation %d stays in force",
                trigger, os.getpid(), outcome.reason, outcome.generation,
            )  # fmt: skip
        return outcome

    def _prepare(self, running: Live) -> tuple[Live, list[str]]:
        """The new ``Live`` (in a thread: reading and building take milliseconds)."""
        assert self._load is not None
        config, needs_restart = carry_over(running.config, self._load())
        if running.key_digests and not config.proxy_keys:
            raise ConfigError(
                "the new configuration has no proxy key: it would turn authentication off "
                "(that takes a restart)"
            )
        rules = load_rules(config.routing.rules)
        return build(config, rules, running.generation + 1), needs_restart


__all__ = [
    "RESTART_ONLY", "Current", "Live", "Loader", "Outcome", "Reloader", "build", "carry_over",
]  # fmt: skip
