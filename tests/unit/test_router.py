"""The attempt loop on its own: a scripted transport answers, a fake clock keeps the time.

No server, no socket, no real sleep: each upstream call pops the next step of its
provider's script (an answer, an error status, a stream of events, a wait on the fake
clock, a transport failure), and the loop's back-off, Retry-After and deadline all run on
the ``FakeClock``: a test that "waits" 30 seconds takes microseconds.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

import orjson
import pytest
from conftest import FakeClock

from gearshift.config import Config, Model, Provider, decode, resolve
from gearshift.errors import (
    CircuitOpen,
    ConnectError,
    DeadlineExceeded,
    RateLimited,
    Rejected,
    Unavailable,
    UpstreamError,
)
from gearshift.inbound.chat import ChatRequest, parse_chat
from gearshift.providers import REGISTRY, Completion, Outbound
from gearshift.routing.policy import Plan
from gearshift.serve.breaker import OPEN, Breakers
from gearshift.serve.exchange import Exchange
from gearshift.serve.relay import Relay
from gearshift.serve.router import Router

KEY = "sk-scripted-provider-key-0123456789"


@dataclass
class Step:
    """What one upstream call does. ``wait``: seconds on the fake clock before the answer
    (a hung upstream: more than the deadline); ``fail``: raised instead of answering."""

    status: int = 200
    body: object = None
    events: list[bytes] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    wait: float = 0.0
    fail: UpstreamError | None = None


def ok(text: str = "hi") -> Step:
    return Step(
        body={
            "id": "c1",
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        }
    )


def error(status: int, kind: str = "server_error", **headers: str) -> Step:
    body = {"error": {"message": f"upstream said {status} ({KEY})", "type": kind}}
    return Step(status=status, body=body, headers=headers)


def event(doc: object) -> bytes:
    return b"data: " + orjson.dumps(doc) + b"\n\n"


DELTA = {"index": 0, "delta": {"content": "hi"}}
CHUNK = event({"id": "c", "object": "chat.completion.chunk", "choices": [DELTA]})
DONE = b"data: [DONE]\n\n"


class ScriptedReply:
    def __init__(self, step: Step) -> None:
        self.status = step.status
        self.headers: Mapping[str, str] = step.headers
        self._step = step
        self.closed = False

    async def read(self) -> bytes:
        return orjson.dumps(self._step.body)

    async def chunks(self) -> AsyncIterator[bytes]:
        for piece in self._step.events or ():
            yield piece

    def close(self) -> None:
        self.closed = True


class ScriptedTransport:
    """Each provider's calls pop its script; every call is recorded."""

    def __init__(self, clock: FakeClock, **scripts: list[Step]) -> None:
        self.clock = clock
        self.scripts = {name: list(steps) for name, steps in scripts.items()}
        self.calls: list[str] = []
        self.replies: list[ScriptedReply] = []

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def send(
        self,
        provider: Provider,
        out: Outbound,
        *,
        stream: bool,
        total: float = math.inf,
        first_byte: float | None = None,
    ) -> ScriptedReply:
        self.calls.append(provider.name)
        step = self.scripts[provider.name].pop(0)
        if step.wait:
            await self.clock.sleep(step.wait)
        if step.fail is not None:
            raise step.fail
        reply = ScriptedReply(step)
        self.replies.append(reply)
        return reply


def config(reliability: str = "") -> Config:
    """Three OpenAI-format providers, one frontier model each, cheapest first."""
    toml = "use_default_catalog = false\n"
    if reliability:
        toml += f"[reliability]\n{reliability}\n"
    for name, price in (("a", 1), ("b", 2), ("c", 3)):
        toml += (
            f'[[providers]]\nname = "{name}"\nkind = "openai"\n'
            f'base_url = "http://127.0.0.1:9/v1"\napi_key = "env:KEY"\n'
            f'[[models]]\nname = "m-{name}"\nprovider = "{name}"\ntier = "frontier"\n'
            f"price_in = {price}\nprice_out = {price}\n"
        )
    raw = decode(toml.encode(), source="router.toml")
    return resolve(raw, source="router.toml", environ={"KEY": KEY}, kinds=REGISTRY.keys())


