"""Sticky routing: session keys, the bounded session map, the planner's preference, the
sink that records the served model and the metrics (``routing/sticky.py``)."""

from __future__ import annotations

import time
from typing import Any

import msgspec
import orjson
import pytest

from gearshift.config import ConfigError, StickySpec, decode, resolve
from gearshift.inbound.chat import parse_chat
from gearshift.observe.metrics import Metrics
from gearshift.observe.sticky import Sticky
from gearshift.routing.classify import load_rules
from gearshift.routing.policy import Policy, plan
from gearshift.routing.sticky import Sessions, opening_key
from gearshift.serve.accounting import Tokens, account
from gearshift.serve.exchange import Exchange

CATALOG = """
use_default_catalog = false
[[providers]]
name = "a"
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
api_key = "env:K"
[[models]]
name = "tiny"
provider = "a"
tier = "light"
price_in = 0.1
price_out = 0.4
capabilities = ["streaming"]
[[models]]
name = "small"
provider = "a"
tier = "light"
price_in = 0.15
price_out = 0.6
[[models]]
name = "mid"
provider = "a"
tier = "standard"
price_in = 1.0
price_out = 4.0
[models.reasoning]
efforts = ["low", "medium", "high"]
default = "medium"
variants.high = { tier = "frontier", output_factor = 2.0 }
[[models]]
name = "big"
provider = "a"
tier = "frontier"
price_in = 2.5
price_out = 10.0
"""
RULES = load_rules()


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _policy(extra: str = "") -> Policy:
    raw = decode((CATALOG + extra).encode(), source="t")
    config = resolve(raw, source="t", environ={"K": "sk-test"})
    return Policy.build(config, RULES)


def _sessions(clock: Clock | None = None, **spec: Any) -> Sessions:
    return Sessions(StickySpec(**spec), clock or Clock())


def _turns(*texts: str, system: str = "You are terse.") -> list[dict[str, Any]]:
    """A conversation: the system prompt, then user/assistant turns alternating."""
    out: list[dict[str, Any]] = [{"role": "system", "content": system}]
    for i, text in enumerate(texts):
        out.append({"role": "user" if i % 2 == 0 else "assistant", "content": text})
    return out


def _req(tier: str = "light", model: str = "auto", **extra: object):  # type: ignore[no-untyped-def]
    body = {"model": model, "messages": _turns("hello"), "gearshift": {"tier": tier}, **extra}
    return parse_chat(orjson.dumps(body))


# -- the session key -------------------------------------------------------------------------


def test_the_key_is_the_header_then_prompt_cache_key_then_user_then_the_opening() -> None:
    s = _sessions()
    body: dict[str, Any] = {"messages": _turns("hi"), "user": "u1", "prompt_cache_key": "pk"}
    by_header = s.key(body, {"x-gearshift-session": "abc"})
    by_cache_key = s.key(body, {})
    by_user = s.key({**body, "prompt_cache_key": None}, {})
    by_opening = s.key({"messages": _turns("hi")}, {})
    keys = [by_header, by_cache_key, by_user, by_opening]
    assert None not in keys
    assert len(set(keys)) == 4
    assert s.key({"messages": _turns("other"), "user": "zz"}, {"x-gearshift-session": "abc"}) == (
        by_header
    )
    assert s.key({"messages": _turns("other"), "user": "u1"}, {}) == by_user
    # Where the value came from is part of the key: user "x" is not cache key "x".
    assert s.key({"user": "x"}, {}) != s.key({"prompt_cache_key": "x"}, {})
    # Empty or non-string values are skipped, not keys.
    assert s.key({"user": "", "prompt_cache_key": 5, "messages": _turns("hi")}, {}) == by_opening


def test_keys_are_fixed_size_digests_that_keep_no_client_text() -> None:
    s = _sessions()
    key = s.key({"user": "alice@example.com"}, {})
    assert key is not None
    assert len(key) == 32
    assert "alice" not in key
    long_key = s.key({}, {"x-gearshift-session": "s" * 10_000})
    assert long_key is not None
    assert len(long_key) == 32


