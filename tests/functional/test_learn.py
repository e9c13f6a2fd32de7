"""Shadow comparisons and the outcome store through the real app and the mock upstream: sampled
requests stored with the reference model's answer; a hung reference never delays the
client; the shadow budget pauses shadowing; feedback labels a recorded request and outranks
a judge; redaction leaves no message text on disk; the export reads as calibration data."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from conftest import MakeConfig

from gearshift.learn.outcomes import Outcome, routing_row
from gearshift.mock import MOCK_STATE
from gearshift.offline.calibrate import example_from_row
from gearshift.serve.app import SHADOW, create_app

ClientFactory = Callable[..., Awaitable[TestClient]]
KEYS = {"TEAM_A": "sk-team-a-0123456789", "TEAM_B": "sk-team-b-0123456789"}
SECRET_WORDS = "zebra-quartz-lantern"
EASY = [{"role": "user", "content": f"Classify the sentiment: 'Great battery, {SECRET_WORDS}.'"}]
HANGING = (
    '[[models]]\nname = "ref-hang"\nprovider = "openai"\nupstream_id = "hang"\n'
    'tier = "frontier"\nprice_in = 2.5\nprice_out = 10.0\n'
)
KEYS_TOML = (
    '[[keys]]\nname = "team-a"\nkey = "env:TEAM_A"\n[[keys]]\nname = "team-b"\nkey = "env:TEAM_B"\n'
)


async def gateway(
    aiohttp_client: ClientFactory, make_config: MakeConfig, tmp_path: Path, learn: str
) -> TestClient:
    toml = f'[learn]\nenabled = true\nstore = "{tmp_path / "outcomes.sqlite3"}"\n{learn}\n'
    return await aiohttp_client(create_app(make_config(KEYS_TOML + toml, environ=KEYS)))


async def ask(client: TestClient, key: str = "TEAM_A", **extra: Any) -> Any:
    return await client.post(
        "/v1/chat/completions",
        json={"model": "auto", "messages": EASY, **extra},
        headers={"authorization": f"Bearer {KEYS[key]}"},
    )


async def stored(client: TestClient, n: int) -> list[Outcome]:
    shadow = client.app[SHADOW]
    async with asyncio.timeout(5):
        await shadow.wait_done(n)
    return shadow.store.call(lambda: list(shadow.store.outcomes()))


def upstream_models(mock: TestServer) -> list[str]:
    return [r.body.get("model") for r in mock.app[MOCK_STATE].requests]


async def test_a_sampled_request_is_stored_with_the_reference_answer(
    aiohttp_client: ClientFactory,
    make_config: MakeConfig,
    tmp_path: Path,
    mock_upstream: TestServer,
) -> None:
    client = await gateway(aiohttp_client, make_config, tmp_path, "shadow_share = 1.0")
    whole = await ask(client)
    assert whole.status == 200
    text = (await whole.json())["choices"][0]["message"]["content"]
    streamed = await ask(client, stream=True)
    assert (await streamed.read()).rstrip().endswith(b"data: [DONE]")
    rows = await stored(client, 2)
    assert [r.kind for r in rows] == ["shadow", "shadow"]
    first = rows[0]
    assert first.request_id == whole.headers["x-request-id"]
    assert (first.model, first.model_tier, first.tier) == ("gpt-4o-mini", "light", "light")
    assert (first.reference, first.reference_tier) == ("gpt-4o", "frontier")
    assert first.answer == text  # what the client got
    assert first.reference_answer
    assert (first.reference_cost_usd or 0) > first.cost_usd > 0
    assert first.key == "team-a"
    assert first.features == {}  # the text is kept: they are read from it when needed
    assert rows[1].answer  # the streamed answer, from its pieces
    # Upstream: each client call, then its shadow call to the reference, never streamed.
    assert upstream_models(mock_upstream) == ["gpt-4o-mini", "gpt-4o", "gpt-4o-mini", "gpt-4o"]
    assert [r.body.get("stream") for r in mock_upstream.app[MOCK_STATE].requests][3] in (
        None,
        False,
    )


async def test_a_hung_reference_never_delays_or_changes_the_client_s_answer(
    aiohttp_client: ClientFactory, make_config: MakeConfig, tmp_path: Path
) -> None:
    plain = await aiohttp_client(create_app(make_config(KEYS_TOML, environ=KEYS)))
    client = await gateway(
        aiohttp_client, make_config, tmp_path,
        f'shadow_share = 1.0\nreference = "ref-hang"\n{HANGING}',
    )  # fmt: skip
    shadow = client.app[SHADOW]
    for _ in range(3):
        async with asyncio.timeout(2):  # the reference never answers: the client is not kept
            resp = await ask(client)
            body = await resp.json()
        expected = await (await ask(plain)).json()
        assert resp.status == 200
        assert body["choices"] == expected["choices"]  # the same answer as without shadowing
        assert not any(h.startswith("x-gearshift-shadow") for h in resp.headers)
    assert shadow.done == 0  # all three shadow calls are still waiting on the reference
    # (The app's shutdown cancels them: the test client's close would hang otherwise.)


async def test_the_shadow_budget_pauses_shadowing(
    aiohttp_client: ClientFactory,
    make_config: MakeConfig,
    tmp_path: Path,
    mock_upstream: TestServer,
) -> None:
    client = await gateway(
        aiohttp_client, make_config, tmp_path, "shadow_share = 1.0\nbudget_daily_usd = 0.0000001"
    )
    for _ in range(3):
        assert (await ask(client)).status == 200
        await stored(client, client.app[SHADOW].done + 1)  # one after the other
    rows = await stored(client, 3)
    # The first shadow call spent the day's budget: then requests are recorded, not shadowed.
    assert [r.kind for r in rows] == ["shadow", "record", "record"]
    assert upstream_models(mock_upstream).count("gpt-4o") == 1


async def test_feedback_labels_a_recorded_request_and_outranks_a_judge(
    aiohttp_client: ClientFactory, make_config: MakeConfig, tmp_path: Path
) -> None:
    client = await gateway(
        aiohttp_client, make_config, tmp_path, "shadow_share = 0.0\nrecord_share = 1.0"
    )
    answer = await ask(client)
    rid = answer.headers["x-request-id"]
    await stored(client, 1)

    async def feedback(doc: Any, key: str = "TEAM_A") -> Any:
        return await client.post(
            "/gearshift/feedback", json=doc, headers={"authorization": f"Bearer {KEYS[key]}"}
        )

    other = await feedback({"request_id": rid, "label": "bad"}, key="TEAM_B")
    assert (await other.json()) == {"stored": True, "labeled": False}  # not its request
    resp = await feedback({"request_id": rid, "score": 0.2, "note": "failed to parse"})
    assert resp.status == 200
    assert (await resp.json()) == {"stored": True, "labeled": True}
    store = client.app[SHADOW].store
    # A judge's verdict comes later: the application's stays.
    assert store.call(store.label_now, rid, True, "the judge found it fine") is False
    (row,) = store.call(lambda: list(store.outcomes(labeled=True)))
    assert (row.weak_suffices, row.label_source, row.reason) == (0, "feedback", "failed to parse")
    unknown = await feedback({"request_id": "no-such-request", "label": "good"})
    assert (await unknown.json()) == {"stored": True, "labeled": False}
    for bad in ({}, {"request_id": rid}, {"request_id": rid, "label": "meh"},
                {"request_id": rid, "score": 2}, {"request_id": rid, "score": True}):  # fmt: skip
        refused = await feedback(bad)
        assert refused.status == 400, bad
        assert (await refused.json())["error"]["type"] == "invalid_request_error"
    # The export: a calibration row (the cheap answer did not suffice: frontier).
    exported = routing_row(row)
    assert exported["weak_suffices"] is False
    example = example_from_row(exported, "store", 1)
    assert example.strong == 1


async def test_redaction_leaves_no_message_text_in_the_store(
    aiohttp_client: ClientFactory, make_config: MakeConfig, tmp_path: Path
) -> None:
    for mode in ("hash", "drop"):
        where = tmp_path / mode
        where.mkdir()
        client = await gateway(
            aiohttp_client, make_config, where, f'shadow_share = 1.0\nredact = "{mode}"'
        )
        answer = await (await ask(client)).json()
        answer_text = answer["choices"][0]["message"]["content"]
        (row,) = await stored(client, 1)
        assert row.features  # the classifier's features stay
        # Tool calls, tool results, tool descriptions and image URLs are text too.
        secret_call = {
            "id": "c1",
            "type": "function",
            "function": {"name": "lookup", "arguments": f'{{"q": "{SECRET_WORDS}"}}'},
        }
        tools = [
            {
                "type": "function",
                "function": {
                    "name": "lookup",
                    "description": f"Finds {SECRET_WORDS}",
                    "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
                },
            }
        ]
        messages = [
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this picture?"},
                {"type": "image_url", "image_url": {"url": f"https://x.test/{SECRET_WORDS}.png"}},
            ]},
            {"role": "assistant", "content": None, "tool_calls": [secret_call]},
            {"role": "tool", "tool_call_id": "c1", "content": f"found {SECRET_WORDS}"},
        ]  # fmt: skip
        schema = {"name": "out", "schema": {"type": "object", "description": SECRET_WORDS}}
        resp = await client.post(
            "/v1/chat/completions",
            json={
                "model": "auto",
                "messages": messages,
                "tools": tools,
                "metadata": {"customer": SECRET_WORDS},
                "user": SECRET_WORDS,
                "stop": [SECRET_WORDS],
                "temperature": 0.3,
                "response_format": {"type": "json_schema", "json_schema": schema},
            },
            headers={"authorization": f"Bearer {KEYS['TEAM_A']}"},
        )
        assert resp.status == 200, await resp.text()
        (_, row) = await stored(client, 2)
        assert row.request["tools"][0]["function"]["name"] == "lookup"  # names are not text
        assert row.request["temperature"] == 0.3  # settings are kept
        assert row.request["response_format"]["type"] == "json_schema"
        await client.close()  # the store closes: everything is on disk
        on_disk = b"".join(p.read_bytes() for p in where.iterdir() if p.is_file())
        assert SECRET_WORDS.encode() not in on_disk
        assert answer_text.encode() not in on_disk
        assert on_disk  # (something was written)


def test_the_outcomes_command_exports_labeled_rows_as_calibration_data(tmp_path: Path) -> None:
    from gearshift.cli import main
    from gearshift.config import load
    from gearshift.learn.outcomes import SqliteOutcomes

    config = tmp_path / "gearshift.toml"
    config.write_text(f'[learn]\nenabled = true\nstore = "{tmp_path / "o.sqlite3"}"\n')
    store = SqliteOutcomes.open(load(config).learn)
    body = {"model": "auto", "messages": EASY}
    for i, label in enumerate([1, 0, None]):
        row = Outcome(
            request_id=f"r{i}", at=time.time() + i, kind="shadow", key="team-a", tier="light",
            score="0.1", model="gpt-4o-mini", model_tier="light", request=body, features={},
            answer="positive", cost_usd=0.0001, reference="gpt-4o", reference_tier="frontier",
            reference_answer="Positive.", reference_cost_usd=0.002,
        )  # fmt: skip
        store.call(store.record_now, row)
        if label is not None:
            assert store.call(store.label_now, f"r{i}", bool(label), "judged")
    store.close_now()
    out = tmp_path / "rows.jsonl"
    assert main(["outcomes", "--config", str(config), "--out", str(out)]) == 0
    import orjson

    rows = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [(r["id"], r["weak_suffices"], r["tier"]) for r in rows] == [
        ("store/r0", True, "light"),
        ("store/r1", False, "frontier"),
    ]
    assert [example_from_row(r, "store", i).strong for i, r in enumerate(rows)] == [0, 1]
    assert rows[0]["weak_model"] == "gpt-4o-mini"
    assert rows[0]["strong_model"] == "gpt-4o"
