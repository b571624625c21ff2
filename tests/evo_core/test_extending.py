"""docs/adding.md, run: its three code blocks register a merge method, an objective and a search
from outside the packages, and each runs a 2-trial study through the one lifecycle (in-process)."""
from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import optuna
import pytest
import torch
from hydra import compose, initialize_config_dir

from evo_core import OBJECTIVES, ObjectiveConfig, TrackingConfig, register_resolvers, run_study
from evo_ps import MERGE_METHODS, PSSearch, validate

REPO_ROOT = Path(__file__).resolve().parents[2]
ZOO_SEARCH = {"source": "zoo", "task": "ja_math", "split": "search", "limit": 4}
ZOO_TEST = {"source": "zoo", "task": "ja_math", "split": "test", "limit": 4}
# the guide's objective on the default group: the group's options (a generative objective's
# generation settings) are not its own, so they go, and it keeps its own default prompt
GOLD_TOKEN_PROBABILITY = ("objective.name=gold_token_probability", "objective.fitness=p_gold", "~objective.options")


@pytest.fixture(scope="module")
def plugins():
    """The guide's code blocks, executed as one module (what a user's my_plugins.py would be)."""
    text = (REPO_ROOT / "docs" / "adding.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 3, "one block per worked example"
    registered = {registry: dict(registry._items) for registry in (OBJECTIVES, MERGE_METHODS)}
    module = sys.modules["my_plugins"] = types.ModuleType("my_plugins")  # dataclasses look it up
    exec(compile("\n".join(blocks), "docs/adding.md", "exec"), module.__dict__)
    yield module
    del sys.modules["my_plugins"]
    for registry, items in registered.items():  # the other tests see the built-in names only
        registry._items = items


def ps_config(tmp_path, tiny_model_dirs, *overrides: str):
    register_resolvers()
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[
            f"pool.base={tiny_model_dirs['base']}", f"pool.sources.ja={tiny_model_dirs['src_a']}",
            f"pool.sources.math_wiz={tiny_model_dirs['src_b']}", f"pool.sources.math_abel={tiny_model_dirs['src_c']}",
            f"run_dir={tmp_path / 'run'}", f"tracking.mlruns_dir={tmp_path / 'mlruns'}", "n_trials=2",
            "space.warm_start_trials=0", "objective.options.max_new_tokens=4", "objective.search.limit=4",
            "+objective.test.limit=4", *overrides])
    return validate(cfg)


def trials(cfg) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=cfg.study_name, storage=f"sqlite:///{Path(cfg.run_dir) / 'study.db'}").trials


def test_new_merge_method_runs_a_study(plugins, tmp_path, tiny_model_dirs):
    cfg = ps_config(tmp_path, tiny_model_dirs, "merge.method=emphasis", "+merge.options.power=2.0")
    search = PSSearch(cfg)
    table = run_study(cfg, search, resolved="")
    assert set(table) == {"base", "ja", "math_wiz", "math_abel", "best_merge"}
    done = trials(cfg)
    assert [t.state.name for t in done] == ["COMPLETE", "COMPLETE"]
    assert set(done[0].params.values()) == {0.5}  # CMA-ES starts at x0
    # the live model holds the best merge, computed by the registered kernel with power 2
    best = max(done, key=lambda t: (t.values[0], -t.number))
    name = "model.layers.1.mlp.up_proj.weight"
    pool, params = search.pool, search.space.tensor_params(best.params)[name]
    expected = plugins.emphasis_kernel(pool.base[name], [pool.sources[s][name] for s in pool.source_names],
                                       {"weight": [params["weight"][s] for s in pool.source_names]}, {"power": 2.0})
    torch.testing.assert_close(pool.live_params()[name].detach(), expected)


def test_new_objective_runs_a_study_and_keeps_graded_item_scores(plugins, tmp_path, tiny_model_dirs):
    cfg = ps_config(tmp_path, tiny_model_dirs, "merge=task_arithmetic", *GOLD_TOKEN_PROBABILITY)
    table = run_study(cfg, PSSearch(cfg), resolved="")
    assert all(set(row) == {"p_gold"} and 0 <= row["p_gold"] <= 1 for row in table.values())
    for trial in trials(cfg):
        scores = trial.user_attrs["item_scores"]["p_gold"]
        assert len(scores) == 4 and trial.values[0] == pytest.approx(sum(scores) / 4)
        assert any(0 < s < 1 for s in scores), "graded, not 0/1"


def test_objective_options_are_checked_by_name(plugins, tmp_path, tiny_model_dirs):
    cfg = ps_config(tmp_path, tiny_model_dirs, *GOLD_TOKEN_PROBABILITY, "+objective.options.temperature=2")
    with pytest.raises(ValueError, match="objective 'gold_token_probability' has no option temperature; "
                                         "known: prompt_template"):
        run_study(cfg, PSSearch(cfg), resolved="")
    assert not (tmp_path / "mlruns").exists(), "nothing started before the check"


