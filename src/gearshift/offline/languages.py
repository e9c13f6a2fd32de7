"""Which language a labeled request is in, for reports by language (offline only).

A row's own ``language`` field wins; otherwise a guess from the last user turn: the script
for Japanese, Chinese, Korean, Cyrillic, Arabic and Devanagari text, and for Latin text the
language whose common short words occur most (English when none stands out). Good enough to
split a report into English and the rest; not a language identifier for traffic.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from gearshift.inbound.chat import content_text

_STOPWORDS = {
    "en": "the and of to is in that it for with this you are be on what how",
    "de": "der die das und ist nicht ein eine ich sie mit den dem zu auf für auch bitte wie",
    "fr": "le la les et est une des du que qui pour dans pas vous avec sur ce cette ne",
    "es": "el la los las y es una que del por para con como pero se su más este esta",
    "pt": "o os as e é um uma que do da dos não para com por se uma como mais você",
    "it": "il lo la gli le e è un una che di del della per con non sono come questo",
    "nl": "de het een en is van dat niet met voor op zijn ik je wat hoe",
}
_WORDS = {lang: frozenset(words.split()) for lang, words in _STOPWORDS.items()}
_LATIN_WORD = re.compile(r"[^\W\d_]+")
_KANA = re.compile(r"[\u3040-\u30ff]")
_HAN = re.compile(r"[\u4e00-\u9fff]")
_HANGUL = re.compile(r"[\uac00-\ud7af]")
_CYRILLIC = re.compile(r"[\u0400-\u04ff]")
_ARABIC = re.compile(r"[\u0600-\u06ff]")
_DEVANAGARI = re.compile(r"[\u0900-\u097f]")


def guess(text: str) -> str:
    """A language code for ``text`` (see the module's note on how far to trust it)."""
    if _HANGUL.search(text):
        return "ko"
    if _KANA.search(text):
        return "ja"
    if _HAN.search(text):
        return "zh"
    for code, pattern in (("ru", _CYRILLIC), ("ar", _ARABIC), ("hi", _DEVANAGARI)):
        if len(pattern.findall(text)) > len(text) / 10:
            return code
    words = [w.lower() for w in _LATIN_WORD.findall(text[:2000])]
    counts = {lang: sum(w in stop for w in words) for lang, stop in _WORDS.items()}
    best = max(counts, key=lambda lang: counts[lang])
    # English unless another language clearly leads (a quoted phrase is not a language).
    return best if counts[best] > max(2, counts["en"] * 1.5) else "en"


def language_of(row: Mapping[str, Any], body: Mapping[str, Any]) -> str:
    """A labeled row's language: its ``language`` field, else a guess from its last user turn."""
    given = row.get("language")
    if isinstance(given, str) and given:
        return given
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") == "user":
                return guess(content_text(message.get("content"))[0])
    return "en"
