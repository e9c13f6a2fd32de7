"""Hot reload through the real app and the mock upstream: ``POST /gearshift/reload`` with the
admin key swaps in a new configuration (keys, limits, routing) or rejects an invalid one with
its reason and keeps the running one; settings bound at start-up keep their running values
and are named; a request under way keeps the configuration it arrived with; new proxy keys
from ``file:`` references; per-key figures in ``/gearshift/stats``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from conftest import MakeConfig

from gearshift.config import Config
from gearshift.mock import MockState
from gearshift.serve.app import create_app

ClientFactory = Callable[..., Awaitable[TestClient]]
ENV = {"TEAM_A": "sk-team-a-0123456789", "ADMIN": "sk-admin-0123456789"}
ADMIN = {"authorization": f"Bearer {ENV['ADMIN']}"}
EASY = [{"role": "user", "content": "Classify the sentiment: 'Great battery.'"}]
BASE = '[server]\nadmin_key = "env:ADMIN"\n[[keys]]\nname = "team-a"\nkey = "env:TEAM_A"\n'


class Gateway:
    """An app whose configuration file the test rewrites, and a client of it."""

    def __init__(self, client: TestClient, files: dict[str, str]) -> None:
        self.client = client
        self.files = files

    def write(self, toml: str) -> None:
        self.files["config"] = toml

    async def reload(self, key: dict[str, str] = ADMIN) -> Any:
        return await self.client.post("/gearshift/reload", headers=key)

    async def stats(self) -> Any:
        resp = await self.client.get("/gearshift/stats", headers={"x-api-key": ENV["TEAM_A"]})
        assert resp.status == 200
        return await resp.json()

    async def ask(self, key: str, **extra: Any) -> Any:
        return await self.client.post(
            "/v1/chat/completions",
            json={"model": "auto", "messages": EASY, **extra},
            headers={"authorization": f"Bearer {key}"},
        )


async def gateway(
    aiohttp_client: ClientFactory, make_config: MakeConfig, toml: str = BASE
) -> Gateway:
    files = {"config": toml}

    def load() -> Config:
        return make_config(files["config"], environ=ENV)

    app = create_app(load(), load_config=load)
    return Gateway(await aiohttp_client(app), files)


async def test_a_reload_adds_a_key_and_changes_a_limit(
    aiohttp_client: ClientFactory, make_config: MakeConfig, tmp_path: Path
) -> None:
    gw = await gateway(aiohttp_client, make_config)
    secret = tmp_path / "team-b.key"
    secret.write_text("sk-team-b-from-a-file-0123\n")
    assert (await gw.ask("sk-team-b-from-a-file-0123")).status == 401
    assert (await gw.ask(ENV["TEAM_A"])).headers.get("x-ratelimit-limit-requests") is None

    gw.write(
        BASE + f'rpm = 2\n[[keys]]\nname = "team-b"\nkey = "file:{secret}"\ntiers = ["light"]\n'
    )
    resp = await gw.reload()
    assert resp.status == 200
    doc = await resp.json()
    assert doc["reloaded"] is True
    assert doc["generation"] == 2
    assert "keys" in doc["changed"]
    assert doc["needs_restart"] == []

    b = await gw.ask("sk-team-b-from-a-file-0123", gearshift={"tier": "frontier"})
    assert b.status == 200
    assert b.headers["x-gearshift-tier"] == "light"  # its allowed tiers, from the new file
    statuses = [(await gw.ask(ENV["TEAM_A"])).status for _ in range(3)]
    assert statuses == [200, 200, 429]  # the new limit, counted from the reload

    stats = await gw.stats()
    assert stats["config"]["generation"] == 2
    assert stats["config"]["last_reload"]["reloaded"] is True
    assert stats["keys"]["team-a"]["requests"] == 4
    assert stats["keys"]["team-a"]["refused"] == 1
    assert stats["keys"]["team-b"]["requests"] == 1


async def test_an_invalid_configuration_is_rejected_and_the_running_one_kept(
    aiohttp_client: ClientFactory, make_config: MakeConfig
) -> None:
    gw = await gateway(aiohttp_client, make_config, BASE + "rpm = 100\n")
    for bad, why in [
        ("[[keys]\nname = ", "test.toml"),  # not TOML
        (BASE + 'tiers = ["platinum"]\n', "unknown tier 'platinum'"),
        (BASE + '[[keys]]\nname = "x"\nkey = "env:UNSET_KEY"\n', "empty or unset"),
        (BASE + '[routing]\nrules = "/nonexistent/rules.toml"\n', "/nonexistent/rules.toml"),
        ('[server]\nadmin_key = "env:ADMIN"\n', "would turn authentication off"),
    ]:
        gw.write(bad)
        resp = await gw.reload()
        assert resp.status == 422, bad
        doc = await resp.json()
        assert doc["reloaded"] is False
        assert doc["generation"] == 1
        assert why in doc["reason"]
        assert doc["error"]["code"] == "invalid_config"
        ok = await gw.ask(ENV["TEAM_A"])
        assert ok.status == 200  # still served, under the running configuration
        assert ok.headers["x-ratelimit-limit-requests"] == "100"
    stats = await gw.stats()
    assert stats["config"]["generation"] == 1
    assert stats["config"]["last_reload"]["reloaded"] is False


async def test_reload_over_http_needs_the_admin_key(
    aiohttp_client: ClientFactory, make_config: MakeConfig
) -> None:
    gw = await gateway(aiohttp_client, make_config)
    for key in ({}, {"authorization": f"Bearer {ENV['TEAM_A']}"}, {"x-api-key": "nope"}):
        resp = await gw.reload(key)
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] == "invalid_admin_key"
    assert (await gw.reload({"x-api-key": ENV["ADMIN"]})).status == 200
    # The admin key is not a proxy key: it routes nothing.
    assert (await gw.ask(ENV["ADMIN"])).status == 401

    off = await gateway(aiohttp_client, make_config, '[[keys]]\nname = "a"\nkey = "env:TEAM_A"\n')
    resp = await off.reload(ADMIN)
    assert resp.status == 403
    assert (await resp.json())["error"]["code"] == "reload_disabled"


async def test_settings_bound_at_start_up_keep_their_values_and_are_named(
    aiohttp_client: ClientFactory, make_config: MakeConfig
) -> None:
    gw = await gateway(aiohttp_client, make_config)
    gw.write(
        '[server]\nadmin_key = "env:ADMIN"\nmax_body_bytes = 100\n'
        "[routing.sticky]\nttl = 5\n"
        "[reliability]\nmax_attempts = 1\n"
        '[[keys]]\nname = "team-a"\nkey = "env:TEAM_A"\n'
    )
    doc = await (await gw.reload()).json()
    assert doc["reloaded"] is True
    assert sorted(doc["needs_restart"]) == ["routing.sticky", "server"]
    assert "reliability" in doc["changed"]
    # The running body limit (32 MiB) still holds, not the file's 100 bytes.
    long = [{"role": "user", "content": "Classify: " + "x" * 500}]
    resp = await gw.client.post(
        "/v1/chat/completions",
        json={"model": "auto", "messages": long},
        headers={"authorization": f"Bearer {ENV['TEAM_A']}"},
    )
    assert resp.status == 200


async def test_a_request_under_way_keeps_the_configuration_it_arrived_with(
    aiohttp_client: ClientFactory, make_config: MakeConfig, mock_state: MockState
) -> None:
    gw = await gateway(aiohttp_client, make_config)
    mock_state.settings.chunk_delay_ms = 30
    words = "one two three four five six seven eight nine ten"
    resp = await gw.client.post(
        "/v1/chat/completions",
        json={"model": "auto", "stream": True, "messages": [{"role": "user", "content": words}]},
        headers={"authorization": f"Bearer {ENV['TEAM_A']}"},
    )
    assert resp.status == 200
    first = await resp.content.readany()
    gw.write(BASE.replace("env:TEAM_A", "sk-team-a-rotated-0123456789"))  # rotated
    assert (await gw.reload()).status == 200
    rest = first + await resp.content.read()
    assert rest.rstrip().endswith(b"data: [DONE]")  # the stream under way finished
    assert (await gw.ask(ENV["TEAM_A"])).status == 401  # a new request: the new keys
