"""pcg-eval scores a results CSV (contract 6) against labelled folders, without torch."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from trainer_fixtures import write_circor_folder, write_physionet_folder
from trainer import metrics
from trainer.evaluate import main as pcg_eval

HEADER = "patient_id,outcome_probability,decision,reason"


@pytest.fixture(scope="module")
def physionet(tmp_path_factory):
    # records a0000..a0005: odd ones abnormal
    return write_physionet_folder(tmp_path_factory.mktemp("pn"), {"training-a": 6})


def write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_decisions_give_the_challenge_cost_and_probabilities_the_auroc(physionet, tmp_path, capsys):
    rows = [("a0000", 0.1, "NO_REFER"), ("a0001", 0.9, "REFER"), ("a0002", 0.7, "REFER"),
            ("a0003", 0.3, "NO_REFER"), ("a0004", 0.2, "NO_REFER"), ("a0005", 0.8, "REFER")]
    results = write(tmp_path / "r.csv", [HEADER] + [f"{p},{q},{d},test" for p, q, d in rows])
    assert pcg_eval([str(results), str(physionet), "--json", str(tmp_path / "s.json")]) == 0
    scores = json.loads((tmp_path / "s.json").read_text())["outcome"]
    # abnormal: a0001, a0003, a0005 -> TP 2 (a0001, a0005), FP 1 (a0002), FN 1 (a0003), TN 2
    d = scores["decisions"]
    assert (d["tp"], d["fp"], d["fn"], d["tn"]) == (2, 1, 1, 2)
    assert d["cost"] == pytest.approx(metrics.outcome_cost(2, 1, 1, 2))
    assert scores["auroc"] == pytest.approx(metrics.auroc([0, 1, 0, 1, 0, 1], [0.1, 0.9, 0.7, 0.3, 0.2, 0.8]))
    assert "cost" in capsys.readouterr().out


def test_retake_counts_as_a_referral_unless_excluded(physionet, tmp_path):
    lines = [HEADER, "a0000,0.1,NO_REFER,x", "a0001,,RETAKE,no usable recording", "a0002,0.2,NO_REFER,x"]
    results = write(tmp_path / "r.csv", lines)
    assert pcg_eval([str(results), str(physionet), "--json", str(tmp_path / "refer.json")]) == 0
    refer = json.loads((tmp_path / "refer.json").read_text())
    assert refer["outcome"]["decisions"]["tp"] == 1 and refer["retake"] == 1
    assert pcg_eval([str(results), str(physionet), "--retake", "exclude", "--json", str(tmp_path / "ex.json")]) == 0
    excluded = json.loads((tmp_path / "ex.json").read_text())
    assert excluded["outcome"]["n"] == 2 and excluded["outcome"]["decisions"]["fn"] == 0


def test_murmur_columns_give_the_weighted_accuracy(tmp_path):
    circor = write_circor_folder(tmp_path / "circor", n_patients=6)
    # fixture labels: 1000 Unknown, 1001 Present, 1002 Absent, 1003 Present, 1004 Absent, 1005 Present
    header = HEADER + ",murmur_present,murmur_unknown,murmur_absent"
    lines = [header,
             "1000,0.2,NO_REFER,x,0.1,0.2,0.7",  # Unknown predicted Absent
             "1001,0.9,REFER,x,0.8,0.1,0.1",  # Present right
             "1002,0.1,NO_REFER,x,0.1,0.1,0.8",  # Absent right
             "1003,0.9,REFER,x,0.2,0.1,0.7",  # Present predicted Absent
             "1004,0.1,NO_REFER,x,0.0,0.1,0.9",  # Absent right
             "1005,0.9,REFER,x,0.6,0.3,0.1"]  # Present right
    assert pcg_eval([str(write(tmp_path / "r.csv", lines)), str(circor), "--json", str(tmp_path / "s.json")]) == 0
    murmur = json.loads((tmp_path / "s.json").read_text())["murmur"]
    assert murmur["weighted_accuracy"] == pytest.approx((5 * 2 + 0 + 2) / (5 * 3 + 3 * 1 + 2))


@pytest.mark.parametrize(
    "lines, message",
    [
        (["patient_id,decision", "a0000,REFER"], "missing column(s) outcome_probability, reason"),
        ([HEADER, "a0000,0.5,MAYBE,x"], "decision 'MAYBE' is not one of REFER, NO_REFER, RETAKE"),
        ([HEADER, "a0000,1.5,REFER,x"], "outcome_probability 1.5 is outside [0, 1]"),
        ([HEADER, "zz99,0.5,REFER,x"], "name patients not in the data, e.g. zz99"),
        ([HEADER, "a0000,0.5,REFER,x", "a0000,0.5,REFER,x"], "patient a0000 appears twice"),
        ([HEADER], "no result rows"),
    ],
)
def test_bad_results_files_are_explained_with_exit_code_2(physionet, tmp_path, capsys, lines, message):
    assert pcg_eval([str(write(tmp_path / "r.csv", lines)), str(physionet)]) == 2
    assert message in capsys.readouterr().err


def test_unlabelled_data_is_explained(tmp_path, capsys):
    hidden = write_circor_folder(tmp_path / "hidden", n_patients=4, hidden=True)
    results = write(tmp_path / "r.csv", [HEADER, "1000,0.5,REFER,x"])
    assert pcg_eval([str(results), str(hidden)]) == 2
    assert "no patient has an outcome or murmur label" in capsys.readouterr().err


def test_pcg_eval_runs_without_importing_torch(physionet, tmp_path):
    results = write(tmp_path / "r.csv", [HEADER, "a0000,0.1,NO_REFER,x", "a0001,0.9,REFER,x"])
    code = ("import sys; from trainer.evaluate import main; rc = main([sys.argv[1], sys.argv[2]]); "
            "assert 'torch' not in sys.modules, 'torch was imported'; raise SystemExit(rc)")
    done = subprocess.run([sys.executable, "-c", code, str(results), str(physionet)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "AUROC 1.000" in done.stdout
