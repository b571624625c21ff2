"""Data and metric of the `bench_zoo_ja_math` lm-eval task (see bench_zoo_ja_math.yaml).

load_dataset: the items of our objective's split spec, each with its prompt already filled in by
our template code (so both loops see the very same strings); the bench passes `split` (a split
spec as in objectives' load_split) and `prompt_template` as TaskManager metadata.
process_results: acc and acc_ja exactly as objectives' "mgsm_ja" scores them (last number equals
the gold number; acc_ja also needs P(ja) > 0.5 from the "fasttext" detector), by calling the same
functions, not a re-implementation.
"""
from __future__ import annotations

from typing import Any

import datasets

import objectives
from objectives import fill, resolve_template

LANGUAGE_DETECTOR = "fasttext"  # the zoo objective's (conf/objective/zoo_ja_math.yaml)


def load_dataset(*, split: dict, prompt_template: str, **_: Any) -> datasets.DatasetDict:
    # lm-eval passes every metadata key (model args, version, ...) along: only two are ours
    template = resolve_template(prompt_template)
    items = objectives.load_split("search", split)
    rows = [{"question": q, "answer": a, "prompt": fill(template, q)} for q, a in items]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    output = results[0]
    prediction = objectives.extract_last_number(output)
    correct = prediction is not None and prediction == objectives.parse_number(doc["answer"])
    japanese = objectives.language_detector(LANGUAGE_DETECTOR)(output) > objectives.JA_THRESHOLD
    return {"acc": float(correct), "acc_ja": float(correct and japanese)}
