"""GENOME(+)'s operators as pure functions on LoRA weight dicts (name -> tensor, as peft saves them).

The paper ("Nature-inspired population-based evolution of large language models"), defaults in
DEFAULTS; every random choice comes from the numpy Generator passed in (and Gaussian noise from a
torch Generator seeded from it), so a seed gives the same population on every run:

    rng = numpy.random.default_rng(0)
    population = initialize(experts, n=10, rng=rng)                 # w = t w_a + (1 - t) w_b
    children = crossover(population, fitness, rate=0.3, rng=rng)    # t = f1 / (f1 + f2)
    mutants = mutate(population, individual_rate=0.3, gene_rate=0.2, sigma=0.001, rng=rng)
    keep = select(fitness, n=10, alpha=0.5, rng=rng)                # top alpha N, then proportional
    experience = initial_experience(population, rng=rng)            # GENOME+ succession
    weights, experience = succession(...)
    answer = ensemble_answer(["37", "37", "36"])                    # majority / most similar

Inputs are never modified: every operator returns new dicts. `Individual.origin` records how it
was made (operator, parents, t), which the search writes on its trial.
"""
from __future__ import annotations

import difflib
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

Weights = dict[str, torch.Tensor]

# the paper's settings; alpha (the share kept by selection) is this project's choice
DEFAULTS = {"population": 10, "iterations": 10, "crossover_rate": 0.3, "individual_mutation_rate": 0.3,
            "gene_mutation_rate": 0.2, "sigma": 0.001, "alpha": 0.5, "ensemble_k": 3,
            "phi": (0.95, 0.2, 0.2, 0.1), "step": 0.95}


@dataclass
class Individual:
    """A genome (LoRA A and B tensors) and where it came from."""

    weights: Weights
    origin: dict = field(default_factory=dict)  # {"operator": ..., "parents": [...], "t": ...}


