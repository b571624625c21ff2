"""objective=lm_eval (objectives/_lm_eval.py): lm-eval's numbers, per-item scores, split isolation
and the one-line refusals, on the zoo's lm-eval tasks (zoo/lm_eval_tasks/) and a tiny random model."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import objectives



ZOO_TASKS = Path(__file__).resolve().parents[2] / "zoo" / "lm_eval_tasks"


def build(tok, tasks, *, search=None, test=None, **options):
    splits = {"search": search or {"split": "validation"}}
    if test is not None:
        splits["test"] = test
    return objectives.build("lm_eval", tokenizer=tok, splits=splits, tasks=tasks,
                            task_paths=options.pop("task_paths", [str(ZOO_TASKS)]), **options)


@pytest.fixture(scope="module")
def two_tasks(tok):
    return build(tok, [{"name": "zoo_en_math_choice", "weight": 1.0, "metric": "acc"},
                       {"name": "zoo_tally_choice", "weight": 0.5, "metric": "acc_norm,none"}],
                 limit=6, test={"split": "test", "items": "0:8"}, batch_size=8)


def test_metrics_are_lm_evals_numbers_and_the_fitness_their_weighted_sum(two_tasks, tiny_model, tok):
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    ours = two_tasks.score(tiny_model, "test")  # through live_lm; lm-eval's own HF backend is the reference
    theirs = lm_eval.simple_evaluate(
        model=HFLM(pretrained=tiny_model, tokenizer=tok, batch_size=8), tasks=["zoo_en_math_choice", "zoo_tally_choice"],
        task_manager=TaskManager(include_path=str(ZOO_TASKS), include_defaults=False),
        samples={"zoo_en_math_choice": list(range(8)), "zoo_tally_choice": list(range(8))},
        bootstrap_iters=0)["results"]
    for task in ("zoo_en_math_choice", "zoo_tally_choice"):
        for metric in ("acc", "acc_norm"):
            assert ours[f"{task}.{metric}"] == pytest.approx(theirs[task][f"{metric},none"], abs=1e-12)
    assert ours["score"] == pytest.approx(ours["zoo_en_math_choice.acc"] + 0.5 * ours["zoo_tally_choice.acc_norm"])
    assert ours["n"] == 16
    assert two_tasks.default_fitness == "score"
    assert [m.name for m in two_tasks.metrics] == ["score", "zoo_en_math_choice.acc", "zoo_en_math_choice.acc_norm",
                                                   "zoo_tally_choice.acc", "zoo_tally_choice.acc_norm"]


def test_a_subset_of_items_scores_as_those_items_of_the_whole_split(two_tasks, tiny_model):
    whole = two_tasks.score_items(tiny_model, "search")
    assert two_tasks.n_items("search") == 12 and len(whole["score"]) == 12
    items = [7, 0, 11, 4]
    part = two_tasks.score_items(tiny_model, "search", items=items)
    for metric, scores in part.items():
        assert scores == [whole[metric][i] for i in items], metric


def test_the_tasks_are_interleaved_so_a_race_block_holds_every_task(two_tasks):
    order = two_tasks._items("search")
    assert {task for task, _ in order[:2]} == {0, 1}
    assert sorted(doc for task, doc in order if task == 0) == list(range(6))


def test_search_is_the_validation_split_and_test_the_test_split(tok):
    obj = build(tok, ["zoo_parallel_choice"], test={"split": "test"})
    validation = [json.loads(line)["question"] for line in
                  (ZOO_TASKS / "data" / "zoo_parallel_choice" / "validation.jsonl").read_text().splitlines()]
    test = [json.loads(line)["question"] for line in
            (ZOO_TASKS / "data" / "zoo_parallel_choice" / "test.jsonl").read_text().splitlines()]
    assert obj.n_items("search") == len(validation) and obj.n_items("test") == len(test)
    split_task = obj._splits["search"][0]
    assert [split_task.task.eval_docs[d]["question"] for d in split_task.docs] == validation


def test_overlapping_item_ranges_are_refused(tok):
    with pytest.raises(ValueError, match="share 5 problem"):
        build(tok, ["zoo_tally_choice"], search={"split": "test", "items": "0:10"},
              test={"split": "test", "items": "5:20"})
    build(tok, ["zoo_tally_choice"], search={"split": "test", "items": "0:10"}, test={"split": "test", "items": "10:20"})


def _one_split_task(folder, name="one_split", rows=10, extra=""):
    data = folder / f"{name}.jsonl"
    data.write_text("".join(json.dumps({"question": f"Q{i} is it?", "choices": ["yes", "no"], "label": i % 2}) + "\n"
                            for i in range(rows)))
    (folder / f"{name}.yaml").write_text(
        f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\ntest_split: test\n"
        "output_type: multiple_choice\ndoc_to_text: \"{{question}}\"\ndoc_to_choice: \"{{choices}}\"\n"
        "doc_to_target: label\nmetric_list:\n  - metric: acc\n" + extra)


def test_a_task_with_one_split_is_divided_and_the_table_says_where(tok, tiny_model, tmp_path):
    _one_split_task(tmp_path)
    obj = build(tok, ["one_split"], test={"split": "test"}, task_paths=[str(tmp_path)])
    assert obj.n_items("search") == 5 and obj.n_items("test") == 5
    table = obj.aggregate(obj.score_items(tiny_model, "test"))
    assert table["one_split.first_item"] == 5 and table["one_split.items"] == 5
    assert "one_split.first_item" not in obj.aggregate(obj.score_items(tiny_model, "test", items=[0, 1]))


def test_samples_are_lm_evals_per_sample_records(two_tasks, tiny_model, tmp_path):
    two_tasks.score_items(tiny_model, "test")
    [path] = two_tasks.write_samples("test", tmp_path, n=3)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["task"] for r in records] == ["zoo_en_math_choice"] * 3 + ["zoo_tally_choice"] * 3
    assert all({"doc_id", "target", "filtered_resps", "acc", "acc_norm"} <= set(r) for r in records)


# -- bad input: one line, at construction (before any model loads) ------------------------------------

@pytest.mark.parametrize("weight", [float("nan"), float("inf"), "heavy", True])
def test_a_weight_that_is_not_a_finite_number_is_refused(tok, weight):
    with pytest.raises(ValueError, match=r"tasks\[0\] \(zoo_tally_choice\): weight must be a finite number"):
        build(tok, [{"name": "zoo_tally_choice", "weight": weight}])


def test_a_metric_the_task_does_not_produce_is_refused(tok):
    with pytest.raises(ValueError, match="'zoo_tally_choice' does not produce metric 'f1'; it produces acc,none, "
                                         "acc_norm,none"):
        build(tok, [{"name": "zoo_tally_choice", "metric": "f1"}])
    with pytest.raises(ValueError, match="does not produce metric 'exact_match,flexible'; it produces "
                                         "exact_match,last_number, exact_match,ja_answer"):
        build(tok, [{"name": "zoo_ja_math", "metric": "exact_match,flexible"}])


def test_a_limit_larger_than_the_split_is_refused(tok):
    with pytest.raises(ValueError, match="limit=101 is larger than the search split of lm-eval task "
                                         "'zoo_tally_choice' \\(100 items of validation\\)"):
        build(tok, ["zoo_tally_choice"], limit=101)


def test_a_task_yaml_that_does_not_parse_is_named_with_its_line(tok, tmp_path):
    _one_split_task(tmp_path)
    (tmp_path / "broken.yaml").write_text("task: broken\ndoc_to_text: \"{{question}}\"\nmetric_list: [acc\n")
    with pytest.raises(ValueError, match=rf"^{tmp_path / 'broken.yaml'}:\d+: task YAML does not parse"):
        build(tok, ["one_split"], task_paths=[str(tmp_path)])


def test_a_hub_dataset_while_offline_names_the_dataset_and_the_key(tok, tmp_path, monkeypatch):
    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # what no network gives, without the wait
    (tmp_path / "hub.yaml").write_text("task: hub_task\ndataset_path: someorg/some_qa\ntest_split: test\n"
                                       "output_type: multiple_choice\ndoc_to_text: q\ndoc_to_choice: [a, b]\n"
                                       "doc_to_target: 0\n")
    with pytest.raises(FileNotFoundError, match="dataset 'someorg/some_qa' is on the hub and cannot be fetched.*"
                                                "point the task YAML's dataset_path at the local copy"):
        build(tok, ["hub_task"], task_paths=[str(tmp_path)])


@pytest.mark.slow  # indexes lm-eval's own 14,000 task YAMLs (20 s and more)
def test_an_unknown_task_names_the_nearest(tok):
    with pytest.raises(ValueError, match="unknown lm-eval task 'zoo_en_math_choise'; nearest: zoo_en_math_choice"):
        build(tok, ["zoo_en_math_choise"])


def test_bad_split_specs_and_options_are_refused(tok):
    with pytest.raises(ValueError, match="objective.search of objective lm_eval is"):
        build(tok, ["zoo_tally_choice"], search={"source": "zoo", "task": "ja_math"})
    with pytest.raises(ValueError, match="objective.test.items must be a range"):
        build(tok, ["zoo_tally_choice"], test={"split": "test", "items": "first ten"})
    with pytest.raises(ValueError, match="must name at least one lm-eval task"):
        build(tok, [])
