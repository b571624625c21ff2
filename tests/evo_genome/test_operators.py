"""GENOME(+) operators on small LoRA-shaped weight dicts: formulas, defaults, seeds, bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from evo_genome import (DEFAULTS, Individual, crossover, ensemble_answer, initial_experience, initialize,
                        interpolate, most_similar_output, mutate, proportional_probabilities, select, succession,
                        unique_answer_vote)

KEYS = ("m.q_proj.lora_A.weight", "m.q_proj.lora_B.weight")


def genome(value: float) -> dict[str, torch.Tensor]:
    return {KEYS[0]: torch.full((2, 6), value), KEYS[1]: torch.full((6, 2), -value)}


def experts() -> dict[str, dict[str, torch.Tensor]]:
    return {"a": genome(1.0), "b": genome(3.0), "c": genome(10.0)}


def test_defaults_are_the_papers():
    assert (DEFAULTS["population"], DEFAULTS["iterations"], DEFAULTS["crossover_rate"]) == (10, 10, 0.3)
    assert (DEFAULTS["individual_mutation_rate"], DEFAULTS["gene_mutation_rate"], DEFAULTS["sigma"]) == (0.3, 0.2, 0.001)
    assert DEFAULTS["phi"] == (0.95, 0.2, 0.2, 0.1) and DEFAULTS["step"] == 0.95 and DEFAULTS["ensemble_k"] == 3


def test_interpolate_is_t_wa_plus_one_minus_t_wb_and_keeps_inputs():
    a, b = genome(1.0), genome(3.0)
    mixed = interpolate(a, b, 0.25)
    assert torch.allclose(mixed[KEYS[0]], torch.full((2, 6), 0.25 * 1 + 0.75 * 3))
    assert torch.allclose(mixed[KEYS[1]], torch.full((6, 2), -(0.25 * 1 + 0.75 * 3)))
    assert torch.equal(a[KEYS[0]], torch.full((2, 6), 1.0))  # inputs untouched
    with pytest.raises(ValueError, match="equal shapes"):
        interpolate(a, {KEYS[0]: a[KEYS[0]]}, 0.5)


def test_initialize_mixes_two_distinct_experts_with_the_recorded_t():
    population = initialize(experts(), n=10, rng=np.random.default_rng(0))
    assert len(population) == 10
    values = {"a": 1.0, "b": 3.0, "c": 10.0}
    ts = []
    for ind in population:
        first, second = ind.origin["parents"]
        t = ind.origin["t"]
        assert first != second and 0 <= t <= 1 and ind.origin["operator"] == "init"
        expected = t * values[first] + (1 - t) * values[second]
        assert torch.allclose(ind.weights[KEYS[0]], torch.full((2, 6), expected))
        ts.append(t)
    assert len(set(ts)) == 10  # t ~ U(0, 1), drawn per individual
    again = initialize(experts(), n=10, rng=np.random.default_rng(0))
    assert [i.origin for i in again] == [i.origin for i in population]  # seeded
    other = initialize(experts(), n=10, rng=np.random.default_rng(1))
    assert [i.origin for i in other] != [i.origin for i in population]
    with pytest.raises(ValueError, match="empty set of experts"):
        initialize({}, n=3, rng=np.random.default_rng(0))


def test_crossover_draws_parents_by_fitness_and_weighs_them_by_it():
    population = [Individual(genome(v)) for v in (1.0, 3.0, 10.0, 20.0)]
    fitness = [0.0, 0.2, 0.6, 0.2]
    children = crossover(population, fitness, rate=1.0, rng=np.random.default_rng(0), labels=list("wxyz"))
    assert len(children) == 4  # rate 1: every slot gives a child
    values = dict(zip("wxyz", (1.0, 3.0, 10.0, 20.0)))
    score = dict(zip("wxyz", fitness))
    for child in children:
        p1, p2 = child.origin["parents"]
        assert p1 != p2 and "w" not in (p1, p2)  # zero fitness: never a parent
        t = score[p1] / (score[p1] + score[p2])
        assert child.origin["t"] == pytest.approx(t)
        assert torch.allclose(child.weights[KEYS[0]], torch.full((2, 6), t * values[p1] + (1 - t) * values[p2]))
    # the fittest is drawn most: over many draws its share of parent slots tracks p_i
    many = crossover(population, fitness, rate=1.0, rng=np.random.default_rng(1)) + \
        [c for seed in range(2, 60) for c in crossover(population, fitness, rate=1.0, rng=np.random.default_rng(seed))]
    firsts = [c.origin["parents"][0] for c in many]
    assert abs(firsts.count("2") / len(firsts) - 0.6) < 0.08
    none = crossover(population, fitness, rate=0.0, rng=np.random.default_rng(0))
    assert none == []
    some = [len(crossover(population, fitness, rate=0.3, rng=np.random.default_rng(s))) for s in range(200)]
    assert abs(np.mean(some) / 4 - 0.3) < 0.05  # a pair per slot with probability c_r


def test_mutation_adds_masked_gaussian_noise():
    population = [Individual({"w": torch.zeros(200, 100)}) for _ in range(50)]
    mutants = mutate(population, individual_rate=0.3, gene_rate=0.2, sigma=0.001, rng=np.random.default_rng(0))
    assert 5 <= len(mutants) <= 25  # about im_r * N individuals picked
    for mutant in mutants:
        changed = mutant.weights["w"] != 0
        assert abs(changed.float().mean().item() - 0.2) < 0.02  # about gm_r of the weights
        assert abs(mutant.weights["w"][changed].std().item() - 0.001) < 0.0001
        assert mutant.origin["operator"] == "mutation"
    assert all(torch.count_nonzero(i.weights["w"]) == 0 for i in population)  # inputs untouched
    same = mutate(population, individual_rate=0.3, gene_rate=0.2, sigma=0.001, rng=np.random.default_rng(0))
    assert all(torch.equal(a.weights["w"], b.weights["w"]) for a, b in zip(mutants, same))
    assert mutate(population, individual_rate=0.0, gene_rate=0.2, sigma=0.001, rng=np.random.default_rng(0)) == []


@pytest.mark.parametrize("kwargs, message", [
    ({"individual_rate": 1.5}, r"individual_mutation_rate must be in \[0, 1\]"),
    ({"gene_rate": -0.1}, r"gene_mutation_rate must be in \[0, 1\]"),
    ({"sigma": -0.001}, "sigma must be >= 0"),
])
def test_mutation_refuses_bad_settings(kwargs, message):
    settings = {"individual_rate": 0.3, "gene_rate": 0.2, "sigma": 0.001, **kwargs}
    with pytest.raises(ValueError, match=message):
        mutate([Individual(genome(1.0))], rng=np.random.default_rng(0), **settings)


def test_crossover_and_selection_refuse_bad_settings():
    with pytest.raises(ValueError, match=r"crossover_rate must be in \[0, 1\]"):
        crossover([Individual(genome(1.0))] * 2, [1, 1], rate=1.2, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="empty population"):
        crossover([], [], rate=0.3, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        select([0.1, 0.2], n=1, alpha=2.0, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="empty set of candidates"):
        select([], n=1, alpha=0.5, rng=np.random.default_rng(0))


def test_selection_keeps_the_top_alpha_n_then_refills_by_fitness():
    fitness = [0.1, 0.9, 0.0, 0.5, 0.8, 0.3, 0.0, 0.2]
    keep = select(fitness, n=5, alpha=0.4, rng=np.random.default_rng(0))
    assert keep[:2] == [1, 4] and len(keep) == len(set(keep)) == 5  # ceil(0.4 * 5) = 2 elites
    assert not {2, 6} & set(keep)  # zero fitness is drawn only once the others run out
    counts = np.zeros(len(fitness))
    for seed in range(300):
        for i in select(fitness, n=3, alpha=0.34, rng=np.random.default_rng(seed))[2:]:
            counts[i] += 1
    assert counts[1] == counts[4] == 0  # elites are not drawn twice
    assert counts[3] > counts[5] > counts[0] and counts[2] == counts[6] == 0
    assert select([0.3, 0.1], n=5, alpha=0.5, rng=np.random.default_rng(0)) == [0, 1]  # fewer than N: all, best first


def test_proportional_probabilities():
    assert np.allclose(proportional_probabilities([1, 3]), [0.25, 0.75])
    assert np.allclose(proportional_probabilities([0, 0]), [0.5, 0.5])
    assert np.allclose(proportional_probabilities([-1, 1]), [0, 1])


def test_succession_follows_the_experience_update():
    w, e = genome(1.0), genome(0.5)
    best, current, worst = genome(4.0), genome(2.0), genome(-2.0)
    new_w, new_e = succession(w, e, global_best=best, current_best=current, global_worst=worst)
    phi_e, phi_g, phi_c, phi_w = 0.95, 0.2, 0.2, 0.1
    c = phi_e + phi_g + phi_c + phi_w
    expected_e = (phi_e * 0.5 + phi_g * (4 - 1) + phi_c * (2 - 1) - phi_w * (-2 - 1)) / c
    assert torch.allclose(new_e[KEYS[0]], torch.full((2, 6), expected_e))
    assert torch.allclose(new_w[KEYS[0]], torch.full((2, 6), 1 + 0.95 * expected_e))
    assert torch.allclose(new_e[KEYS[1]], torch.full((6, 2), -expected_e))  # sign follows the tensors
    with pytest.raises(ValueError, match="phi must be 4 non-negative"):
        succession(w, e, global_best=best, current_best=current, global_worst=worst, phi=(1, 1, 1))


def test_initial_experience_is_random_and_shaped_like_the_weights():
    population = [Individual(genome(1.0)) for _ in range(3)]
    experience = initial_experience(population, rng=np.random.default_rng(0))
    assert [{k: v.shape for k, v in e.items()} for e in experience] == [{KEYS[0]: (2, 6), KEYS[1]: (6, 2)}] * 3
    assert not torch.equal(experience[0][KEYS[0]], experience[1][KEYS[0]])
    assert 0 < experience[0][KEYS[0]].abs().mean() < 0.01


def test_ensemble_majority_vote_and_most_similar_text():
    last_number = lambda text: (text.split() or [None])[-1] if any(ch.isdigit() for ch in text) else None  # noqa: E731
    assert ensemble_answer(["so 36", "so 37", "then 37"], extract=last_number) == "so 37"
    assert ensemble_answer(["so 36", "so 37", "no idea"], extract=last_number) == "so 36"  # tie: best model
    assert unique_answer_vote([None, None]) is None
    assert ensemble_answer(["x", "y", "z"], extract=lambda _: None) == most_similar_output(["x", "y", "z"])
    texts = ["the cat sat on the mat", "a dog ran", "the cat sat on a mat", "the cat sat on the hat"]
    assert most_similar_output(texts) == "the cat sat on the mat"
    with pytest.raises(ValueError, match="empty ensemble"):
        ensemble_answer([])


def test_selection_refills_when_fewer_candidates_score_above_zero_than_places_left():
    # found on the zoo: 12 candidates, 2 of them above 0, 3 elite places and 3 drawn ones
    fitness = [0.0, 0.02, 0.0, 0.0, 0.01, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    keep = select(fitness, n=6, alpha=0.5, rng=np.random.default_rng(0))
    assert len(set(keep)) == 6 and keep[:2] == [1, 4]