def _check_rate(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


def _check_nonempty(population: Sequence, what: str = "population") -> None:
    if not population:
        raise ValueError(f"an empty {what}: give at least one individual")


def interpolate(w_a: Mapping[str, torch.Tensor], w_b: Mapping[str, torch.Tensor], t: float) -> Weights:
    """t * w_a + (1 - t) * w_b, tensor by tensor (the operators need equal keys and shapes)."""
    if set(w_a) != set(w_b):
        raise ValueError(f"genomes differ in tensors (e.g. {sorted(set(w_a) ^ set(w_b))[0]}); "
                         "the operators need equal shapes")
    return {k: t * w_a[k] + (1.0 - t) * w_b[k] for k in w_a}


def proportional_probabilities(fitness: Sequence[float]) -> np.ndarray:
    """p_i = f_i / sum f (negative fitness counts as 0); uniform when every fitness is 0."""
    f = np.clip(np.asarray(fitness, dtype=float), 0.0, None)
    if len(f) == 0:
        raise ValueError("an empty population: no fitness to draw from")
    total = f.sum()
    return f / total if total > 0 else np.full(len(f), 1.0 / len(f))


def initialize(experts: Mapping[str, Weights], *, n: int, rng: np.random.Generator) -> list[Individual]:
    """N individuals w_i = t w_a + (1 - t) w_b, t ~ U(0, 1), a and b two distinct experts drawn
    uniformly (with one expert, a = b: the population is that expert N times)."""
    names = list(experts)
    _check_nonempty(names, "set of experts")
    if n < 1:
        raise ValueError(f"population size must be >= 1, got {n}")
    population = []
    for _ in range(n):
        a, b = (rng.choice(len(names), size=2, replace=False) if len(names) > 1 else (0, 0))
        t = float(rng.uniform(0.0, 1.0))
        population.append(Individual(interpolate(experts[names[a]], experts[names[b]], t),
                                     {"operator": "init", "parents": [names[a], names[b]], "t": t}))
    return population


def crossover(population: Sequence[Individual], fitness: Sequence[float], *, rate: float,
              rng: np.random.Generator, labels: Sequence[str] | None = None) -> list[Individual]:
    """For each of the N slots, with probability `rate` a child of two distinct parents drawn with
    p_i = f_i / sum f: w = t w_p1 + (1 - t) w_p2 with t = f_p1 / (f_p1 + f_p2) (0.5 if both are 0).
    `labels` name the parents in each child's origin (default: their indices)."""
    _check_rate("crossover_rate", rate)
    _check_nonempty(population)
    if len(fitness) != len(population):
        raise ValueError(f"{len(fitness)} fitness values for {len(population)} individuals")
    if len(population) < 2:
        return []
    labels = list(labels) if labels is not None else [str(i) for i in range(len(population))]
    p = proportional_probabilities(fitness)
    children = []
    for _ in range(len(population)):
        if rng.uniform() >= rate:
            continue
        # two distinct parents: the second is drawn among the others, proportionally to fitness
        first = int(rng.choice(len(population), p=p))
        rest = np.delete(np.arange(len(population)), first)
        second = int(rng.choice(rest, p=proportional_probabilities(np.asarray(fitness, dtype=float)[rest])))
        f1, f2 = max(float(fitness[first]), 0.0), max(float(fitness[second]), 0.0)
        t = f1 / (f1 + f2) if f1 + f2 > 0 else 0.5
        children.append(Individual(interpolate(population[first].weights, population[second].weights, t),
                                   {"operator": "crossover", "parents": [labels[first], labels[second]], "t": t}))
    return children


def _torch_generator(rng: np.random.Generator) -> torch.Generator:
    return torch.Generator().manual_seed(int(rng.integers(0, 2**63 - 1)))


def mutate(population: Sequence[Individual], *, individual_rate: float, gene_rate: float, sigma: float,
           rng: np.random.Generator, labels: Sequence[str] | None = None) -> list[Individual]:
    """Each individual is picked with probability `individual_rate`; a picked one gives a mutant
    copy where each weight, with probability `gene_rate`, gets N(0, sigma^2) noise added."""
    _check_rate("individual_mutation_rate", individual_rate)
    _check_rate("gene_mutation_rate", gene_rate)
    if not sigma >= 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    labels = list(labels) if labels is not None else [str(i) for i in range(len(population))]
    mutants = []
    for label, individual in zip(labels, population):
        if rng.uniform() >= individual_rate:
            continue
        gen = _torch_generator(rng)
        weights = {}
        for key, tensor in individual.weights.items():
            mask = torch.rand(tensor.shape, generator=gen) < gene_rate
            noise = torch.randn(tensor.shape, generator=gen) * sigma
            weights[key] = tensor + mask.to(tensor.dtype) * noise.to(tensor.dtype)
        mutants.append(Individual(weights, {"operator": "mutation", "parents": [label], "sigma": sigma,
                                            "gene_rate": gene_rate}))
    return mutants


def select(fitness: Sequence[float], *, n: int, alpha: float, rng: np.random.Generator) -> list[int]:
    """Indices of the next population: the top ceil(alpha * n) by fitness (ties: the earlier),
    then the rest of the n drawn without replacement among the others, p proportional to fitness."""
    _check_rate("alpha", alpha)
    _check_nonempty(fitness, "set of candidates")
    if n < 1:
        raise ValueError(f"population size must be >= 1, got {n}")
    order = sorted(range(len(fitness)), key=lambda i: (-float(fitness[i]), i))
    if len(order) <= n:
        return order
    elite = order[:min(n, math.ceil(alpha * n))]
    rest, f = list(order[len(elite):]), np.asarray(fitness, dtype=float)
    drawn = []
    # one at a time, each proportionally to fitness among those left (uniformly once all left
    # score 0): numpy's draw without replacement refuses fewer non-zero weights than draws
    while len(elite) + len(drawn) < n:
        pick = int(rng.choice(len(rest), p=proportional_probabilities(f[rest])))
        drawn.append(rest.pop(pick))
    return elite + drawn


def initial_experience(population: Sequence[Individual], *, rng: np.random.Generator,
                       scale: float = 0.001) -> list[Weights]:
    """GENOME+: one experience vector per individual, the shape of its weights, N(0, scale^2)."""
    gen = _torch_generator(rng)
    return [{k: torch.randn(v.shape, generator=gen).to(v.dtype) * scale for k, v in ind.weights.items()}
            for ind in population]


def succession(weights: Mapping[str, torch.Tensor], experience: Mapping[str, torch.Tensor], *,
               global_best: Mapping[str, torch.Tensor], current_best: Mapping[str, torch.Tensor],
               global_worst: Mapping[str, torch.Tensor], phi: Sequence[float] = DEFAULTS["phi"],
               step: float = DEFAULTS["step"]) -> tuple[Weights, Weights]:
    """GENOME+ succession of one individual: returns (new weights, new experience).

        e <- (1/C) [phi_e e + phi_g (g - w) + phi_c (c - w) - phi_w (worst - w)],  C = sum(phi)
        w <- w + step * e

    g, c, worst are the weights of the global best, the current generation's best and the global
    worst individual. The differences are taken from the individual's own weights w (as in
    Model Swarms, which GENOME+ builds on): experience carries it toward the bests and away
    from the worst; an individual that IS the best feels no pull from that term."""
    if len(phi) != 4 or any(p < 0 for p in phi) or sum(phi) <= 0:
        raise ValueError(f"phi must be 4 non-negative weights (experience, global best, current best, "
                         f"global worst) with a positive sum, got {tuple(phi)}")
    phi_e, phi_g, phi_c, phi_w = (float(p) for p in phi)
    c = phi_e + phi_g + phi_c + phi_w
    new_experience, new_weights = {}, {}
    for k, w in weights.items():
        e = (phi_e * experience[k] + phi_g * (global_best[k] - w) + phi_c * (current_best[k] - w)
             - phi_w * (global_worst[k] - w)) / c
        new_experience[k] = e
        new_weights[k] = w + step * e
    return new_weights, new_experience


def unique_answer_vote(answers: Sequence[str | None]) -> str | None:
    """Majority vote over extracted answers (e.g. the last number); ties go to the answer of the
    better-ranked model (answers are given best model first); None (no answer) never wins."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    top = max(counts.values())
    return next(a for a in answers if a is not None and counts[a] == top)


def most_similar_output(outputs: Sequence[str]) -> str:
    """Free text: the output with the highest mean similarity (difflib ratio) to the others;
    ties go to the better-ranked model (outputs are given best model first)."""
    _check_nonempty(outputs, "ensemble")
    if len(outputs) < 3:
        return outputs[0]

    def mean_similarity(i: int) -> float:
        return sum(difflib.SequenceMatcher(None, outputs[i], o).ratio()
                   for j, o in enumerate(outputs) if j != i) / (len(outputs) - 1)
    scores = [mean_similarity(i) for i in range(len(outputs))]
    return outputs[max(range(len(outputs)), key=lambda i: (scores[i], -i))]


def ensemble_answer(outputs: Sequence[str], extract=None) -> str:
    """GENOME+ ensemble of the top-k models' outputs for one prompt (best model first): with an
    `extract` (output -> unique answer or None) the output of the majority answer, else the
    output most similar to the others."""
    _check_nonempty(outputs, "ensemble")
    if extract is None:
        return most_similar_output(outputs)
    answers = [extract(o) for o in outputs]
    winner = unique_answer_vote(answers)
    return outputs[answers.index(winner)] if winner is not None else most_similar_output(outputs)
