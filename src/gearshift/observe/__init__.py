"""Observation: what a finished request leaves behind, as a list of plain sinks.

Each sink reads the request's ``Exchange`` and records its part: ``Metrics`` (Prometheus),
``Stats`` (``/gearshift/stats`` and the status page), ``AccessLog`` (one JSON line per
request). ``Observation`` walks them in order, as structlog walks its processors; the app
builds the list in ``create_app`` and calls ``finish`` just after the answer is handed to
aiohttp, so none of it sits on the request's path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from gearshift.serve.exchange import Exchange


class Sink(Protocol):
    def begin(self, ex: Exchange) -> None:
        """A request arrived (e.g. the in-flight gauge)."""
        ...

    def finish(self, ex: Exchange) -> None:
        """The request is over: record it."""
        ...


class Observation:
    """The app's sinks, walked in order for every request."""

    __slots__ = ("sinks",)

    def __init__(self, sinks: Sequence[Sink]) -> None:
        self.sinks = tuple(sinks)

    def begin(self, ex: Exchange) -> None:
        for sink in self.sinks:
            sink.begin(ex)

    def finish(self, ex: Exchange) -> None:
        for sink in self.sinks:
            sink.finish(ex)


__all__ = ["Observation", "Sink"]
