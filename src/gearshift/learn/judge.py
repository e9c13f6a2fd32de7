"""The judge: a model asked, for each stored shadow pair, whether the cheaper answer was
acceptable for the request (``gearshift judge``; ``docs/learning.md``).

- **Pairwise, both orders.** Each pair is put to the judge twice: the cheaper answer first,
  then second. A label is written only when both orders agree on the cheaper answer
  (``agree``); when they disagree (``split``: the judge's position bias, or a pair it cannot
  tell apart) the row stays unlabeled, and so does a reply that does not parse (``invalid``)
  and a pair where both answers fail (``both_fail``: the frontier would not have helped).
- **The rubric** asks whether each answer is acceptable for the request (correct, does what
  was asked, complete enough), not which is longer, and which is better.
- **Strict verdicts.** The reply must be one JSON object with exactly the fields of
  ``Verdict`` (a single code fence around it is tolerated); anything else is ``invalid``.
- **Budgeted and accounted.** Every call goes through the router with the judge model pinned
  (fallbacks and breakers apply). Before it, what judging spent today (every call's cost is
  kept in the store, whichever process made it) plus the estimates of the calls under way
  must be under ``[learn] judge_budget_daily_usd``. Each labeled row keeps what judging it
  cost (``judge_cost_usd``). A call that fails, or an empty reply, leaves the row to be
  tried again; after three failures it is left.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
import orjson

from gearshift.errors import (
    CredentialsRejected,
    GearshiftError,
    ModelNotFound,
    Rejected,
    RequestError,
    Unsupported,
)
from gearshift.governance.governor import periods
from gearshift.inbound.chat import ChatRequest, content_text, parse_chat
from gearshift.learn.outcomes import Outcome, OutcomeStore
from gearshift.providers import Completion
from gearshift.routing import policy
from gearshift.serve import relay
from gearshift.serve.exchange import Exchange

log = logging.getLogger("gearshift.learn")

RUBRIC = """\
You review answers for an AI service. You will see a request that a user sent to an AI \
assistant, between <request> tags, and two answers to it, between <answer_1> and <answer_2> \
tags.

For each answer, decide whether it is acceptable: a user who got only that answer would be \
served as well as the request needs. An acceptable answer is correct, does what the request \
asks (its task, format, language and constraints) and is complete enough for its purpose. \
Do not judge by length: a short answer that does the job is acceptable; a long one that gets \
something wrong is not. The order of the answers means nothing. Then say which answer is \
better, or "same" when neither is clearly better.

Reply with exactly one JSON object and nothing else:
{"acceptable_1": true or false, "acceptable_2": true or false, "better": "1" or "2" or \
"same", "reason": "one or two sentences"}"""

MAX_TEXT = 12_000  # characters of each message and answer shown to the judge
MAX_REASON = 600  # characters of the judge's reasons kept with a label


class Verdict(msgspec.Struct, forbid_unknown_fields=True):
    acceptable_1: bool
    acceptable_2: bool
    better: Literal["1", "2", "same"]
    reason: str


class Unparsed(ValueError):
    """The judge's reply is not a verdict."""


_DECODER = msgspec.json.Decoder(Verdict)


def parse_verdict(text: str) -> Verdict:
    """The verdict in ``text``: one JSON object with ``Verdict``'s fields and nothing else
    (one surrounding Markdown code fence is allowed). ``Unparsed`` otherwise."""
    body = text.strip()
    if body.startswith("```"):
        first, _, rest = body.partition("\n")
        if first.strip() not in ("```", "```json") or not rest.rstrip().endswith("```"):
            raise Unparsed("an unclosed or unknown code fence")
        body = rest.rstrip()[:-3].strip()
    try:
        return _DECODER.decode(body)
    except msgspec.ValidationError as exc:
        raise Unparsed(str(exc)) from None
    except msgspec.DecodeError:
        raise Unparsed("not a single JSON object") from None


def render_request(request: dict[str, Any]) -> str:
    """The stored request as the judge reads it: each message's role and text."""
    out = []
    for message in request.get("messages") or []:
        if not isinstance(message, dict):
            continue
        text = content_text(message.get("content"))[0]
        if message.get("tool_calls"):
            text += "\n" + orjson.dumps(message["tool_calls"]).decode()
        out.append(f"[{message.get('role', 'user')}]\n{text[:MAX_TEXT]}")
    return "\n\n".join(out)


