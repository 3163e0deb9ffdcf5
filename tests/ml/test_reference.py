"""``python -m fanflow.ml.reference``: the ML half without the engine, on tiny data."""

import json
from pathlib import Path

from fanflow.ml.reference import _print, run


def test_the_reference_run_trains_in_worker_processes_and_reports(tmp_path, capsys):
    summary = run(seed=0, models=["cnn_even", "cnn_odd", "logistic"], workers=2, at_least=0.0,
                  training={"epochs": 2, "min_steps": 0}, out=tmp_path / "out", train=240, val=80, test=80)
    assert [m["name"] for m in summary["models"]] == ["cnn_even", "cnn_odd", "logistic"]
    assert summary["fan_out_wall_seconds"] > 0 and summary["sum_of_branch_seconds"] > 0
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["seed"] == 0
    leaderboard = json.loads(Path(summary["selection"]["leaderboard"]["json"]).read_text())
    assert len(leaderboard["models"]) == 3
    if summary["selection"]["passed"]:
        assert summary["report"]["summary"]["clips"] == 80
    else:
        assert summary["report"] is None and "short" in summary["selection"]["message"]
    _print(summary)
    assert "training fan-out on 2 workers" in capsys.readouterr().out
