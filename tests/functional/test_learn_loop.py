"""The learning loop end to end, through the real app, the mock upstream and its judge:
synthetic traffic with a property the shipped table cannot see → shadow pairs in the store →
`gearshift judge` labels (both orders) → `calibrate --from-store` writes a table that routes
the property's requests up on a fresh slice → a hot reload puts it in force. A refit that
cannot be better is refused and writes nothing; a position-biased judge labels nothing it
cannot confirm in both orders; the report shows the gap where it is."""

from __future__ import annotations

import asyncio
import io
import random
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from conftest import MakeConfig
from learn_traffic import MARKER, hard_traffic, hidden_traffic, traffic

from gearshift.config import Config
from gearshift.learn import commands
from gearshift.learn.outcomes import SqliteOutcomes
from gearshift.mock import MOCK_STATE
from gearshift.routing.classify import load_rules
from gearshift.routing.tablefile import write_rules
from gearshift.serve.app import SHADOW, create_app

pytest.importorskip("numpy")  # the refit (the `fit` extra, installed by the test extra)

ClientFactory = Callable[..., Awaitable[TestClient]]
ADMIN = "sk-admin-0123456789"
TAG = __import__("os").environ.get("GS_TAG", "req")


class Loop:
    def __init__(self, client: TestClient, config: Config, rules: Path) -> None:
        self.client = client
        self.config = config
        self.rules = rules
        self.sent = 0

    async def post(self, body: dict[str, Any]) -> Any:
        """One request, with an id of the test's (which rows are held back depends on it)."""
        self.sent += 1
        headers = {"x-request-id": f"{TAG}-{self.sent}"}
        return await self.client.post("/v1/chat/completions", json=body, headers=headers)

    async def send(self, rows: list[tuple[dict[str, Any], bool]]) -> list[str]:
        tiers = []
        for body, _ in rows:
            resp = await self.post(body)
            assert resp.status == 200, await resp.text()
            await resp.read()
            tiers.append(resp.headers["x-gearshift-tier"])
        return tiers

    async def stored(self, n: int) -> None:
        async with asyncio.timeout(30):
            await self.client.app[SHADOW].wait_done(n)

    async def judge(self, **options: Any) -> Any:
        store = SqliteOutcomes.open(self.config.learn)
        try:
            return await commands.judge_store(self.config, store, **options)
        finally:
            await store.close()

    async def refit(self, out: Path | None) -> tuple[int, str]:
        text = io.StringIO()
        rc = await asyncio.to_thread(
            commands.from_store, self.config, [], out=None if out is None else str(out),
            stream=text,
        )  # fmt: skip
        return rc, text.getvalue()


Start = Callable[..., Awaitable[Loop]]


@pytest.fixture
def start(aiohttp_client: ClientFactory, make_config: MakeConfig, tmp_path: Path) -> Start:
    """Starts the gateway: shadow_share 1.0, the store and a copy of the shipped table in
    ``tmp_path`` (where a refit goes), the admin key for reloads, gpt-4o as the judge;
    ``learn``: more of ``[learn]``."""

    async def go(learn: str = "") -> Loop:
        rules = tmp_path / "rules.toml"
        write_rules(load_rules(None).spec, rules)
        toml = (
            '[server]\nadmin_key = "env:ADMIN"\n'
            f'[routing]\nrules = "{rules}"\n'
            f'[learn]\nenabled = true\nshadow_share = 1.0\nstore = "{tmp_path / "o.sqlite3"}"\n'
            f'judge = "gpt-4o"\n{learn}'
        )

        def load() -> Config:
            return make_config(toml, environ={"ADMIN": ADMIN})

        config = load()
        client = await aiohttp_client(create_app(config, load_config=load))
        return Loop(client, config, rules)

    return go


def mock_judge(mock: TestServer, **settings: Any) -> None:
    state = mock.app[MOCK_STATE]
    state.settings = replace(state.settings, judge_marker=MARKER, judge_strong=("gpt-4o",),
                             **settings)  # fmt: skip


