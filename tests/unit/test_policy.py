"""The routing policy: hints, ceilings, pins, filters and cost order (policy.plan)."""

from __future__ import annotations

import msgspec
import orjson
import pytest

from gearshift.config import decode, resolve
from gearshift.errors import BadRequest, NoTarget, NotFound
from gearshift.inbound.chat import parse_chat
from gearshift.routing.classify import Rules, load_rules
from gearshift.routing.policy import Policy, plan

CATALOG = """
use_default_catalog = false
[[providers]]
name = "a"
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
api_key = "k"
[[models]]
name = "tiny"
provider = "a"
tier = "light"
price_in = 0.1
price_out = 0.4
context_window = 8000
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
[[models]]
name = "big"
provider = "a"
tier = "frontier"
price_in = 2.5
price_out = 10.0
[[models]]
name = "big2"
provider = "a"
tier = "frontier"
price_in = 3.0
price_out = 15.0
"""
SHIPPED = load_rules()


def _policy(extra: str = "", rules: Rules = SHIPPED) -> Policy:
    config = resolve(decode((CATALOG + extra).encode(), source="t"), source="t", environ={})
    return Policy.build(config, rules)


def _fixed(score: float) -> Rules:
    """A table that scores everything ``score`` (no features, just the bias)."""
    import math

    bias = math.log(score / (1 - score))
    spec = msgspec.structs.replace(
        SHIPPED.spec, bias=bias, counters={}, patterns=[], lexicon={}, semantic={}
    )
    return Rules(spec, "fixed").with_thresholds(0.3, 0.6)


def _req(model: str = "auto", text: str = "hello", **extra: object):
    return parse_chat(
        orjson.dumps({"model": model, "messages": [{"role": "user", "content": text}], **extra})
    )


def _names(p) -> list[str]:  # type: ignore[no-untyped-def]
    return [m.name for m in p.targets]


def test_auto_chooses_the_cheapest_model_that_meets_the_tier() -> None:
    assert _names(plan(_req(), _policy(rules=_fixed(0.1)))) == [
        "tiny",
        "small",
        "mid",
        "big",
        "big2",
    ]
    assert _names(plan(_req(), _policy(rules=_fixed(0.4)))) == ["mid", "big", "big2"]
    p = plan(_req(), _policy(rules=_fixed(0.9)))
    assert _names(p) == ["big", "big2"]
    assert p.tier == "frontier"
    assert p.score == "0.9000"


def test_equal_costs_go_higher_tier_first_then_in_catalog_order() -> None:
    same = """
[[models]]
name = "twin-b"
provider = "a"
tier = "light"
price_in = 0.1
price_out = 0.4
[[models]]
name = "twin-a"
provider = "a"
tier = "light"
price_in = 0.1
price_out = 0.4
[[models]]
name = "twin-standard"
provider = "a"
tier = "standard"
price_in = 0.1
price_out = 0.4
"""
    names = _names(plan(_req(), _policy(same, rules=_fixed(0.1))))
    # tiny, twin-b and twin-a cost the same: the standard twin first (a higher tier for the
    # same price), then the catalog's order, not the names'.
    assert names[:4] == ["twin-standard", "tiny", "twin-b", "twin-a"]


def test_the_plan_never_drops_below_the_required_tier() -> None:
    for score in (0.05, 0.35, 0.65, 0.95):
        p = plan(_req(), _policy(rules=_fixed(score)))
        rank = {"light": 0, "standard": 1, "frontier": 2}
        assert all(rank[m.tier] >= rank[p.tier] for m in p.targets)


def test_a_concrete_model_is_the_ceiling() -> None:
    # An easy request for "big" shifts down; a hard one for "small" does not go up.
    assert _names(plan(_req("big"), _policy(rules=_fixed(0.1))))[0] == "tiny"
    names = _names(plan(_req("big"), _policy(rules=_fixed(0.1))))
    # A pricier model of the same tier can only follow the requested one, as a fallback.
    assert names.index("big") < names.index("big2")
    p = plan(_req("small"), _policy(rules=_fixed(0.9)))
    assert _names(p) == ["tiny", "small"]
    assert p.tier == "light"
    upgraded = plan(_req("small"), _policy("[routing]\nallow_upgrade = true\n", rules=_fixed(0.9)))
    assert _names(upgraded) == ["big", "big2"]


def test_pin_sends_the_request_where_it_was_asked() -> None:
    p = plan(_req("big"), _policy(rules=_fixed(0.1)), {"x-gearshift-route": "pin"})
    assert _names(p) == ["big"]
    assert p.reason == "pinned"
    p = plan(_req("big", gearshift={"route": "pin"}), _policy(rules=_fixed(0.1)))
    assert _names(p) == ["big"]


