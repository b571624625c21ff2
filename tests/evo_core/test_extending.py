"""docs/adding.md, run: its three code blocks register a merge method, an objective and a search
from outside the packages, and each runs a 2-trial study through the one lifecycle (in-process).
The search contract as the guide states it: each scored trial told once, in order, with its
scores (full and racing evaluation, and after a resume); a search's own best; export without
table_models (PS on a fresh search); the progress lines of the final phase."""
from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import optuna
import pytest
import torch
from hydra import compose, initialize_config_dir

import evo_core._lifecycle as lifecycle
from evo_core import (OBJECTIVES, Best, EvaluationConfig, ObjectiveConfig, SamplerConfig, Search, TrackingConfig,
                      best_trial, register_resolvers, run_study)
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


def interpolation_config(plugins, tmp_path, tiny_model_dirs, **overrides):
    return plugins.InterpolationConfig(**{
        "base": str(tiny_model_dirs["base"]), "source": str(tiny_model_dirs["src_a"]), "study_name": "interp",
        "n_trials": 2, "run_dir": str(tmp_path / "run"),
        "tracking": TrackingConfig(mlruns_dir=str(tmp_path / "mlruns"), experiment="x"),
        "objective": ObjectiveConfig(name="mgsm_ja", search=ZOO_SEARCH, test=ZOO_TEST,
                                     options={"prompt_template": "Q: {question}\nA:", "max_new_tokens": 4}),
        "imports": ["objectives", "zoo"],
        **overrides})


