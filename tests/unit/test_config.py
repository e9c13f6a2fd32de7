from __future__ import annotations

from pathlib import Path

import pytest

from gearshift.cli import main
from gearshift.config import ConfigError, Secret, catalog_2024, decode, load, resolve

KINDS = ("openai", "anthropic", "gemini")
CATALOG_2024 = Path(__file__).resolve().parents[2] / "src" / "gearshift" / "catalog_2024.toml"


def _load_toml(text: str, environ: dict[str, str] | None = None, tmp: Path | None = None):
    """``text`` merged over the 2024 catalog (the tests here are written against it)."""
    raw = decode(text.encode(), source="t.toml")
    return resolve(raw, source="t.toml", environ=environ or {}, kinds=KINDS, base=catalog_2024())


def test_2024_catalog_has_the_launch_price_table() -> None:
    config = load(None, environ={}, base=catalog_2024())
    prices = {
        m.name: (m.spec.price_in, m.spec.price_out, m.provider.name, m.tier)
        for m in config.models.values()
    }
    assert prices == {
        "gpt-4o": (2.50, 10.00, "openai", "frontier"),
        "gpt-4o-mini": (0.15, 0.60, "openai", "light"),
        "claude-3-5-sonnet": (3.00, 15.00, "anthropic", "frontier"),
        "claude-3-haiku": (0.25, 1.25, "anthropic", "light"),
        "gemini-1.5-pro": (1.25, 5.00, "gemini", "standard"),
        "gemini-1.5-flash": (0.075, 0.30, "gemini", "light"),
    }
    for model in config.models.values():
        assert model.spec.context_window >= 128_000
        assert set(model.spec.capabilities) == {"tools", "vision", "json_schema", "streaming"}


def test_models_are_offered_only_when_their_provider_has_a_key() -> None:
    config = load(None, environ={"ANTHROPIC_API_KEY": "sk-ant-x"}, base=catalog_2024())
    assert {m.name for m in config.offered} == {"claude-3-5-sonnet", "claude-3-haiku"}
    gpt = config.models["gpt-4o"]
    assert not gpt.offered
    assert "OPENAI_API_KEY" in (gpt.why_not or "")


def test_unsupported_wire_format_is_not_offered() -> None:
    config = load(None, environ={"GEMINI_API_KEY": "g"}, kinds=("openai",), base=catalog_2024())
    assert config.offered == ()
    assert "not supported" in (config.models["gemini-1.5-pro"].why_not or "")


def test_base_url_override_from_environment() -> None:
    config = load(
        None,
        environ={
            "GEARSHIFT_OPENAI_BASE_URL": "http://127.0.0.1:9100/v1/",
            "GEARSHIFT_ANTHROPIC_BASE_URL": "http://proxy.internal",
        },
    )
    assert config.providers["openai"].base_url == "http://127.0.0.1:9100/v1"
    assert config.providers["anthropic"].base_url == "http://proxy.internal"
    assert config.providers["gemini"].base_url.startswith("https://generativelanguage")


def test_env_references_and_literal_keys() -> None:
    config = _load_toml(
        """
        use_default_catalog = false
        [[providers]]
        name = "groq"
        kind = "openai"
        base_url = "https://api.groq.com/openai/v1"
        api_key = "env:GROQ_KEY"
        [[providers]]
        name = "ollama"
        kind = "openai"
        base_url = "http://127.0.0.1:11434/v1"
        api_key = "ollama"
        [[models]]
        name = "llama"
        provider = "groq"
        tier = "light"
        price_in = 0.05
        price_out = 0.08
        [[models]]
        name = "local"
        provider = "ollama"
        upstream_id = "llama3.2:latest"
        tier = "light"
        price_in = 0
        price_out = 0
        [routing]
        default_model = "local"
        """,
        environ={"GROQ_KEY": "gsk-123"},
    )
    assert config.providers["groq"].api_key == Secret("gsk-123")
    assert config.models["local"].upstream_id == "llama3.2:latest"
    assert {m.name for m in config.offered} == {"llama", "local"}
    assert "gpt-4o" not in config.models