def test_hints_win_over_the_classifier_in_order() -> None:
    policy = _policy(rules=_fixed(0.9))
    assert plan(_req(), policy, {"x-gearshift-tier": "light"}).tier == "light"
    assert plan(_req(gearshift={"tier": "standard"}), policy).tier == "standard"
    p = plan(_req(gearshift={"tier": "standard"}), policy, {"x-gearshift-tier": "light"})
    assert p.tier == "light", "the header beats the body"
    assert p.score == "hint"
    assert plan(_req("gearshift/light"), policy).tier == "light"
    assert (
        plan(_req("gearshift/light", gearshift={"tier": "frontier"}), policy).tier == "frontier"
    ), "an explicit hint beats the alias"
    with pytest.raises(BadRequest) as info:
        plan(_req(), policy, {"x-gearshift-tier": "premium"})
    assert info.value.param == "x-gearshift-tier"


def test_capabilities_filter_candidates() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    assert "tiny" not in _names(plan(_req(tools=tools), _policy(rules=_fixed(0.1))))
    image = parse_chat(
        orjson.dumps(
            {
                "model": "auto",
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "what is this"},
                            {
                                "type": "image_url",
                                "image_url": {"url": "data:image/png;base64,AAAA"},
                            },
                        ],
                    }
                ],
            }
        )
    )
    assert "tiny" not in _names(plan(image, _policy(rules=_fixed(0.1))))
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}
    assert "tiny" not in _names(plan(_req(response_format=schema), _policy(rules=_fixed(0.1))))
    assert "tiny" in _names(plan(_req(stream=True), _policy(rules=_fixed(0.1))))


def test_context_window_filters_candidates() -> None:
    long_text = "word " * 9000  # about 11k tokens: over tiny's 8k window
    p = plan(_req(text=long_text), _policy(rules=_fixed(0.1)))
    assert "tiny" not in _names(p)
    assert p.prompt_tokens > 8000


def test_one_policy_filters_each_request_on_its_own_size() -> None:
    # The candidate shapes are cached per policy for requests far from every window; a long
    # request after a short one (and the reverse) must still be filtered on its own size.
    policy = _policy(rules=_fixed(0.1))
    short, long_text = _req(text="hi"), _req(text="word " * 9000)
    assert "tiny" in _names(plan(short, policy))
    assert "tiny" not in _names(plan(long_text, policy))
    assert "tiny" in _names(plan(short, policy))
    with pytest.raises(NoTarget):  # no model here writes 8000 tokens
        plan(_req(text="hi", max_tokens=8000), policy)
    assert "tiny" in _names(plan(short, policy))


def test_no_candidate_is_a_clear_error() -> None:
    policy = _policy(
        "[[models]]\nname = 'x'\nprovider = 'a'\ntier = 'light'\nprice_in = 0\n"
        "price_out = 0\nenabled = false\n",
        rules=_fixed(0.1),
    )
    huge = "word " * 1_200_000
    with pytest.raises(NoTarget) as info:
        plan(_req(text=huge), policy)
    assert info.value.status == 503
    with pytest.raises(NotFound):
        plan(_req("x"), policy)


def test_costs_and_baseline() -> None:
    p = plan(_req("big", max_tokens=100), _policy(rules=_fixed(0.1)))
    # tiny serves; the baseline is what the requested model would have cost.
    assert p.est_cost_usd < p.baseline_cost_usd
    assert p.baseline_cost_usd == pytest.approx((p.prompt_tokens * 2.5 + 100 * 10.0) / 1e6)
    p = plan(_req(max_tokens=100), _policy(rules=_fixed(0.1)))
    assert p.baseline_cost_usd == pytest.approx((p.prompt_tokens * 3.0 + 100 * 15.0) / 1e6), (
        "auto is compared with the priciest frontier model unless a baseline is configured"
    )


def test_classifier_off_sends_auto_to_the_default_model() -> None:
    p = plan(_req(), _policy("[routing]\nclassifier = false\ndefault_model = 'mid'\n"))
    assert _names(p) == ["mid"]


def test_a_single_model_plan_prices_its_baseline_on_the_baseline_model() -> None:
    """Classifier off, ``auto`` → the default model; the baseline is the configured
    baseline (the priciest frontier model), and so is the baseline's estimated cost."""
    policy = _policy("[routing]\nclassifier = false\ndefault_model = 'mid'\n")
    p = plan(_req(max_tokens=100), policy)
    assert p.baseline is not None
    assert p.baseline.name == "big2"
    assert p.est_cost_usd == pytest.approx((p.prompt_tokens * 1.0 + 100 * 4.0) / 1e6)
    assert p.baseline_cost_usd == pytest.approx((p.prompt_tokens * 3.0 + 100 * 15.0) / 1e6)
    assert p.baseline_cost_usd == pytest.approx(p.cost_on(p.baseline))


def test_configured_thresholds_override_the_table() -> None:
    policy = _policy("[routing]\nthresholds = { standard = 0.0, frontier = 0.0 }\n")
    assert plan(_req(text="hi"), policy).tier == "frontier"


