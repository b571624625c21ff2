"""The data of the zoo's lm-eval tasks (written by zoo/build_lm_eval_tasks.py: do not edit).

Each task's YAML names `load_zoo_task` as its custom_dataset, with its own name in dataset_kwargs:
the rows come from this folder's data/<task>/<split>.jsonl, wherever the folder is (no hub).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import datasets

DATA = Path(__file__).parent / "data"


def load_zoo_task(*, task: str, **_: Any) -> datasets.DatasetDict:
    # lm-eval passes its metadata (version, model args) along too: only `task` is ours
    splits = {}
    for path in sorted((DATA / task).glob("*.jsonl")):
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
        splits[path.stem] = datasets.Dataset.from_list(rows)
    return datasets.DatasetDict(splits)
