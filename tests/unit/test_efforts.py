"""Reasoning effort as a routing dimension: variants in the plan, the client's effort as a
ceiling, and the effort each model is sent (``gearshift.reasoning``)."""

from __future__ import annotations

import orjson
import pytest

from gearshift.config import ConfigError, decode, resolve
from gearshift.errors import BadRequest
from gearshift.inbound.chat import parse_chat
from gearshift.reasoning import clamp, effort_for
from gearshift.routing.classify import load_rules
from gearshift.routing.policy import Policy, plan

CATALOG = """
use_default_catalog = false
[[providers]]
name = "a"
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
api_key = "k"
[[models]]
name = "small"
provider = "a"
tier = "light"
price_in = 0.1
price_out = 0.5
[[models]]
name = "mid"
provider = "a"
tier = "standard"
price_in = 2.0
price_out = 10.0
[models.reasoning]
efforts = ["none", "low", "medium", "high", "max"]
default = "medium"
variants.low = { tier = "standard", output_factor = 0.5 }
variants.max = { tier = "frontier", output_factor = 2.0 }
[[models]]
name = "big"
provider = "a"
tier = "frontier"
price_in = 4.0
price_out = 20.0
[models.reasoning]
efforts = ["low", "medium", "high"]
default = "medium"
"""
RULES = load_rules()


def _policy(catalog: str = CATALOG) -> Policy:
    config = resolve(decode(catalog.encode(), source="t"), source="t", environ={})
    return Policy.build(config, RULES)


def _request(tier: str, **extra: object) -> bytes:
    body = {
        "model": "auto",
        "messages": [{"role": "user", "content": "hello"}],
        "gearshift": {"tier": tier},
        **extra,
    }
    return orjson.dumps(body)


def _labels(tier: str, **extra: object) -> list[str]:
    return [m.label for m in plan(parse_chat(_request(tier, **extra)), _policy()).targets]


def test_variants_are_offered_after_their_model_with_their_tier_and_effort() -> None:
    offered = {m.label: m for m in _policy().config.offered}
    assert list(offered) == ["small", "mid", "mid[low]", "mid[max]", "big"]
    assert (offered["mid[max]"].tier, offered["mid[max]"].effort) == ("frontier", "max")
    assert offered["mid[max]"].output_factor == 2.0
    assert offered["mid[max]"].upstream_id == offered["mid"].upstream_id
    assert offered["mid"].effort is None


def test_planner_picks_the_mid_size_model_at_max_effort_over_the_frontier_model() -> None:
    # mid[max]: 2 in, 10 x 2 out, meets frontier; big: 4 in, 20 out.
    assert _labels("frontier") == ["mid[max]", "big"]


def test_a_cheaper_effort_of_the_same_tier_goes_first() -> None:
    assert _labels("standard") == ["mid[low]", "mid", "mid[max]", "big"]


def test_the_clients_effort_is_a_ceiling_on_variants() -> None:
    # Asked for low: no variant above low; mid at its default is still a candidate (sent
    # low, see effort_for).
    assert _labels("frontier", reasoning_effort="low") == ["big"]
    assert _labels("standard", reasoning_effort="low") == ["mid[low]", "mid", "big"]
    assert _labels("standard", reasoning_effort="max") == ["mid[low]", "mid", "mid[max]", "big"]


def test_the_baseline_is_a_model_not_a_variant() -> None:
    policy = _policy()
    assert policy.baseline is not None
    assert policy.baseline.label == "big"


def test_estimated_cost_counts_the_variants_output() -> None:
    p = plan(parse_chat(_request("frontier")), _policy())
    mid_max, big = p.targets
    assert p.cost_on(mid_max) < p.cost_on(big)
    out = p.output_tokens
    assert p.cost_on(mid_max) == pytest.approx((p.prompt_tokens * 2.0 + out * 2 * 10.0) / 1e6)


@pytest.mark.parametrize(
    ("variant", "client", "sent"),
    [
        (None, None, None),  # nothing asked: the model's default runs, nothing is sent
        (None, "high", "high"),
        ("max", None, "max"),
        ("max", "low", "low"),  # the client's effort is a ceiling
        ("low", "high", "low"),  # ... never a floor
        (None, "minimal", "none"),  # not accepted: the highest accepted below it
        (None, "xhigh", "high"),
    ],
)
def test_effort_sent_is_the_lower_of_variant_and_client_clamped(
    variant: str | None, client: str | None, sent: str | None
) -> None:
    offered = {m.label: m for m in _policy().config.offered}
    model = offered["mid" if variant is None else f"mid[{variant}]"]
    body = {"reasoning_effort": client} if client else {}
    assert effort_for(body, model) == sent


def test_clamp_goes_up_only_when_nothing_is_accepted_below() -> None:
    assert clamp("none", ["low", "medium", "high"]) == "low"
    assert clamp("minimal", ["minimal", "low"]) == "minimal"
    assert clamp("max", ["low", "medium", "high"]) == "high"


def test_a_model_without_reasoning_gets_the_clients_effort_unchanged() -> None:
    small = _policy().config.models["small"]
    assert effort_for({"reasoning_effort": "high"}, small) == "high"
    assert effort_for({}, small) is None


def test_an_unknown_effort_is_refused_at_parse() -> None:
    with pytest.raises(BadRequest) as err:
        parse_chat(_request("light", reasoning_effort="turbo"))
    assert err.value.param == "reasoning_effort"
    with pytest.raises(BadRequest):
        parse_chat(_request("light", reasoning_effort=["high"]))


def test_a_variant_of_an_unknown_tier_is_a_config_error() -> None:
    bad = CATALOG.replace('max = { tier = "frontier"', 'max = { tier = "ultra"')
    assert bad != CATALOG
    with pytest.raises(ConfigError, match=r"reasoning\.variants\.max\.tier"):
        _policy(bad)


def test_an_effort_outside_the_scale_is_a_config_error() -> None:
    bad = CATALOG.replace('efforts = ["low", "medium", "high"]', 'efforts = ["low", "turbo"]')
    with pytest.raises(ConfigError, match="turbo"):
        _policy(bad)
