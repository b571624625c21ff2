"""Every use of Optuna's private API, in one place.

The study loop needs a few things Optuna 4 keeps private: a trial's storage id and the study's
storage (to write to a trial a sampler or a heartbeat callback is handed as a FrozenTrial, and to
beat for trials asked outside `optimize`), the heartbeat thread `optimize` runs, the system
attribute an enqueued trial keeps its values in, CmaEsSampler's attribute prefix, and the RDB
tables (Optuna refuses attributes on a finished trial). Each function below has a test in
tests/evo_core/test_optuna_compat.py that fails if Optuna changes what it relies on: run that
file against a new Optuna release before raising the bound in pyproject.toml.
"""
from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.trial import FrozenTrial


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The study's storage (under Optuna's cache for an RDB storage); Optuna's own
    `fail_stale_trials` reaches it the same way."""
    return study._storage


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """The trial's id in its storage (not its number: ids run across all studies of a storage)."""
    return trial._trial_id


def stored_trial(study: optuna.Study, trial: optuna.Trial | FrozenTrial) -> FrozenTrial:
    """The trial as its storage holds it now (a running trial's attributes set since it was asked)."""
    return storage_of(study).get_trial(trial_id(trial))


def set_trial_user_attr(study: optuna.Study, trial: optuna.Trial | FrozenTrial, key: str, value: Any) -> None:
    """A user attribute on a running trial held only as a FrozenTrial (what a sampler's
    `before_trial` is handed)."""
    storage_of(study).set_trial_user_attr(trial_id(trial), key, value)


def set_trial_system_attr(study: optuna.Study, trial: optuna.Trial | FrozenTrial, key: str, value: Any) -> None:
    """A system attribute (a sampler's state) on a running trial."""
    storage_of(study).set_trial_system_attr(trial_id(trial), key, value)


def enqueued_params(trial: FrozenTrial) -> dict[str, Any] | None:
    """The values an enqueued trial was given (`study.enqueue_trial`), None for a sampled one."""
    return trial.system_attrs.get("fixed_params")


def sampler_attr_prefix(sampler: optuna.samplers.BaseSampler) -> str | None:
    """The prefix of the system attributes a sampler keeps its state in (CmaEsSampler: "cma:");
    None for a sampler without one."""
    return getattr(sampler, "_attr_prefix", None)


def heartbeat_interval(study: optuna.Study) -> int | None:
    """The storage's heartbeat interval in seconds; None if it has no heartbeat (not RDB, or none set)."""
    return getattr(storage_of(study), "get_heartbeat_interval", lambda: None)()


def record_heartbeat(study: optuna.Study, trial: optuna.Trial | FrozenTrial) -> None:
    """One heartbeat for a running trial: from now on it goes stale if nothing beats for it."""
    storage_of(study).record_heartbeat(trial_id(trial))


def heartbeat_thread(study: optuna.Study, trial: optuna.Trial) -> contextlib.AbstractContextManager:
    """The thread `Study.optimize` runs to beat for a trial, as a context manager: a trial asked
    with `study.ask()` beats while inside it."""
    from optuna.storages._heartbeat import get_heartbeat_thread

    return get_heartbeat_thread(trial_id(trial), storage_of(study))


def add_finished_trial_user_attrs(study: optuna.Study, trial: FrozenTrial, attrs: Mapping[str, Any]) -> bool:
    """User attributes on a finished trial, which Optuna's API refuses: rows inserted straight into
    its RDB tables, in one commit. Best effort: False if the storage is not RDB, or the insert
    failed (e.g. a second caller inserted them first)."""
    from optuna.storages._rdb import models

    storage = getattr(storage_of(study), "_backend", storage_of(study))  # under Optuna's cache
    if not hasattr(storage, "scoped_session"):
        return False
    session = storage.scoped_session()
    try:
        for key, value in attrs.items():
            session.add(models.TrialUserAttributeModel(trial_id=trial_id(trial), key=key, value_json=json.dumps(value)))
        session.commit()
        return True
    except Exception:  # noqa: BLE001  (e.g. a second caller: the attributes are there)
        session.rollback()
        return False
    finally:
        session.close()


def study_id(study: optuna.Study) -> int:
    """The study's id in its storage (what optuna-dashboard's URLs name)."""
    return study._study_id


def cmaes_settings(sampler: optuna.samplers.CmaEsSampler) -> dict[str, Any]:
    """The start point, step size and population a CmaEsSampler was built with (Optuna exposes
    none of them)."""
    return {"x0": sampler._x0, "sigma0": sampler._sigma0, "popsize": sampler._popsize}
