"""MLflow tracking: parent run, nested trial runs, the comparison table; resume reuses the run."""
from __future__ import annotations

from evo_core import ParamSpec, Tracker, make_sampler, open_study, run_trials

SPACE = [ParamSpec(name="a", low=0.0, high=1.0)]


def test_parent_and_nested_runs(tmp_path):
    tracker = Tracker(mlruns_dir=tmp_path / "mlruns", experiment="t")
    run_id = tracker.start(run_id=None, run_name="study", params={"seed": 0})
    study = open_study(name="s", storage_url=f"sqlite:///{tmp_path / 's.db'}",
                       sampler=make_sampler("random", space=SPACE, seed=0))
    run_trials(study, space=SPACE, evaluate=lambda p, s: {"acc_ja": p["a"], "eval_seconds": 0.1},
               fitness=["acc_ja"], n_trials=3, on_trial=[tracker.log_trial])
    table = tracker.log_table({"base": {"acc": 0.1, "acc_ja": 0.0}, "best": {"acc": 0.5, "acc_ja": 0.4}},
                              prefix="test")
    tracker.finish()

    client = tracker.client
    nested = client.search_runs([tracker.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'")
    assert len(nested) == 3
    assert {r.data.params["a"] for r in nested} == {repr(t.params["a"]) for t in study.trials}
    assert all("acc_ja" in r.data.metrics and "eval_seconds" in r.data.metrics for r in nested)
    parent = client.get_run(run_id)
    assert parent.data.metrics["test.best.acc_ja"] == 0.4
    assert parent.data.metrics["best_value"] == max(t.values[0] for t in study.trials)
    assert "| best | 50.0 | 40.0 |" in table
    # a resumed study logs into the same parent run
    again = Tracker(mlruns_dir=tmp_path / "mlruns", experiment="t")
    assert again.start(run_id=run_id, run_name="study", params={}) == run_id


def test_a_primary_killed_before_storing_its_run_id_reopens_that_run(tmp_path):
    # the run of a study's key is found again when the study holds no run id yet; another key's is not
    first = Tracker(mlruns_dir=tmp_path / "mlruns", experiment="t").start(run_id=None, key="k1", run_name="s",
                                                                           params={})
    again = Tracker(mlruns_dir=tmp_path / "mlruns", experiment="t")
    assert again.start(run_id=None, key="k1", run_name="s", params={}) == first
    assert again.start(run_id=None, key="k2", run_name="s", params={}) != first


def test_a_helper_joining_a_finished_run_leaves_it_finished(tmp_path):
    primary = Tracker(mlruns_dir=tmp_path, experiment="x")
    run_id = primary.start(run_id=None, run_name="s", params={})
    primary.finish()
    helper = Tracker(mlruns_dir=tmp_path, experiment="x")  # a helper started (again) after the primary's end
    assert helper.start(run_id=run_id, run_name="s", params={}, join=True) == run_id
    assert helper.client.get_run(run_id).info.status == "FINISHED"
    assert primary.start(run_id=run_id, run_name="s", params={}) == run_id  # a primary resuming reopens it
    assert primary.client.get_run(run_id).info.status == "RUNNING"


def test_a_trial_logged_half_or_twice_ends_with_one_run(tmp_path):
    # what a worker whose MLflow server went away mid-call can leave: a nested run created but never
    # finished (RUNNING, no params), or a call tried again after the server had done it (a second run)
    import optuna

    tracker = Tracker(mlruns_dir=tmp_path / "mlruns", experiment="t")
    run_id = tracker.start(run_id=None, run_name="s", params={})
    study = optuna.create_study(study_name="s")
    study.optimize(lambda trial: trial.suggest_float("a", 0, 1), n_trials=2)
    first, second = study.trials
    tracker.log_trial(study, first)
    tracker.log_trial(study, first)
    half = tracker.client.create_run(tracker.experiment_id, run_name="s/trial-0001",
                                     tags={"mlflow.parentRunId": run_id, "study": "s"})
    tracker.log_missing_trials([study], settle_seconds=0)
    nested = tracker.client.search_runs([tracker.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'")
    assert sorted((r.info.run_name, r.info.status) for r in nested) == [("s/trial-0000", "FINISHED"),
                                                                        ("s/trial-0001", "FINISHED")]
    assert half.info.run_id not in {r.info.run_id for r in nested}
    assert {r.info.run_name: r.data.params for r in nested}["s/trial-0001"] == {"a": repr(second.params["a"])}


def test_a_table_column_is_in_one_unit_even_when_a_score_passes_one():
    from evo_core import markdown_table

    table = markdown_table({"a": {"acc": 0.5, "score": 0.4}, "b": {"acc": 0.25, "score": 1.2}})
    assert "| a | 50.0 | 0.4 |" in table and "| b | 25.0 | 1.2 |" in table
