"""bench/lm_eval_choice.py on a tiny size: its task is the 4-choice task it says, and its run
finds LiveModelLM's results identical to HFLM's."""
from __future__ import annotations

import json

import pytest

from bench import lm_eval_choice as bench
from zoo.world import COLOURS, LIKES, PLACES, task_items


@pytest.mark.parametrize("kind", ["qa", "math"])
def test_the_task_has_four_distinct_choices_one_of_them_gold(tmp_path, kind):
    name = bench.write_choice_task(tmp_path, 12, kind=kind)
    rows = [json.loads(line) for line in (tmp_path / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()]
    source = "ja_qa" if kind == "qa" else "en_math"
    assert [(r["question"], r["choices"][r["label"]]) for r in rows] == task_items(source, "test")[:12]
    assert all(len(set(r["choices"])) == 4 for r in rows)
    assert {r["label"] for r in rows} != {0}  # the gold answer's place is shuffled
    if kind == "qa":  # the wrong choices are words of the question's own kind
        words = {"なにいろ": COLOURS, "どこに": PLACES, "すき": LIKES}
        for r in rows:
            kind_words = next({ja for _, ja in v} for k, v in words.items() if k in r["question"])
            assert set(r["choices"]) <= kind_words
    requests = bench.task_requests(tmp_path, name)
    assert len(requests) == 48 and len({r.doc_id for r in requests}) == 12


@pytest.mark.parametrize("kv_copies", [False, True], ids=["packed", "kv_copies"])
def test_a_tiny_run_finds_identical_results(kv_copies):
    out = bench.run("base", items=6, reps=1, batch_size=8, kind="qa", kv_copies=kv_copies)
    assert out["requests"] == 24
    assert out["worst"] < bench.ATOL and out["beyond"] == out["greedy_differ"] == out["choice_differ"] == 0
    assert all(wall > 0 and cpu > 0 for wall, cpu, _ in out["timed"].values())
    # each context runs once, not once per choice
    assert 0 < out["positions"]["LiveModelLM"] < out["positions"]["HFLM"] / 2


def test_compare_counts_what_differs():
    class Request:
        def __init__(self, doc_id):
            self.doc_id = doc_id

    requests = [Request(0), Request(0), Request(1), Request(1)]
    reference = [(-1.0, True), (-2.0, False), (-3.0, False), (-2.5, False)]
    results = [(-1.0, True), (-2.0, True), (-2.0, False), (-2.5, False)]
    out = bench.compare(requests, reference, results)
    assert out == {"worst": 1.0, "beyond": 1, "greedy_differ": 1, "choice_differ": 1}