def models(cfg: Config, *names: str) -> list[Model]:
    return [cfg.models[f"m-{n}"] for n in names]


def chat(stream: bool = False) -> ChatRequest:
    body = {"model": "auto", "messages": [{"role": "user", "content": "hello"}]}
    if stream:
        body["stream"] = True
    return parse_chat(orjson.dumps(body))


def exchange(cfg: Config, *targets: str, budget: float = math.inf) -> Exchange:
    ex = Exchange("req-1", time.perf_counter(), budget=budget)
    ex.plan = Plan("auto", "frontier", models(cfg, *targets), "test", baseline=models(cfg, "c")[0])
    return ex


def router(cfg: Config, transport: ScriptedTransport, seed: int = 1) -> Router:
    clock = transport.clock
    breakers = Breakers(cfg.reliability.breaker, clock)
    rng = random.Random(seed)
    return Router(transport, cfg.reliability, clock=clock, rng=rng, breakers=breakers)


async def test_a_failure_falls_back_to_the_next_target_at_once() -> None:
    cfg, clock = config(), FakeClock()
    transport = ScriptedTransport(clock, a=[error(503)], b=[ok("from b")])
    ex = exchange(cfg, "a", "b", "c")
    answer = await router(cfg, transport).run(chat(), ex)
    assert isinstance(answer, Completion)
    assert orjson.loads(answer.body)["choices"][0]["message"]["content"] == "from b"
    assert transport.calls == ["a", "b"]
    assert ex.attempt_log() == "m-a@a:unavailable/503, m-b@b:ok"
    assert ex.served_by is not None
    assert ex.served_by.name == "m-b"
    assert clock.sleeps == [], "a fallback within a round does not wait"
    assert all(r.closed for r in transport.replies)


async def test_rounds_are_separated_by_a_jittered_back_off() -> None:
    cfg, clock = config("max_attempts = 5\nbackoff_base = 0.5\nbackoff_max = 8"), FakeClock()
    transport = ScriptedTransport(clock, a=[error(500), error(500), ok()], b=[error(502)] * 2)
    ex = exchange(cfg, "a", "b")
    await router(cfg, transport, seed=3).run(chat(), ex)
    assert transport.calls == ["a", "b", "a", "b", "a"]
    assert ex.calls == 5
    assert ex.served_by is not None
    # round 0 → 1: uniform(0, 0.5); round 1 → 2: uniform(0, 1.0); jittered, not fixed
    assert len(clock.sleeps) == 2
    assert 0 <= clock.sleeps[0] <= 0.5
    assert 0 <= clock.sleeps[1] <= 1.0
    assert clock.sleeps[0] != clock.sleeps[1]


async def test_the_attempt_budget_bounds_the_calls() -> None:
    cfg, clock = config("max_attempts = 3"), FakeClock()
    transport = ScriptedTransport(clock, a=[error(500)] * 5, b=[error(500)] * 5)
    ex = exchange(cfg, "a", "b")
    with pytest.raises(Unavailable):
        await router(cfg, transport).run(chat(), ex)
    assert transport.calls == ["a", "b", "a"]
    assert ex.served_by is None


async def test_a_short_retry_after_is_waited_out_on_the_clock() -> None:
    cfg, clock = config("retry_after_max = 5"), FakeClock()
    limited = error(429, "rate_limit_error", **{"retry-after": "2"})
    transport = ScriptedTransport(clock, a=[limited, ok()])
    ex = exchange(cfg, "a")
    await router(cfg, transport).run(chat(), ex)
    assert transport.calls == ["a", "a"]
    assert len(clock.sleeps) == 1
    assert clock.sleeps[0] >= 2.0
    assert ex.attempt_log() == "m-a@a:rate_limited/429, m-a@a:ok"


async def test_a_long_retry_after_is_returned_not_waited() -> None:
    cfg, clock = config("retry_after_max = 5"), FakeClock()
    transport = ScriptedTransport(clock, a=[error(429, **{"retry-after": "30"})])
    ex = exchange(cfg, "a")
    with pytest.raises(RateLimited) as caught:
        await router(cfg, transport).run(chat(), ex)
    assert caught.value.retry_after == 30
    assert caught.value.headers() == {"retry-after": "30"}
    assert clock.sleeps == []