def test_every_turn_of_a_conversation_has_the_opening_key_of_its_first() -> None:
    first = opening_key(_turns("What is 2+2?"))
    third = opening_key(_turns("What is 2+2?", "4", "And 3+3?", "6", "Thanks"))
    assert first is not None
    assert first == third
    assert opening_key(_turns("What is 2+3?")) != first  # another first question
    assert opening_key(_turns("What is 2+2?", system="Be verbose.")) != first
    assert opening_key(_turns("What is 2+2?")[1:]) != first  # no system prompt
    assert opening_key([]) is None
    assert opening_key("not a list") is None


def test_the_opening_is_bounded_yet_tells_long_prompts_apart() -> None:
    system = "rules " * 200_000  # 1.2 MB
    start = time.perf_counter()
    key = opening_key(_turns("hi", system=system))
    assert time.perf_counter() - start < 0.01  # a bounded prefix, not the whole prompt
    assert key == opening_key(_turns("hi", "ok", "more", system=system))
    assert key != opening_key(_turns("hi", system=system + "x"))  # length and tail
    tail_changed = system[:-10] + "different!"
    assert key != opening_key(_turns("hi", system=tail_changed))


def test_the_opening_reads_content_parts_and_tells_images_apart() -> None:
    def with_image(url: str) -> list[dict[str, Any]]:
        parts = [
            {"type": "text", "text": "what is this"},
            {"type": "image_url", "image_url": {"url": url}},
        ]
        return [{"role": "user", "content": parts}]

    a = opening_key(with_image("data:image/png;base64," + "A" * 100_000 + "B"))
    b = opening_key(with_image("data:image/png;base64," + "A" * 100_000 + "C"))
    assert a is not None
    assert a != b
    assert opening_key([{"role": "user", "content": [None, 3, {"type": 7}]}]) is not None


def test_a_first_turn_keyed_by_its_opening_has_no_previous_model() -> None:
    s = _sessions()
    first = {"messages": _turns("hi")}
    key = s.key(first, {})
    assert key is not None
    s.put(key, "mid")
    # The same opening asked again is another conversation: recorded, not read.
    assert s.find(first, {}) == (key, None)
    assert s.find({"messages": _turns("hi", "hello!", "and now?")}, {}) == (key, "mid")
    tool_loop = [*_turns("hi"), {"role": "assistant", "content": None}]
    assert s.find({"messages": tool_loop}, {}) == (key, "mid")
    # A session the client named is read on every turn, the first too ...
    s.put(s.key({"prompt_cache_key": "k", **first}, {}), "big")
    assert s.find({"prompt_cache_key": "k", **first}, {})[1] == "big"
    s.put(s.key(first, {"x-gearshift-session": "c1"}), "big")
    assert s.find(first, {"x-gearshift-session": "c1"})[1] == "big"
    # ... but ``user`` names a person: their new conversation is routed afresh, its later
    # turns stay.
    s.put(s.key({"user": "u", **first}, {}), "big")
    assert s.find({"user": "u", **first}, {})[1] is None
    later = {"user": "u", "messages": _turns("hi", "hello!", "and now?")}
    assert s.find(later, {})[1] == "big"


def test_sessions_are_never_shared_between_proxy_keys() -> None:
    s = _sessions()
    body = {"messages": _turns("hi", "hello!", "and now?")}
    headers = {"x-gearshift-session": "shared-name"}
    s.put(s.key(body, headers, owner="team-a"), "big")
    assert s.find(body, headers, owner="team-a")[1] == "big"
    assert s.find(body, headers, owner="team-b")[1] is None
    s.put(s.key(body, {}, owner="team-a"), "big")
    assert s.find(body, {}, owner="team-b")[1] is None


