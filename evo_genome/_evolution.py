"""GENOME(+)'s generations as a deterministic state machine: which individual is scored next, and
what the population becomes once its scores are known. No model, no study: the search
(_search.py) asks `next()` for the individual of each trial and tells `scored()` its fitness.

    evolution = Evolution(experts, settings, seed=0)
    while evolution.next() is not None:
        individual = evolution.next()          # weights + origin (generation, stage, slot, operator, parents, t)
        evolution.scored(individual, fitness, trial=n)  # -> the population moves on when a stage is complete

One generation g >= 1, from the population P (N scored individuals):
  offspring    crossover children and mutants of P (each scored);
  selection    P <- N of P + offspring (top alpha N, the rest drawn proportionally to fitness;
               without selection: N drawn uniformly, no pressure);
  succession   GENOME+: each member's experience e and weights w move (e <- ..., w <- w + lambda e)
               towards the global best and the current best, away from the global worst; each
               moved member is scored and replaces itself (the paper's update is unconditional).
Generation 0 is the initialisation, N interpolations of two experts. An individual is named by
where it was made, "g<generation>.<stage>.<slot>" (e.g. "g2.offspring.1"), the same in a run
that was killed and resumed (trial numbers are not: a killed trial takes one); an expert by its name.

Every random draw comes from a generator seeded by (seed, generation, stage), and fitness values
come back as the study stored them, so replaying a study's trials in order rebuilds the exact
state after them: a killed run resumes with nothing lost and nothing scored twice.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ._operators import Individual, crossover, initial_experience, initialize, mutate, select, succession

Weights = dict[str, torch.Tensor]
STAGES = ("init", "offspring", "succession")
_STAGE_SEED = {"init": 0, "offspring": 1, "selection": 2, "succession": 3, "experience": 4}


@dataclass(frozen=True)
class Settings:
    """The algorithm's settings (GenomeConfig.genome); the operator switches make the ablations."""

    population: int = 10
    iterations: int = 10
    crossover_rate: float = 0.3
    individual_mutation_rate: float = 0.3
    gene_mutation_rate: float = 0.2
    sigma: float = 0.001
    alpha: float = 0.5
    phi: tuple[float, ...] = (0.95, 0.2, 0.2, 0.1)
    step: float = 0.95
    experience_scale: float = 0.001
    crossover: bool = True
    mutation: bool = True
    selection: bool = True
    succession: bool = True


@dataclass
class Member:
    """A scored individual: its name ("g<generation>.<stage>.<slot>"), weights, fitness, (GENOME+)
    experience, the trial that scored it and its place in the scoring order."""

    name: str
    weights: Weights
    fitness: float
    experience: Weights | None = None
    trial: int | None = None
    order: int = 0


@dataclass
class Pending:
    """An individual waiting for its trial, with where it stands in the generation."""

    individual: Individual
    generation: int
    stage: str
    slot: int
    experience: Weights | None = None
    replaces: int | None = None  # succession: the population index it moves

    @property
    def name(self) -> str:
        return f"g{self.generation}.{self.stage}.{self.slot}"

    @property
    def key(self) -> dict[str, Any]:
        return {"generation": self.generation, "stage": self.stage, "slot": self.slot}

    def attrs(self) -> dict[str, Any]:
        """What the trial records: where it stands, how it was made (operator, parents, t, ...)."""
        return {**self.key, "name": self.name, **self.individual.origin}


@dataclass
class GenerationStats:
    generation: int
    fitness: list[float]
    diversity: float
    evaluations: int


def rng_for(seed: int, generation: int, stage: str) -> np.random.Generator:
    return np.random.default_rng([seed, generation, _STAGE_SEED[stage]])


def mean_pairwise_distance(population: Sequence[Weights]) -> float:
    """Diversity: the mean L2 distance between the flattened weights of every pair."""
    if len(population) < 2:
        return 0.0
    flat = torch.stack([torch.cat([w[k].flatten() for k in sorted(w)]) for w in population])
    distances = torch.cdist(flat[None].double(), flat[None].double())[0]
    n = len(population)
    return float(distances.sum() / (n * (n - 1)))


