"""The mock's judge: a deterministic answer to ``gearshift judge``'s requests, so that the
learning loop can be tested end to end (``MockSettings.judge_*``).

A chat request whose last user turn holds ``<request>``, ``<answer_1>`` and ``<answer_2>``
sections (``learn.judge.judge_messages``) is answered with a verdict. The rule: an answer is
acceptable unless the request mentions ``judge_marker`` (the *hidden property*: a word the
seed rule table gives no weight) and the answer comes from none of the ``judge_strong``
models (the mock's answers name their model: "Mock answer from MODEL: …"). With
``judge_bias`` the mock judge is position-biased: answer 1 is always acceptable.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

_PAIR = re.compile(
    r"<request>\n(.*)\n</request>\n<answer_1>\n(.*)\n</answer_1>\n<answer_2>\n(.*)\n</answer_2>",
    re.S,
)
_FROM = re.compile(r"Mock answer from ([^:\s]+):")


def verdict(question: str, settings: Any) -> str | None:
    """The verdict's JSON text when ``question`` is a judge's request; None otherwise."""
    found = _PAIR.search(question)
    if found is None:
        return None
    request, first, second = found.groups()
    marker = settings.judge_marker
    hidden = marker is not None and marker.lower() in request.lower()

    def acceptable(answer: str) -> bool:
        model = _FROM.search(answer)
        return not hidden or (model is not None and model.group(1) in settings.judge_strong)

    ok_1, ok_2 = acceptable(first), acceptable(second)
    if settings.judge_bias:
        ok_1 = True
    better = "same" if ok_1 == ok_2 else "1" if ok_1 else "2"
    reason = (f"The request turns on {marker!r}; " if hidden else "Both do what was asked; ") + (
        f"answer 1 is {'' if ok_1 else 'not '}acceptable, "
        f"answer 2 is {'' if ok_2 else 'not '}acceptable."
    )
    return orjson.dumps(
        {"acceptable_1": ok_1, "acceptable_2": ok_2, "better": better, "reason": reason}
    ).decode()
