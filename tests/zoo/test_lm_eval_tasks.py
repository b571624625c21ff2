"""The zoo's lm-eval tasks (zoo/lm_eval_tasks/): the committed files are what zoo/build_lm_eval_tasks.py
writes from the world, every task has disjoint validation and test splits, and lm-eval reads them."""
from __future__ import annotations

import json

from zoo.build_lm_eval_tasks import TASKS, TASKS_DIR, task_files


def test_the_committed_tasks_are_what_the_builder_writes():
    files = task_files()
    on_disk = {str(p.relative_to(TASKS_DIR)) for p in TASKS_DIR.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert on_disk == set(files), "rebuild them: python -m zoo.build_lm_eval_tasks"
    for relative, text in files.items():
        assert (TASKS_DIR / relative).read_text(encoding="utf-8") == text, \
            f"{relative} differs from what python -m zoo.build_lm_eval_tasks writes"


def test_every_task_has_disjoint_validation_and_test_splits_of_well_formed_docs():
    for task in TASKS:
        splits = {split: [json.loads(line) for line in (TASKS_DIR / "data" / task / f"{split}.jsonl").read_text(
            encoding="utf-8").splitlines()] for split in ("validation", "test")}
        questions = {split: {doc["question"] for doc in docs} for split, docs in splits.items()}
        assert len(questions["validation"]) == len(splits["validation"]) >= 100, task
        assert len(questions["test"]) == len(splits["test"]) >= 200, task
        assert not questions["validation"] & questions["test"], task
        for doc in splits["validation"] + splits["test"]:
            if "choices" in doc:  # multiple choice: four distinct choices, the label one of them
                assert len(set(doc["choices"])) == 4 and 0 <= doc["label"] < 4, (task, doc)


def test_lm_eval_reads_every_task_from_the_folder():
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False)
    loaded = manager.load(list(TASKS))["tasks"]
    assert sorted(loaded) == sorted(TASKS)
    for name, task in loaded.items():
        assert len(task.validation_docs()) >= 100 and len(task.test_docs()) >= 200, name
    assert loaded["zoo_ja_math"].OUTPUT_TYPE == "generate_until"
    assert {task.OUTPUT_TYPE for name, task in loaded.items() if name != "zoo_ja_math"} == {"multiple_choice"}
