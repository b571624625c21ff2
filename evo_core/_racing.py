"""Racing: fewer problems per trial within each CMA-ES generation (`evaluation.kind=racing`).

    verdicts = race([4, 5, 6], score=lambda number, items: [...], n_items=150, first_block=30, block=30,
                    mu=1, z=1.64, tolerance=0.05)   # {number: Verdict(scores, "full" | "in" | "out")}
    race_trials(study, space=..., evaluate=..., fitness=["acc_ja"], n_trials=80, popsize=13, first_block=30,
                block=30, z=1.64, tolerance=0.05, n_items=150)

CMA-ES only uses a generation's ranking, and only that of its mu = popsize // 2 best. So the whole
generation is asked at once (Optuna's CmaEsSampler gives distinct samples of one generation to
several asks before any tell: its generation moves on only when popsize trials of it are complete)
and raced over the search split's items in their order, all candidates on the same items: the first
`first_block` items, then `block` more per round. After each round, for every pair of candidates
still racing, an interval of the mean per-item difference (paired; see difference_bounds); with
`slots` = mu minus the candidates already known to be selected:
- out: at least `slots` others are surely better (the interval of their advantage is above 0): it
  cannot be selected, and stops;
- in: fewer than `slots` others may be better by more than `tolerance`: it is selected whatever
  the rest scores (near-ties within the tolerance all are), and stops;
- the leader (highest mean, lowest trial number on ties) never stops: every generation completes
  at least one candidate on the whole split, and only those can be a study's best (best_trial), so
  the best is never a lucky estimate on a few items.
A stopped candidate's value is its mean on the items it was scored on (its partial estimate), and
it records how many (`n`), a `partial` flag and its verdict (`race`). The decisions need nothing
but the scores, so a race is deterministic given them; a generation killed mid-race is raced again
(its trials are failed by the heartbeat and retried at their points, which the next asks take
first, with their CMA-ES generation: rejoin_generation).
"""
from __future__ import annotations

import contextlib
import math
import os
import socket
import time
import warnings
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from ._objective import mean_scores
from ._optuna_compat import heartbeat_thread, sampler_attr_prefix, set_trial_system_attr, stored_trial
from ._study import ParamSpec, fail_reason, finished_trials, suggest_all, tell_metrics, wait_for_workers


@dataclass(frozen=True)
class Verdict:
    scores: list[float]  # the fitness per item, for the first len(scores) items of the split
    stop: str  # "full" (scored on every item), "in" (surely selected) or "out" (surely not)


def difference_bounds(a: Sequence[float], b: Sequence[float], z: float) -> tuple[float, float]:
    """Interval of the mean per-item difference b - a (paired: the same items, in order) at normal
    quantile z: mean -/+ z * sd / sqrt(n), sd the sample standard deviation of the differences, but
    never narrower than -/+ z^2 / (n + z^2), Wilson's upper bound for a rate seen 0 times in n: two
    candidates that agreed on every item so far may still disagree on a few of the rest (on the
    zoo's plateaus of near-zero scores, those few items are what ranks them)."""
    d = [y - x for x, y in zip(a, b, strict=True)]
    n = len(d)
    mean = sum(d) / n
    se = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1) / n)
    half = max(z * se, z * z / (n + z * z))
    return mean - half, mean + half


def race_step(scores: Mapping[Hashable, Sequence[float]], *, slots: int, z: float,
              tolerance: float) -> tuple[Hashable, list[Hashable], list[Hashable]]:
    """One round's decisions for the candidates still racing (all scored on the same items):
    (leader, the ones out, the ones in), as in the module docstring. Keys sort as trial numbers."""
    means = {key: sum(s) / len(s) for key, s in scores.items()}
    leader = max(sorted(scores), key=lambda key: means[key])  # max keeps the first of equal means
    out, selected = [], []
    for key in sorted(scores):
        if key == leader:
            continue
        # each other candidate's advantage over this one: (low, high)
        advantage = [difference_bounds(scores[key], scores[other], z) for other in scores if other != key]
        if sum(low > 0 for low, _ in advantage) >= slots:
            out.append(key)
        elif sum(high > tolerance for _, high in advantage) < slots:
            selected.append(key)
    return leader, out, selected


