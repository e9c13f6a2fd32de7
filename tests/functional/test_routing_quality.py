"""The shipped table on the shared routing-dev data (skipped where that folder is absent).

These are floors that catch a broken or mis-shipped table, not the reported figures: those,
held out, are in docs/routing.md with the commands that produce them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gearshift.offline import calibrate as cal
from gearshift.routing.classify import load_rules

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "routing-dev"
FLOORS = {"mt_bench": 0.75, "gsm8k": 0.55, "mmlu_sample": 0.53, "app_workload": 0.95}


@pytest.mark.skipif(not DATA.is_dir(), reason=f"{DATA} is not here (shared data, not in repo)")
@pytest.mark.parametrize(("name", "floor"), sorted(FLOORS.items()))
def test_shipped_table_separates_the_shared_sets(name: str, floor: float) -> None:
    rules = load_rules()
    examples = cal.load_examples([DATA / f"{name}.jsonl"])
    scores = [rules.score(e.body)[0] for e in examples]
    assert cal.auc(scores, [e.strong for e in examples]) >= floor
