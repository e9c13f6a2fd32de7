"""``gearshift route / classify / eval / calibrate`` as a user runs them."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import orjson
import pytest
from labeled import write_labeled

import gearshift
from gearshift.cli import main
from gearshift.routing.classify import load_rules

# The tests run on the 2024 catalog (an example config), as they were written against it.
CATALOG_2024 = str(Path(gearshift.__file__).parent / "catalog_2024.toml")

EASY = {
    "model": "gpt-4o",
    "messages": [{"role": "user", "content": "Translate 'thank you very much' into Italian."}],
}
HARD = {
    "model": "gpt-4o",
    "messages": [
        {
            "role": "user",
            "content": "Prove that there are infinitely many primes of the form 4k+3, rigorously.",
        }
    ],
}


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_route_prints_the_decision_and_plan(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(
        capsys,
        *("route", "Translate 'thank you' into Italian.", "--model", "gpt-4o"),
        *("--config", CATALOG_2024),
    )
    assert code == 0
    doc = orjson.loads(out)
    assert doc["tier"] == "light"
    # The cheapest light model of the 2024 catalog (every provider assumed keyed).
    assert doc["model"] == "gemini-1.5-flash"
    assert doc["plan"][0]["model"] == "gemini-1.5-flash"
    assert doc["est_cost_usd"] < doc["baseline_cost_usd"]
    assert doc["reasons"]


def test_route_reads_a_request_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "body.json"
    path.write_bytes(orjson.dumps(HARD))
    code, out, _ = _run(capsys, "route", "--request", str(path), "--config", CATALOG_2024)
    assert code == 0
    assert orjson.loads(out)["tier"] == "frontier"
    path.write_bytes(b'{"model": "gpt-4o"}')
    code, _, err = _run(capsys, "route", "--request", str(path), "--config", CATALOG_2024)
    assert code == 1
    assert "messages" in err


def test_classify_answers_line_for_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "log.jsonl"
    path.write_bytes(
        b"\n".join([orjson.dumps(EASY), b"{not json", orjson.dumps(HARD), b""]) + b"\n"
    )
    code, out, _ = _run(capsys, "classify", str(path), "--config", CATALOG_2024)
    assert code == 0
    lines = [orjson.loads(line) for line in out.splitlines()]
    assert [line["line"] for line in lines] == [1, 2, 3, 4]
    assert lines[0]["tier"] == "light"
    assert "error" in lines[1]
    assert lines[2]["tier"] == "frontier"
    assert "error" in lines[3]
    for key in ("score", "tier", "model", "est_cost_usd", "baseline_cost_usd", "reasons"):
        assert key in lines[0]


def test_classify_summary_from_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = b"\n".join([orjson.dumps(EASY)] * 3 + [orjson.dumps(HARD)]) + b"\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    code, out, _ = _run(capsys, "classify", "-", "--summary", "--config", CATALOG_2024)
    assert code == 0
    summary = orjson.loads(out)
    assert summary["requests"] == 4
    assert summary["tiers"]["light"]["count"] == 3
    assert summary["cost_with_routing_usd"] < summary["cost_without_routing_usd"]
    assert summary["savings_pct"] > 50


def _labeled(tmp_path: Path) -> Path:
    return write_labeled(tmp_path, 30, 3)


def test_eval_reports_per_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _labeled(tmp_path)
    code, out, _ = _run(capsys, "eval", str(path), "--json")
    assert code == 0
    report = orjson.loads(out)["datasets"]["mine"]
    assert report["n"] == 30
    assert report["auc"] > 0.9
    assert 0 <= report["accuracy"] <= 1
    code, out, _ = _run(capsys, "eval", str(path))
    assert "mine" in out
    assert "auc" in out


def test_calibrate_writes_a_table_that_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("numpy")
    labeled = _labeled(tmp_path)
    other = tmp_path / "theirs.jsonl"
    other.write_bytes(labeled.read_bytes().replace(b'"id": "r', b'"id": "t'))
    out_path = tmp_path / "rules.toml"
    code, out, _ = _run(
        capsys,
        "calibrate",
        str(labeled),
        str(other),
        "--out",
        str(out_path),
        "--cv",
        "2",
        "--target-quality",
        "0.95",
        "--weight",
        "theirs=0.5",
    )
    assert code == 0
    assert "cross-validated" in out
    assert "in-sample" in out
    # Two files: the readable TOML, and the word maps beside it in msgpack, named by the TOML.
    lexicons = tmp_path / "rules.lexicons.msgpack"
    assert f"wrote {out_path} and {lexicons}:" in out
    assert 'lexicons = "rules.lexicons.msgpack"' in out_path.read_text()
    assert "[lexicon]" not in out_path.read_text()
    rules = load_rules(out_path)
    assert rules.spec.lexicon
    assert rules.spec.provenance["target_quality"] == "0.95"
    assert "--weight theirs=0.5" in rules.spec.provenance["command"]
    code, out, _ = _run(capsys, "eval", str(labeled), "--rules", str(out_path), "--json")
    assert orjson.loads(out)["datasets"]["mine"]["auc"] > 0.9


def test_missing_inputs_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(capsys, "classify", str(tmp_path / "absent.jsonl"))
    assert code == 2
    assert "cannot read" in err
    code, _, err = _run(capsys, "route", "--request", str(tmp_path / "absent.json"))
    assert code == 2
    assert "cannot read" in err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "tier": "maybe", "request": {"messages": []}}\n')
    with pytest.raises(SystemExit, match=r"bad.jsonl:1"):
        main(["eval", str(bad)])