def race(keys: Sequence[Hashable], *, score: Callable[[Hashable, range], list[float]], n_items: int,
         first_block: int, block: int, mu: int, z: float, tolerance: float) -> dict[Hashable, Verdict]:
    """Race `keys` over items 0..n_items-1 (module docstring). `score(key, items)` scores one
    candidate on a range of items and returns its fitness per item; a candidate whose score raises
    is dropped from the race (the exception is kept as its verdict's stop, for the caller)."""
    scores: dict[Hashable, list[float]] = {key: [] for key in keys}
    verdicts: dict[Hashable, Verdict] = {}
    racing, slots, start, size = list(keys), mu, 0, first_block
    while racing:
        items = range(start, min(start + size, n_items))
        for key in list(racing):
            try:
                scores[key] += score(key, items)
            except Exception as err:  # noqa: BLE001  (one candidate's failure is its trial's, not the race's)
                verdicts[key] = Verdict(scores[key], f"error: {type(err).__name__}: {err}")
                racing.remove(key)
        start, size = items.stop, block
        if start >= n_items:
            verdicts |= {key: Verdict(scores[key], "full") for key in racing}
            break
        if not racing:
            break
        _, out, selected = race_step({key: scores[key] for key in racing}, slots=slots, z=z, tolerance=tolerance)
        for key in out + selected:
            verdicts[key] = Verdict(scores[key], "out" if key in out else "in")
            racing.remove(key)
        # near-ties (within tolerance) may all be "in": more than the slots left, none left then
        slots = max(0, slots - len(selected))
    return {key: verdicts[key] for key in keys}


