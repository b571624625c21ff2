"""Population breeding on lm-eval tasks: the archive competes for each task's items
(`archive.resources: [<task>.acc, ...]`, objective=lm_eval's per-item metrics)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
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


@pytest.mark.slow  # 14 scored models on 4 tasks and a 5-row table
def test_gen781_preset_screens_on_every_multiple_choice_task(tmp_path, run_cli):
    """+experiment=gen781_lm_eval: the zoo's four multiple-choice tasks at a fixed sample count as
    the archive's resources, SLERP and DELLA children, and only children above both parents kept."""
    import optuna

    run = tmp_path / "run"
    tasks = ("zoo_en_math_choice", "zoo_ja_qa_choice", "zoo_tally_choice", "zoo_parallel_choice")
    run_cli("evo_breed", "+experiment=gen781_lm_eval", "objective.options.limit=10", "n_trials=14",
            'objective.test.items="0:20"', f"run_dir={run}", f"tracking.mlruns_dir={run / 'mlruns'}")
    state = json.loads((run / "archive" / "state.json").read_text())
    assert all(len(m["scores"]) == 4 * 40 for m in state["members"])  # 4 resources x the 40 search items
    study = optuna.load_study(study_name="breed_gen781_lm_eval", storage=f"sqlite:///{run / 'study.db'}")
    children = [t.user_attrs["breed"] for t in study.trials if t.state.name == "COMPLETE"]
    assert {c["crossover"] for c in children} == {"slerp", "della"}  # mixed: both, recorded per child
    members = {m["id"]: m for m in state["members"]}
    for child in children:
        entered = child["id"] in members
        if "della" in child:
            d = child["della"]
            assert all(0.4 <= x <= 0.8 for x in d["density"]) and 0.05 <= d["epsilon"] <= 0.15
        mean = np.mean(members[child["id"]]["scores"]) if entered else None
        assert not entered or all(mean > p for p in child["parent_means"])  # survivors beat both parents
    table = json.loads((run / "test_table.json").read_text())
    assert set(table) == {"base", "ja", "math_wiz", "math_abel", "champion"}
    assert {f"{t}.acc" for t in tasks} <= set(table["champion"])  # the champion scored on every task
