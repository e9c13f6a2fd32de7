"""The access-log sink: batched writes, each within PIPE_BUF and made of whole lines."""

from __future__ import annotations

import asyncio
import io

from gearshift.observe.access import BatchWriter


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