async def test_judged_shadow_pairs_refit_a_table_that_routes_the_hidden_property_up(
    start: Start, mock_upstream: TestServer
) -> None:
    loop = await start("frontier_share = 1.0\n")
    rows = traffic(random.Random(1), 240)
    hidden = sum(h for _, h in rows)
    # The premise: the shipped table sends all of it below the frontier (and the hard
    # requests of a third task to it: their pairs are with the cheaper model).
    assert set(await loop.send(rows)) == {"light"}
    assert set(await loop.send(hard_traffic(random.Random(11), 30))) == {"frontier"}
    await loop.stored(len(rows) + 30)
    mock_judge(mock_upstream)
    before = len(mock_upstream.app[MOCK_STATE].requests)

    tally = await loop.judge()
    assert (tally.judged, tally.lost, tally.split) == (270, hidden, 0)
    assert tally.suffices == 270 - hidden  # the hard ones too: the mock judge passes them
    assert tally.cost_usd > 0  # accounted: the judge's calls have a price
    calls = mock_upstream.app[MOCK_STATE].requests[before:]
    assert len(calls) == 2 * 270  # both orders of every pair
    assert {c.body["model"] for c in calls} == {"gpt-4o"}
    assert {_max_tokens(c.body) for c in calls} == {4096}  # the default room to answer in
    assert {c.body["model"] for c in calls} == {"gpt-4o"}
    assert (await loop.judge()).judged == 0  # judged once; `--again` to judge again

    # The report: the support task carries the gap, the extraction task none.
    out = io.StringIO()
    assert commands.report(loop.config, as_json=True, out=out) == 0
    doc = orjson.loads(out.getvalue())
    gaps = {c["example"][:20]: c for c in doc["clusters"]}
    support, extract = gaps["You are the support "], gaps["Extract the city nam"]
    assert support["lost"] == hidden
    assert support["gap_low"] < hidden / support["rows"] < support["gap_high"]
    assert extract["lost"] == 0
    assert extract["saving_share"] > 0.9  # the light model costs a fraction of the reference
    assert len(doc["lost"]) == 20
    assert doc["lost_total"] == hidden
    assert all("kestrel" in r["prompt"].lower() for r in doc["lost"])
    page = await (await loop.client.get("/gearshift")).text()
    assert "Shadow mode" in page
    assert "quality gap" in page

    rc, text = await loop.refit(loop.rules)
    assert rc == 0, text
    assert "ACCEPTED" in text

    # A fresh slice of the same traffic: the new table routes the property's requests up.
    fresh = traffic(random.Random(2), 200)
    table = load_rules(loop.rules)
    up = [table.decide(b).tier == "frontier" for b, h in fresh if h]
    down = [table.decide(b).tier != "frontier" for b, h in fresh if not h]
    assert sum(up) / len(up) >= 0.9
    assert sum(down) / len(down) >= 0.9

    # Still the old table in force, until a reload picks the new one up.
    marked = [r for r in fresh if r[1]][:10]
    plain = [r for r in fresh if not r[1]][:10]
    assert set(await loop.send(marked)) == {"light"}
    resp = await loop.client.post("/gearshift/reload", headers={"authorization": f"Bearer {ADMIN}"})
    assert resp.status == 200, await resp.text()
    assert "rule table" in (await resp.json())["changed"]
    tiers = await loop.send(marked)
    assert tiers.count("frontier") >= 9
    assert (await loop.send(plain)).count("frontier") <= 1


async def test_a_refit_that_cannot_be_better_is_refused_and_writes_nothing(
    start: Start, mock_upstream: TestServer
) -> None:
    loop = await start("frontier_share = 1.0\n")
    # The property is in the middle of long messages: the judge sees it, the table cannot.
    rows = hidden_traffic(random.Random(3), 120)
    assert set(await loop.send(rows)) == {"light"}
    # Hard requests that need the frontier (the judge fails the cheaper answer): the table in
    # force already sends them there, nothing to gain on them either.
    await loop.send(hard_traffic(random.Random(12), 20, marked=True))
    await loop.stored(len(rows) + 20)
    mock_judge(mock_upstream)
    tally = await loop.judge()
    assert tally.lost == sum(h for _, h in rows) + 20 > 20
    table = loop.rules.read_bytes()

    rc, text = await loop.refit(loop.rules)
    assert rc == 1, text
    assert "REFUSED" in text
    assert "must gain" in text
    assert "cannot be checked" not in text
    assert loop.rules.read_bytes() == table  # nothing written

    # `eval --from-store` shows the same comparison, and never writes.
    rc, text = await loop.refit(None)
    assert rc == 0
    assert "REFUSED" in text


async def test_a_position_biased_judge_labels_only_what_both_orders_agree_on(
    start: Start, mock_upstream: TestServer
) -> None:
    loop = await start()
    rows = traffic(random.Random(4), 40)
    hidden = sum(h for _, h in rows)
    await loop.send(rows)
    await loop.stored(len(rows))
    mock_judge(mock_upstream, judge_bias=True)  # answer 1 always passes
    tally = await loop.judge()
    # With the cheaper answer first, the biased judge passes it; second, it fails it: split.
    assert (tally.split, tally.lost, tally.suffices) == (hidden, 0, 40 - hidden)
    store = SqliteOutcomes.open(loop.config.learn)
    try:
        labeled = store.call(lambda: list(store.outcomes(labeled=True)))
    finally:
        store.close_now()
    assert len(labeled) == 40 - hidden
    assert all(MARKER not in str(o.request).lower() for o in labeled)


