"""`objective.test` as several named test sets: one objective split "test.<name>" each, every table
row scored on each, one table per set (printed, in MLflow under `test.<name>.`, in test_table.json);
one split spec keeps the one "test" split and today's outputs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from evo_core import read_test_tables, register_resolvers, run_study, table_splits
from evo_core.compare import run_tables
from evo_ps import validate
from evo_ps import PSSearch

REPO_ROOT = Path(__file__).resolve().parents[2]
A = {"source": "zoo", "task": "ja_math", "split": "test", "limit": 4}
B = {"source": "zoo", "task": "en_math", "split": "test", "limit": 3}  # other problems: disjoint from A


def test_one_spec_is_the_test_split_and_a_mapping_of_specs_is_named_sets():
    assert table_splits(A) == {"test": A}
    assert table_splits("mgsm_ja.tsv") == {"test": "mgsm_ja.tsv"}
    assert table_splits({}) == {"test": {}}  # refused by the data loader, as before
    assert table_splits({"path": "x.tsv"}) == {"test": {"path": "x.tsv"}}  # no source: the loader says so
    assert table_splits({"a": A, "b-2": B}) == {"test.a": A, "test.b-2": B}


@pytest.mark.parametrize("test, message", [
    ({"a": A, "limit": 12}, r"^objective.test.limit is 12: named test sets \(as objective.test.a\) are "),
    ({"a.b": A}, r"^objective.test: test set name 'a.b' must be letters, digits, _ or -"),
])
def test_bad_named_sets_fail_in_one_line(test, message):
    with pytest.raises(ValueError, match=message) as err:
        table_splits(test)
    assert "\n" not in str(err.value)


def hydra_value(spec: dict) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in spec.items()) + "}"


def ps_config(tmp_path, tiny_model_dirs):
    register_resolvers()
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[
            f"pool.base={tiny_model_dirs['base']}", f"pool.sources.ja={tiny_model_dirs['src_a']}",
            f"pool.sources.math_wiz={tiny_model_dirs['src_b']}", f"run_dir={tmp_path / 'run'}",
            f"tracking.mlruns_dir={tmp_path / 'mlruns'}", "~pool.sources.math_abel", "n_trials=2",
            "space.warm_start_trials=0", "objective.options.max_new_tokens=4", "objective.search.limit=4",
            "~objective.test", f"+objective.test={{a: {hydra_value(A)}, b: {hydra_value(B)}}}"])
    return validate(cfg)


def test_two_named_test_sets_give_two_tables(tmp_path, tiny_model_dirs, capsys):
    cfg = ps_config(tmp_path, tiny_model_dirs)
    table = run_study(cfg, PSSearch(cfg), resolved="")
    rows = ["base", "ja", "math_wiz", "best_merge"]
    assert list(table) == ["a", "b"] and all(list(table[s]) == rows for s in table)
    assert all(set(row) == {"acc", "acc_ja", "paper_acc", "paper_acc_ja"} for s in table for row in table[s].values())
    run = tmp_path / "run"
    assert json.loads((run / "test_table.json").read_text()) == table == read_test_tables(run / "test_table.json")
    out = capsys.readouterr().out
    for name, size in (("a", 4), ("b", 3)):
        assert f"test set {name} ({size} items), best of 2 trials" in out
    assert "test split (" not in out
    # the best merge's outputs, per set
    assert [len((run / "samples" / s / "samples.jsonl").read_text().splitlines()) for s in "ab"] == [4, 3]
    card = (run / "best_model" / "README.md").read_text()
    assert "| a/best_merge | acc_ja |" in card and "| b/base | acc |" in card

    from mlflow.tracking import MlflowClient
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    [parent] = [r for r in client.search_runs([client.get_experiment_by_name("evo_ps").experiment_id])
                if "mlflow.parentRunId" not in r.data.tags]
    metrics = parent.data.metrics
    assert {f"test.{s}.{row}.{m}" for s in "ab" for row in rows for m in ("acc", "acc_ja")} <= set(metrics)
    assert metrics["test.b.best_merge.acc"] == table["b"]["best_merge"]["acc"]
    assert not any(key.count(".") == 2 and key.startswith("test.") for key in metrics), "no unnamed table"
    run_id = parent.info.run_id
    assert {a.path for a in client.list_artifacts(run_id, "samples")} == {"samples/a", "samples/b"}
    assert {"test.a_table.md", "test.b_table.md"} <= {a.path for a in client.list_artifacts(run_id)}
    assert list(run_tables(client, [run_id], prefix="test.b").values()) == [table["b"]]
    with pytest.raises(ValueError, match=r"has named test sets \(a, b\): choose one with --test-set"):
        run_tables(client, [run_id])


def test_one_test_table_reads_as_the_set_test(tmp_path):
    path = tmp_path / "test_table.json"
    path.write_text(json.dumps({"base": {"acc": 0.1, "n_layers": 4}, "best_merge": {"acc": 0.5}}))
    assert read_test_tables(path) == {"test": {"base": {"acc": 0.1, "n_layers": 4}, "best_merge": {"acc": 0.5}}}
