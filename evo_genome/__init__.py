"""GENOME(+): a population of LoRA experts evolved without gradients (the foundation of issue 23).

    experts = {a.name: a.weights for a in map(read_adapter, folders)}   # PEFT LoRA adapter folders
    check_same_shapes(adapters)                                         # one line if they cannot mix
    population = initialize(experts, n=10, rng=numpy.random.default_rng(0))
    children = crossover(population, fitness, rate=0.3, rng=rng)
    mutants = mutate(population, individual_rate=0.3, gene_rate=0.2, sigma=0.001, rng=rng)
    keep = select(fitness, n=10, alpha=0.5, rng=rng)
    weights, experience = succession(w, e, global_best=..., current_best=..., global_worst=...)
    ensemble_answer(outputs, extract=last_number)                       # GENOME+ top-k answer
    apply_lora(peft_model, individual.weights)                          # live, in place, no reload

The operators (_operators.py) are pure functions on weight dicts keyed as peft saves them; the
adapters module (_adapters.py) reads, checks and applies them; _evolution.py orders them into
generations (deterministic from the seed and the scores); _search.py is the search on evo_core's
lifecycle (`python -m evo_genome`, docs/genome.md); `python -m evo_genome.answer` answers with an
exported ensemble.
"""
from __future__ import annotations

from ._adapters import (Adapter, apply_lora, base_shapes, check_fits_base, check_same_shapes, live_lora_params,
                        lora_model, read_adapter)
from ._config import GenomeConfig, validate
from ._evolution import Evolution, Settings, mean_pairwise_distance
from ._operators import (DEFAULTS, Individual, crossover, ensemble_answer, initial_experience, initialize,
                         interpolate, most_similar_output, mutate, proportional_probabilities, select, succession,
                         unique_answer_vote)
from ._search import GenomeSearch

__all__ = ["Adapter", "apply_lora", "base_shapes", "check_fits_base", "check_same_shapes", "Evolution", "GenomeConfig",
           "GenomeSearch", "mean_pairwise_distance", "Settings", "validate", "crossover", "DEFAULTS", "ensemble_answer", "Individual",
           "initial_experience", "initialize", "interpolate", "live_lora_params", "lora_model", "most_similar_output",
           "mutate", "proportional_probabilities", "read_adapter", "select", "succession", "unique_answer_vote"]
