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
    default the light tier's first model; 5% by default, at the cheaper model's price: a refit
    is checked on them). ``record_share`` more are stored without a shadow
    call (so that feedback on them can label them). ``budget_daily_usd``: the shadow calls'
    spend per UTC day (in ``[state]``: shared by every process on Redis); shadowing pauses
    when it is reached. ``redact``: ``none`` keeps message text; ``hash`` replaces each text
    by its SHA-256, ``drop`` by nothing (the classifier's features are kept either way).

    ``judge``: the model ``gearshift judge`` asks to compare stored pairs (default: the
    strongest offered model); its calls spend from ``judge_budget_daily_usd`` per UTC day.
    ``judge_every``: seconds between the server's own judging rounds (0: only the command).
    ``judge_max_tokens``: what a judge call may write (a reasoning judge thinks within it).
    ``target_recall``: the frontier recall a refit from the store (``calibrate
    --from-store``) is measured and tuned at; ``hold_back``: the share of labeled rows kept
    out of the refit to prove it; ``store_weight``: the store rows' weight against the
    current table (or the given data files); ``min_gain``: the saving the candidate must add
    on the held-back rows; ``margin``: how much worse it may be on any other set or task
    cluster."""

    enabled: bool = False
    shadow_share: Share = 0.05
    frontier_share: Share = 0.05
    record_share: Share = 0.0
    reference: str | None = None
    cheap_reference: str | None = None
    budget_daily_usd: Annotated[float, msgspec.Meta(ge=0, le=1_000_000)] = 5.0
    store: str | None = None  # the SQLite file; default $XDG_STATE_HOME/gearshift/outcomes…
    max_age: Annotated[float, msgspec.Meta(gt=0, le=10 * 365 * 86_400)] = 90 * 86_400.0
    max_bytes: Annotated[int, msgspec.Meta(ge=1 << 20, le=1 << 40)] = 1 << 30
    redact: Literal["none", "hash", "drop"] = "none"
    judge: str | None = None
    judge_budget_daily_usd: Annotated[float, msgspec.Meta(ge=0, le=1_000_000)] = 2.0
    judge_every: Annotated[float, msgspec.Meta(ge=0, le=7 * 86_400)] = 0.0  # 0: no background
    judge_max_tokens: Annotated[int, msgspec.Meta(ge=256, le=200_000)] = 4096
    target_recall: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.95
    hold_back: Annotated[float, msgspec.Meta(gt=0, lt=1)] = 0.3
    store_weight: Annotated[float, msgspec.Meta(gt=0, le=1000)] = 1.0
    min_gain: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.01
    margin: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.02


__all__ = ["LearnSpec"]
