"""lm-eval tasks through the CLI: a mergekit-evolve config converted (evo_ps/from_mergekit_evolve.py)
and run end to end on the zoo, every key that cannot map refused in one line naming it, and the
lm_eval objective's bad input refused before any model loads."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from evo_ps.from_mergekit_evolve import ConversionError, convert, main

REPO_ROOT = Path(__file__).resolve().parents[2]
ZOO = REPO_ROOT / "zoo" / "models"
ZOO_TASKS = REPO_ROOT / "zoo" / "lm_eval_tasks"

# as mergekit-evolve's docs write one (docs/evolve.md there): a genome, the tasks, and the eval settings
MERGEKIT_EVOLVE_CONFIG = """\
genome:
  models:
    - {ja}
    - {math_wiz}
    - {math_abel}
  merge_method: dare_ties
  base_model: {base}
  layer_granularity: 2 # the zoo has 4 layers
  normalize: true
  allow_negative_weights: false
tasks:
  - name: zoo_en_math_choice
    weight: 1.0
  - name: zoo_ja_qa_choice
    weight: 1.0
    metric: "acc,none"
limit: 10
num_fewshot: 0
apply_chat_template: false # the zoo's tokenizer has no chat template
"""


def _config(**changes) -> dict:
    config = yaml.safe_load(MERGEKIT_EVOLVE_CONFIG.format(**{m: ZOO / m for m in ("ja", "math_wiz", "math_abel", "base")}))
    for key, value in changes.items():
        target, _, leaf = key.rpartition(".")
        (config[target] if target else config)[leaf] = value
    return config


def test_every_key_maps_to_its_counterpart():
    experiment = convert(_config(), config_dir=REPO_ROOT, task_search_path=[str(ZOO_TASKS)], max_fevals=7, name="x")
    assert {"override /merge": "dare_ties"} in experiment["defaults"]
    assert {"override /objective": "lm_eval"} in experiment["defaults"]
    assert experiment["pool"]["base"] == str(ZOO / "base")
    assert experiment["pool"]["sources"] == {m: str(ZOO / m) for m in ("ja", "math_wiz", "math_abel")}
    assert experiment["space"] == {"uniform": False, "granularity": 2, "split_components": False,
                                   "warm_start_trials": 0}
    assert experiment["merge"]["options"] == {"normalize": True} and experiment["n_trials"] == 7
    options = experiment["objective"]["options"]
    assert options["tasks"] == [{"name": "zoo_en_math_choice", "weight": 1.0, "metric": "acc,none"},
                                {"name": "zoo_ja_qa_choice", "weight": 1.0, "metric": "acc,none"}]
    assert options["task_paths"] == [str(ZOO_TASKS)] and options["limit"] == 10 and options["num_fewshot"] == 0
    assert options["apply_chat_template"] is False and options["fewshot_as_multiturn"] is True
    # layer_granularity 0: one set for all layers; negative weights: the weight range includes them;
    # normalize unset: mergekit-evolve's default (true for dare_ties, false for task_arithmetic)
    uniform = convert(_config(**{"genome.layer_granularity": 0, "genome.allow_negative_weights": True,
                                 "genome.merge_method": "task_arithmetic", "genome.normalize": None}),
                      config_dir=REPO_ROOT)
    assert uniform["space"]["uniform"] is True and uniform["space"]["bounds"] == {"weight": [-1.0, 1.0]}
    assert {"override /space": "uniform"} in uniform["defaults"]
    assert uniform["merge"]["options"] == {"normalize": False}


@pytest.mark.parametrize("key, value, message", [
    ("genome.smooth", True, "genome.smooth: true .* has no counterpart"),
    ("genome.filters", ["mlp", "self_attn"], "genome.filters: .* nearest is space.split_components=true"),
    ("genome.tokenizer_source", "base", "genome.tokenizer_source: "),
    ("genome.merge_method", "slerp", "genome.merge_method: 'slerp' .* write merge=slerp by hand"),
    ("genome.base_model", None, "genome.base_model: evo_ps merges sources over a base model"),
    ("genome.layer_dropout", 0.1, "genome.layer_dropout: not a mergekit-evolve genome key; known: models"),
    ("shuffle", True, "shuffle: true .* has no counterpart"),
    ("random_init", True, "random_init: true has no counterpart"),
    ("populaton", 8, "populaton: not a mergekit-evolve config key"),
])
def test_what_cannot_map_fails_in_one_line_naming_the_key(key, value, message):
    with pytest.raises(ConversionError, match=message) as err:
        convert(_config(**{key: value}), config_dir=REPO_ROOT)
    assert "\n" not in str(err.value)


def test_the_cli_says_a_bad_key_in_one_error_line(tmp_path, capsys):
    path = tmp_path / "evol.yml"
    path.write_text(yaml.safe_dump(_config(**{"genome.smooth": True})))
    assert main([str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: genome.smooth: true") and err.count("\n") == 1


@pytest.mark.slow  # a 3-trial study with a 5-row table: about a minute
def test_a_mergekit_evolve_config_runs_end_to_end_on_the_zoo(tmp_path, run_cli, capsys):
    config = tmp_path / "evol_config.yml"
    config.write_text(MERGEKIT_EVOLVE_CONFIG.format(**{m: ZOO / m for m in ("ja", "math_wiz", "math_abel", "base")}))
    assert main([str(config), "--task-search-path", str(ZOO_TASKS), "--max-fevals", "3"]) == 0
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "evol_config.yaml").write_text(capsys.readouterr().out)
    run = tmp_path / "run"
    proc = run_cli("evo_ps", f"hydra.searchpath=[file://{tmp_path}]", "+experiment=evol_config",
                   'objective.test.items="0:20"', f"run_dir={run}", f"tracking.mlruns_dir={run / 'mlruns'}")
    table = json.loads((run / "test_table.json").read_text())
    assert list(table) == ["base", "ja", "math_wiz", "math_abel", "best_merge"]
    for row in table.values():  # the fitness is mergekit-evolve's: the tasks' weighted sum
        assert row["score"] == pytest.approx(row["zoo_en_math_choice.acc"] + row["zoo_ja_qa_choice.acc"])
    assert table["math_wiz"]["zoo_en_math_choice.acc"] > table["ja"]["zoo_en_math_choice.acc"]
    assert table["ja"]["zoo_ja_qa_choice.acc"] > table["math_wiz"]["zoo_ja_qa_choice.acc"]
    assert "test split (40 items)" in proc.stdout


def test_a_bad_lm_eval_option_stops_the_cli_in_one_line_before_any_model_loads(cli_error):
    line = cli_error("evo_ps", "+experiment=toy_lm_eval", "objective.options.tasks=[{name: zoo_tally_choice, weight: inf}]")
    assert line == "error: objective.options.tasks[0] (zoo_tally_choice): weight must be a finite number, got inf"


@pytest.mark.slow  # one raced CMA-ES generation of 4 and a 5-row table: about a minute
def test_racing_scores_lm_eval_tasks_in_blocks_of_items(tmp_path, run_cli):
    run = tmp_path / "run"
    run_cli("evo_ps", "+experiment=toy_lm_eval", "evaluation=racing", "evaluation.first_block=12",
            "evaluation.block=12", "sampler.popsize=4", "n_trials=4", 'objective.test.items="0:10"',
            f"run_dir={run}", f"tracking.mlruns_dir={run / 'mlruns'}")
    import optuna

    study = optuna.load_study(study_name="toy_lm_eval", storage=f"sqlite:///{run / 'study.db'}")
    scored = [len(t.user_attrs["item_scores"]["score"]) for t in study.trials]
    assert max(scored) == 60 and min(scored) >= 12  # 3 tasks x limit 20; the leader runs them all
    for trial in study.trials:  # every task's metrics on every trial (Optuna user attributes; MLflow alike)
        assert {f"{t}.{m}" for t in ("zoo_en_math_choice", "zoo_ja_qa_choice", "zoo_tally_choice")
                for m in ("acc", "acc_norm")} | {"score"} <= set(trial.user_attrs)
    table = json.loads((run / "test_table.json").read_text())
    assert set(table["best_merge"]) >= {"score", "zoo_en_math_choice.acc", "zoo_ja_qa_choice.acc",
                                        "zoo_tally_choice.acc"}