async def test_the_deadline_runs_on_the_injected_clock() -> None:
    """A hung upstream (it answers after 100 fake seconds) against a 10-second deadline:
    the loop gives up at exactly 10 fake seconds, in no real time."""
    cfg, clock = config("deadline = 10"), FakeClock()
    transport = ScriptedTransport(clock, a=[Step(wait=100.0, body=ok().body)])
    ex = exchange(cfg, "a", "b")
    began, real = clock.now(), time.perf_counter()
    with pytest.raises(DeadlineExceeded):
        await router(cfg, transport).run(chat(), ex)
    assert clock.now() - began == pytest.approx(10.0)
    assert time.perf_counter() - real < 1.0
    assert ex.attempt_log() == "m-a@a:deadline"
    assert transport.calls == ["a"], "nothing is tried after the deadline"


async def test_a_client_budget_shortens_the_deadline() -> None:
    cfg, clock = config("deadline = 600"), FakeClock()
    transport = ScriptedTransport(clock, a=[Step(wait=100.0, body=ok().body)])
    ex = exchange(cfg, "a", budget=2.5)
    began = clock.now()
    with pytest.raises(DeadlineExceeded):
        await router(cfg, transport).run(chat(), ex)
    assert clock.now() - began == pytest.approx(2.5)


async def test_an_open_breaker_is_skipped_without_a_call() -> None:
    cfg, clock = config("breaker = { failures = 1, cooldown = 30 }"), FakeClock()
    transport = ScriptedTransport(clock, a=[error(500)], b=[ok(), ok()])
    r = router(cfg, transport)
    await r.run(chat(), exchange(cfg, "a", "b"))
    assert r.breakers.of(models(cfg, "a")[0]).state == OPEN
    ex = exchange(cfg, "a", "b")
    await r.run(chat(), ex)
    assert transport.calls == ["a", "b", "b"], "the open breaker's model is not called"
    assert ex.attempt_log() == "m-a@a:open, m-b@b:ok"
    assert ex.calls == 1


async def test_every_breaker_open_is_circuit_open_with_retry_after() -> None:
    cfg, clock = config("breaker = { failures = 1, cooldown = 15 }"), FakeClock()
    transport = ScriptedTransport(clock, a=[error(500)])
    r = router(cfg, transport)
    with pytest.raises(Unavailable):
        await r.run(chat(), exchange(cfg, "a"))
    clock.advance(3.0)
    with pytest.raises(CircuitOpen) as caught:
        await r.run(chat(), exchange(cfg, "a"))
    assert caught.value.headers() == {"retry-after": "12"}
    assert transport.calls == ["a"]


async def test_a_client_error_is_passed_on_without_a_fallback() -> None:
    cfg, clock = config(), FakeClock()
    transport = ScriptedTransport(clock, a=[error(400, "invalid_request_error")], b=[ok()])
    ex = exchange(cfg, "a", "b")
    with pytest.raises(Rejected) as caught:
        await router(cfg, transport).run(chat(), ex)
    assert caught.value.status == 400
    assert transport.calls == ["a"]


async def test_a_transport_failure_moves_on() -> None:
    cfg, clock = config(), FakeClock()
    refused = ConnectError("Cannot connect to provider 'a'.", provider="a")
    transport = ScriptedTransport(clock, a=[Step(fail=refused)], b=[ok()])
    ex = exchange(cfg, "a", "b")
    await router(cfg, transport).run(chat(), ex)
    assert ex.attempt_log() == "m-a@a:connect, m-b@b:ok"


async def test_upstream_errors_are_scrubbed_of_the_provider_key() -> None:
    cfg, clock = config("max_attempts = 1"), FakeClock()
    transport = ScriptedTransport(clock, a=[error(400, "invalid_request_error")])
    with pytest.raises(Rejected) as caught:
        await router(cfg, transport).run(chat(), exchange(cfg, "a"))
    assert KEY not in caught.value.message
    assert "[redacted]" in caught.value.message


# ------------------------------------------------------------ streams: in-band errors


def streamed(*events: bytes, **headers: str) -> Step:
    return Step(events=list(events), headers={"content-type": "text/event-stream", **headers})