class Evolution:
    def __init__(self, experts: Mapping[str, Weights], settings: Settings, *, seed: int):
        self.experts = dict(experts)
        self.settings = settings
        self.seed = seed
        self.generation = 0
        self.population: list[Member] = []      # the last complete population
        self.offspring: list[Member] = []       # scored in the current generation, not yet selected
        self.moved: dict[int, Member] = {}      # succession: population index -> its moved, scored self
        self.pending: list[Pending] = []
        self.stage = "init"                     # the stage `pending` belongs to
        self.global_best: Member | None = None
        self.global_worst: Member | None = None
        self.evaluations = 0
        self.history: list[GenerationStats] = []  # one per complete population
        self.done = False
        self._start()

    # -- the queue ----------------------------------------------------------------------------

    def next(self) -> Pending | None:
        """The individual the next trial scores; None when the K generations are done."""
        return None if self.done else self.pending[0]

    def scored(self, pending: Pending, fitness: float, *, trial: int | None = None) -> None:
        """`pending` (the head of the queue) was scored `fitness` (by trial number `trial`)."""
        assert self.pending and self.pending[0] is pending, "individuals are scored in queue order"
        self.pending.pop(0)
        self.evaluations += 1
        member = Member(pending.name, pending.individual.weights, float(fitness), pending.experience, trial,
                        self.evaluations)
        if self.global_best is None or member.fitness > self.global_best.fitness:
            self.global_best = member
        if self.global_worst is None or member.fitness < self.global_worst.fitness:
            self.global_worst = member
        if pending.stage == "succession":
            self.moved[pending.replaces] = member
        else:
            self.offspring.append(member)
        while not self.pending and not self.done:  # a stage may make nobody (no child drawn): on to the next
            self._advance(self.stage)

    # -- the generations ----------------------------------------------------------------------

    def _start(self) -> None:
        s = self.settings
        rng = rng_for(self.seed, 0, "init")
        individuals = initialize(self.experts, n=s.population, rng=rng)
        experiences = (initial_experience(individuals, rng=rng_for(self.seed, 0, "experience"),
                                          scale=s.experience_scale) if s.succession else [None] * len(individuals))
        self.pending = [Pending(ind, 0, "init", i, e) for i, (ind, e) in enumerate(zip(individuals, experiences))]

    def _advance(self, finished: str) -> None:
        """A stage's individuals are all scored: the next stage (skipping empty ones)."""
        s = self.settings
        if finished == "init":
            self.population, self.offspring = self.offspring, []
            self._record()
            self._offspring_stage(1)
        elif finished == "offspring":
            self._select()
            if s.succession:
                self._succession_stage()
            else:
                self._end_generation()
        else:  # succession
            self.population = [self.moved.get(i, m) for i, m in enumerate(self.population)]
            self.moved = {}
            self._end_generation()

    def _end_generation(self) -> None:
        self._record()
        if self.generation >= self.settings.iterations:
            self.done = True
            return
        self._offspring_stage(self.generation + 1)

    def _offspring_stage(self, generation: int) -> None:
        s = self.settings
        self.generation = generation
        rng = rng_for(self.seed, generation, "offspring")
        parents = [Individual(m.weights) for m in self.population]
        fitness = [m.fitness for m in self.population]
        labels = [m.name for m in self.population]
        made: list[tuple[Individual, Weights | None]] = []
        if s.crossover:
            for child in crossover(parents, fitness, rate=s.crossover_rate, rng=rng, labels=labels):
                made.append((child, self._inherited(child)))
        if s.mutation:
            for mutant in mutate(parents, individual_rate=s.individual_mutation_rate, gene_rate=s.gene_mutation_rate,
                                 sigma=s.sigma, rng=rng, labels=labels):
                made.append((mutant, self._inherited(mutant)))
        self.stage = "offspring"
        self.pending = [Pending(ind, generation, "offspring", i, e) for i, (ind, e) in enumerate(made)]

    def _inherited(self, child: Individual) -> Weights | None:
        """A child's experience: its first parent's (GENOME+), a copy."""
        if not self.settings.succession:
            return None
        parent = next(m for m in self.population if m.name == child.origin["parents"][0])
        return {k: v.clone() for k, v in parent.experience.items()}

    def _select(self) -> None:
        s = self.settings
        candidates = self.population + self.offspring
        rng = rng_for(self.seed, self.generation, "selection")
        if len(candidates) <= s.population:
            keep = list(range(len(candidates)))
        elif s.selection:
            keep = select([m.fitness for m in candidates], n=s.population, alpha=s.alpha, rng=rng)
        else:  # the ablation: survivors drawn with no regard to fitness
            keep = sorted(int(i) for i in rng.choice(len(candidates), size=s.population, replace=False))
        self.population, self.offspring = [candidates[i] for i in keep], []

    def _succession_stage(self) -> None:
        s = self.settings
        current_best = max(self.population, key=lambda m: m.fitness)
        self.stage, self.pending = "succession", []
        for i, member in enumerate(self.population):
            weights, experience = succession(member.weights, member.experience, global_best=self.global_best.weights,
                                             current_best=current_best.weights,
                                             global_worst=self.global_worst.weights, phi=s.phi, step=s.step)
            origin = {"operator": "succession", "parents": [member.name], "step": s.step}
            self.pending.append(Pending(Individual(weights, origin), self.generation, "succession", i, experience,
                                        replaces=i))

    def _record(self) -> None:
        self.history.append(GenerationStats(
            generation=self.generation, fitness=[m.fitness for m in self.population],
            diversity=mean_pairwise_distance([m.weights for m in self.population]), evaluations=self.evaluations))

    # -- results --------------------------------------------------------------------------------

    def final_population(self) -> list[Member]:
        """What a selection now would choose from: the last population, its moved members in place
        of themselves, and the offspring scored since (a budget may end mid-generation)."""
        return [self.moved.get(i, m) for i, m in enumerate(self.population)] + self.offspring

    def top(self, k: int) -> list[Member]:
        """The k best of the final population by validation fitness (ties: the earlier trial)."""
        members = self.final_population() or ([self.global_best] if self.global_best else [])
        return sorted(members, key=lambda m: (-m.fitness, m.order))[:k]

    def expected_evaluations(self) -> float:
        """About how many evaluations K generations take (for the start line)."""
        s = self.settings
        per = s.population * ((s.crossover_rate if s.crossover else 0) + (s.individual_mutation_rate if s.mutation else 0)
                              + (1 if s.succession else 0))
        return s.population + s.iterations * per


def same_key(pending: Pending, attrs: Mapping[str, Any]) -> bool:
    return all(attrs.get(k) == v for k, v in pending.key.items())


__all__ = ["Evolution", "GenerationStats", "Member", "Pending", "Settings", "STAGES", "mean_pairwise_distance",
           "same_key"]
