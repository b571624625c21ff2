"""GENOME(+)'s generations (evo_genome/_evolution.py): the order of individuals, what each stage
makes, and the replay a resumed run relies on: the same seed and the same scores give the same
individuals, bit for bit."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from evo_genome import Evolution, Settings, mean_pairwise_distance


def experts(n: int = 4, seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return {f"e{i}": {"a.lora_A.weight": torch.randn(2, 6, generator=gen),
                      "a.lora_B.weight": torch.randn(5, 2, generator=gen)} for i in range(n)}


TARGET = experts(1, seed=9)["e0"]


def fitness(weights) -> float:
    """A smooth score in (0, 1]: closeness to a fixed target."""
    distance = sum(float((weights[k] - TARGET[k]).pow(2).sum()) for k in TARGET)
    return 1.0 / (1.0 + distance)


def run(settings: Settings, *, seed: int = 0, budget: int | None = None) -> tuple[Evolution, list]:
    """Score individuals in queue order until done (or `budget`); -> the evolution and, per trial,
    (attrs, weights, fitness)."""
    evolution, log = Evolution(experts(), settings, seed=seed), []
    while evolution.next() is not None and (budget is None or len(log) < budget):
        pending = evolution.next()
        f = fitness(pending.individual.weights)
        log.append((pending.attrs(), pending.individual.weights, f))
        evolution.scored(pending, f, trial=len(log) - 1)
    return evolution, log


PLUS = Settings(population=6, iterations=4, crossover_rate=0.5, individual_mutation_rate=0.5, sigma=0.05)


def test_a_generation_is_offspring_then_selection_then_succession():
    evolution, log = run(PLUS)
    stages = [(a["generation"], a["stage"]) for a, _, _ in log]
    assert stages[:6] == [(0, "init")] * 6 and all(a["operator"] == "init" for a, _, _ in log[:6])
    for g in range(1, 5):
        mine = [a for a in (a for a, _, _ in log) if a["generation"] == g]
        assert [a["stage"] for a in mine] == sorted((a["stage"] for a in mine), key=["offspring", "succession"].index)
        assert sum(a["stage"] == "succession" for a in mine) == 6  # every survivor moves, and is scored
        for a in mine:
            assert a["operator"] in ("crossover", "mutation", "succession") and a["parents"]
            if a["operator"] == "crossover":
                assert 0 <= a["t"] <= 1 and len(a["parents"]) == 2
    assert evolution.done and len(evolution.history) == 5  # generation 0 and the K=4 after it
    assert evolution.evaluations == len(log)
    # the best ever is remembered; succession pulls the population together, towards the best
    assert evolution.global_best.fitness == max(f for _, _, f in log)
    first, last = evolution.history[0], evolution.history[-1]
    assert sum(last.fitness) / 6 > sum(first.fitness) / 6 and last.diversity < first.diversity / 2


def test_replaying_the_scores_rebuilds_the_same_individuals_bit_for_bit():
    _, log = run(PLUS)
    for cut in (0, 5, 6, 9, len(log) // 2, len(log) - 1):
        resumed, _ = run(PLUS, budget=cut)  # a run killed after `cut` trials, replayed
        pending = resumed.next()
        attrs, weights, _ = log[cut]
        assert pending.attrs() == attrs
        assert all(torch.equal(pending.individual.weights[k], weights[k]) for k in weights)


def test_another_seed_gives_another_population():
    _, one = run(PLUS, seed=0, budget=6)
    _, two = run(PLUS, seed=1, budget=6)
    assert [a["t"] for a, _, _ in one] != [a["t"] for a, _, _ in two]


@pytest.mark.parametrize("off", ["crossover", "mutation", "selection", "succession"])
def test_each_operator_can_be_switched_off(off):
    evolution, log = run(dataclasses.replace(PLUS, **{off: False}))
    operators = {a["operator"] for a, _, _ in log}
    assert evolution.done
    if off in ("crossover", "mutation", "succession"):
        assert off not in operators
    if off == "succession":
        assert all(m.experience is None for m in evolution.population)


def test_with_no_offspring_operator_the_generations_still_end():
    evolution, log = run(dataclasses.replace(PLUS, crossover=False, mutation=False, succession=False))
    assert evolution.done and len(log) == 6 and len(evolution.history) == 5


def test_selection_keeps_the_elite_and_without_it_survivors_ignore_fitness():
    evolution, _ = run(dataclasses.replace(PLUS, succession=False, iterations=1))
    # alpha 0.5 of 6: the 3 best of population + offspring survive for sure
    everyone = sorted((f for f in [m.fitness for m in evolution.population]), reverse=True)
    assert len(evolution.population) == 6 and everyone[0] == evolution.global_best.fitness


def test_top_k_is_the_best_of_the_final_population():
    evolution, _ = run(PLUS)
    top = evolution.top(3)
    assert [m.fitness for m in top] == sorted((m.fitness for m in evolution.final_population()), reverse=True)[:3]


def test_diversity_is_the_mean_pairwise_distance():
    a = {"x": torch.zeros(2)}
    b = {"x": torch.tensor([3.0, 4.0])}
    assert mean_pairwise_distance([a, b]) == pytest.approx(5.0)
    assert mean_pairwise_distance([a, a, b]) == pytest.approx((0 + 5 + 5) / 3)
    assert mean_pairwise_distance([a]) == 0.0