def test_disabled_sessions_have_no_key() -> None:
    s = _sessions(enabled=False)
    assert s.key({"user": "u", "messages": _turns("hi")}, {"x-gearshift-session": "a"}) is None
    assert s.find({"user": "u"}, {}) == (None, None)
    assert s.get(None) is None


# -- the session map -------------------------------------------------------------------------


def test_a_session_remembers_its_model_for_ttl_seconds_after_its_last_answer() -> None:
    clock = Clock()
    s = _sessions(clock, ttl=60)
    assert s.get("k") is None
    s.put("k", "small")
    clock.t += 59
    assert s.get("k") == "small"
    s.put("k", "big")  # a later answer moves it and restarts its time
    clock.t += 59
    assert s.get("k") == "big"
    clock.t += 1
    assert s.get("k") is None
    assert len(s) == 0
    assert (s.found, s.missing, s.expired) == (2, 2, 1)


def test_the_least_recently_answered_session_is_evicted_first() -> None:
    clock = Clock()
    s = _sessions(clock, max_sessions=3)
    for key in "abc":
        s.put(key, key.upper())
        clock.t += 1
    s.put("a", "A2")  # answered again: now the most recent
    s.put("d", "D")
    assert len(s) == 3
    assert s.get("b") is None
    assert [s.get(k) for k in "acd"] == ["A2", "C", "D"]
    assert s.evicted == 1


def test_expired_sessions_are_dropped_as_new_ones_arrive() -> None:
    clock = Clock()
    s = _sessions(clock, ttl=10, max_sessions=1000)
    for i in range(100):
        s.put(f"old{i}", "tiny")
    clock.t += 11
    s.put("new", "big")
    assert len(s) == 1
    assert s.expired == 100
    assert s.evicted == 0


def test_sticky_config_defaults_bounds_and_off_switch() -> None:
    default = _policy().config.routing.sticky
    assert (default.enabled, default.ttl, default.max_sessions) == (True, 3600.0, 100_000)
    off = _policy("[routing.sticky]\nenabled = false\nttl = 60\nmax_sessions = 10\n")
    assert off.config.routing.sticky == StickySpec(enabled=False, ttl=60, max_sessions=10)
    for bad in ("ttl = 0", "ttl = inf", "max_sessions = 0", "max_sessions = 10000000", "size = 1"):
        with pytest.raises((ConfigError, msgspec.ValidationError), match=r"routing\.sticky"):
            _policy(f"[routing.sticky]\n{bad}\n")


# -- the planner -----------------------------------------------------------------------------


def _labels(p) -> list[str]:  # type: ignore[no-untyped-def]
    return [m.label for m in p.targets]


def test_the_previous_model_goes_first_and_the_rest_keep_cost_order() -> None:
    policy = _policy()
    usual = plan(_req(), policy)
    assert _labels(usual) == ["tiny", "small", "mid", "mid[high]", "big"]
    assert usual.sticky == "new"
    p = plan(_req(), policy, prefer="mid")
    assert _labels(p) == ["mid", "tiny", "small", "mid[high]", "big"]
    assert p.sticky == "hit"
    assert p.reason == "hint,sticky"
    assert p.tier == "light"
    assert p.est_cost_usd == p.cost_on(policy.config.models["mid"])
    assert _labels(plan(_req(), policy, prefer="mid[high]"))[0] == "mid[high]"  # by label


def test_a_session_moves_when_its_model_no_longer_qualifies() -> None:
    policy = _policy()
    rose = plan(_req("frontier"), policy, prefer="small")  # the tier rose above it
    assert _labels(rose) == ["mid[high]", "big"]
    assert rose.sticky == "moved"
    assert "sticky" not in rose.reason
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    tooled = plan(_req(tools=tools), policy, prefer="tiny")  # tiny cannot call tools
    assert tooled.sticky == "moved"
    assert _labels(tooled)[0] == "small"
    gone = plan(_req(), policy, prefer="retired-model")  # not offered (any more)
    assert gone.sticky == "moved"
    ceiling = plan(_req(model="small"), policy, prefer="big")  # above the requested model
    assert ceiling.sticky == "moved"
    assert _labels(ceiling) == ["tiny", "small"]


