"""The observation sinks: the access log's batched writes (each within PIPE_BUF, whole
lines), and the metrics tally (applied in batches, at a scrape or within the interval)."""

from __future__ import annotations

import asyncio
import io
import time

from gearshift.config import Config, load
from gearshift.observe.access import BatchWriter
from gearshift.observe.metrics import Metrics
from gearshift.serve.exchange import Exchange


class Recorder(io.RawIOBase):
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.writes.append(bytes(data))
        return len(data)


async def test_lines_are_batched_whole_and_within_pipe_buf() -> None:
    out = Recorder()
    sink = BatchWriter(out, interval=0.01)  # type: ignore[arg-type]
    lines = [b'{"n": %d, "pad": "%s"}' % (i, b"x" * 100) for i in range(200)]
    for line in lines:
        sink.write(line)
    assert len(out.writes) < 20  # batched, not one write per line
    assert all(len(w) <= 4096 for w in out.writes)
    await asyncio.sleep(0.05)  # the timer flushes the rest
    assert all(w.endswith(b"\n") for w in out.writes)  # never half a line
    assert b"".join(out.writes).splitlines() == lines


async def test_a_long_line_goes_out_on_its_own_and_flush_empties_the_buffer() -> None:
    out = Recorder()
    sink = BatchWriter(out)  # type: ignore[arg-type]
    sink.write(b"short")
    sink.write(b"y" * 5000)
    assert out.writes == [b"short\n", b"y" * 5000 + b"\n"]
    sink.write(b"last")
    sink.flush()
    assert out.writes[-1] == b"last\n"


# ---------------------------------------------------------------- the metrics tally


def _config() -> Config:
    return load(None, environ={"OPENAI_API_KEY": "sk-x"})


def _finished(status: int = 200) -> Exchange:
    ex = Exchange("req-1", time.perf_counter())
    ex.requested, ex.status, ex.decision_s = "auto", status, 2e-5
    return ex


def _requests(metrics: Metrics, status: str = "200") -> float:
    labels = {
        "requested_model": "auto", "model": "none", "provider": "none", "tier": "-",
        "status": status,
    }  # fmt: skip
    return metrics.registry.get_sample_value("gearshift_requests_total", labels) or 0.0


async def test_requests_are_tallied_then_flushed_within_the_interval() -> None:
    metrics = Metrics(_config(), flush_interval=0.05)
    flushed = asyncio.Event()
    flush = metrics.flush

    def flush_and_tell() -> None:
        flush()
        flushed.set()

    metrics.flush = flush_and_tell  # type: ignore[method-assign]
    for _ in range(3):
        metrics.begin(ex := _finished())
        metrics.finish(ex)
    metrics.begin(_finished())  # still in flight
    # Not yet in the Prometheus objects: one batch, later.
    assert _requests(metrics) == 0
    async with asyncio.timeout(5):
        await flushed.wait()
    assert _requests(metrics) == 3
    assert metrics.registry.get_sample_value("gearshift_inflight_requests") == 1
    assert metrics.registry.get_sample_value("gearshift_decision_seconds_count") == 3


async def test_a_scrape_flushes_the_tally_at_once() -> None:
    metrics = Metrics(_config(), flush_interval=3600)
    metrics.begin(ex := _finished(502))
    metrics.finish(ex)
    text = metrics.exposition().decode()
    assert 'status="502",tier="-"} 1.0' in text
    assert _requests(metrics, "502") == 1
    metrics.begin(ex := _finished(502))
    metrics.finish(ex)
    metrics.flush()
    assert _requests(metrics, "502") == 2  # added to, not replaced