def judge_messages(request: dict[str, Any], answer_1: str, answer_2: str) -> list[dict[str, str]]:
    user = (
        f"<request>\n{render_request(request)}\n</request>\n"
        f"<answer_1>\n{answer_1[:MAX_TEXT]}\n</answer_1>\n"
        f"<answer_2>\n{answer_2[:MAX_TEXT]}\n</answer_2>"
    )
    return [{"role": "system", "content": RUBRIC}, {"role": "user", "content": user}]


def combine(cheap_first: Verdict, cheap_second: Verdict) -> tuple[bool | None, str]:
    """The label from both orders and its verdict name: the cheaper answer sufficed when
    both orders accept it (``agree``); it did not when both reject it and accept the
    stronger one (``agree``). When the orders disagree (``split``), or both answers fail
    (``both_fail``: the frontier would not have helped), there is no label."""
    cheap_ok = (cheap_first.acceptable_1, cheap_second.acceptable_2)
    strong_ok = (cheap_first.acceptable_2, cheap_second.acceptable_1)
    if cheap_ok == (True, True):
        return True, "agree"
    if cheap_ok == (False, False):
        return (False, "agree") if strong_ok == (True, True) else (None, "both_fail")
    return None, "split"


@dataclass(slots=True)
class Tally:
    """What a run of the judge did."""

    judged: int = 0
    suffices: int = 0  # both orders: the cheaper answer was acceptable
    lost: int = 0  # both orders: it was not
    split: int = 0
    invalid: int = 0
    failed: int = 0  # a judge call failed (the row is tried again next run)
    skipped: int = 0  # pairs cut short by the budget
    left: int = 0  # rows not started when the run stopped
    stopped: str | None = None  # why the run stopped before the end
    cost_usd: float = 0.0
    errors: list[str] = field(default_factory=list)

    def doc(self) -> dict[str, Any]:
        return {
            "judged": self.judged, "suffices": self.suffices, "lost": self.lost,
            "split": self.split, "invalid": self.invalid, "failed": self.failed,
            "skipped_for_budget": self.skipped, "left": self.left, "stopped": self.stopped,
            "cost_usd": round(self.cost_usd, 6),
        }  # fmt: skip


class OutOfBudget(Exception):
    pass


class JudgeDown(Exception):
    """The judge cannot be reached or refuses gearshift itself: the run stops, no row is
    blamed."""


class EmptyReply(GearshiftError):
    """The judge's reply has no text (a reasoning judge out of tokens)."""


def _row_fault(error: GearshiftError) -> bool:
    """Whether a failed judge call is the row's doing (too long a request, an empty reply),
    not the judge's (unreachable, overloaded, its key or model wrong)."""
    if isinstance(error, CredentialsRejected | ModelNotFound):
        return False
    return isinstance(error, EmptyReply | RequestError | Rejected | Unsupported)