def test_file_merges_over_the_default_catalog() -> None:
    text = """
        [[models]]
        name = "gpt-6.2-astra"
        provider = "openai"
        tier = "frontier"
        price_in = 2.0
        price_out = 8.0
        """
    config = resolve(decode(text.encode(), source="t.toml"), source="t.toml", environ={})
    assert config.models["gpt-6.2-astra"].spec.price_in == 2.0
    assert "claude-haiku-5-5" in config.models


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[[models]]\nname='a'\nprovider='openai'\ntier='light'\nprice_in=1\nprice_out=1\n"
            "[[models]]\nname='b'\nprovider='openai'\ntier='light'\nprice_in=-1\nprice_out=1\n",
            "$.models[1].price_in",
        ),
        (
            "[[models]]\nname='a'\nprovider='openai'\ntier='light'\nprice_in='x'\nprice_out=1\n",
            "Expected `float`, got `str` - at `$.models[0].price_in`",
        ),
        (
            "[[models]]\nname='a'\nprovider='openai'\ntier='light'\nprice_in=1\nprice_out=1\n"
            "colour='red'\n",
            "unknown field `colour` - at `$.models[0]`",
        ),
        ("[server]\nprot = 1\n", "unknown field `prot` - at `$.server`"),
        ("[[providers]]\nname='x'\nkind='soap'\n", "$.providers[0].kind"),
        (
            "[[providers]]\nname='x'\nkind='openai'\nauth_header='basic'\n",
            "$.providers[0].auth_header",
        ),
        (
            "[[models]]\nname='a'\nprovider='openai'\ntier='light'\nprice_in=1\n",
            "missing required field `price_out` - at `$.models[0]`",
        ),
        (
            "[[models]]\nname='a'\nprovider='nope'\ntier='light'\nprice_in=1\nprice_out=1\n",
            "t.toml: $.models[0].provider: unknown provider 'nope'",
        ),
        (
            "[[models]]\nname='a'\nprovider='openai'\ntier='ultra'\nprice_in=1\nprice_out=1\n",
            "t.toml: $.models[0].tier: unknown tier 'ultra'",
        ),
        ("[routing]\ndefault_model='nope'\n", "$.routing.default_model"),
        ("[routing]\ntiers=[]\n", "$.routing.tiers"),
        ("[routing]\nauto_aliases=['gpt-4o']\n", "$.routing.auto_aliases"),
        ("[server]\nport=70000\n", "$.server.port"),
        ("[server]\nshutdown_grace=-1\n", "$.server.shutdown_grace"),
        ("[reliability]\nmax_attempts=0\n", "$.reliability.max_attempts"),
        ("[reliability]\ndeadline=0\n", "$.reliability.deadline"),
        ("[reliability]\nretries=3\n", "unknown field `retries`"),
        ("[reliability]\nbreaker={failure_ratio=1.5}\n", "$.reliability.breaker.failure_ratio"),
        ("[reliability]\nbreaker={probes=0}\n", "$.reliability.breaker.probes"),
        ("[[models]\n", "not valid TOML"),
        ("[server]\napi_keys = ['env:GEARSHIFT_UNSET_KEY']\n", "$.server.api_keys[0]"),
        (
            "[[providers]]\nname='x'\nkind='openai'\nbase_url='127.0.0.1:9/v1'\n",
            "$.providers[0].base_url",
        ),
        ("[[providers]]\nname='x'\nkind='openai'\nbase_url='http://h/v1?api-version=1'\n", "query"),
        (
            "[[providers]]\nname='my-x'\nkind='openai'\nbase_url='http://h'\n[[providers]]\n"
            "name='my_x'\nkind='openai'\nbase_url='http://h'\n",
            "GEARSHIFT_MY_X_BASE_URL",
        ),
        (
            "[[models]]\nname='a'\nprovider='openai'\ntier='light'\nprice_in=1\nprice_out=1\n"
            "[[models]]\nname='a'\nprovider='openai'\ntier='light'\nprice_in=1\nprice_out=1\n",
            "$.models[1].name: 'a' appears twice",
        ),
    ],
)
def test_invalid_config_errors_name_the_path(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load_toml(text)
    assert expected in str(info.value)
    assert str(info.value).startswith("t.toml")


def test_provider_without_base_url_is_an_error() -> None:
    with pytest.raises(ConfigError, match="GEARSHIFT_LOCAL_BASE_URL"):
        _load_toml("[[providers]]\nname='local'\nkind='openai'\n")


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "absent.toml", environ={})