async def test_a_streamed_429_keeps_its_class_and_retry_after() -> None:
    """An error as the first event of a 200 stream is a rate limit like any other: its
    Retry-After (from the stream's headers) is waited out, the same model then serves."""
    cfg, clock = config("retry_after_max = 5"), FakeClock()
    limited = event({"error": {"message": "slow down", "type": "rate_limit_error"}})
    transport = ScriptedTransport(
        clock, a=[streamed(limited, **{"retry-after": "3"}), streamed(CHUNK, DONE)]
    )
    ex = exchange(cfg, "a")
    answer = await router(cfg, transport).run(chat(stream=True), ex)
    assert isinstance(answer, Relay)
    assert ex.attempt_log() == "m-a@a:rate_limited/429, m-a@a:ok"
    assert clock.sleeps
    assert clock.sleeps[0] >= 3.0
    answer.close()


async def test_a_streamed_429_that_is_the_last_word_says_retry_after() -> None:
    cfg, clock = config("max_attempts = 1"), FakeClock()
    limited = event({"error": {"message": "slow down", "type": "rate_limit_error"}})
    transport = ScriptedTransport(clock, a=[streamed(limited, **{"retry-after": "7"})])
    with pytest.raises(RateLimited) as caught:
        await router(cfg, transport).run(chat(stream=True), exchange(cfg, "a"))
    assert caught.value.retry_after == 7
    assert caught.value.status == 429


async def test_a_streamed_400_is_not_retried() -> None:
    cfg, clock = config(), FakeClock()
    bad = event({"error": {"message": "bad request", "type": "invalid_request_error"}})
    transport = ScriptedTransport(clock, a=[streamed(bad)], b=[streamed(CHUNK, DONE)])
    ex = exchange(cfg, "a", "b")
    with pytest.raises(Rejected) as caught:
        await router(cfg, transport).run(chat(stream=True), ex)
    assert caught.value.status == 400
    assert transport.calls == ["a"], "a client fault is not sent to every target"
    assert transport.replies[0].closed


async def test_a_streamed_server_error_falls_back() -> None:
    cfg, clock = config(), FakeClock()
    boom = event({"error": {"message": "boom", "type": "server_error"}})
    transport = ScriptedTransport(clock, a=[streamed(boom)], b=[streamed(CHUNK, DONE)])
    ex = exchange(cfg, "a", "b")
    answer = await router(cfg, transport).run(chat(stream=True), ex)
    assert isinstance(answer, Relay)
    pieces = [p async for p in answer.pieces()]
    answer.close()
    assert b"".join(pieces) == CHUNK + DONE
    assert ex.attempt_log() == "m-a@a:unavailable/500, m-b@b:ok"
    assert ex.status == 200
    assert ex.account is not None


async def test_a_stream_cut_after_its_first_byte_ends_with_an_error_event() -> None:
    cfg, clock = config(), FakeClock()
    transport = ScriptedTransport(clock, a=[streamed(CHUNK)])
    ex = exchange(cfg, "a")
    r = router(cfg, transport)
    answer = await r.run(chat(stream=True), ex)
    assert isinstance(answer, Relay)
    pieces = [p async for p in answer.pieces()]
    answer.close()
    assert pieces[0] == CHUNK
    last = orjson.loads(pieces[-1][len(b"data: ") :])
    assert last["error"]["code"] == "stream_truncated"
    assert ex.status == "stream_error"
    assert r.breakers.of(models(cfg, "a")[0]).consecutive == 1, "the cut counts"


async def test_an_abandoned_attempt_moves_on_when_its_breaker_opens() -> None:
    """Two requests wait on a hung deployment; when the first one's failure opens the
    breaker, the other is cut at once and served by the next target."""
    cfg, clock = config("breaker = { failures = 1, cooldown = 30 }"), FakeClock()
    gate, sent = asyncio.Event(), asyncio.Event()

    class Gated(ScriptedTransport):
        async def send(self, provider: Provider, out: Outbound, **kw: object) -> ScriptedReply:
            if provider.name == "a" and "a" not in self.calls:
                self.calls.append("a")
                sent.set()
                await gate.wait()  # hung: never set
                raise AssertionError("never reached: abandoned")
            return await super().send(provider, out, **kw)  # type: ignore[arg-type]

    transport = Gated(clock, a=[error(500)], b=[ok("spare")])
    r = router(cfg, transport)
    hung = exchange(cfg, "a", "b")
    waiting = asyncio.create_task(r.run(chat(), hung))
    await sent.wait()
    first = exchange(cfg, "a")
    with pytest.raises(Unavailable):
        await r.run(chat(), first)  # fails, opens the breaker
    answer = await waiting
    assert isinstance(answer, Completion)
    assert hung.attempt_log() == "m-a@a:abandoned, m-b@b:ok"
    assert transport.calls == ["a", "a", "b"]


