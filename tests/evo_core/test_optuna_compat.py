"""Each private Optuna API the core relies on (evo_core/_optuna_compat.py), checked against the
installed Optuna: one of these failing means that release changed it."""
from __future__ import annotations

import time
import warnings

import optuna
import pytest
from optuna.trial import TrialState

from evo_core._optuna_compat import (add_finished_trial_user_attrs, cmaes_settings, enqueued_params,
                                     heartbeat_interval, heartbeat_thread, record_heartbeat, sampler_attr_prefix,
                                     set_trial_system_attr, set_trial_user_attr, storage_of, stored_trial, study_id,
                                     trial_id)


def rdb_study(tmp_path, name="s", **heartbeat) -> optuna.Study:
    tmp_path.mkdir(exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}", **heartbeat)
    return optuna.create_study(study_name=name, storage=storage, load_if_exists=True)


def reloaded(tmp_path, name="s") -> optuna.Study:
    """The study through a new storage: what another process sees, not this one's cache."""
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'study.db'}")


def fail_stale(study):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def failed_as_stale(study, trial, *, within: float = 20.0) -> bool:
    """The trial is failed by `fail_stale_trials` within `within` seconds (the grace period is 2 s;
    SQLite stores heartbeats to the second, and a loaded machine adds its own delays)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        fail_stale(study)
        if stored_trial(study, trial).state == TrialState.FAIL:
            return True
        time.sleep(0.5)
    return False


@pytest.mark.parametrize("kind", ["rdb", "memory"])
def test_the_storage_and_a_trials_id_find_the_stored_trial(tmp_path, kind):
    study = rdb_study(tmp_path) if kind == "rdb" else optuna.create_study()
    optuna.create_study(study_name="other", storage=storage_of(study))  # ids are not numbers across studies
    study.optimize(lambda t: t.suggest_float("a", 0, 1), n_trials=2)
    running = study.ask()
    assert isinstance(storage_of(study), optuna.storages.BaseStorage)
    assert stored_trial(study, running).number == running.number == 2
    for trial in study.trials:  # FrozenTrials as well as Trials
        assert stored_trial(study, trial).number == trial.number and trial_id(trial) == trial_id(stored_trial(study, trial))
    assert study_id(study) == storage_of(study).get_study_id_from_name(study.study_name)


def test_attributes_reach_a_running_trial_held_as_a_frozen_trial(tmp_path):
    study = rdb_study(tmp_path)
    study.ask()
    [frozen] = study.get_trials(states=(TrialState.RUNNING,))
    set_trial_user_attr(study, frozen, "genome", "abc")
    set_trial_system_attr(study, frozen, "cma:generation", 3)
    [stored] = reloaded(tmp_path).trials
    assert stored.user_attrs == {"genome": "abc"} and stored.system_attrs["cma:generation"] == 3


def test_an_enqueued_trial_keeps_its_values_where_enqueued_params_reads_them():
    study = optuna.create_study()
    study.enqueue_trial({"a": 0.25, "b": 0.75})
    enqueued, sampled = study.ask(), study.ask()
    assert enqueued_params(stored_trial(study, enqueued)) == {"a": 0.25, "b": 0.75}
    assert enqueued_params(stored_trial(study, sampled)) is None


def test_cmaes_keeps_its_state_under_its_attribute_prefix_and_its_settings_where_read():
    sampler = optuna.samplers.CmaEsSampler(x0={"a": 0.2, "b": 0.4}, sigma0=0.3, popsize=4, seed=0)
    assert cmaes_settings(sampler) == {"x0": {"a": 0.2, "b": 0.4}, "sigma0": 0.3, "popsize": 4}
    study = optuna.create_study(sampler=sampler)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.optimize(lambda t: t.suggest_float("a", 0, 1) + t.suggest_float("b", 0, 1), n_trials=10)
    prefix = sampler_attr_prefix(sampler)
    assert prefix and any(key.startswith(prefix) for t in study.trials[1:] for key in t.system_attrs)
    assert {key.removeprefix(prefix) for key in study.trials[-1].system_attrs if key.startswith(prefix)} >= {"generation"}
    assert sampler_attr_prefix(optuna.samplers.RandomSampler()) is None


def test_the_heartbeat_interval_is_read_where_there_is_one(tmp_path):
    assert heartbeat_interval(rdb_study(tmp_path / "a", heartbeat_interval=7, grace_period=20)) == 7
    assert heartbeat_interval(rdb_study(tmp_path / "b")) is None
    assert heartbeat_interval(optuna.create_study()) is None


def test_one_recorded_heartbeat_starts_a_trials_clock(tmp_path):
    study = rdb_study(tmp_path, heartbeat_interval=1, grace_period=2)
    trial = study.ask()
    time.sleep(3)
    fail_stale(study)
    assert stored_trial(study, trial).state == TrialState.RUNNING  # never beat: never stale
    record_heartbeat(study, trial)
    assert failed_as_stale(study, trial)


def test_the_heartbeat_thread_keeps_a_trial_fresh_while_it_runs(tmp_path):
    study = rdb_study(tmp_path, heartbeat_interval=1, grace_period=2)
    trial = study.ask()
    with heartbeat_thread(study, trial):
        time.sleep(4)  # twice the grace period: fresh only if the thread beat meanwhile
        fail_stale(study)
        assert stored_trial(study, trial).state == TrialState.RUNNING
    assert failed_as_stale(study, trial)


def test_user_attributes_go_into_a_finished_trials_rows(tmp_path):
    study = rdb_study(tmp_path)
    study.tell(study.ask(), state=TrialState.FAIL)
    [failed] = study.trials
    with pytest.raises(RuntimeError):  # what the rows are for: Optuna's API refuses it
        storage_of(study).set_trial_user_attr(trial_id(failed), "fail_reason", "x")
    assert add_finished_trial_user_attrs(study, failed, {"fail_reason": "killed", "heartbeat_failed": True})
    assert reloaded(tmp_path).trials[0].user_attrs == {"fail_reason": "killed", "heartbeat_failed": True}
    assert not add_finished_trial_user_attrs(study, failed, {"fail_reason": "again"})  # already there
    assert not add_finished_trial_user_attrs(optuna.create_study(), failed, {"fail_reason": "x"})  # not RDB
