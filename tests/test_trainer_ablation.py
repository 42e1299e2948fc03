"""pcg-ablation: several metadata paths on the same folds, one table with paired differences."""

import json

import pytest

pytest.importorskip("torch", reason="the trainer needs torch (pip install torch==2.13.0 -e '.[train]')")

from trainer.ablation import main  # noqa: E402
from trainer_fixtures import write_circor_folder  # noqa: E402


def test_ablation_runs_every_model_on_the_same_folds_and_writes_the_table(tmp_path, capsys):
    data = write_circor_folder(tmp_path / "data", n_patients=24)
    out = tmp_path / "ablation"
    code = main(["--data", str(data), "--models", "primary,hyper", "--folds", "2", "--epochs", "2",
                 "--patience", "2", "--eval-crops", "1", "--cache", str(tmp_path / "cache"), "--out", str(out),
                 "--quiet"])
    assert code == 0
    table = json.loads((out / "ablation.json").read_text())
    assert set(table["models"]) == {"primary", "hyper"}
    assert "hyper" in table["paired_differences"]
    test_ids = {name: [json.loads((out / name / fold / "outcome.json").read_text())["test_ids"] for fold in ("fold1", "fold2")]
                for name in ("primary", "hyper")}
    assert test_ids["primary"] == test_ids["hyper"]
    assert sorted(sum(test_ids["primary"], [])) == sorted({i for fold in test_ids["primary"] for i in fold})
    assert len(sum(test_ids["primary"], [])) == 24
    assert "primary" in (out / "ablation.md").read_text()


def test_ablation_on_a_missing_folder_is_a_clear_error(tmp_path, capsys):
    assert main(["--data", str(tmp_path / "nope"), "--out", str(tmp_path / "out")]) == 2
    assert "no such folder" in capsys.readouterr().err
