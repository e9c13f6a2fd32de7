"""The learning loop's commands as a user types them (``gearshift judge``, ``report``,
``outcomes``, ``calibrate --from-store``, ``eval --from-store``), on a fresh store and on
wrong input: clear messages and exit codes, never a traceback."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from gearshift.cli import main


@pytest.fixture
def config(tmp_path: Path) -> str:
    path = tmp_path / "gearshift.toml"
    path.write_text(f'[learn]\nenabled = true\nstore = "{tmp_path / "o.sqlite3"}"\n')
    return str(path)


def test_a_fresh_store_reports_nothing_and_judges_nothing(
    config: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", "--config", config]) == 0
    assert "outcome store: 0 rows" in capsys.readouterr().out
    assert main(["report", "--config", config, "--json"]) == 0
    doc = orjson.loads(capsys.readouterr().out)
    assert (doc["rows"], doc["clusters"], doc["lost"]) == (0, [], [])
    assert main(["judge", "--config", config, "--json"]) == 0
    assert orjson.loads(capsys.readouterr().out)["judged"] == 0
    assert main(["outcomes", "--config", config]) == 0
    assert capsys.readouterr().err.strip() == "0 rows"


def test_a_refit_needs_labeled_rows(
    config: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "new.toml"
    assert main(["calibrate", "--from-store", "--config", config, "--out", str(out)]) == 1
    assert "no labeled rows" in capsys.readouterr().err
    assert not out.exists()
    assert main(["eval", "--from-store", "--config", config]) == 1


def test_wrong_input_is_named(config: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval"]) == 2
    assert "give labeled files, or --from-store" in capsys.readouterr().err
    assert main(["calibrate", "--out", "x.toml"]) == 2
    assert main(["judge", "--config", config, "--limit", "0"]) == 2
    assert "at least 1" in capsys.readouterr().err


def test_an_unknown_judge_model_is_a_configuration_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[learn]\nenabled = true\njudge = "gpt-9000"\n')
    with pytest.raises(SystemExit) as exit_:
        main(["judge", "--config", str(path)])
    assert exit_.value.code == 2
    assert "$.learn.judge: unknown model 'gpt-9000'" in capsys.readouterr().err