def test_yaml_config(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text(
        "server:\n  port: 9000\nmodels:\n  - name: gpt-4o\n    provider: openai\n"
        "    tier: frontier\n    price_in: 1\n    price_out: 2\n"
    )
    config = load(path, environ={})
    assert config.server.port == 9000
    assert config.models["gpt-4o"].spec.price_out == 2
    path.write_text("models:\n  - name: x\n    price_in: [1]\n")
    with pytest.raises(ConfigError, match=r"\$\.models\[0\]"):
        load(path, environ={})


def test_proxy_keys_from_environment_and_file() -> None:
    config = _load_toml(
        "[server]\napi_keys = ['env:TEAM_KEY', 'literal-key']\n",
        environ={"GEARSHIFT_API_KEYS": "a, b", "TEAM_KEY": "t"},
    )
    assert [k.reveal() for k in config.proxy_keys] == ["a", "b", "t", "literal-key"]


def test_literal_keys_and_header_values_never_show_in_a_repr() -> None:
    config = _load_toml(
        """
        [server]
        api_keys = ["proxy-literal-secret"]
        [[providers]]
        name = "local"
        kind = "openai"
        base_url = " http://127.0.0.1:11434/v1/ "
        api_key = "sk-literal-secret-999"
        headers = { "x-team-token" = "hdr-secret-123" }
        [[models]]
        name = "lit"
        provider = "local"
        tier = "light"
        price_in = 0
        price_out = 0
        """
    )
    provider = config.providers["local"]
    assert provider.base_url == "http://127.0.0.1:11434/v1"
    assert provider.api_key is not None
    assert provider.api_key.reveal() == "sk-literal-secret-999"
    assert provider.headers == {"x-team-token": "hdr-secret-123"}
    for text in (repr(config), repr(config.models["lit"]), str(config.redacted())):
        assert "literal-secret" not in text
        assert "hdr-secret" not in text


def test_secrets_never_show_in_repr_or_redacted_view() -> None:
    config = load(
        None,
        environ={
            "OPENAI_API_KEY": "sk-live-supersecret",
            "GEARSHIFT_API_KEYS": "proxy-supersecret",
        },
    )
    assert "supersecret" not in repr(config)
    assert "supersecret" not in str(config.redacted())
    assert repr(Secret("x")) == "Secret('***')"


def test_check_config_prints_resolved_catalog_without_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-live-supersecret")
    path = tmp_path / "g.toml"
    path.write_text(CATALOG_2024.read_text() + "\n[routing]\ndefault_model = 'gpt-4o'\n")
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert '"default_model": "gpt-4o"' in out
    assert '"api_key": "***"' in out
    assert "supersecret" not in out


def test_check_config_reports_errors_and_exits_nonzero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "g.toml"
    path.write_text(
        "[[models]]\nname='a'\nprovider='openai'\ntier='light'\nprice_in=-3\nprice_out=1\n"
    )
    with pytest.raises(SystemExit) as info:
        main(["check-config", str(path)])
    assert info.value.code == 2
    assert "$.models[0].price_in" in capsys.readouterr().err


def test_every_toml_example_in_the_readme_is_a_valid_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import re
    import shutil

    from gearshift.config import decode, resolve

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    # The files an example names are checked at validation: put them where it looks.
    shipped = Path(__file__).parents[2] / "src" / "gearshift" / "routing"
    shutil.copy(shipped / "rules.toml", tmp_path / "my-rules.toml")
    shutil.copy(shipped / "rules.lexicons.msgpack", tmp_path)
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```toml\n(.*?)```", readme, re.S)
    assert len(blocks) >= 2
    for block in blocks:
        raw = decode(block.encode(), source="README.md")
        environ = {"TEAM_KEY": "k", "SUPPORT_BOT_KEY": "sb", "ADMIN_KEY": "ak"}
        resolve(raw, source="README.md", environ=environ, assume_keys=True)


def test_reliability_defaults_and_overrides() -> None:
    default = _load_toml("")
    assert default.reliability.max_attempts == 4
    assert default.reliability.degrade is False
    assert default.reliability.breaker.failures == 5
    assert default.server.shutdown_grace == 30.0
    tuned = _load_toml("[reliability]\ndegrade = true\nbreaker = { cooldown = 5 }\n")
    assert tuned.reliability.degrade is True
    assert tuned.reliability.breaker.cooldown == 5.0
    assert tuned.reliability.breaker.failures == 5  # the rest keep their defaults
    assert tuned.redacted()["reliability"]["breaker"]["cooldown"] == 5.0