class Judge:
    """Puts stored pairs to ``model`` through ``run`` (``Router.run``) under a daily budget
    kept in the store (every judge call's cost, whichever process made it: the server's
    rounds and the command see the same spend)."""

    def __init__(
        self,
        store: OutcomeStore,
        run: Callable[[ChatRequest, Exchange], Awaitable[Any]],
        routing: policy.Policy,
        model: str,
        budget_daily_usd: float,
        *,
        max_tokens: int = 4096,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._max_tokens = max_tokens  # room for a reasoning judge; the verdict is short
        self._run = run
        self._routing = routing
        self._model = model
        self._budget = budget_daily_usd
        self._wall = wall
        self._held = 0.0  # estimates of this process's calls under way

    async def _admit(self, estimate: float) -> None:
        (_, left), _ = periods(self._wall())
        today = self._wall() + left - 86_400
        spent = await self._store.run(self._store.judge_spent_since, today)
        if spent is None or spent + self._held >= self._budget:
            raise OutOfBudget
        self._held += estimate

    async def ask(self, outcome: Outcome, cheap_first: bool) -> tuple[Verdict | None, float, str]:
        """One order: the verdict (None: unparsed), the call's cost, the raw reply."""
        cheap, strong = _cheap_and_strong(outcome)
        first, second = (cheap, strong) if cheap_first else (strong, cheap)
        body = {
            "model": self._model,
            "messages": judge_messages(outcome.request, first, second),
            "max_tokens": self._max_tokens,
            "temperature": 0,
        }
        chat = parse_chat(orjson.dumps(body))
        ex = Exchange(f"judge/{outcome.request_id}/{int(cheap_first)}", time.perf_counter())
        ex.requested = self._model
        ex.plan = plan = policy.plan(chat, self._routing, {"x-gearshift-route": "pin"})
        await self._admit(plan.est_cost_usd)
        cost = 0.0
        try:
            answer = await self._run(chat, ex)
            if not isinstance(answer, Completion):  # (never: the call is not streamed)
                raise GearshiftError("the judge answered with a stream")
            relay.whole(ex, chat, answer)
            cost = ex.account.cost_usd if ex.account is not None else 0.0
        finally:
            if cost:
                await self._store.run(self._store.judge_spent, cost)
            self._held -= plan.est_cost_usd  # (after the ledger has the cost)
        text = _answer_text(answer.body)
        if not text.strip():  # (a reasoning judge out of tokens): tried again later
            raise EmptyReply("the judge's reply is empty")
        try:
            return parse_verdict(text), cost, text
        except Unparsed:
            return None, cost, text

    async def pair(self, outcome: Outcome, tally: Tally) -> None:
        """Both orders for one row, and its label (or verdict) into the store."""
        results: list[tuple[Verdict | None, float, str]] = []
        try:
            for cheap_first in (True, False):
                results.append(await self.ask(outcome, cheap_first))
        except OutOfBudget:
            tally.skipped += 1
            tally.cost_usd += sum(r[1] for r in results)
            raise
        except GearshiftError as exc:
            tally.failed += 1
            tally.cost_usd += sum(r[1] for r in results)
            tally.errors.append(f"{outcome.request_id}: {exc}")
            if not _row_fault(exc):  # the judge is down or misconfigured: not this row's
                raise JudgeDown(str(exc)) from None
            await self._store.run(self._store.judge_failed, outcome.request_id)
            return
        (v1, c1, t1), (v2, c2, t2) = results
        cost = c1 + c2
        tally.cost_usd += cost
        tally.judged += 1
        if v1 is None or v2 is None:
            tally.invalid += 1
            bad = t1 if v1 is None else t2
            label, verdict = None, "invalid"
            reason = "the judge's reply is not a verdict: " + bad[:200]
        else:
            label, verdict = combine(v1, v2)
            reason = _reason(v1, v2, label, verdict)
            if label is None:
                tally.split += 1
            elif label:
                tally.suffices += 1
            else:
                tally.lost += 1
        await self._store.run(
            lambda: self._store.label_now(
                outcome.request_id, label, reason, verdict=verdict, cost_usd=cost
            )
        )

    async def run_all(
        self,
        outcomes: list[Outcome],
        concurrency: int = 4,
        keep: Callable[[], Awaitable[bool]] | None = None,
    ) -> Tally:
        """Every row in ``outcomes``, ``concurrency`` at a time; stops taking new rows once
        the budget is spent, or when ``keep()`` (asked before each row: the lease still
        held) says no."""
        tally = Tally()
        queue = list(reversed(outcomes))
        stop = asyncio.Event()

        async def worker() -> None:
            while queue and not stop.is_set():
                if keep is not None and not await keep():
                    tally.stopped = tally.stopped or "another process took the judge lease"
                    stop.set()
                    break
                if not queue:  # (another worker took the last while this one waited)
                    break
                outcome = queue.pop()
                try:
                    await self.pair(outcome, tally)
                except OutOfBudget:
                    tally.stopped = tally.stopped or "the day's judge budget is spent"
                    stop.set()
                except JudgeDown as exc:
                    tally.stopped = tally.stopped or f"the judge is unavailable: {exc}"
                    stop.set()

        await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
        tally.left += len(queue)
        return tally


def _cheap_and_strong(o: Outcome) -> tuple[str, str]:
    assert o.answer is not None
    assert o.reference_answer is not None
    return (o.answer, o.reference_answer) if o.served_is_weak else (o.reference_answer, o.answer)


def _answer_text(body: bytes) -> str:
    try:
        content = orjson.loads(body)["choices"][0]["message"]["content"]
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        return ""
    return content if isinstance(content, str) else ""


def _reason(cheap_first: Verdict, cheap_second: Verdict, label: bool | None, verdict: str) -> str:
    if verdict == "split":
        head = "split verdict (the orders disagree; no label)"
    elif verdict == "both_fail":
        head = "neither answer was acceptable (no label: the frontier did not help)"
    else:
        head = "the cheaper answer " + ("sufficed" if label else "did not suffice")
    text = f"{head}: {cheap_first.reason.strip()} / {cheap_second.reason.strip()}"
    return text[:MAX_REASON]


__all__ = [
    "RUBRIC", "Judge", "Tally", "Unparsed", "Verdict", "combine", "judge_messages",
    "parse_verdict", "render_request",
]  # fmt: skip