def test_new_search_runs_through_the_lifecycle(plugins, tmp_path, tiny_model_dirs):
    cfg = plugins.InterpolationConfig(
        base=str(tiny_model_dirs["base"]), source=str(tiny_model_dirs["src_a"]), study_name="interp", n_trials=2,
        run_dir=str(tmp_path / "run"), tracking=TrackingConfig(mlruns_dir=str(tmp_path / "mlruns"), experiment="x"),
        objective=ObjectiveConfig(name="mgsm_ja", search=ZOO_SEARCH, test=ZOO_TEST,
                                  options={"prompt_template": "Q: {question}\nA:", "max_new_tokens": 4}), imports=["objectives", "zoo"])
    table = run_study(cfg, plugins.InterpolationSearch(cfg), resolved="")
    assert list(table) == ["base", "source", "best"] and 0 <= table["best"]["t"] <= 1
    assert len(trials(cfg)) == 2 and (tmp_path / "run" / "test_table.json").is_file()


def test_an_objectives_own_aggregate_reports_whole_splits(plugins, tmp_path, tiny_model_dirs, monkeypatch):
    # an aggregate that cannot be a mean (2 + mean): full-evaluation trials and the test table use it
    def aggregate(self, item_scores):
        scores = item_scores["p_gold"]
        return {"p_gold": 2 + sum(scores) / len(scores), "n": len(scores)}

    monkeypatch.setattr(plugins.GoldTokenProbability, "aggregate", aggregate, raising=False)
    cfg = ps_config(tmp_path, tiny_model_dirs, "merge=task_arithmetic", *GOLD_TOKEN_PROBABILITY)
    table = run_study(cfg, PSSearch(cfg), resolved="")
    assert all(2 <= row["p_gold"] <= 3 for row in table.values())
    for trial in trials(cfg):
        scores = trial.user_attrs["item_scores"]["p_gold"]
        assert trial.values[0] == pytest.approx(2 + sum(scores) / 4)


def test_an_objective_with_only_the_required_members_gets_the_contracts_defaults(plugins):
    from evo_core import ObjectiveDefaults, with_defaults

    class Required:  # the contract's required members only
        metrics, default_fitness = plugins.GoldTokenProbability.metrics, "p_gold"

        def split_names(self):
            return ["search"]

        def score_items(self, model, split):
            return {"p_gold": [0.25, 0.75]}

    objective = with_defaults(Required())
    assert objective.split_names() == ["search"] and objective.metrics == Required.metrics
    assert objective.aggregate(objective.score_items(None, "search")) == {"p_gold": 0.5, "n": 2}
    assert objective.n_items("search") is None  # no subsets: racing is refused
    assert dict(objective.last_work) == {} and objective.write_samples("search", "unused") == []

    class Own(Required):  # what an objective defines is kept
        last_work = {"items": 2}

        def aggregate(self, item_scores):
            return {"p_gold": 1.0, "n": 2}

    own = with_defaults(Own())
    assert own.last_work == {"items": 2} and own.aggregate({}) == {"p_gold": 1.0, "n": 2}
    assert own.n_items("search") is None
    generative = ObjectiveDefaults()  # a subclass is its own: nothing wrapped
    assert with_defaults(generative) is generative


def test_racing_is_refused_for_an_objective_without_subsets(plugins, tmp_path, tiny_model_dirs):
    cfg = ps_config(tmp_path, tiny_model_dirs, *GOLD_TOKEN_PROBABILITY, "evaluation=racing")
    with pytest.raises(ValueError, match="evaluation.kind=racing scores items in blocks, but objective "
                                         "'gold_token_probability' cannot score a subset"):
        run_study(cfg, PSSearch(cfg), resolved="")


@pytest.mark.parametrize("key", ["max_new_tokens", "batch_size", "prompt_template", "stop_strings", "chat_template",
                                 "language_detector", "decoding", "allow_overlap"])
def test_an_old_generation_key_fails_naming_its_new_place(key):
    from omegaconf import OmegaConf

    from evo_core import StudyConfig, typed_config
    from evo_core._config import check_overrides

    message = (f"^objective.{key} is not a key of the objective group (name, fitness, search, test, options): an "
               f"objective's own settings, generation included, are objective.options.{key}$")
    for override in (f"objective.{key}=4", f"+objective.{key}=4", f"+objective.{key}.sub=4"):  # the command line
        with pytest.raises(ValueError, match=re.escape(message[1:-1])):
            check_overrides(["objective.search.limit=4", override])
    with pytest.raises(ValueError, match=re.escape(message[1:-1])):  # a config file of the old shape
        typed_config(OmegaConf.create({"study_name": "s", "run_dir": "r", "objective": {key: 4}}), StudyConfig)
    check_overrides([f"objective.options.{key}=4", f"+objective.options.{key}=4", "objective.test.limit=4"])
