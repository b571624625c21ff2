"""GenomeCMA: CMA-ES on the packed genome inside an Optuna study -- x0 first, exact stored genomes,
resume by replay, refusal of other settings, failed trials, several workers, and it optimises."""
from __future__ import annotations

import threading
import time

import numpy as np
import optuna
import pytest

from evo_core import open_study, run_trials, sqlite_url_in
from evo_core import GenomeCMA, unpack_genome
from evo_dfs import DFSSpace, SlotLayout

SPACE = DFSSpace(layout=SlotLayout(layers_per_model=(3, 2), repeats=2))  # 10 slots + 25 scales
LO, HI = SPACE.bounds_arrays()
TARGET = LO + (HI - LO) * np.random.default_rng(7).uniform(0.2, 0.8, SPACE.dim)
POP = 4


def closeness(genome: np.ndarray) -> float:
    """A smooth stand-in for accuracy: higher the nearer the genome is to TARGET."""
    return -float(np.sum(((genome - TARGET) / (HI - LO)) ** 2))


def search(storage: str | None, n_trials: int, *, seed: int = 0, popsize: int = POP, fail=(), seen=None,
           delay: float = 0.0):
    sampler = GenomeCMA(space=SPACE, seed=seed, popsize=popsize, poll_seconds=0.02)
    study = (open_study(name="g", storage_url=storage, sampler=sampler) if storage
             else optuna.create_study(sampler=sampler, direction="maximize"))

    def evaluate(_, number):
        genome = sampler.genome(number)
        if seen is not None:
            seen[number] = genome
        time.sleep(delay)
        if number in fail:
            raise RuntimeError("evaluation failed")
        return {"fit": closeness(genome)}

    run_trials(study, space=[], evaluate=evaluate, fitness=["fit"], n_trials=n_trials)
    return study


def stored(study) -> dict[int, str]:
    return {t.number: t.user_attrs["genome"] for t in study.trials}


def test_trial_zero_is_model_a_and_each_trial_evaluates_its_stored_genome():
    seen = {}
    study = search(None, 1 + 2 * POP, seen=seen)
    trials = study.trials
    assert [t.user_attrs["generation"] for t in trials] == [0] + [1] * POP + [2] * POP
    assert np.array_equal(unpack_genome(trials[0].user_attrs["genome"]), SPACE.x0_vector())
    assert SPACE.path(unpack_genome(trials[0].user_attrs["genome"])).layers == (0, 1, 2)  # model A
    for t in trials:
        genome = unpack_genome(t.user_attrs["genome"])
        assert np.array_equal(genome, seen[t.number])
        assert np.all((LO <= genome) & (genome <= HI))
    assert len({t.user_attrs["genome"] for t in trials}) == len(trials)


def test_resume_replays_the_same_genomes(tmp_path):
    straight = search(sqlite_url_in(tmp_path / "a.db"), 1 + 3 * POP)
    resumed_url = sqlite_url_in(tmp_path / "b.db")
    search(resumed_url, 6)  # stops inside generation 2
    resumed = search(resumed_url, 1 + 3 * POP)  # a new process: replays generations 1 and 2
    assert stored(resumed) == stored(straight)
    assert [t.values for t in resumed.trials] == [t.values for t in straight.trials]


def test_other_settings_are_refused_on_resume(tmp_path):
    url = sqlite_url_in(tmp_path / "s.db")
    search(url, 1 + POP + 1)
    with pytest.raises(ValueError, match="other settings"):
        search(url, 1 + 2 * POP, seed=1)


def test_failed_trial_counts_as_worst_and_the_search_goes_on():
    study = search(None, 1 + 3 * POP, fail={2, 6})
    states = [t.state.name for t in study.trials]
    assert states.count("FAIL") == 2 and states.count("COMPLETE") == 1 + 3 * POP - 2
    assert study.trials[-1].user_attrs["generation"] == 3


def test_two_workers_on_one_storage_compute_the_single_worker_genomes(tmp_path):
    reference = stored(search(None, 1 + 3 * POP))
    url = sqlite_url_in(tmp_path / "w.db")
    search(url, 1)  # create the study before the workers race for it
    errors = []

    def worker():
        try:
            search(url, 1 + 3 * POP, delay=0.02)
        except Exception as err:  # surfaced below; a thread would swallow it
            errors.append(err)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    shared = stored(optuna.load_study(study_name="g", storage=url))
    assert len(shared) >= 1 + 3 * POP  # MaxTrialsCallback may let each worker start one more
    assert {n: g for n, g in shared.items() if n in reference} == reference


def test_it_optimises():
    generations, popsize = 20, 14  # the paper's popsize for 35 values
    study = search(None, 1 + generations * popsize, popsize=popsize)
    by_generation = {}
    for t in study.trials:
        by_generation.setdefault(t.user_attrs["generation"], []).append(t.values[0])
    assert max(by_generation[generations]) > by_generation[0][0] + 0.1  # well past x0 (model A)
