"""The study loop shared by both searches: Optuna sampler + RDB storage, resumable, fail-safe.

    space = [ParamSpec(name="L00.ja.weight", low=0.0, high=1.0), ...]
    study = open_study(name="toy", storage_url="sqlite:///out/study.db",
                       sampler=make_sampler("cmaes", space=space, seed=0))
    run_trials(study, space=space, evaluate=lambda params, seed: {...}, fitness=["acc_ja"],
               n_trials=120, on_trial=[tracker.log_trial])

`evaluate(params, seed)` builds the candidate (merge, path, ...) and scores it; it returns a dict of
metrics that must contain every fitness key. A trial that raises or returns a non-finite fitness
is recorded FAIL, with the reason in its user attribute `fail_reason`, and the study goes on; a
full disk stops it (NoSpaceLeft): the next trial would fail the same way.
Re-running with the same storage resumes: finished trials are kept and only the missing ones run. Several workers (processes, machines) may share one storage: `n_trials` is the
study's total (a worker stops when the study has that many finished, so up to workers - 1 extra
trials may finish), each trial records which worker ran it, and `wait_for_workers` lets one worker
wait for the others' running trials before it reads the final result.
"""
from __future__ import annotations

import contextlib
import math
import os
import socket
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from ._files import NoSpaceLeft, disk_full_reason, open_store
from ._optuna_compat import (add_finished_trial_user_attrs, enqueued_params, heartbeat_interval, record_heartbeat,
                             trial_id)
from ._registry import Registry
from ._secrets import mask_secrets

FINISHED = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)


@dataclass(frozen=True)
class ParamSpec:
    """One searched float: its stable name, bounds and (optional) starting point."""

    name: str
    low: float
    high: float
    init: float | None = None

    def __post_init__(self):
        if not self.low < self.high:
            raise ValueError(f"parameter {self.name}: low {self.low} must be below high {self.high}")
        if self.init is not None and not self.low <= self.init <= self.high:
            raise ValueError(f"parameter {self.name}: start {self.init} outside [{self.low}, {self.high}]")


def paper_popsize(n_params: int) -> int:
    """CMA-ES default population 4 + floor(3 ln n), as in the paper."""
    return 4 + math.floor(3 * math.log(n_params))


def start_point(space: Sequence[ParamSpec], x0: dict[str, float] | None = None) -> dict[str, float]:
    """CMA-ES's x0: each spec's start if it has one, else the middle of its range (0.5 on [0, 1], the
    paper's); entries of `x0` override."""
    return {p.name: (p.init if p.init is not None else (p.low + p.high) / 2) for p in space} | (x0 or {})


def _cmaes(space, seed, *, sigma0=None, popsize=None, separable=False, x0=None, **_):
    start = start_point(space, x0)
    with warnings.catch_warnings():
        # Optuna >= 4.9 marks x0/sigma0 deprecated (removal in 6.0); they are the paper's settings
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*(x0|sigma0)")
        return optuna.samplers.CmaEsSampler(
            x0=start, sigma0=sigma0, seed=seed, popsize=popsize or paper_popsize(len(space)),
            use_separable_cma=separable, warn_independent_sampling=False)


def _tpe(space, seed, **_):
    return optuna.samplers.TPESampler(seed=seed, multivariate=True)


def _random(space, seed, **_):
    return optuna.samplers.RandomSampler(seed=seed)


def _nsga2(space, seed, *, popsize=None, **_):
    return optuna.samplers.NSGAIISampler(seed=seed, population_size=popsize or 50)


SAMPLERS: Registry[Callable[..., optuna.samplers.BaseSampler]] = Registry("sampler")
for _name, _factory in {"cmaes": _cmaes, "tpe": _tpe, "random": _random, "nsga2": _nsga2}.items():
    SAMPLERS.register(_name, _factory)


def make_sampler(kind: str, *, space: Sequence[ParamSpec], seed: int | None, **options) -> optuna.samplers.BaseSampler:
    """A registered sampler by name (cmaes, tpe, random, nsga2); options: sigma0, popsize, separable, x0."""
    return SAMPLERS.get(kind)(space, seed, **options)


