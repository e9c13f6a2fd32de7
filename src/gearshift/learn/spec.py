"""``[learn]``: shadow comparisons and the outcome store (``docs/learning.md``)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

Share = Annotated[float, msgspec.Meta(ge=0, le=1)]


class LearnSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Off unless ``enabled``. Of the requests the router sends below the frontier tier,
    ``shadow_share`` are also sent, once the client's answer is complete, to ``reference``
    (a model name; default the plan's baseline: the strongest offered model), and both
    answers are stored; ``frontier_share`` of those sent to the frontier too (their pair
    shows what a cheaper model would have lost: the reference is then ``cheap_reference``,
    default the light tier's first model). ``record_share`` more are stored without a shadow
    call (so that feedback on them can label them). ``budget_daily_usd``: the shadow calls'
    spend per UTC day (in ``[state]``: shared by every process on Redis); shadowing pauses
    when it is reached. ``redact``: ``none`` keeps message text; ``hash`` replaces each text
    by its SHA-256, ``drop`` by nothing (the classifier's features are kept either way)."""

    enabled: bool = False
    shadow_share: Share = 0.05
    frontier_share: Share = 0.0
    record_share: Share = 0.0
    reference: str | None = None
    cheap_reference: str | None = None
    budget_daily_usd: Annotated[float, msgspec.Meta(ge=0, le=1_000_000)] = 5.0
    store: str | None = None  # the SQLite file; default $XDG_STATE_HOME/gearshift/outcomes…
    max_age: Annotated[float, msgspec.Meta(gt=0, le=10 * 365 * 86_400)] = 90 * 86_400.0
    max_bytes: Annotated[int, msgspec.Meta(ge=1 << 20, le=1 << 40)] = 1 << 30
    redact: Literal["none", "hash", "drop"] = "none"


__all__ = ["LearnSpec"]