async def test_the_usage_chunk_carries_the_cost_even_on_a_content_chunk() -> None:
    """Some servers put the usage on the last content chunk instead of a usage-only one:
    the client who asked for usage still gets gearshift's cost object on it."""
    cfg, clock = config(), FakeClock()
    usage = {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
    last = event({"id": "c", "object": "chat.completion.chunk", "choices": [DELTA], "usage": usage})
    transport = ScriptedTransport(clock, a=[streamed(CHUNK, last, DONE)])
    body = {"model": "auto", "messages": [{"role": "user", "content": "hello"}], "stream": True}
    body["stream_options"] = {"include_usage": True}
    ex = exchange(cfg, "a")
    answer = await router(cfg, transport).run(parse_chat(orjson.dumps(body)), ex)
    assert isinstance(answer, Relay)
    pieces = b"".join([p async for p in answer.pieces()])
    answer.close()
    docs = [orjson.loads(e[6:]) for e in pieces.split(b"\n\n") if e.startswith(b"data: {")]
    assert docs[-1]["usage"] == usage
    assert docs[-1]["choices"] == [DELTA], "the content rides along, unchanged"
    assert docs[-1]["gearshift"]["model"] == "m-a"
    assert docs[-1]["gearshift"]["cost_usd"] == pytest.approx((10 * 1 + 2 * 1) / 1e6)
    assert docs[-1]["gearshift"]["attempts"] == 1
    assert ex.account is not None
    assert ex.account.tokens.prompt == 10


# ---------------------------------------------------------------- a model that is gone


def gone(model: str = "m-a", code: str | None = None) -> Step:
    error = {"message": f"model: {model}", "type": "not_found_error"}
    if code:
        error["code"] = code
    return Step(status=404, body={"error": error})


async def test_a_404_naming_the_model_withdraws_it_and_the_next_model_answers() -> None:
    cfg, clock = config(), FakeClock()
    transport = ScriptedTransport(clock, a=[gone()], b=[ok(), ok()])
    r = router(cfg, transport)
    ex = exchange(cfg, "a", "b")
    await r.run(chat(), ex)
    assert ex.attempt_log() == "m-a@a:withdrawn/404, m-b@b:ok"
    assert r.breakers.states()["a/m-a"] == "withdrawn"
    ex = exchange(cfg, "a", "b")
    await r.run(chat(), ex)
    assert transport.calls == ["a", "b", "b"]


async def test_a_404_about_something_else_is_the_requests_own_and_passed_on() -> None:
    """A cached content or a file the client named does not exist: not the model's fault."""
    cfg, clock = config(), FakeClock()
    transport = ScriptedTransport(clock, a=[gone("cachedContents/abc")], b=[ok()])
    r = router(cfg, transport)
    ex = exchange(cfg, "a", "b")
    with pytest.raises(Rejected) as info:
        await r.run(chat(), ex)
    assert info.value.status == 404
    assert transport.calls == ["a"]
    assert r.breakers.states()["a/m-a"] == "closed"


async def test_a_pinned_model_gets_the_providers_404_even_once_withdrawn() -> None:
    cfg, clock = config(), FakeClock()
    transport = ScriptedTransport(clock, a=[gone(code="model_not_found")] * 2, b=[ok()])
    r = router(cfg, transport)
    await r.run(chat(), exchange(cfg, "a", "b"))  # withdrawn by an auto request
    ex = exchange(cfg, "a")
    assert ex.plan is not None
    ex.plan.reason = "pinned"
    with pytest.raises(Rejected) as info:
        await r.run(chat(), ex)
    assert info.value.status == 404
    assert transport.calls == ["a", "b", "a"]
