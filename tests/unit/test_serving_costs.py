"""What the serving path does to stay cheap per request, checked for what it must keep: ids
that stay unique (across processes too), and a collector tuned without losing collection."""

from __future__ import annotations

import gc
import multiprocessing
import re
from collections.abc import Iterator

import pytest

from gearshift.serve.ids import new_id
from gearshift.serve.server import GC_YOUNG_THRESHOLD, quiet_gc


def test_ids_are_32_hex_characters_and_never_repeat() -> None:
    ids = [new_id() for _ in range(10_000)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert len(set(ids)) == len(ids)


def _child_ids(conn: multiprocessing.connection.Connection) -> None:
    conn.send([new_id() for _ in range(3)])
    conn.close()


def test_a_forked_worker_draws_its_own_prefix() -> None:
    before = new_id()  # this process's prefix exists before the fork
    parent, child = multiprocessing.get_context("fork").Pipe()
    proc = multiprocessing.get_context("fork").Process(target=_child_ids, args=(child,))
    proc.start()
    theirs = parent.recv()
    proc.join(10)
    assert proc.exitcode == 0
    assert {i[:16] for i in theirs} != {before[:16]}
    assert len({*theirs, before, new_id()}) == 5


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored_gc")
def test_quiet_gc_freezes_start_up_objects_and_collects_less_often() -> None:
    _, older, oldest = gc.get_threshold()
    quiet_gc()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, older, oldest)

    class Cycle:
        def __init__(self) -> None:
            self.me = self

    Cycle()  # garbage in a cycle is still collected
    assert gc.collect() >= 1
