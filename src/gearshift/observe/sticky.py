"""The sticky-routing sink: a conversation's answered turn names its next turn's model.

After a successful answer the model that served it (the preferred one, or the fallback that
served in its place, or the model a moved session went to) becomes the session's model in
``routing.sticky.Sessions``. Failed requests, streams that broke after their 200, clients
that left and pinned requests leave the session as it was.
"""

from __future__ import annotations

from gearshift.routing.sticky import Sessions
from gearshift.serve.exchange import Exchange


class Sticky:
    """The sink that records each answered session's model."""

    __slots__ = ("sessions",)

    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions

    def begin(self, ex: Exchange) -> None:
        pass

    def finish(self, ex: Exchange) -> None:
        served = ex.served_by
        if ex.session is None or served is None or ex.status != 200:
            return
        if ex.plan is None or ex.plan.sticky is None:  # a pin: stickiness did not apply
            return
        self.sessions.put(ex.session, served.label)


__all__ = ["Sticky"]
