"""``[[keys]]``, ``[state]`` and ``[cache]`` resolved or refused with the place named; the
periods and durations the governor writes."""

from __future__ import annotations

import calendar

import pytest

from gearshift.config import ConfigError, decode, resolve
from gearshift.governance.governor import duration, periods
from gearshift.governance.keys import digest

ENV = {"OPENAI_API_KEY": "sk-x", "TA": "sk-team-a-000", "TB": "sk-team-b-000"}


def _resolve(toml: str) -> object:
    return resolve(decode(toml.encode(), source="t.toml"), source="t.toml", environ=ENV)


def test_keys_are_known_by_their_digest_and_also_authenticate() -> None:
    config = _resolve(
        '[[keys]]\nname = "team-a"\nkey = "env:TA"\nrpm = 10\nbudget_monthly_usd = 20\n'
        'tiers = ["light"]\n'
    )
    policy = config.key_policies[digest("sk-team-a-000")]  # type: ignore[attr-defined]
    assert (policy.name, policy.rpm, policy.budget_monthly_usd) == ("team-a", 10, 20.0)
    assert policy.tiers == frozenset({"light"})
    assert [k.reveal() for k in config.proxy_keys] == ["sk-team-a-000"]  # type: ignore[attr-defined]
    assert "sk-team-a-000" not in repr(config)


@pytest.mark.parametrize(
    ("toml", "where"),
    [
        ('[[keys]]\nname = "a"\nkey = "env:UNSET"\n', "$.keys[0].key"),
        (
            '[[keys]]\nname = "a"\nkey = "env:TA"\n[[keys]]\nname = "a"\nkey = "env:TB"\n',
            "$.keys[1].name",
        ),
        (
            '[[keys]]\nname = "a"\nkey = "env:TA"\n[[keys]]\nname = "b"\nkey = "env:TA"\n',
            "$.keys[1].key",
        ),
        ('[[keys]]\nname = "a"\nkey = "env:TA"\ntiers = ["gold"]\n', "$.keys[0]"),
        ('[[keys]]\nname = "a"\nkey = "env:TA"\ndefault_tier = "gold"\n', "$.keys[0]"),
        ('[[keys]]\nname = "a"\nkey = "env:TA"\nmodels = ["gpt-9"]\n', "$.keys[0].models"),
        ('[[keys]]\nname = "a"\nkey = "env:TA"\nrpm = 0\n', "$.keys[0].rpm"),
        ('[[keys]]\nname = "no spaces"\nkey = "env:TA"\n', "$.keys[0].name"),
        ('[state]\nbackend = "redis"\n', "$.state.url"),
        ('[state]\nbackend = "etcd"\n', "$.state.backend"),
        ("[cache]\nttl = 0\n", "$.cache.ttl"),
    ],
)
def test_a_bad_governance_setting_names_its_place(toml: str, where: str) -> None:
    with pytest.raises(ConfigError, match=where.replace("[", r"\[").replace("$", r"\$")):
        _resolve(toml)


def test_durations_read_as_openai_writes_them() -> None:
    assert [duration(s) for s in (0.012, 1, 7.5, 360, 179.56)] == [
        "12ms", "1s", "7.5s", "6m0s", "2m59.56s"
    ]  # fmt: skip


def test_periods_end_at_utc_midnight_and_the_first_of_the_month() -> None:
    now = calendar.timegm((2026, 12, 31, 23, 0, 0))
    (day, day_left), (month, month_left) = periods(now)
    assert (day, day_left) == ("2026-12-31", 3600)
    assert (month, month_left) == ("2026-12", 3600)
    (day, day_left), (month, month_left) = periods(calendar.timegm((2027, 2, 10, 12, 0, 0)))
    assert (day, day_left, month) == ("2027-02-10", 43_200, "2027-02")
    assert month_left == 18.5 * 86_400


def test_secrets_from_files_are_read_and_an_unreadable_one_is_named(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    key_file, admin_file = tmp_path / "team-c", tmp_path / "admin"
    key_file.write_text("sk-team-c-from-a-file\n")
    admin_file.write_text("sk-admin-from-a-file")
    config = _resolve(
        f'[server]\nadmin_key = "file:{admin_file}"\n'
        f'[[keys]]\nname = "team-c"\nkey = "file:{key_file}"\n'
    )
    assert digest("sk-team-c-from-a-file") in config.key_policies  # type: ignore[attr-defined]
    assert config.admin_key.reveal() == "sk-admin-from-a-file"  # type: ignore[attr-defined]
    shown = str(config.redacted())  # type: ignore[attr-defined]
    assert "sk-admin-from-a-file" not in shown
    assert "sk-team-c" not in shown
    with pytest.raises(ConfigError, match=r"\$\.keys\[0\]\.key: .*cannot read the secret"):
        _resolve(f'[[keys]]\nname = "c"\nkey = "file:{tmp_path / "missing"}"\n')
    with pytest.raises(ConfigError, match=r"\$\.server\.admin_key"):
        _resolve('[server]\nadmin_key = "env:UNSET"\n')
    with pytest.raises(ConfigError, match=r"\$\.server\.admin_key: .*cannot read the secret"):
        _resolve(f'[server]\nadmin_key = "file:{tmp_path / "missing"}"\n')