def test_new_search_runs_through_the_lifecycle(plugins, tmp_path, tiny_model_dirs, capsys):
    cfg = interpolation_config(plugins, tmp_path, tiny_model_dirs)
    table = run_study(cfg, plugins.InterpolationSearch(cfg), resolved="")
    assert list(table) == ["base", "source", "best"] and 0 <= table["best"]["t"] <= 1
    assert len(trials(cfg)) == 2 and (tmp_path / "run" / "test_table.json").is_file()
    best = best_trial(optuna.load_study(study_name="interp", storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}"))
    out = capsys.readouterr().out
    assert f"test split (4 items), best of 2 trials (trial {best.number}):" in out  # Search's default best
    assert (tmp_path / "run" / "best_model" / "config.json").is_file()


def recording(plugins):
    """The guide's search, telling what it was told."""
    class Recording(plugins.InterpolationSearch):
        told = []

        def on_scored(self, scored):
            self.told.append(scored)

    return Recording


def test_each_scored_trial_is_told_once_in_order_with_its_scores(plugins, tmp_path, tiny_model_dirs):
    cfg = interpolation_config(plugins, tmp_path, tiny_model_dirs, n_trials=3)
    search = recording(plugins)(cfg)
    run_study(cfg, search, resolved="")
    done = trials(cfg)
    assert [(s.phase, s.number, s.earlier) for s in search.told] == [("interp", n, False) for n in range(3)]
    for scored, trial in zip(search.told, done):
        assert scored.values == tuple(trial.values) and not scored.partial
        assert scored.item_scores == trial.user_attrs["item_scores"] and len(scored.item_scores["acc_ja"]) == 4
        assert scored.values[0] == pytest.approx(sum(scored.item_scores["acc_ja"]) / 4)

    # resumed with a larger budget: the study's trials first (earlier), then the new one
    cfg = interpolation_config(plugins, tmp_path, tiny_model_dirs, n_trials=4)
    search = recording(plugins)(cfg)
    search.told = []
    run_study(cfg, search, resolved="")
    assert [(s.number, s.earlier) for s in search.told] == [(0, True), (1, True), (2, True), (3, False)]
    assert search.told[3].item_scores == trials(cfg)[3].user_attrs["item_scores"]


def test_raced_trials_are_told_with_the_items_they_were_scored_on(plugins, tmp_path, tiny_model_dirs):
    cfg = interpolation_config(plugins, tmp_path, tiny_model_dirs, n_trials=9,
                               objective=ObjectiveConfig(name="mgsm_ja", search={**ZOO_SEARCH, "limit": 12},
                                                         test=ZOO_TEST, options={"prompt_template": "Q: {question}\nA:",
                                                                                 "max_new_tokens": 4}),
                               sampler=SamplerConfig(kind="cmaes", sigma0=0.3, popsize=4),
                               evaluation=EvaluationConfig(kind="racing", first_block=4, block=4, tolerance=0.0))
    search = recording(plugins)(cfg)
    search.told = []
    run_study(cfg, search, resolved="")
    done = [t for t in trials(cfg) if t.state.name == "COMPLETE"]
    assert [s.number for s in search.told] == [t.number for t in done] and len(done) == 9
    for scored, trial in zip(search.told, done):
        n = len(scored.item_scores["acc_ja"])
        assert scored.item_scores == trial.user_attrs["item_scores"] and n in (4, 8, 12)
        assert scored.partial == (n < 12) == trial.user_attrs["partial"]


def test_a_search_names_its_own_best(plugins, tmp_path, tiny_model_dirs, capsys):
    class FirstIsBest(plugins.InterpolationSearch):
        def best(self, study):
            return Best(study.trials[0], "the first trial, as this search decides")

    cfg = interpolation_config(plugins, tmp_path, tiny_model_dirs)
    table = run_study(cfg, FirstIsBest(cfg), resolved="")
    first = trials(cfg)[0]
    assert table["best"]["t"] == first.params["t"]  # table_models and export get the search's best
    assert "test split (4 items), the first trial, as this search decides:" in capsys.readouterr().out


def test_a_search_missing_a_member_is_refused_in_one_line(plugins, tmp_path, tiny_model_dirs):
    class NoExport:  # duck-typed, not a Search: no check_objective, on_scored, best, unchanged_model, export
        tokenizer_path = str(tiny_model_dirs["base"])
        check = load = signature = search = table_models = lambda self, *args: None

    class ForgotExport(Search):  # a subclass: the optional members' defaults, but export only declared
        tokenizer_path = str(tiny_model_dirs["base"])
        check = load = signature = search = table_models = lambda self, *args: None

    cfg = interpolation_config(plugins, tmp_path, tiny_model_dirs)
    with pytest.raises(ValueError, match=r"^search NoExport has no check_objective, on_scored, best, unchanged_model, "
                                         r"export: a search implements evo_core.Search \(subclass it"):
        run_study(cfg, NoExport(), resolved="")
    with pytest.raises(ValueError, match=r"^search ForgotExport has no export: "):
        run_study(cfg, ForgotExport(), resolved="")
    assert not (tmp_path / "mlruns").exists(), "nothing started before the check"


def test_the_final_phase_prints_a_line_per_row_and_for_the_export(plugins, tmp_path, tiny_model_dirs, capsys,
                                                                   monkeypatch):
    monkeypatch.setattr(lifecycle, "PROGRESS_SECONDS", 0.0)  # every batch's line, not one per 30 s
    cfg = interpolation_config(plugins, tmp_path, tiny_model_dirs,
                               objective=ObjectiveConfig(name="mgsm_ja", search=ZOO_SEARCH, test=ZOO_TEST,
                                                         options={"prompt_template": "Q: {question}\nA:",
                                                                  "max_new_tokens": 4, "batch_size": 2}))
    run_study(cfg, plugins.InterpolationSearch(cfg), resolved="")
    out = capsys.readouterr().out
    final = out[out.index("table   base on test ..."):].splitlines()
    for row in ("base", "source", "best"):
        start = final.index(f"table   {row} on test ...")
        assert re.fullmatch(rf"table   {row} on test: 2/4 items, \d+\.\d min", final[start + 1])  # batch progress
        assert re.fullmatch(rf"table   {row} on test: 4/4 items, \d+\.\d min", final[start + 2])
        assert re.fullmatch(rf"table   {row} on test: done in \d+\.\d s", final[start + 3])
    export = final.index("export  writing best_model ...")
    assert re.fullmatch(r"export  writing best_model: done in \d+\.\d s", final[export + 1])
    assert export > final.index("table   best on test ...")
    assert "items" not in out[:out.index("table   base on test ...")], "no batch lines while trials are scored"


def test_ps_export_needs_no_table_models(tmp_path, tiny_model_dirs):
    """A fresh search, only checked and loaded (its live model holds the base), exports the best
    merge of a finished study: the same weights, bit for bit, as the run's own export."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    cfg = ps_config(tmp_path, tiny_model_dirs, "n_trials=3")  # dare_ties: its drops are seeded by the trial
    run_study(cfg, PSSearch(cfg), resolved="")
    model_dir = tmp_path / "run" / "best_model"
    saved = load_file(model_dir / "model.safetensors")
    (model_dir / "model.safetensors").unlink()
    study = optuna.load_study(study_name=cfg.study_name, storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")
    best = best_trial(study)

    fresh = PSSearch(cfg)
    fresh.check()
    fresh.load(AutoTokenizer.from_pretrained(fresh.tokenizer_path))
    fresh.export(best, study, {})
    again = load_file(model_dir / "model.safetensors")
    assert again.keys() == saved.keys() and all(torch.equal(again[k], saved[k]) for k in saved)
    base = fresh.pool.base
    assert any(not torch.equal(again[k], base[k]) for k in base if k in again), "a merge, not the base"


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
    assert objective.likelihood_items is None  # no likelihood: evaluation.cheap=likelihood is refused
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
    with pytest.raises(ValueError, match="evaluation.kind=racing scores subsets of items, but objective "
                                         "'gold_token_probability' cannot score a subset"):
        run_study(cfg, PSSearch(cfg), resolved="")


def test_multi_fidelity_is_refused_for_an_objective_without_subsets(plugins, tmp_path, tiny_model_dirs):
    cfg = ps_config(tmp_path, tiny_model_dirs, *GOLD_TOKEN_PROBABILITY, "evaluation=multi_fidelity")
    with pytest.raises(ValueError, match="evaluation.kind=multi_fidelity scores subsets of items, but objective "
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
