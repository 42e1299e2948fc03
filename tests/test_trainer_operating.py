"""trainer.operating: what a programme gets from a run's out-of-fold predictions (operating points
at realistic prevalence, results by group with intervals, groups too small to measure said so)."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[train]'); training tests need it")

from trainer_fixtures import write_circor_folder  # noqa: E402
from trainer.crossval import main as pcg_train  # noqa: E402
from trainer.operating import main as operating_cli, programme_view  # noqa: E402


def test_programme_view_is_the_arithmetic_of_prevalence():
    view = programme_view(sensitivity=0.8, specificity=0.6, prevalence=0.10)
    assert view["referred_per_100"] == pytest.approx(100 * (0.8 * 0.1 + 0.4 * 0.9))  # 44 of 100 referred
    assert view["abnormal_missed_per_100"] == pytest.approx(2.0)
    assert view["ppv"] == pytest.approx(0.08 / 0.44)
    assert programme_view(1.0, 1.0, 0.05)["referred_per_100"] == pytest.approx(5.0)  # a perfect test refers the abnormal only


def test_a_run_gets_operating_points_and_groups(tmp_path):
    data = write_circor_folder(tmp_path / "circor", n_patients=40, seed=3)
    run = tmp_path / "run"
    assert pcg_train(["--data", str(data), "--model", "hyper", "--folds", "2", "--epochs", "1", "--eval-crops", "1",
                      "--cache", str(tmp_path / "cache"), "--out", str(run), "--quiet"]) == 0
    assert operating_cli([str(run), "--data", str(data), "--out", str(tmp_path / "op"), "--bootstrap", "50"]) == 0
    result = json.loads((tmp_path / "op" / "operating.json").read_text())
    ops = result["operating_points"]
    assert ops["n"] == 40 and 0 < ops["data_prevalence"] < 1
    for point in ("cost_optimal", "high_sensitivity"):
        views = ops["points"][point]["at_prevalence"]
        assert [round(v["prevalence"], 3) for v in views] == [round(ops["data_prevalence"], 3), 0.1, 0.05]
        assert all(0 <= v["referred_per_100"] <= 100 for v in views)
    groups = result["by_group"]
    assert set(groups) == {"age group", "sex", "pregnancy", "sites present", "campaign"}
    assert sum(row["n"] for row in groups["sex"].values()) == 40
    rows = [row for by in groups.values() for row in by.values()]
    small = [row for row in rows if min(row["n_abnormal"], row["n"] - row["n_abnormal"]) < 5]
    assert small, "40 synthetic children should leave some group too small to measure"
    assert all("too few to measure" in row["note"] and "auroc" not in row for row in small)
    assert all(0 <= row["auroc"] <= 1 and "note" not in row for row in rows if row not in small)
    text = (tmp_path / "op" / "operating.md").read_text()
    assert "per 100 at 5 %" in text and "## By group" in text


def test_a_folder_that_is_not_a_run_is_a_sentence(tmp_path, capsys):
    assert operating_cli([str(tmp_path), "--data", str(tmp_path)]) == 2
    assert "no fold results" in capsys.readouterr().err