def combine(blocks: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One trial's metrics from its blocks' metrics: the per-item scores concatenated and their
    means (and n) recomputed; every other number (tokens, seconds) is what the blocks spent, summed."""
    items = {metric: [x for b in blocks for x in b["item_scores"][metric]] for metric in blocks[0]["item_scores"]}
    spent = {key: sum(b[key] for b in blocks) for key in blocks[0]
             if key not in items and key not in ("n", "item_scores")}
    return {**mean_scores(items), **spent, "item_scores": items}


def race_trials(study: optuna.Study, *, space: Sequence[ParamSpec],
                evaluate: Callable[[dict[str, float], int, range], dict[str, Any]], fitness: Sequence[str],
                n_trials: int, popsize: int, first_block: int, block: int, z: float, tolerance: float, n_items: int,
                timeout: float | None = None,
                on_trial: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = ()) -> None:
    """run_trials' racing twin: whole generations asked, raced, told, until the study holds
    `n_trials` finished trials (or `timeout` seconds pass, checked between generations).
    `evaluate(params, number, items)` returns the metrics of one candidate on those items."""
    assert len(fitness) == 1, "racing ranks one objective"

    def race_generation(trials: list[optuna.Trial], params: dict[int, dict[str, float]]) -> None:
        blocks: dict[int, list[dict[str, Any]]] = {trial.number: [] for trial in trials}

        def score(number: int, items: range) -> list[float]:
            started = time.perf_counter()
            metrics = evaluate(params[number], number, items)
            blocks[number].append({**metrics, "trial_seconds": time.perf_counter() - started})
            return list(metrics["item_scores"][fitness[0]])

        verdicts = race([t.number for t in trials], score=score, n_items=n_items, first_block=first_block,
                        block=block, mu=popsize // 2, z=z, tolerance=tolerance)
        for trial in trials:
            tell(study, trial, blocks[trial.number], verdicts[trial.number], fitness, n_items)

    generation_trials(study, space=space, n_trials=n_trials, popsize=popsize, timeout=timeout, on_trial=on_trial,
                      label="racing", run_generation=race_generation)


def generation_trials(study: optuna.Study, *, space: Sequence[ParamSpec], n_trials: int, popsize: int,
                      timeout: float | None, on_trial: Sequence[Callable[[optuna.Study, FrozenTrial], None]],
                      label: str,
                      run_generation: Callable[[list[optuna.Trial], dict[int, dict[str, float]]], None]) -> None:
    """The loop racing and multi-fidelity evaluation share: whole CMA-ES generations asked (the
    retries of a killed run's trials first, in their generation), each handed to
    `run_generation(trials, params by number)` (which tells every trial) while its trials
    heartbeat, then the `on_trial` callbacks, until the study holds `n_trials` finished trials
    (or `timeout` seconds pass, checked between generations)."""
    worker = f"{socket.gethostname()}:{os.getpid()}"
    deadline = None if timeout is None else time.monotonic() + timeout
    # a killed run's trials are RUNNING until their heartbeat goes stale: wait for that, so they are
    # failed and enqueued again at their points (RetryAtItsPoint) before this run asks its first
    wait_for_workers(study, on_wait=lambda running: print(
        f"{label}: waiting for {running} trial(s) of a stopped run to be failed and retried (30 s)", flush=True))
    while (done := counted(study)) < n_trials and (deadline is None or time.monotonic() < deadline):
        # CMA-ES samples only once a trial is complete (before, Optuna's sampler draws at random):
        # the start point runs alone first, as it does in run_trials
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        with warnings.catch_warnings():  # Optuna warns that heartbeats are meant for optimize(); they beat below
            warnings.filterwarnings("ignore", message="Heartbeat of storage")
            trials = [study.ask() for _ in range(min(popsize if complete else 1, n_trials - done))]
        params = {}
        for trial in trials:
            params[trial.number] = suggest_all(study, trial, space)
            trial.set_user_attr("worker", worker)
            rejoin_generation(study, trial)
        with contextlib.ExitStack() as beats:  # each trial heartbeats while its generation is scored
            for trial in trials:
                beats.enter_context(heartbeat_thread(study, trial))
            run_generation(trials, params)
        for trial in trials:
            frozen = stored_trial(study, trial)
            for callback in on_trial:
                callback(study, frozen)


def counted(study: optuna.Study) -> int:
    """Finished trials toward n_trials, less those a killed run left (failed by the heartbeat): a
    generation killed mid-race would otherwise use up popsize trials of the budget, and its retries
    would be left waiting."""
    return sum(not t.user_attrs.get("heartbeat_failed") for t in finished_trials(study))


def rejoin_generation(study: optuna.Study, trial: optuna.Trial) -> None:
    """A retry of a killed trial (RetryAtItsPoint) takes that trial's CMA-ES state: its generation
    (Optuna marks it only on a trial it samples, not on an enqueued one, so the retries would count
    for no generation, and CMA-ES would draw that one anew) and the optimizer the sampler stored on
    it (the first ask of a generation stores the state its tell made; on a failed trial Optuna would
    not read it back, and the generation after the retried one would be drawn twice)."""
    prefix = sampler_attr_prefix(study.sampler)  # CmaEsSampler's "cma:"
    retry_of = stored_trial(study, trial).user_attrs.get("retry_of")
    if prefix is None or retry_of is None:
        return
    for key, value in study.trials[retry_of].system_attrs.items():
        if key.startswith(prefix):
            set_trial_system_attr(study, trial, key, value)


def tell(study: optuna.Study, trial: optuna.Trial, blocks: list[dict[str, Any]], verdict: Verdict,
         fitness: Sequence[str], n_items: int) -> None:
    """Record one raced trial (its blocks' metrics combined, its verdict) and tell the study."""
    if verdict.stop.startswith("error: "):
        trial.set_user_attr("fail_reason", verdict.stop.removeprefix("error: "))
        study.tell(trial, state=TrialState.FAIL)
        return
    metrics = combine(blocks)
    trial.set_user_attr("race", verdict.stop)
    trial.set_user_attr("partial", metrics["n"] < n_items)
    tell_metrics(study, trial, metrics, fitness)