async def test_the_judge_stops_at_its_budget(start: Start, mock_upstream: TestServer) -> None:
    loop = await start()
    await loop.send(traffic(random.Random(5), 10))
    await loop.stored(10)
    mock_judge(mock_upstream)
    cheap = replace(loop.config, learn=replace_learn(loop.config, judge_budget_daily_usd=1e-9))
    loop.config = cheap
    tally = await loop.judge(concurrency=1)
    # The first call's estimate is held against the budget; then the budget is spent.
    assert tally.judged <= 1
    assert tally.skipped + tally.left >= 9
    assert tally.stopped == "the day's judge budget is spent"
    before = len(mock_upstream.app[MOCK_STATE].requests)
    again = await loop.judge(concurrency=1)  # a second run remembers what the first spent
    assert again.judged == 0
    assert len(mock_upstream.app[MOCK_STATE].requests) == before  # not one more call


def replace_learn(config: Config, **changes: Any) -> Any:
    import msgspec

    return msgspec.structs.replace(config.learn, **changes)


async def test_feedback_on_redacted_rows_refits_on_their_stored_features(
    start: Start, mock_upstream: TestServer
) -> None:
    """With redact = "hash" no text is stored and the judge has nothing to read; the
    application's feedback labels the rows, and the refit learns from the features kept
    (the table's vocabulary: here "birthday", a word it knows but barely weighs)."""
    loop = await start('redact = "hash"\nfrontier_share = 1.0\n')
    rows = present_traffic(random.Random(6), 200)
    cheap = []  # (feedback speaks of the cheaper model only when it answered)
    for body, property_ in rows:
        resp = await loop.post(body)
        assert resp.status == 200
        assert resp.headers["x-gearshift-tier"] != "frontier"
        if resp.headers["x-gearshift-model"] != "gpt-4o":  # (no standard model: gpt-4o)
            cheap.append(property_)
        # At once, as an application does: before its row is stored (its shadow call runs).
        verdict = {"request_id": resp.headers["x-request-id"],
                   "label": "bad" if property_ else "good"}  # fmt: skip
        fed = await loop.client.post("/gearshift/feedback", json=verdict)
        assert (await fed.json())["stored"] is True
    await loop.stored(len(rows))
    store = SqliteOutcomes.open(loop.config.learn)
    try:
        labeled = store.call(lambda: list(store.outcomes(labeled=True)))
    finally:
        store.close_now()
    assert len(labeled) == len(cheap) > 190
    assert sum(not o.weak_suffices for o in labeled) == sum(cheap)
    assert {o.label_source for o in labeled} == {"feedback"}
    # Hard requests the table sends to the frontier: no label can say they may go lower
    # (feedback speaks of the answer the client got), so the refit keeps them there.
    assert set(await loop.send(hard_traffic(random.Random(13), 30))) == {"frontier"}
    await loop.stored(len(rows) + 30)
    assert (await loop.judge()).judged == 0  # no text to judge
    rc, text = await loop.refit(loop.rules)
    assert rc == 0, text
    assert "redacted: on their features" in text
    assert "30 unlabeled rows the table in force sends to the frontier count as" in text
    table = load_rules(loop.rules)
    fresh = present_traffic(random.Random(7), 200)
    up = [table.decide(b).tier == "frontier" for b, p in fresh if p]
    down = [table.decide(b).tier != "frontier" for b, p in fresh if not p]
    assert sum(up) / len(up) >= 0.9
    assert sum(down) / len(down) >= 0.9
    kept = [table.decide(b).tier == "frontier" for b, _ in hard_traffic(random.Random(14), 30)]
    assert all(kept)


def present_traffic(rng: random.Random, n: int) -> list[tuple[dict[str, Any], bool]]:
    rows = traffic(rng, n, hidden_share=0.0)
    out = []
    for body, _ in rows:
        ask = body["messages"][1]["content"]
        if "order" in ask:
            property_ = rng.random() < 0.4
            ask += " It is a birthday present." if property_ else " It is for our parcel."
            body = {**body, "messages": [body["messages"][0], {"role": "user", "content": ask}]}
            out.append((body, property_))
        else:
            out.append((body, False))
    return out


