"""The shared study loop: paper settings, resume, failures, totals across re-runs."""
from __future__ import annotations

import math

import optuna
import pytest

from evo_core import ParamSpec, best_trial, make_sampler, open_study, paper_popsize, run_trials
from evo_core._optuna_compat import cmaes_settings, enqueued_params

SPACE = [ParamSpec(name=f"L{i}.w", low=0.0, high=1.0) for i in range(3)]


def quadratic(params, seed):
    return {"fit": -sum((v - 0.3) ** 2 for v in params.values()), "seed": seed}


def study_at(tmp_path, sampler="cmaes", seed=0):
    return open_study(name="s", storage_url=f"sqlite:///{tmp_path / 'study.db'}",
                      sampler=make_sampler(sampler, space=SPACE, seed=seed, sigma0=1 / 6))


def test_paper_cmaes_settings():
    assert paper_popsize(40) == 4 + math.floor(3 * math.log(40)) == 15
    sampler = make_sampler("cmaes", space=SPACE, seed=0, sigma0=1 / 6)
    settings = cmaes_settings(sampler)
    assert settings["x0"] == {p.name: 0.5 for p in SPACE}
    assert settings["sigma0"] == pytest.approx(1 / 6) and settings["popsize"] == paper_popsize(3)


def test_unknown_sampler_lists_known():
    with pytest.raises(ValueError, match="known: cmaes, nsga2, random, tpe"):
        make_sampler("annealing", space=SPACE, seed=0)


def test_bad_param_bounds():
    with pytest.raises(ValueError, match="low 1.0 must be below high 0.0"):
        ParamSpec(name="x", low=1.0, high=0.0)


def test_resume_runs_only_missing_trials(tmp_path):
    calls = []

    def evaluate(params, seed):
        calls.append(seed)
        return quadratic(params, seed)

    run_trials(study_at(tmp_path), space=SPACE, evaluate=evaluate, fitness=["fit"], n_trials=5)
    assert len(calls) == 5
    # same storage, larger total: only the 3 missing trials run; finished ones are kept
    study = study_at(tmp_path)
    run_trials(study, space=SPACE, evaluate=evaluate, fitness=["fit"], n_trials=8)
    assert len(calls) == 8 and len(study.trials) == 8
    run_trials(study_at(tmp_path), space=SPACE, evaluate=evaluate, fitness=["fit"], n_trials=8)
    assert len(calls) == 8


def test_failures_and_nan_are_recorded_and_the_study_goes_on(tmp_path):
    def evaluate(params, seed):
        if seed == 1:
            raise RuntimeError("merge exploded")
        if seed == 2:
            return {"fit": float("nan")}
        return quadratic(params, seed)

    study = study_at(tmp_path)
    run_trials(study, space=SPACE, evaluate=evaluate, fitness=["fit"], n_trials=5)
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "FAIL", "FAIL", "COMPLETE", "COMPLETE"]
    assert best_trial(study).state.name == "COMPLETE"


def test_same_seed_same_trials(tmp_path):
    runs = []
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        study = study_at(tmp_path / sub, seed=3)
        run_trials(study, space=SPACE, evaluate=quadratic, fitness=["fit"], n_trials=6)
        runs.append([t.params for t in study.trials])
    assert runs[0] == runs[1]


def test_missing_fitness_key_fails_the_trial(tmp_path):
    study = study_at(tmp_path, sampler="random")
    run_trials(study, space=SPACE, evaluate=lambda p, s: {"other": 1.0}, fitness=["fit"], n_trials=2)
    assert all(t.state == optuna.trial.TrialState.FAIL for t in study.trials)


def test_wait_for_workers_blocks_until_other_trials_finish(tmp_path):
    import threading
    import time

    from evo_core import wait_for_workers

    study = study_at(tmp_path)
    run_trials(study, space=SPACE, evaluate=quadratic, fitness=["fit"], n_trials=2)
    assert all(t.user_attrs["worker"] for t in study.trials)  # every trial names its worker
    other = study.ask()  # another worker's trial, still running
    threading.Timer(1.0, lambda: study.tell(other, -1.0)).start()
    heard, started = [], time.monotonic()
    wait_for_workers(study, poll_seconds=0.1, on_wait=heard.append)
    assert time.monotonic() - started >= 0.9 and heard == [1]
    assert not study.get_trials(states=(optuna.trial.TrialState.RUNNING,))


def test_wait_for_workers_is_not_held_by_a_dead_workers_trial(tmp_path):
    # a worker killed right after creating a trial leaves it RUNNING with no heartbeat at all; one
    # killed in an earlier phase leaves it in a study no optimize() fails stale trials of any more
    import threading

    from evo_core import wait_for_workers

    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}", heartbeat_interval=1, grace_period=2)
    studies = [optuna.create_study(study_name=name, storage=storage) for name in ("s-first-phase", "s")]
    orphans = [study.ask() for study in studies]
    waiting = threading.Thread(target=wait_for_workers, args=studies, kwargs={"poll_seconds": 0.2}, daemon=True)
    waiting.start()
    waiting.join(timeout=30)  # a failure must not hang the suite
    assert not waiting.is_alive(), "still waiting for a trial whose worker is gone"
    for study, orphan in zip(studies, orphans):
        assert study.trials[orphan.number].state == optuna.trial.TrialState.FAIL, study.study_name


def test_workers_opening_a_fresh_study_together_enqueue_its_first_trial_once(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    start = {p.name: 0.5 for p in SPACE}

    def open_one(_):
        return open_study(name="s", storage_url=f"sqlite:///{tmp_path / 'study.db'}", first_trial=start,
                          sampler=make_sampler("random", space=SPACE, seed=None))

    with ThreadPoolExecutor(4) as pool:
        studies = list(pool.map(open_one, range(4)))
    waiting = studies[0].get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert [enqueued_params(t) for t in waiting] == [start]


@pytest.mark.parametrize("kind", ["cmaes", "enqueued"])
def test_a_trial_killed_while_its_parameters_were_stored_is_retried_at_its_own_point(tmp_path, kind):
    # a worker dies after storing 1 of the 3 parameters: its trial stays RUNNING until the heartbeat
    # fails it and calls the retry callback (called directly here: the 30 s grace is not the point)
    from evo_core._study import RetryAtItsPoint, suggest_all

    study = study_at(tmp_path)
    run_trials(study, space=SPACE, evaluate=quadratic, fitness=["fit"], n_trials=4)  # CMA-ES is past x0
    if kind == "enqueued":
        study.enqueue_trial({p.name: 0.25 for p in SPACE})
    trial = study.ask()
    stored = []
    real_suggest = trial.suggest_float

    def dies_after_one(name, low, high):
        if stored:
            raise SystemExit("killed")
        stored.append(real_suggest(name, low, high))
        return stored[-1]

    trial.suggest_float = dies_after_one
    with pytest.raises(SystemExit):
        suggest_all(study, trial, SPACE)
    killed = study.trials[trial.number]
    assert len(killed.params) == 1 and len(killed.user_attrs["point"]) == 3
    RetryAtItsPoint()(study, killed)

    run_trials(study, space=SPACE, evaluate=quadratic, fitness=["fit"], n_trials=5)
    [retry] = [t for t in study.trials if t.user_attrs.get("retry_of") == trial.number]
    assert retry.state.name == "COMPLETE" and retry.params == killed.user_attrs["point"]
    RetryAtItsPoint()(study, retry)  # once: a retry that dies is not retried again
    assert not [t for t in study.trials if t.state.name == "WAITING"]