def test_a_higher_tier_model_keeps_later_easier_turns() -> None:
    p = plan(_req("light"), _policy(), prefer="big")
    assert _labels(p)[0] == "big"
    assert p.sticky == "hit"


def test_a_pin_ignores_stickiness() -> None:
    p = plan(_req(model="small"), _policy(), {"x-gearshift-route": "pin"}, prefer="big")
    assert _labels(p) == ["small"]
    assert p.sticky is None
    assert p.reason == "pinned"


# -- the exchange, the sink and the metrics ---------------------------------------------------


def _exchange(prefer: str | None, served: str | None, session: str | None = "s1") -> Exchange:
    policy = _policy()
    ex = Exchange("r", 0.0, session=session, previous=prefer)
    ex.plan = plan(_req(), policy, prefer=prefer)
    ex.served_by = next(m for m in policy.config.offered if m.label == served) if served else None
    return ex


def test_the_exchange_tells_hit_miss_moved_and_new() -> None:
    assert _exchange("mid", "mid").sticky == "hit"
    assert _exchange("mid", "tiny").sticky == "miss"  # a fallback answered
    assert _exchange("mid", None).sticky == "miss"  # nothing answered
    assert _exchange("nope", "tiny").sticky == "moved"
    assert _exchange(None, "tiny").sticky == "new"
    assert _exchange(None, "tiny", session=None).sticky is None


def test_the_sink_records_the_model_that_answered_and_nothing_else() -> None:
    sessions = _sessions()
    sink = Sticky(sessions)
    ex = _exchange("mid", "tiny")  # the fallback served: it is the session's model now
    sink.begin(ex)
    sink.finish(ex)
    assert sessions.get("s1") == "tiny"
    for status in (502, 499, "stream_error"):
        failed = _exchange("tiny", "mid", session="s2")
        failed.status = status
        sink.finish(failed)
    sink.finish(_exchange("tiny", None, session="s2"))
    assert sessions.get("s2") is None
    pinned = _exchange(None, "small", session="s3")
    assert pinned.plan is not None
    pinned.plan.sticky = None
    sink.finish(pinned)
    assert sessions.get("s3") is None
    sink.finish(_exchange(None, "mid[high]", session="s4"))
    assert sessions.get("s4") == "mid[high]"


def _sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return value or 0.0


def test_metrics_count_sticky_results_and_their_cached_prompt_tokens() -> None:
    metrics = Metrics(_policy().config)
    for prefer, served in (("mid", "mid"), ("mid", "mid"), ("mid", "tiny"), (None, "tiny")):
        ex = _exchange(prefer, served)
        assert ex.served_by is not None
        tokens = Tokens(prompt=1000, completion=10, cached=800 if prefer else 0)
        ex.account = account(ex.served_by, ex.served_by, tokens)
        metrics.begin(ex)
        metrics.finish(ex)
    metrics.finish(_exchange(None, "tiny", session=None))  # no session: not counted
    assert _sample(metrics, "gearshift_sticky_total", result="hit") == 2
    assert _sample(metrics, "gearshift_sticky_total", result="miss") == 1
    assert _sample(metrics, "gearshift_sticky_total", result="new") == 1
    assert _sample(metrics, "gearshift_sticky_total", result="moved") == 0
    hit = {"result": "hit"}
    assert _sample(metrics, "gearshift_sticky_tokens_total", kind="prompt", **hit) == 2000
    assert _sample(metrics, "gearshift_sticky_tokens_total", kind="cached", **hit) == 1600
    assert _sample(metrics, "gearshift_tokens_total", model="mid", kind="cached") == 1600
