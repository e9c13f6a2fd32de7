"""Shadow comparisons: a sampled share of requests is also answered by a reference model, in
the background, once the client's own answer is complete, and both answers go to the outcome
store (``docs/learning.md``).

- **Which requests** (``choose``, right after the routing decision): of those routed below
  the frontier tier, ``shadow_share``; of those routed to it, ``frontier_share`` (then the
  reference is a cheaper model: the pair says what routing down would have lost); then
  ``record_share`` more, stored without a shadow call. Only answered requests (status 200)
  are stored; a cached answer is not sampled.
- **Never in the client's way**: the shadow call starts from the observation sink, after the
  response went out, in a task of its own; it goes through the router (fallbacks, breakers)
  with the reference pinned, non-streaming, whatever the client asked.
- **Budget**: the shadow calls' spend per UTC day is a budget in ``[state]`` (the key
  ``shadow``: shared by every process on Redis); each call holds its estimate while it runs.
  Over it, requests are recorded without a shadow call ("paused"), with one INFO line a day.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from dataclasses import replace as dc_replace
from typing import Any

import orjson

from gearshift.errors import GearshiftError, OverLimit
from gearshift.governance.governor import Governor, StateDown
from gearshift.governance.keys import KeyPolicy
from gearshift.inbound.chat import ChatRequest
from gearshift.learn import report
from gearshift.learn.outcomes import Outcome, OutcomeStore
from gearshift.learn.spec import LearnSpec
from gearshift.providers import Completion
from gearshift.routing import policy
from gearshift.serve import relay
from gearshift.serve.exchange import Exchange

log = logging.getLogger("gearshift.learn")
_WORDS = ("w:", "p:", "h:")  # the classifier's word features: prefix and the word
JUDGE_BATCH = 200  # pairs a background round judges at most
REPORT_EVERY = 30.0  # seconds a status page's report is reused
REPORT_ROWS = 5000  # the most recent rows the status page's report reads
MAX_KEPT = 1 << 20  # bytes of a streamed answer kept for the store (a longer one is cut)


@dataclass(slots=True)
class Sample:
    """A request chosen for the store: how (``shadow`` or ``record``), what it asked, and the
    client's answer (a whole body, or the chat stream's pieces as they went out)."""

    kind: str
    chat: ChatRequest
    routing: policy.Policy
    body: bytes | None = None
    pieces: list[bytes] = field(default_factory=list)
    kept: int = 0

    def keep(self, piece: bytes) -> None:
        if self.kept < MAX_KEPT:
            self.pieces.append(piece)
            self.kept += len(piece)

    def answer(self) -> str:
        if self.body is not None:
            return answer_text(self.body)
        return stream_text(b"".join(self.pieces))


def answer_text(body: bytes) -> str:
    """The text of a chat completion (its first choice; its tool calls as JSON after it)."""
    try:
        doc = orjson.loads(body)
        message = doc["choices"][0]["message"]
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        return ""
    text = message.get("content") or ""
    calls = message.get("tool_calls")
    if isinstance(calls, list) and calls:
        text += _calls_text(
            [c.get("function") for c in calls if isinstance(c, dict)]
        )  # fmt: skip
    return str(text)


def stream_text(data: bytes) -> str:
    """The text of a chat completion stream (its first choice): the content deltas, then
    its tool calls, assembled from their deltas, as ``answer_text`` writes them."""
    out: list[str] = []
    calls: dict[int, dict[str, str]] = {}
    for line in data.split(b"\n"):
        if not line.startswith(b"data: ") or line == b"data: [DONE]":
            continue
        try:
            choice = orjson.loads(line[6:])["choices"][0]
            delta = choice["delta"]
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
            continue
        if not isinstance(delta, dict) or choice.get("index", 0) != 0:
            continue
        if isinstance(delta.get("content"), str):
            out.append(delta["content"])
        for call in delta.get("tool_calls") or []:
            if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
                continue
            into = calls.setdefault(call.get("index", 0), {"name": "", "arguments": ""})
            for part in ("name", "arguments"):
                if isinstance(call["function"].get(part), str):
                    into[part] += call["function"][part]
    text = "".join(out)
    if calls:
        text += _calls_text([calls[i] for i in sorted(calls)])
    return text


def _calls_text(functions: list[Any]) -> str:
    kept = [{"name": f.get("name"), "arguments": f.get("arguments")}
            for f in functions if isinstance(f, dict)]  # fmt: skip
    return orjson.dumps(kept).decode()


# Request fields that are settings, not text: kept as they are when redacting.
_SETTINGS = frozenset((
    "model", "stream", "temperature", "top_p", "n", "max_tokens", "max_completion_tokens",
    "seed", "presence_penalty", "frequency_penalty", "logprobs", "top_logprobs",
    "parallel_tool_calls", "reasoning_effort", "service_tier", "tool_choice", "modalities",
))  # fmt: skip


def redacted(body: dict[str, Any], mode: str) -> dict[str, Any]:
    """``body`` with everything but settings hashed (``hash``) or emptied (``drop``): what
    is kept is the settings (``_SETTINGS``), each message's role and tool-call id, the type
    of each content part, and the names of the tools and of the calls to them. Everything
    else (texts, arguments, tool results, image and file URLs or data, descriptions,
    schemas, metadata, stop words, anything unknown) is hidden."""
    if mode == "none":
        return body

    def text(value: str) -> str:
        return "sha256:" + hashlib.sha256(value.encode()).hexdigest() if mode == "hash" else ""

    def hidden(value: Any) -> Any:  # any JSON value: its text hashed or emptied
        return text(value if isinstance(value, str) else orjson.dumps(value).decode())

    def typed(item: Any) -> Any:  # a content part, a tool: its type kept, the rest hidden
        if not isinstance(item, dict):
            return hidden(item)
        kept = {"type": item["type"]} if isinstance(item.get("type"), str) else {}
        return {**kept, **{k: hidden(v) for k, v in item.items() if k != "type"}}

    def named(item: Any) -> Any:  # a tool or a tool call: its function's name kept
        if not isinstance(item, dict) or not isinstance(item.get("function"), dict):
            return hidden(item)
        function = {k: v if k == "name" else hidden(v) for k, v in item["function"].items()}
        kept = {k: item[k] for k in ("id", "type") if isinstance(item.get(k), str)}
        return {**kept, "function": function}

    def message(m: Any) -> Any:
        if not isinstance(m, dict):
            return hidden(m)
        out: dict[str, Any] = {}
        for k, v in m.items():
            if k in ("role", "tool_call_id") and isinstance(v, str):
                out[k] = v
            elif k == "content" and isinstance(v, str):
                out[k] = text(v)
            elif k == "content" and isinstance(v, list):
                out[k] = [typed(p) for p in v]
            elif k == "tool_calls" and isinstance(v, list):
                out[k] = [named(c) for c in v]
            elif v is not None:
                out[k] = hidden(v)
        return out

    out: dict[str, Any] = {}
    for k, v in body.items():
        if k in _SETTINGS:
            out[k] = v
        elif k == "messages" and isinstance(v, list):
            out[k] = [message(m) for m in v]
        elif k == "tools" and isinstance(v, list):
            out[k] = [named(t) for t in v]
        elif k == "response_format":
            out[k] = typed(v)
        else:
            out[k] = hidden(v)
    return out


class Shadow:
    """Chooses the sampled requests and, as an observation sink, stores them and runs their
    shadow calls."""

    def __init__(
        self,
        spec: LearnSpec,
        store: OutcomeStore,
        governor: Governor,
        run: Any,  # Router.run
        *,
        rng: random.Random | None = None,
        wall: Any = time.time,
        state_kind: str = "memory",
    ) -> None:
        self.spec = spec
        self.store = store
        self._governor = governor
        self._run = run
        self._rng = rng or random.Random()
        self._wall = wall
        self._tasks: set[asyncio.Task[None]] = set()
        self._budget = KeyPolicy("shadow", budget_daily_usd=spec.budget_daily_usd)
        self._paused_day: str | None = None
        self.done = 0  # samples stored (tests wait on it)
        self._progress: asyncio.Event | None = None
        self.shadow_cost_usd = 0.0
        self._report: tuple[float, dict[str, Any]] | None = None
        self._judging: asyncio.Task[None] | None = None
        self._state_kind = state_kind
        self._holder = f"server:{os.getpid()}:{id(self)}"
        self.judge_rounds = 0

    def choose(self, ex: Exchange, chat: ChatRequest, routing: policy.Policy) -> None:
        """After the decision: whether this request is sampled, and how."""
        plan = ex.plan
        if plan is None or not self.spec.enabled:
            return
        top = plan.tier == routing.tiers[-1]
        draw = self._rng.random()
        share = self.spec.frontier_share if top else self.spec.shadow_share
        if draw < share:
            ex.sample = Sample("shadow", chat, routing)
        elif draw < share + self.spec.record_share:
            ex.sample = Sample("record", chat, routing)

    def begin(self, ex: Exchange) -> None:
        pass

    def finish(self, ex: Exchange) -> None:
        sample = ex.sample
        if sample is None or ex.status != 200 or ex.served_by is None or ex.cache == "hit":
            return
        plan = ex.plan
        if plan is not None and plan.targets and ex.served_by.tier != plan.targets[0].tier:
            return  # a fallback of another tier answered: not the pair the sample was for
        task = asyncio.get_running_loop().create_task(self._compare(ex, sample))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("shadow comparison failed", exc_info=task.exception())
        self.done += 1
        if self._progress is not None:
            self._progress.set()

    async def wait_done(self, n: int) -> None:
        """Until ``n`` samples are stored (tests)."""
        while self.done < n:
            self._progress = progress = asyncio.Event()
            await progress.wait()

    async def feedback(
        self, request_id: str, key: str, good: bool, score: float | None, note: str
    ) -> bool:
        return await self.store.feedback(request_id, key, good, score, note)

    def start_judging(self, every: float, current: Callable[[], policy.Policy]) -> None:
        """Judge the stored pairs in the background every ``every`` seconds, through this
        process's router and state, ``current()`` giving the routing in force."""
        loop = asyncio.get_running_loop()
        self._judging = loop.create_task(self._judge_rounds(every, current, self._state_kind))

    async def _judge_rounds(
        self, every: float, current: Callable[[], policy.Policy], state_kind: str
    ) -> None:
        from gearshift.learn.judge import Judge

        store = self.store
        lease = max(2 * every, 600.0)

        async def keep() -> bool:  # the store's judge lease, renewed before each pair
            return bool(await store.run(store.lease, "judge", self._holder, lease))

        while True:
            await asyncio.sleep(every)
            try:
                routing = current()
                model = self.spec.judge or (routing.baseline.name if routing.baseline else None)
                rows = await store.run(lambda: store.to_judge(limit=JUDGE_BATCH)) or []
                if model is not None and rows and await keep():
                    try:
                        judge = Judge(
                            store, self._run, routing, model, self.spec.judge_budget_daily_usd,
                            max_tokens=self.spec.judge_max_tokens, wall=self._wall,
                        )  # fmt: skip
                        tally = await judge.run_all(rows, concurrency=2, keep=keep)
                        log.info("judged in the background: %s", tally.doc())
                    finally:  # given back between rounds: `gearshift judge` may run
                        await store.run(store.release, "judge", self._holder)
            except Exception:  # a round's failure is logged; the next round tries again
                log.exception("background judging failed")
            self.judge_rounds += 1
            if self._progress is not None:
                self._progress.set()

    async def wait_judged(self, rounds: int) -> None:
        """Until ``rounds`` background judging rounds are done (tests)."""
        while self.judge_rounds < rounds:
            self._progress = progress = asyncio.Event()
            await progress.wait()

    async def report(self, rules: Any) -> dict[str, Any] | None:
        """The store's report (``learn/report.py``), built at most every ``REPORT_EVERY``
        seconds on the store's thread."""
        now = time.monotonic()
        if self._report is None or now - self._report[0] >= REPORT_EVERY:
            store = self.store
            from gearshift.learn.commands import report_doc

            doc = await store.run(lambda: report_doc(store, rules, REPORT_ROWS))
            if doc is None:
                return None
            self._report = (now, doc)
        return self._report[1]

    async def close(self) -> None:
        """At shutdown: shadow calls still running are cancelled (they never hold the
        process), then the store closes."""
        tasks = [*self._tasks, *([self._judging] if self._judging is not None else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._judging is not None:  # another process may judge at once
            await self.store.run(self.store.release, "judge", self._holder)
        await self.store.close()

    async def _compare(self, ex: Exchange, sample: Sample) -> None:
        plan, served = ex.plan, ex.served_by
        assert plan is not None
        assert served is not None
        routing, chat = sample.routing, sample.chat
        served_is_weak = served.tier != routing.tiers[-1]
        features: dict[str, float] = {}  # with the text kept, they are read from it again
        if self.spec.redact != "none":
            # A word feature is the word itself: only the table's own vocabulary stays.
            spec = routing.rules.spec
            found = routing.rules.features(chat.body)[1]
            features = {
                k: v for k, v in found.items()
                if k[:2] not in _WORDS
                or k[2:] in (spec.lead_lexicon if k[:2] == "h:" else spec.lexicon)
            }  # fmt: skip
        outcome = Outcome(
            request_id=ex.request_id, at=self._wall(), kind="record", key=ex.key,
            tier=plan.tier, score=plan.score, model=served.name, model_tier=served.tier,
            request=redacted(chat.body, self.spec.redact), features=features,
            answer=self._kept(sample.answer()), served_is_weak=served_is_weak,
            cost_usd=ex.account.cost_usd if ex.account is not None else 0.0,
            redact=self.spec.redact,
            # (Redacted, the text is gone: its cluster is named now; else when read.)
            cluster=None if self.spec.redact == "none"
            else report.cluster_of(chat.body, features, routing.rules),
        )  # fmt: skip
        if sample.kind == "shadow":
            reference = self._reference(plan, routing, served_is_weak)
            if reference is not None and reference.name != served.name:
                await self._shadow(outcome, chat, routing, reference)
        await self.store.record(outcome)

    def _reference(self, plan: policy.Plan, routing: policy.Policy, weak: bool) -> Any:
        models = routing.config.models
        name = self.spec.reference if weak else self.spec.cheap_reference
        if name:
            return models.get(name)
        if weak:
            return plan.baseline or routing.baseline
        lowest = [m for m in routing.config.offered if m.tier == routing.tiers[0]]
        return lowest[0] if lowest else None

    async def _shadow(
        self, outcome: Outcome, chat: ChatRequest, routing: policy.Policy, reference: Any
    ) -> None:
        body = {k: v for k, v in chat.body.items() if k not in ("stream", "stream_options")}
        body["model"] = reference.name
        shadow_chat = dc_replace(
            chat, body=body, model=reference.name, stream=False, client_wants_usage=False,
            hints={},
        )  # fmt: skip
        ex = Exchange(f"{outcome.request_id}/shadow", time.perf_counter())
        ex.requested = reference.name
        ex.plan = plan = policy.plan(shadow_chat, routing, {"x-gearshift-route": "pin"})
        try:
            admission = await self._governor.check(self._budget, 0, plan.est_cost_usd)
        except StateDown:
            return  # fail_closed and the state is down: no unbudgeted spend
        except OverLimit:
            day = time.strftime("%Y-%m-%d", time.gmtime(self._wall()))
            if self._paused_day != day:
                self._paused_day = day
                log.info(
                    "shadow comparisons paused: their budget of %g USD for %s is spent",
                    self.spec.budget_daily_usd, day,
                )  # fmt: skip
            return
        held = admission.held_usd  # (nothing when the state failed open)
        cost = 0.0
        try:
            answer = await self._run(shadow_chat, ex)
            if isinstance(answer, Completion):
                relay.whole(ex, shadow_chat, answer)
                outcome.kind = "shadow"
                outcome.reference = reference.name
                outcome.reference_tier = reference.tier
                outcome.reference_answer = self._kept(answer_text(answer.body))
                cost = ex.account.cost_usd if ex.account is not None else 0.0
                outcome.reference_cost_usd = cost
                self.shadow_cost_usd += cost
        except GearshiftError as exc:
            log.info("shadow call for %s failed: %s", outcome.request_id, exc)
        finally:
            await self._governor.settle(self._budget, cost - held, 0, 0)

    def _kept(self, text: str) -> str | None:
        if self.spec.redact == "none":
            return text
        if self.spec.redact == "hash":
            return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
        return None


__all__ = ["Sample", "Shadow", "answer_text", "redacted", "stream_text"]
