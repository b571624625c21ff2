"""CMA-ES on a whole genome (one vector per trial), for spaces too large for one Optuna parameter per value.

At paper scale the genome has 4,288 values; as Optuna parameters every trial costs 4,288
`suggest_float` calls and storage writes (seconds in memory, a minute on SQLite) plus Optuna's
CMA-ES state pickled into each trial. Here cmaes' (Sep)CMA is asked and told directly; the study
still records every trial (packed genome in user attr "genome", "generation", the metrics), so
`evo_core.run_trials`, its callbacks, resume and several workers work as for any sampler:

    sampler = GenomeCMA(space=space, seed=0, sigma0=1/6, popsize=None, separable=True)
    study = open_study(name=..., storage_url=..., sampler=sampler)
    run_trials(study, space=[], fitness=["acc_ja"], n_trials=..., evaluate=lambda _, number:
               score(space.path(sampler.genome(number))))

Trial numbers (unique per study, also across workers) fix what a trial evaluates: trial 0 is x0
(the space's start; in DFS, model A); trial n >= 1 is member k of CMA generation g, (g, k) = divmod(n - 1, popsize). A
generation's members are asked all at once after every trial of the previous one has finished (a
worker waits for that), so a trial's genome depends only on the settings and the finished history:
a resumed process replays the history and computes the same genomes (checked against the stored
ones). CMA-ES works on the range-normalised genome ([0, 1] per value), as Optuna's CmaEsSampler
does, so `sigma0` means the same in both encodings. A failed trial counts as its generation's worst.
"""
from __future__ import annotations

import base64
import math
import time
import warnings
import zlib
from typing import Protocol

import numpy as np
import optuna
from cmaes import CMA, SepCMA
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from ._optuna_compat import set_trial_user_attr
from ._study import paper_popsize


class GenomeSpace(Protocol):
    """What GenomeCMA needs of a search space (evo_dfs.DFSSpace is one): the genome's length, each
    value's bounds, and the start x0."""

    dim: int

    def bounds_arrays(self) -> tuple[np.ndarray, np.ndarray]: ...

    def x0_vector(self) -> np.ndarray: ...


def pack_genome(vector) -> str:
    """Compact ASCII form of a genome (float32, zlib, base64): ~4288 values -> a few KB, one DB field."""
    raw = np.asarray(vector, dtype="<f4").tobytes()
    return base64.b64encode(zlib.compress(raw)).decode("ascii")


def unpack_genome(text: str) -> np.ndarray:
    return np.frombuffer(zlib.decompress(base64.b64decode(text)), dtype="<f4").astype(float)


class GenomeCMA(optuna.samplers.BaseSampler):
    """An Optuna sampler that suggests no parameters: it gives each trial a whole genome."""

    def __init__(self, *, space: GenomeSpace, seed: int, sigma0: float | None = None, popsize: int | None = None,
                 separable: bool = False, poll_seconds: float = 5.0):
        self.space = space
        self.lo, self.hi = space.bounds_arrays()
        self.popsize = popsize or paper_popsize(space.dim)
        self.sigma0 = sigma0 or 1 / 6  # Optuna's default: a sixth of the (normalised) range
        self.seed, self.separable, self.poll_seconds = seed, separable, poll_seconds
        self._cma = (SepCMA if separable else CMA)(
            mean=self._unit(space.x0_vector()), sigma=self.sigma0, bounds=np.tile([0.0, 1.0], (space.dim, 1)),
            seed=seed, population_size=self.popsize)
        self._generation = 1  # the CMA generation whose members are in self._asked
        self._asked = self._ask_generation()
        self._genomes: dict[int, np.ndarray] = {}  # trial number -> genome, for evaluate() in this process

    # ---- what evaluate() uses -------------------------------------------------------------------------

    def genome(self, number: int) -> np.ndarray:
        """The genome of trial `number` (started in this process): exactly the stored one."""
        assert number in self._genomes, f"trial {number} was not started by this sampler"
        return self._genomes.pop(number)

    def slot(self, number: int) -> tuple[int, int]:
        """(generation, member) of a trial number; generation 0 is x0 alone."""
        return (0, 0) if number == 0 else (1 + (number - 1) // self.popsize, (number - 1) % self.popsize)

    def expected_genome(self, number: int) -> np.ndarray:
        """The genome trial `number` gets, as stored (float32-exact); its generation must be the current one."""
        generation, member = self.slot(number)
        if generation == 0:
            return unpack_genome(pack_genome(self.space.x0_vector()))
        assert generation == self._generation, f"generation {generation} asked while at {self._generation}"
        return unpack_genome(pack_genome(self._genome(self._asked[member])))

    # ---- Optuna sampler interface ---------------------------------------------------------------------

    def infer_relative_search_space(self, study, trial):
        return {}

    def sample_relative(self, study, trial, search_space):
        return {}

    def sample_independent(self, study, trial, param_name, param_distribution):
        raise RuntimeError(f"genome mode suggests no parameters; got a request for {param_name!r}")

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        generation, _ = self.slot(trial.number)
        self._advance(study, generation)
        genome = self.expected_genome(trial.number)
        self._genomes[trial.number] = genome
        # overwritten, not kept: a retried trial is created with the user attrs of the one it retries
        set_trial_user_attr(study, trial, "genome", pack_genome(genome))
        set_trial_user_attr(study, trial, "generation", generation)

    # ---- CMA state from the study's history -------------------------------------------------------------

    def _advance(self, study: optuna.Study, generation: int) -> None:
        """Tell CMA every generation before `generation` (waiting for their trials to finish)."""
        sign = -1.0 if study.directions[0] == StudyDirection.MAXIMIZE else 1.0  # cmaes minimises
        while self._generation < generation:
            first = 1 + (self._generation - 1) * self.popsize
            members = self._wait_finished(study, range(first, first + self.popsize))
            told = []
            for trial, unit in zip(members, self._asked):
                stored = trial.user_attrs.get("genome")
                if stored is not None and stored != pack_genome(self._genome(unit)):
                    raise ValueError(
                        f"study {study.study_name!r}: trial {trial.number} holds another genome than this "
                        f"sampler gives it; the study was run with other settings (seed, popsize, sigma0, "
                        f"separable, space) -- use them, or another study")
                value = sign * trial.values[0] if trial.state == TrialState.COMPLETE else math.inf
                told.append((unit, value))
            self._cma.tell(told)
            self._generation += 1
            self._asked = self._ask_generation()

    def _wait_finished(self, study: optuna.Study, numbers: range) -> list[FrozenTrial]:
        """The trials `numbers` once all have finished (other workers may still be running some)."""
        while True:
            trials = {t.number: t for t in study.get_trials(deepcopy=False) if t.number in numbers}
            assert len(trials) == len(numbers), "trial numbers are created in order"
            if all(t.state.is_finished() for t in trials.values()):
                return [trials[n] for n in numbers]
            # a killed worker's trial stays RUNNING until its heartbeat is stale
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
            time.sleep(self.poll_seconds)

    def _ask_generation(self) -> list[np.ndarray]:
        return [self._cma.ask() for _ in range(self.popsize)]

    def _unit(self, genome: np.ndarray) -> np.ndarray:
        return (genome - self.lo) / (self.hi - self.lo)

    def _genome(self, unit: np.ndarray) -> np.ndarray:
        return self.lo + unit * (self.hi - self.lo)
