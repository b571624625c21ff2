"""Population breeding (M2N2, Model Merging of Natural Niches): `python -m evo_breed`.

    fitness = resource_fitness(scores, alpha)                   # competition for resources
    i, j = pick_parents(scores, rng, alpha=1.0)                # fitness, then attraction
    child = split_slerp(a, b, names, split=5, w=0.3)            # split-point SLERP crossover
    child = della_crossover(pool, a, b, draw_della(ranges, rng), seed=7)   # DELLA of the task vectors
    log = read_log(study)                                       # the archive's offers, in order
    run_study(cfg, BreedSearch(validate(cfg)), resolved=yaml)   # the whole search, on evo_core's lifecycle

`evo_breed.multitask` is a plugin module: a config naming it in `imports` gets the "multi_task"
objective (several tasks' items in one fitness); importing evo_breed itself registers nothing.
"""
from __future__ import annotations

from ._archive import Archive, Member, attraction, beats_parents, pick_parents, place_for, resource_fitness
from ._config import BreedConfig, validate
from ._crossover import check_common_base, della_crossover, draw_della, split_index, split_slerp
from ._offers import read_log
from ._search import BreedSearch

__all__ = ["Archive", "attraction", "beats_parents", "BreedConfig", "BreedSearch", "check_common_base", "della_crossover", "draw_della", "Member", "pick_parents", "place_for",
           "read_log", "resource_fitness", "split_index", "split_slerp", "validate"]