def open_study(*, name: str, storage_url: str, sampler: optuna.samplers.BaseSampler,
               directions: Sequence[str] = ("maximize",),
               first_trial: dict[str, float] | None = None) -> optuna.Study:
    """Create the study, or load it to resume. RDB storages get a heartbeat so that a trial of a
    killed worker is marked FAIL (and retried) instead of hanging RUNNING forever. Workers may open
    a fresh storage at once (the schema is created by one of them at a time). `first_trial` is
    enqueued if the study has no trial yet, by one worker only on SQLite and PostgreSQL (under
    open_store's lock): workers started together would each see an empty study and enqueue it, and
    the same point would be scored once per worker."""
    def create() -> optuna.Study:
        if storage_url.startswith(("sqlite:", "postgresql", "mysql")):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = optuna.storages.RDBStorage(
                    storage_url, heartbeat_interval=10, grace_period=30,
                    heartbeat_stale_trial_callback=RetryAtItsPoint())
        else:
            storage = storage_url
        study = optuna.create_study(study_name=name, storage=storage, sampler=sampler,
                                    directions=list(directions), load_if_exists=True)
        if first_trial is not None and not study.trials:  # under open_store's lock (SQLite, PostgreSQL)
            study.enqueue_trial(first_trial)
        return study

    if not storage_url.startswith(("sqlite:", "postgresql", "mysql")):
        return create()
    return open_store(storage_url, create)


def suggest_all(study: optuna.Study, trial: optuna.Trial, space: Sequence[ParamSpec]) -> dict[str, float]:
    """The trial's values for every parameter of `space`. Its whole point is recorded first, in one
    write (user attr "point"), because the storage then takes one write per parameter: a worker
    killed in between leaves a trial with a few of them, and RetryAtItsPoint retries it at the
    whole point instead of those few plus fresh draws."""
    if space:
        trial.set_user_attr("point", planned_point(study, trial))
    return {p.name: trial.suggest_float(p.name, p.low, p.high) for p in space}


def planned_point(study: optuna.Study, trial: optuna.Trial) -> dict[str, float]:
    """What the trial's suggestions will return: an enqueued trial's fixed values, else what a
    relative sampler (CMA-ES) drew for the whole space, which its first suggestion would draw
    anyway; an independent sampler draws per parameter, so nothing is known yet (empty)."""
    [frozen] = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if t.number == trial.number]
    fixed = enqueued_params(frozen)  # never ask the sampler for an enqueued trial
    return {name: float(value) for name, value in (fixed or trial.relative_params).items()}


class RetryAtItsPoint:
    """Heartbeat callback: the trial of a killed worker is retried once, as an enqueued trial at
    exactly its own point (its recorded "point", with every stored parameter)."""

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        worker = trial.user_attrs.get("worker", "its worker")
        record_fail_reason(study, trial, f"worker {worker} stopped: no heartbeat for 30 s (killed, or its machine "
                                         f"died)" + ("" if "retry_of" in trial.user_attrs else "; retried at its point"))
        if "retry_of" in trial.user_attrs:
            return  # a retry that died too is not retried again
        study.enqueue_trial({**trial.user_attrs.get("point", {}), **trial.params}, user_attrs={"retry_of": trial.number})


def fail_reason(err: Exception) -> str:
    """A failed trial's `fail_reason`: the error's type and message, credentials masked (a driver's
    error may quote a URL, and the attribute lands in the study's tables and the MLflow run)."""
    return mask_secrets(f"{type(err).__name__}: {err}")


def record_fail_reason(study: optuna.Study, trial: FrozenTrial, reason: str) -> None:
    """User attrs `fail_reason` and `heartbeat_failed` on a trial the heartbeat just failed. Optuna
    refuses attributes on a finished trial, so they go straight into its RDB tables (one insert;
    only the process whose state change won calls this). Best effort: the retry must happen anyway,
    and MLflow's nested run says why without it (Tracker.log_trial)."""
    add_finished_trial_user_attrs(study, trial, {"fail_reason": reason, "heartbeat_failed": True})


def finished_trials(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=FINISHED)


def run_trials(study: optuna.Study, *, space: Sequence[ParamSpec],
               evaluate: Callable[[dict[str, float], int], dict[str, float]], fitness: Sequence[str],
               n_trials: int, timeout: float | None = None,
               on_trial: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = ()) -> None:
    """Run trials until the study holds `n_trials` finished ones (or `timeout` seconds pass)."""
    fitness = list(fitness)
    assert len(fitness) == len(study.directions), "one fitness key per study direction"
    worker = f"{socket.gethostname()}:{os.getpid()}"  # recorded on every trial this process runs

    def objective(trial: optuna.Trial):
        try:
            return scored(trial)
        except Exception as err:  # Optuna records the FAIL; the trial itself must say why
            if disk_full_reason(err):  # every next trial would fail the same way: stop the study
                stop_on_full_disk(study, trial, err)
            trial.set_user_attr("fail_reason", fail_reason(err))
            raise

    def scored(trial: optuna.Trial):
        params = suggest_all(study, trial, space)  # writes too: the point, then each parameter
        trial.set_user_attr("worker", worker)
        started = time.perf_counter()
        metrics = evaluate(params, trial.number)
        return record_metrics(trial, {"trial_seconds": time.perf_counter() - started, **metrics}, fitness)

    remaining = n_trials - len(finished_trials(study))
    if remaining <= 0:
        return
    study.optimize(objective, n_trials=remaining, timeout=timeout, catch=(Exception,),
                   callbacks=[optuna.study.MaxTrialsCallback(n_trials, states=FINISHED), *on_trial])


