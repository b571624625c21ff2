"""multi_task composes objectives built by evo_core's build_objective: each task is an objective
config of its own, the group's options are the primary's and every task's defaults."""
from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

import zoo  # noqa: F401  (registers the "zoo" data source)
from evo_core import ObjectiveConfig, build_objective

ZOO_BASE = Path(__file__).resolve().parents[2] / "zoo" / "models" / "base"


def split(task: str, limit: int = 3) -> dict:
    return {"source": "zoo", "task": task, "split": "search", "limit": limit}


def multi_task(tasks: dict, **options):
    config = ObjectiveConfig(name="multi_task", search=split("ja_math"), options={
        "primary": "mgsm_ja", "tasks": tasks, "prompt_template": "Q: {question}\nA:", "language_detector": "script",
        **options})
    return build_objective(config, AutoTokenizer.from_pretrained(ZOO_BASE), splits=("search",))


def test_the_groups_options_are_every_tasks_defaults_and_a_tasks_own_win():
    objective = multi_task({"en": {"name": "mgsm_ja", "search": split("en_math")},
                            "qa": {"name": "answer_match", "search": split("ja_qa"),
                                   "options": {"max_new_tokens": 7}}}, max_new_tokens=5)
    tasks = objective.tasks
    assert [task.max_new_tokens for task in tasks.values()] == [5, 5, 7]
    assert {task.prompt_template for task in tasks.values()} == {"Q: {question}\nA:"}
    assert [m.name for m in objective.metrics][-2:] == ["qa.acc", "qa.acc_ja"]
    assert objective.n_items("search") == 3 and objective.split_names() == ["search"]


@pytest.mark.parametrize("tasks, options, message", [
    ({"qa": {"name": "answer_match", "search": split("ja_qa"), "options": {"max_tokens": 7}}}, {},
     "objective 'answer_match' has no option max_tokens; known: allow_overlap, answer_pattern, "),
    ({"qa": {"name": "answer_match", "search": split("ja_qa")}}, {"answer_pattern": "(x)"},
     "objective 'mgsm_ja' has no option answer_pattern"),  # the primary's options are checked as its own
    ({"qa": {"name": "answer_match", "search": split("ja_qa", limit=4)}}, {},
     r"objective multi_task: split 'search' has \{'mgsm_ja': 3, 'qa': 4\} items per task"),
    ({"qa": {"name": "answer_match", "test": split("ja_qa")}}, {}, "objective multi_task: task 'qa' has no split search"),
])
def test_bad_tasks_fail_in_one_line(tasks, options, message):
    with pytest.raises(ValueError, match=message):
        multi_task(tasks, **options)
