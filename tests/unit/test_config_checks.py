"""Configuration hardening: numbers in range, files that exist, headers and URLs that can be
sent, secrets flagged and never shown."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import msgspec.inspect as mi
import pytest

from gearshift.config import ConfigError, ConfigFile, decode, load, resolve

KINDS = ("openai", "anthropic", "gemini")
MODEL = "[[models]]\nname='a'\nprovider='openai'\ntier='light'\nprice_in=1\nprice_out=1\n"
LOCAL = "[[providers]]\nname='local'\nkind='openai'\nbase_url='http://127.0.0.1:9/v1'\n"


def _load(text: str, environ: dict[str, str] | None = None):
    raw = decode(text.encode(), source="t.toml")
    return resolve(raw, source="t.toml", environ=environ or {}, kinds=KINDS)


def _refused(text: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        _load(text, environ)
    return str(info.value)


# 9: numbers ------------------------------------------------------------------------------


def _numbers(t: mi.Type, path: str) -> Iterator[tuple[str, mi.FloatType | mi.IntType]]:
    if isinstance(t, mi.FloatType | mi.IntType):
        yield path, t
    elif isinstance(t, mi.StructType):
        for f in t.fields:
            yield from _numbers(f.type, f"{path}.{f.name}")
    elif isinstance(t, mi.UnionType):
        for member in t.types:
            yield from _numbers(member, path)
    elif isinstance(t, mi.ListType):
        yield from _numbers(t.item_type, f"{path}[]")
    elif isinstance(t, mi.DictType):
        yield from _numbers(t.value_type, f"{path}{{}}")


def test_every_number_in_the_config_has_a_lower_and_an_upper_bound() -> None:
    """Both bounds, so neither inf nor nan (which fails every comparison) gets through."""
    found = dict(_numbers(mi.type_info(ConfigFile), "$"))
    assert "$.server.shutdown_grace" in found
    assert "$.providers[].timeouts.total" in found
    unbounded = [
        path
        for path, t in found.items()
        if (t.ge is None and t.gt is None) or (t.le is None and t.lt is None)
    ]
    assert unbounded == []


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("[server]\nshutdown_grace = inf\n", "$.server.shutdown_grace"),
        ("[server]\nshutdown_grace = nan\n", "$.server.shutdown_grace"),
        ("[server]\nshutdown_grace = 3601\n", "$.server.shutdown_grace"),
        ("[server]\nmax_body_bytes = 0\n", "$.server.max_body_bytes"),
        ("[server]\nmax_body_bytes = 1099511627776\n", "$.server.max_body_bytes"),
        ("[server]\nmax_response_bytes = 1099511627776\n", "$.server.max_response_bytes"),
        (LOCAL + "timeouts = { connect = inf }\n", "$.providers[0].timeouts.connect"),
        (LOCAL + "timeouts = { first_byte = inf }\n", "$.providers[0].timeouts.first_byte"),
        (LOCAL + "timeouts = { idle = nan }\n", "$.providers[0].timeouts.idle"),
        (LOCAL + "timeouts = { total = 86401 }\n", "$.providers[0].timeouts.total"),
        (LOCAL + "timeouts = { total = -inf }\n", "$.providers[0].timeouts.total"),
        (LOCAL + "max_connections = 1000000000\n", "$.providers[0].max_connections"),
        ("[reliability]\ndeadline = inf\n", "$.reliability.deadline"),
        ("[reliability]\nbackoff_base = inf\n", "$.reliability.backoff_base"),
        ("[reliability]\nbackoff_max = inf\n", "$.reliability.backoff_max"),
        ("[reliability]\nretry_after_max = inf\n", "$.reliability.retry_after_max"),
        ("[reliability]\nretry_after_max = nan\n", "$.reliability.retry_after_max"),
        ("[reliability]\nmax_attempts = 100000\n", "$.reliability.max_attempts"),
        ("[reliability]\nbreaker = { window = inf }\n", "$.reliability.breaker.window"),
        ("[reliability]\nbreaker = { cooldown = inf }\n", "$.reliability.breaker.cooldown"),
        ("[reliability]\nbreaker = { max_cooldown = inf }\n", "$.reliability.breaker.max_cooldown"),
        (
            "[reliability]\nbreaker = { failure_ratio = nan }\n",
            "$.reliability.breaker.failure_ratio",
        ),
        ("[reliability]\nbreaker = { failures = 1000000000 }\n", "$.reliability.breaker.failures"),
        (
            "[reliability]\nbreaker = { min_calls = 1000000000 }\n",
            "$.reliability.breaker.min_calls",
        ),
        ("[reliability]\nbreaker = { probes = 1000000000 }\n", "$.reliability.breaker.probes"),
        ("[routing]\nexpected_output_tokens = 1000000000000\n", "$.routing.expected_output_tokens"),
        ("[routing]\nthresholds = { standard = nan, frontier = 1 }\n", "$.routing.thresholds"),
        (MODEL.replace("price_in=1", "price_in=inf"), "$.models[0].price_in"),
        (MODEL.replace("price_out=1", "price_out=nan"), "$.models[0].price_out"),
        (MODEL + "price_cached_in = inf\n", "$.models[0].price_cached_in"),
        (MODEL + "price_cache_write_in = inf\n", "$.models[0].price_cache_write_in"),
        (MODEL + "price_reasoning_out = 1e300\n", "$.models[0].price_reasoning_out"),
        (MODEL + "context_window = 1000000000000\n", "$.models[0].context_window"),
        (MODEL + "max_output = 1000000000000\n", "$.models[0].max_output"),
    ],
)
def test_infinite_nan_and_absurd_numbers_are_refused(text: str, path: str) -> None:
    message = _refused(text)
    assert message.startswith("t.toml")
    assert path in message


def test_the_bounds_keep_the_documented_ranges() -> None:
    config = _load(
        "[server]\nshutdown_grace = 0\nmax_body_bytes = 1073741824\n"
        "[reliability]\nretry_after_max = 0\ndeadline = 86400\nmax_attempts = 100\n"
        + LOCAL
        + "timeouts = { connect = 0.001, total = 86400 }\n"
        + MODEL.replace("price_in=1", "price_in=0").replace("provider='openai'", "provider='local'")
    )
    assert config.server.shutdown_grace == 0
    assert config.providers["local"].timeouts.total == 86400


def test_yaml_infinity_and_nan_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    for text, where in [
        ("server:\n  shutdown_grace: .inf\n", "$.server.shutdown_grace"),
        ("reliability:\n  deadline: .nan\n", "$.reliability.deadline"),
    ]:
        path.write_text(text)
        with pytest.raises(ConfigError, match=rf"\{where}"):
            load(path, environ={})


# 10: files the config names ----------------------------------------------------------------


def _copy_shipped_rules(directory: Path, name: str = "rules.toml") -> Path:
    package = resources.files("gearshift.routing")
    table = directory / name
    table.write_bytes(package.joinpath("rules.toml").read_bytes())
    (directory / "rules.lexicons.msgpack").write_bytes(
        package.joinpath("rules.lexicons.msgpack").read_bytes()
    )
    return table


def test_a_missing_rules_file_is_a_config_error(tmp_path: Path) -> None:
    absent = tmp_path / "absent.toml"
    message = _refused(f"[routing]\nrules = '{absent}'\n")
    assert message.startswith("t.toml: $.routing.rules")
    assert str(absent) in message
    assert "No such file" in message


def test_a_rules_file_without_its_lexicons_is_a_config_error(tmp_path: Path) -> None:
    table = _copy_shipped_rules(tmp_path)
    (tmp_path / "rules.lexicons.msgpack").unlink()
    message = _refused(f"[routing]\nrules = '{table}'\n")
    assert "$.routing.rules" in message
    assert "lexicons" in message


def test_a_rules_file_that_is_not_a_table_is_a_config_error(tmp_path: Path) -> None:
    table = tmp_path / "rules.toml"
    table.write_text("this is not = [toml\n")
    assert "$.routing.rules" in _refused(f"[routing]\nrules = '{table}'\n")


def test_a_relative_rules_path_is_taken_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _copy_shipped_rules(tmp_path, "mine.toml")
    monkeypatch.chdir(tmp_path)
    assert _load("[routing]\nrules = 'mine.toml'\n").routing.rules == "mine.toml"
    monkeypatch.chdir(tmp_path.parent)
    message = _refused("[routing]\nrules = 'mine.toml'\n")
    assert "working directory" in message
    assert str(tmp_path.parent) in message


# 11: what goes on the wire --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "path"),
    [
        (LOCAL + "headers = { 'x-a' = \"v\\r\\nx-injected: 1\" }\n", "$.providers[0].headers"),
        (LOCAL + "headers = { 'x-a' = \"v\\nw\" }\n", "$.providers[0].headers"),
        (LOCAL + "headers = { 'x-a' = \"v\\u0000\" }\n", "$.providers[0].headers"),
        (LOCAL + "headers = { \"x-a\\r\\nx-b\" = 'v' }\n", "$.providers[0].headers"),
        (LOCAL + "headers = { 'x a' = 'v' }\n", "$.providers[0].headers"),
        (LOCAL + "headers = { 'x:a' = 'v' }\n", "$.providers[0].headers"),
        (LOCAL + "headers = { '' = 'v' }\n", "$.providers[0].headers"),
        (
            "[[providers]]\nname='c'\nkind='anthropic'\nbase_url='http://h'\n"
            'version = "2023-06-01\\r\\nx: y"\n',
            "$.providers[0].version",
        ),
        (
            "[[providers]]\nname='x'\nkind='openai'\nbase_url=\"http://h/v1\\r\\nx: y\"\n",
            "$.providers[0].base_url",
        ),
        ("[[providers]]\nname='x'\nkind='openai'\nbase_url=\"http://h/v\\t1\"\n", "base_url"),
        ("[[providers]]\nname='x'\nkind='openai'\nbase_url='http://h/a b'\n", "base_url"),
        ("[[providers]]\nname='x'\nkind='openai'\nbase_url='ftp://h/v1'\n", "base_url"),
        ("[[providers]]\nname='x'\nkind='openai'\nbase_url='http://[::1'\n", "base_url"),
        ("[[providers]]\nname='x'\nkind='openai'\nbase_url='http://h:99999/v1'\n", "base_url"),
        (MODEL.replace("name='a'", 'name="a\\nb"'), "$.models[0].name"),
        (MODEL + 'upstream_id = "m\\r\\n"\n', "$.models[0].upstream_id"),
        ("[[providers]]\nname=\"x\\ny\"\nkind='openai'\nbase_url='http://h'\n", "$.providers[0]"),
        ("[routing]\ntiers = ['light', \"a\\nb\"]\n", "$.routing.tiers"),
    ],
)
def test_values_that_cannot_go_on_the_wire_are_refused(text: str, path: str) -> None:
    message = _refused(text)
    assert path in message
    assert "x-injected: 1" not in message


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9/v1\r\nx: y", "http://h/\x00", "file:///etc/passwd", "h:1/v1"]
)
def test_base_url_overrides_from_the_environment_are_checked(url: str) -> None:
    with pytest.raises(ConfigError, match="GEARSHIFT_OPENAI_BASE_URL"):
        load(None, environ={"GEARSHIFT_OPENAI_BASE_URL": url})


def test_a_key_from_the_environment_with_a_line_break_is_refused_without_showing_it() -> None:
    with pytest.raises(ConfigError) as info:
        load(None, environ={"OPENAI_API_KEY": "sk-first-half\nsk-second-half"})
    message = str(info.value)
    assert "$.providers[0].api_key" in message
    assert "OPENAI_API_KEY" in message
    assert "half" not in message


def test_plain_headers_are_kept() -> None:
    config = _load(LOCAL + "headers = { 'x-team' = 'blue', 'OpenAI-Project' = 'p\tq' }\n")
    assert dict(config.providers["local"].headers) == {"x-team": "blue", "OpenAI-Project": "p\tq"}


# 12: secrets -------------------------------------------------------------------------------


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_literal_secrets_in_the_file_are_warned_about_once_without_the_value(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    _load(
        "[server]\napi_keys = ['proxy-literal-v4lue', 'env:TEAM_KEY']\n"
        + LOCAL
        + "api_key = 'sk-literal-v4lue'\n"
        + "headers = { Authorization = 'Bearer hdr-literal-v4lue', 'x-api-key' = 'k-v4lue',"
        + " 'x-team' = 'blue' }\n",
        environ={"TEAM_KEY": "t"},
    )
    warnings = _warnings(caplog)
    assert len(warnings) == 4, warnings
    text = "\n".join(warnings)
    for path in (
        "t.toml: $.server.api_keys[0]",
        "t.toml: $.providers[0].api_key",
        "t.toml: $.providers[0].headers.Authorization",
        "t.toml: $.providers[0].headers.x-api-key",
    ):
        assert path in text
    assert "v4lue" not in text
    assert "env:" in text  # what to do instead


def test_secrets_from_the_environment_are_not_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    load(None, environ={"OPENAI_API_KEY": "sk-x", "GEARSHIFT_API_KEYS": "a"})
    _load(
        "[server]\napi_keys = ['env:TEAM_KEY']\n"
        + LOCAL
        + "api_key = 'env:LOCAL_KEY'\nheaders = { authorization = 'env:LOCAL_AUTH' }\n",
        environ={"TEAM_KEY": "t", "LOCAL_KEY": "k", "LOCAL_AUTH": "Basic eA=="},
    )
    assert _warnings(caplog) == []


def test_header_values_can_come_from_the_environment() -> None:
    text = LOCAL + "headers = { authorization = 'env:LOCAL_AUTH', 'x-team' = 'blue' }\n" + MODEL
    text = text.replace("provider='openai'", "provider='local'")
    config = _load(text, environ={"LOCAL_AUTH": "Basic dTpw"})
    local = config.providers["local"]
    assert dict(local.headers) == {"authorization": "Basic dTpw", "x-team": "blue"}
    assert config.models["a"].offered
    assert "dTpw" not in repr(config) + str(config.redacted())
    # unset: the provider's models are not offered, and say why
    config = _load(text)
    assert not config.models["a"].offered
    assert "LOCAL_AUTH" in (config.models["a"].why_not or "")
    # a header value from the environment is checked like any other
    with pytest.raises(ConfigError, match=r"\$\.providers\[0\]\.headers"):
        _load(text, environ={"LOCAL_AUTH": "Basic dTpw\r\nx: y"})


@pytest.mark.parametrize(
    "url",
    [
        "https://user:pa55word@h.example/v1",
        "https://pa55word@h.example/v1",
        "ftp://u:pa55word@h",
        "https://user:pa55/word@h.example/v1",  # "/" would move the host into the path
    ],
)
def test_credentials_in_a_base_url_are_refused_without_showing_them(url: str) -> None:
    message = _refused(f"[[providers]]\nname='x'\nkind='openai'\nbase_url='{url}'\n")
    assert "$.providers[0].base_url" in message
    assert "pa55word" not in message
    assert "headers" in message  # what to do instead
    with pytest.raises(ConfigError) as info:
        load(None, environ={"GEARSHIFT_OPENAI_BASE_URL": url})
    assert "GEARSHIFT_OPENAI_BASE_URL" in str(info.value)
    assert "pa55word" not in str(info.value)


def test_a_blank_proxy_key_variable_does_not_turn_authentication_off() -> None:
    for value in (" , ,", ",", "", "  "):
        with pytest.raises(ConfigError, match="GEARSHIFT_API_KEYS"):
            load(None, environ={"GEARSHIFT_API_KEYS": value})
    config = load(None, environ={"GEARSHIFT_API_KEYS": "a, ,b"})
    assert [k.reveal() for k in config.proxy_keys] == ["a", "b"]
    assert load(None, environ={}).proxy_keys == ()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("retires", "'2026-02-30'", "not a date"),
        ("checked", "'2026-13-01'", "not a date"),
        ("refuses", "['temperature', 'messages']", "messages cannot be refused"),
    ],
)
def test_model_dates_exist_and_refuses_leaves_the_request_intact(
    field: str, value: str, message: str
) -> None:
    text = MODEL + f"{field} = {value}\n"
    assert message in _refused(text)