def _risky(score: float) -> Rules:
    """``_fixed`` with a risk map (score s -> risk s / 2) and presets."""
    from gearshift.routing.classify import RiskMap

    fixed = _fixed(score)
    risk = RiskMap(
        scores=[0.0, 1.0], risks=[0.0, 0.5], presets={"safe": 0.05, "balanced": 0.2}, lean=0.0
    )
    return Rules(msgspec.structs.replace(fixed.spec, risk=risk), "risky")


def test_max_risk_moves_the_thresholds_through_the_calibration() -> None:
    # Score 0.5 is risk 0.25: below frontier at max_risk 0.3 (frontier from score 0.6), at
    # frontier with max_risk 0.2 (from score 0.4); standard from half the risk.
    assert plan(_req(), _policy("[routing]\nmax_risk = 0.3\n", _risky(0.5))).tier == "standard"
    assert plan(_req(), _policy("[routing]\nmax_risk = 0.2\n", _risky(0.5))).tier == "frontier"
    assert plan(_req(), _policy("[routing]\nmax_risk = 0.6\n", _risky(0.5))).tier == "light"


def test_a_preset_is_a_risk_of_the_table() -> None:
    assert plan(_req(), _policy('[routing]\npreset = "safe"\n', _risky(0.3))).tier == "frontier"
    assert plan(_req(), _policy('[routing]\npreset = "balanced"\n', _risky(0.3))).tier == (
        "standard"
    )
    with pytest.raises(Exception, match="no risk preset 'thrifty'"):
        _policy('[routing]\npreset = "thrifty"\n', _risky(0.3))


def test_one_knob_at_a_time() -> None:
    from gearshift.config import ConfigError

    with pytest.raises(ConfigError, match="set one of max_risk, preset and thresholds"):
        _policy('[routing]\nmax_risk = 0.2\npreset = "safe"\n')


def test_hint_values_are_checked_and_case_insensitive() -> None:
    policy = _policy(rules=_fixed(0.1))
    with pytest.raises(BadRequest):
        plan(_req(gearshift={"tier": ["frontier"]}), policy)
    assert plan(_req(), policy, {"x-gearshift-tier": " Frontier "}).tier == "frontier"
    assert _names(plan(_req("big"), policy, {"x-gearshift-route": "PIN"})) == ["big"]
    with pytest.raises(BadRequest):
        plan(_req("big"), policy, {"x-gearshift-route": "sometimes"})
    with pytest.raises(BadRequest, match="concrete model"):
        plan(_req("auto"), policy, {"x-gearshift-route": "pin"})


def test_classifier_off_keeps_a_concrete_model() -> None:
    p = plan(_req("big"), _policy("[routing]\nclassifier = false\n", rules=_fixed(0.1)))
    assert _names(p) == ["big"]


def test_requested_output_must_fit_window_and_max_output() -> None:
    text = "word " * 4000  # about 5k tokens
    p = plan(_req(text=text, max_tokens=4000), _policy(rules=_fixed(0.1)))
    assert "tiny" not in _names(p), "5k in + 4k out does not fit tiny's 8k window"
    with pytest.raises(NoTarget):  # every model here writes at most 4096 tokens
        plan(_req(max_tokens=8000), _policy(rules=_fixed(0.1)))
    long_writer = (
        "[[models]]\nname = 'writer'\nprovider = 'a'\ntier = 'standard'\n"
        "price_in = 2\nprice_out = 8\nmax_output = 16384\n"
    )
    p = plan(_req(max_tokens=8000), _policy(long_writer, rules=_fixed(0.1)))
    assert _names(p) == ["writer"]


def test_named_tiers_keep_their_meaning_in_longer_lists() -> None:
    extra = (
        "[routing]\ntiers = ['light', 'standard', 'frontier', 'ultra']\n"
        "[[models]]\nname = 'o1'\nprovider = 'a'\ntier = 'ultra'\nprice_in = 15\n"
        "price_out = 60\n"
    )
    config = resolve(decode((CATALOG + extra).encode(), source="t"), source="t", environ={})
    policy = Policy.build(config, _fixed(0.9))
    p = plan(_req(), policy)
    assert p.tier == "frontier"
    assert _names(p)[:2] == ["big", "big2"], "ultra is reachable, but only as a fallback"
    assert plan(_req(), policy, {"x-gearshift-tier": "ultra"}).tier == "ultra"


def test_cost_on_the_model_that_answered() -> None:
    p = plan(_req("big", max_tokens=100), _policy(rules=_fixed(0.1)))
    big = next(m for m in p.targets if m.name == "big")
    assert p.cost_on(big) == pytest.approx(p.baseline_cost_usd)
    assert p.cost_on(p.targets[0]) == pytest.approx(p.est_cost_usd)
