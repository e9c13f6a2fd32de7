"""Micro-benchmark: the routing decision (classifier + planner) by prompt size.

    python -m bench.decision [--repeat N] [--catalog default|2024] [--language en|de|ja]

For each size, a realistic prompt (an instruction around pasted prose) is parsed once, then
``policy.plan`` (features, table, tier, candidates, cost order) runs ``repeat`` times; the
median and p99 per call are printed. No network, no server: this is the pure decision cost.
On today's default catalog (12 candidates with the effort variant), or on the seed's 2024
catalog (six models), as the figures before 2026-12-07 were run on.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import orjson

from gearshift.config import catalog_2024, load
from gearshift.inbound.chat import parse_chat
from gearshift.routing.classify import load_rules
from gearshift.routing.policy import Policy, plan

PROSE = (
    "The quarterly report shows revenue growth in every region, with the strongest "
    "gains in the northern markets, while costs rose faster than planned because of "
    "freight and hiring. "
)
SIZES = [10, 100, 1_000, 10_000, 100_000]  # approximate prompt tokens
# The same request in other languages (--language): the ask and the prose, and how many
# characters a token is, roughly.
LANGUAGES = {
    "en": ("Summarize the key risks in the text below in three bullet points.\n\n", PROSE, 4),
    "de": (
        "Fasse die wichtigsten Risiken im folgenden Text in drei Stichpunkten zusammen.\n\n",
        "Der Quartalsbericht zeigt in allen Regionen Umsatzwachstum, am stärksten in den "
        "nördlichen Märkten, während die Kosten wegen Fracht und Einstellungen schneller "
        "stiegen als geplant. ",
        4,
    ),
    "ja": (
        "次の報告書の主なリスクを三つの箇条書きで要約してください。\n\n",
        "四半期報告書によると、すべての地域で売上が伸び、特に北部市場で大きく成長した一方、"
        "運賃と採用の影響でコストが計画より速く増加した。",
        1,
    ),
}


def body_of(tokens: int, model: str = "gpt-6.2-astra", language: str = "en") -> bytes:
    ask, prose, per_token = LANGUAGES[language]
    chars = tokens * per_token
    text = (prose * (chars // len(prose) + 1))[: max(0, chars - len(ask))]
    return orjson.dumps(
        {
            "model": model,
            "messages": [
                {"role": "system", "content": "You are a careful financial analyst."},
                {"role": "user", "content": ask + text},
            ],
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2000)
    parser.add_argument("--catalog", choices=("default", "2024"), default="default")
    parser.add_argument("--language", choices=sorted(LANGUAGES), default="en")
    args = parser.parse_args()
    config = load(
        None,
        environ={"OPENAI_API_KEY": "x", "ANTHROPIC_API_KEY": "x", "GEMINI_API_KEY": "x"},
        base=catalog_2024() if args.catalog == "2024" else None,
    )
    policy = Policy.build(config, load_rules())
    print(
        f"python {platform.python_version()} on {platform.machine()}; "
        f"{len(config.offered)} models offered; {args.repeat} decisions per size"
    )
    print(f"{'tokens':>8} {'chars':>8} {'median µs':>10} {'p99 µs':>9} {'tier':>9}")
    for size in SIZES:
        raw = body_of(size, "gpt-4o" if args.catalog == "2024" else "gpt-6.2-astra", args.language)
        request = parse_chat(raw)
        repeat = max(50, args.repeat // max(1, size // 1000))
        for _ in range(20):
            p = plan(request, policy)
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter_ns()
            p = plan(request, policy)
            times.append(time.perf_counter_ns() - t0)
        times.sort()
        chars = len(request.body["messages"][1]["content"])
        print(
            f"{size:>8} {chars:>8} {statistics.median(times) / 1e3:>10.1f} "
            f"{times[int(len(times) * 0.99) - 1] / 1e3:>9.1f} {p.tier:>9}"
        )


if __name__ == "__main__":
    main()
