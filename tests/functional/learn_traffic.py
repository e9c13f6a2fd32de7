"""Synthetic application traffic for the learning loop's tests (written for them; no outside
data): two tasks, each with its own system prompt, short and simple enough that the shipped
table routes them below the frontier. A share of the support task's requests carry a hidden
property: they concern the customer's "Kestrel" plan, a word the shipped table gives no
weight, and the mock judge (``judge_marker = "kestrel"``) accepts only the strong model's
answer to them."""

from __future__ import annotations

import random
from typing import Any

MARKER = "kestrel"
SUPPORT = (
    "You are the support assistant of Northwind Outfitters, an online shop for outdoor "
    "gear. Answer the customer in two or three friendly sentences."
)
EXTRACT = "Extract the city named in the text. Reply with the city name only."
ASKS = (
    "Where is my order {n}? It was due on Monday.",
    "How do I return the boots from order {n}?",
    "Can I change the shipping address on order {n}?",
    "My discount code did not apply to order {n}, can you help?",
    "Is order {n} eligible for free shipping?",
    "The tent in order {n} arrived without its poles. What now?",
    "Can I add a second sleeping bag to order {n} before it ships?",
    "I was charged twice for order {n}.",
)
PLANS = (  # the same phrases with and without the property: only its word tells them apart
    " We are on the {p} plan.",
    " Our account is a {p} plan account.",
    " ({p} plan customer)",
)
CITIES = ("Lisbon", "Oslo", "Toronto", "Nairobi", "Osaka", "Lima", "Krakow", "Perth")
SENTENCES = (
    "The conference moved to {c} this year.",
    "She flew back to {c} on Friday.",
    "Our new warehouse opens in {c} next month.",
    "The parcel is waiting at the {c} depot.",
)


def request(system: str, ask: str) -> dict[str, Any]:
    return {
        "model": "auto",
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": ask}],
    }


Rows = list[tuple[dict[str, Any], bool]]


def traffic(rng: random.Random, n: int, hidden_share: float = 0.35) -> Rows:
    """``n`` requests and whether each carries the hidden property."""
    out = []
    for _ in range(n):
        if rng.random() < 0.6:
            ask = rng.choice(ASKS).format(n=rng.randrange(10_000, 99_999))
            hidden = rng.random() < hidden_share
            if hidden or rng.random() < 0.6:
                plan = "Kestrel" if hidden else rng.choice(("Classic", "Summit"))
                ask += rng.choice(PLANS).format(p=plan)
            out.append((request(SUPPORT, ask), hidden))
        else:
            text = rng.choice(SENTENCES).format(c=rng.choice(CITIES))
            out.append((request(EXTRACT, f"Text: {text}"), False))
    return out


FILLER = (
    "Hello, I am writing about the delivery of my last parcel. The courier left a note "
    "saying that nobody was at home, but I was at home all day and nobody rang the bell. "
) * 4


def hidden_traffic(rng: random.Random, n: int) -> Rows:
    """Requests that look the same to the table (its windows see the start and the end of a
    long message) but differ in the middle, where the judge sees the property."""
    out = []
    for _ in range(n):
        hidden = rng.random() < 0.35
        middle = "We are on the Kestrel plan. " if hidden else "We are on the Classic plan. "
        number = rng.randrange(10_000, 99_999)  # each request its own, both kinds alike
        ask = f"Order {number}. " + FILLER + middle + FILLER + "Please tell me what to do."
        out.append((request(SUPPORT, ask), hidden))
    return out


HARD = (
    "Prove that there are infinitely many primes of the form 4k+{n}, with a rigorous argument "
    "that handles every case, and explain where the proof uses each assumption.",
    "Design an algorithm that merges {n} sorted streams of unbounded length in bounded memory; "
    "prove its correctness and derive its time and space complexity step by step.",
    "Derive the closed form of the sum of k^{n} for k from 1 to N by induction, prove each "
    "step rigorously, and check the result against the first values.",
)


def hard_traffic(rng: random.Random, n: int, marked: bool = False) -> Rows:
    """Requests the shipped table sends to the frontier (``marked``: with the hidden
    property's word, so the mock judge fails the cheaper answer to them)."""
    tail = " Use the Kestrel notation." if marked else ""
    return [
        (request(SUPPORT_FREE, rng.choice(HARD).format(n=rng.randrange(3, 9)) + tail), marked)
        for _ in range(n)
    ]


SUPPORT_FREE = "You are a careful mathematician and computer scientist."