def stop_on_full_disk(study: optuna.Study, trial: optuna.Trial, err: Exception) -> None:
    """Raise NoSpaceLeft, which Optuna's loop lets through (no next trial, no traceback logged),
    after telling the trial FAIL if the storage still takes that one write (SQLite rolled the
    failed write back); if not, the heartbeat fails it on resume, after its grace period."""
    with contextlib.suppress(Exception):
        trial.set_user_attr("fail_reason", f"{type(err).__name__}: {err}")
    with contextlib.suppress(Exception):
        study.tell(trial, state=TrialState.FAIL)
    raise NoSpaceLeft(err) from err


def record_metrics(trial: optuna.Trial, metrics: dict[str, Any], fitness: Sequence[str]) -> float | list[float]:
    """A trial's metrics as its user attributes, and its fitness value(s) to tell the study;
    KeyError/ValueError for a missing or non-finite fitness."""
    for key, value in metrics.items():  # numbers as floats; per-item scores as they are
        trial.set_user_attr(key, value if isinstance(value, (dict, list)) else float(value))
    missing = [k for k in fitness if k not in metrics]
    if missing:
        raise KeyError(f"evaluate() returned no {missing}; it returned {sorted(metrics)}")
    values = [float(metrics[k]) for k in fitness]
    non_finite = [f"{k}={v}" for k, v in zip(fitness, values) if not math.isfinite(v)]
    if non_finite:  # Optuna would keep an inf, and it would win every comparison
        raise ValueError(f"non-finite fitness {', '.join(non_finite)}")
    return values[0] if len(values) == 1 else values


def tell_metrics(study: optuna.Study, trial: optuna.Trial, metrics: dict[str, Any], fitness: Sequence[str]) -> None:
    """Record a trial scored outside study.optimize (racing, multi-fidelity) and tell the study: its
    value(s), or FAIL with the reason when the fitness is missing or not finite (as run_trials)."""
    try:
        values = record_metrics(trial, metrics, fitness)
    except Exception as err:  # noqa: BLE001  (a non-finite fitness fails the trial, as in run_trials)
        trial.set_user_attr("fail_reason", fail_reason(err))
        study.tell(trial, state=TrialState.FAIL)
        return
    study.tell(trial, values)


def killed_trials(storage: str, name: str) -> int:
    """Trials of study `name` that a dead worker left FAILed (no fail_reason; the heartbeat failed
    them): a search that plans its own trials runs each again. 0 while the study does not exist."""
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return 0
    return sum("fail_reason" not in t.user_attrs for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))


def wait_for_workers(*studies: optuna.Study, poll_seconds: float = 2.0,
                     on_wait: Callable[[int], None] = lambda running: None) -> None:
    """Block while other workers still run trials of `studies` (all on one storage); `on_wait(n)`
    hears each new count of running trials. Only RDB storages (they have heartbeats) wait: a dead
    worker's trial stops blocking once its heartbeat is older than the grace period (30 s), and is
    then marked FAIL. Pass every phase's study: Optuna fails stale trials only of a study it still
    optimizes, so a worker killed in an earlier phase would leave that trial RUNNING for good."""
    if heartbeat_interval(studies[0]) is None:
        return  # no heartbeat: a dead worker can't be told from a slow one, so don't wait forever
    reported, seen = 0, set()
    while True:
        running = []
        for study in studies:  # one loop for all: their dead trials' grace periods run together
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
            running += [(study, t) for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
        if not running:
            return
        # A worker killed between creating a trial and its first heartbeat leaves a trial that
        # never goes stale. One heartbeat from here starts its clock; a live worker's own
        # heartbeats keep its trial fresh anyway.
        for study, trial in running:
            if trial_id(trial) not in seen:
                record_heartbeat(study, trial)
                seen.add(trial_id(trial))
        if len(running) != reported:
            on_wait(len(running))
            reported = len(running)
        time.sleep(poll_seconds)


def best_trial(study: optuna.Study) -> FrozenTrial:
    """The best finished trial (first objective for multi-objective studies). A trial that racing
    stopped early (user attr `partial`) is never the best: its value is an estimate on a few items,
    and the lucky ones among many such estimates would win."""
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if not t.user_attrs.get("partial")]
    if not complete:
        raise RuntimeError(f"study {study.study_name!r} has no complete trial scored on every item")
    sign = 1 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else -1
    return max(complete, key=lambda t: (sign * t.values[0], -t.number))
