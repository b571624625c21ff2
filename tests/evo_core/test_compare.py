"""`python -m evo_core.compare RUN_ID...`: several runs' final tables in one chart."""
from __future__ import annotations

import pytest

from evo_core._tracking import Tracker
from evo_core.compare import main, run_tables


def finished_run(tracker: Tracker, name: str, table: dict) -> str:
    run_id = tracker.start(run_id=None, run_name=name, params={})
    tracker.log_table(table, prefix="test")
    tracker.client.log_metric(run_id, "best_value", 0.5)  # other metrics are not table cells
    tracker.finish()
    return run_id


def test_two_runs_tables_side_by_side(tmp_path, capsys):
    tracker = Tracker(mlruns_dir=tmp_path / "mlruns", experiment="x")
    a = finished_run(tracker, "toy-seed0", {"base": {"acc": 0.01, "acc_ja": 0.0}, "best_merge": {"acc": 0.62, "acc_ja": 0.61}})
    b = finished_run(tracker, "toy-seed1", {"base": {"acc": 0.01, "acc_ja": 0.0}, "best_merge": {"acc": 0.55, "acc_ja": 0.5},
                                            "best_uniform": {"acc": 0.5, "acc_ja": 0.45}})
    tables = run_tables(tracker.client, [a, b])
    assert tables == {"toy-seed0": {"base": {"acc": 0.01, "acc_ja": 0.0}, "best_merge": {"acc": 0.62, "acc_ja": 0.61}},
                      "toy-seed1": {"base": {"acc": 0.01, "acc_ja": 0.0}, "best_merge": {"acc": 0.55, "acc_ja": 0.5},
                                    "best_uniform": {"acc": 0.5, "acc_ja": 0.45}}}
    out = main([a, b, "--mlruns-dir", str(tmp_path / "mlruns"), "--out", str(tmp_path / "cmp.png")])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    assert "2 runs, 3 models" in capsys.readouterr().out


def test_a_run_without_a_table_is_one_line(tmp_path):
    tracker = Tracker(mlruns_dir=tmp_path / "mlruns", experiment="x")
    run_id = tracker.start(run_id=None, run_name="unfinished", params={})
    with pytest.raises(SystemExit) as exit:
        main([run_id, "--mlruns-dir", str(tmp_path / "mlruns"), "--out", str(tmp_path / "cmp.png")])
    assert str(exit.value).startswith("error: ") and "unfinished" in str(exit.value) and "\n" not in str(exit.value)
    assert not (tmp_path / "cmp.png").exists()
