"""Population breeding on lm-eval tasks: the archive competes for each task's items
(`archive.resources: [<task>.acc, ...]`, objective=lm_eval's per-item metrics)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

ZOO_TASKS = Path(__file__).resolve().parents[2] / "zoo" / "lm_eval_tasks"
TASKS = ("zoo_en_math_choice", "zoo_ja_qa_choice", "zoo_tally_choice")


@pytest.mark.slow  # 10 scored models and a 5-row table: about a minute
def test_breeding_competes_for_the_items_of_every_lm_eval_task(tmp_path, run_cli):
    run = tmp_path / "run"
    run_cli("evo_breed", "objective=lm_eval", f"objective.options.tasks=[{','.join(TASKS)}]",
            f"objective.options.task_paths=[{ZOO_TASKS}]", "objective.options.limit=10",
            f"archive.resources=[{','.join(f'{t}.acc' for t in TASKS)}]", "n_trials=10",
            'objective.test.items="0:10"', f"run_dir={run}", f"tracking.mlruns_dir={run / 'mlruns'}")
    members = json.loads((run / "archive" / "state.json").read_text())["members"]
    assert all(len(m["scores"]) == 3 * 30 for m in members)  # 3 resources x the 30 search items
    # each task's resource scores only its own items: the zoo's experts hold different ones
    by_id = {m["id"]: m["scores"] for m in members}
    math_items = sum(1 for s in by_id["math_wiz"][:30] if s > 0)
    ja_items = sum(1 for s in by_id["ja"][30:60] if s > 0)
    assert math_items == 10 and ja_items >= 5
    table = json.loads((run / "test_table.json").read_text())
    assert set(table) == {"base", "ja", "math_wiz", "math_abel", "champion"}