async def test_the_judge_leaves_rows_the_application_labeled(
    start: Start, mock_upstream: TestServer
) -> None:
    loop = await start()
    rows = traffic(random.Random(8), 20, hidden_share=1.0)
    ids = []
    for body, _ in rows:
        resp = await loop.post(body)
        ids.append(resp.headers["x-request-id"])
    await loop.stored(len(rows))
    marked = ids[next(i for i, (_, h) in enumerate(rows) if h)]
    fed = await loop.client.post(
        "/gearshift/feedback", json={"request_id": marked, "label": "good"}
    )
    assert (await fed.json())["labeled"] is True
    mock_judge(mock_upstream)
    tally = await loop.judge()
    assert tally.judged == len(rows) - 1
    store = SqliteOutcomes.open(loop.config.learn)
    try:
        row = next(o for o in store.call(lambda: list(store.outcomes())) if o.request_id == marked)
    finally:
        store.close_now()
    # The judge would have said it lost; the application said it was good, and that stands.
    assert (row.weak_suffices, row.label_source, row.judged_at) == (1, "feedback", None)


def _max_tokens(body: dict[str, Any]) -> Any:
    return body.get("max_completion_tokens", body.get("max_tokens"))


async def test_the_server_judges_in_the_background_when_asked(
    start: Start, mock_upstream: TestServer
) -> None:
    loop = await start("judge_every = 0.01\njudge_max_tokens = 1536\n")
    mock_judge(mock_upstream)
    rows = traffic(random.Random(9), 30)
    await loop.send(rows)
    await loop.stored(len(rows))
    shadow = loop.client.app[SHADOW]
    store = shadow.store
    async with asyncio.timeout(30):
        while await store.run(store.to_judge):
            await shadow.wait_judged(shadow.judge_rounds + 1)
    labeled = store.call(lambda: list(store.outcomes(labeled=True)))
    assert len(labeled) == len(rows)
    assert sum(not o.weak_suffices for o in labeled) == sum(h for _, h in rows)
    assert all(o.label_source == "judge" and o.judge_cost_usd > 0 for o in labeled)
    judged = [c.body for c in mock_upstream.app[MOCK_STATE].requests if "acceptable_1"
              in str(c.body)]  # fmt: skip
    assert len(judged) == 2 * len(rows)
    assert {_max_tokens(b) for b in judged} == {1536}  # judge_max_tokens


async def test_one_judge_at_a_time_per_store(start: Start, mock_upstream: TestServer) -> None:
    loop = await start()
    await loop.send(traffic(random.Random(10), 4))
    await loop.stored(4)
    store = SqliteOutcomes.open(loop.config.learn)
    try:
        assert store.call(store.lease, "judge", "server:elsewhere", 600.0)
        with pytest.raises(commands.Busy):
            await commands.judge_store(loop.config, store)
        store.call(store.release, "judge", "server:elsewhere")
        assert (await commands.judge_store(loop.config, store)).judged == 4
        # The command gave its lease back: another process may judge now.
        assert store.call(store.lease, "judge", "server:elsewhere", 600.0)
    finally:
        await store.close()


async def test_a_judge_that_is_down_stops_the_run_and_blames_no_row(
    start: Start, mock_upstream: TestServer
) -> None:
    loop = await start()
    await loop.send(traffic(random.Random(15), 6))
    await loop.stored(6)
    state = mock_upstream.app[MOCK_STATE]
    state.settings = replace(state.settings, fail="http-503")  # every call: the judge's too
    tally = await loop.judge(concurrency=1)
    assert tally.stopped is not None
    assert tally.stopped.startswith("the judge is unavailable")
    assert tally.judged == 0
    state.settings = replace(state.settings, fail=None)
    store = SqliteOutcomes.open(loop.config.learn)
    try:
        rows = store.call(store.to_judge)
        assert len(rows) == 6  # all still to judge, none counted against
        assert {o.judge_failures for o in rows} == {0}
        assert (await commands.judge_store(loop.config, store)).judged == 6
    finally:
        await store.close()


async def test_a_templated_system_prompt_is_one_task_even_redacted(
    start: Start, mock_upstream: TestServer
) -> None:
    loop = await start('redact = "hash"\n')
    for customer, day in ((1234, 7), (98765, 8), (5, 9)):
        system = f"You help customer {customer} of Northwind. Today is 2026-12-{day:02d}."
        body = {
            "model": "auto",
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": "Where is my tent?"},
            ],
        }
        assert (await loop.post(body)).status == 200
    await loop.stored(3)
    out = io.StringIO()
    assert commands.report(loop.config, as_json=True, out=out) == 0
    (cluster,) = orjson.loads(out.getvalue())["clusters"]
    assert cluster["rows"] == 3
    assert cluster["example"] == "(redacted: hash)"
