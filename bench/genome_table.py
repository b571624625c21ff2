"""GENOME(+) against its baselines and its ablation on the LoRA zoo, 3 seeds, one evaluation
budget for every searched row (bench/results.py runs them: `python -m bench.results genome`).

Every search is the command a user types, `python -m evo_genome` plus the overrides below, each
spending BUDGET evaluations of the search split. One experts run (deterministic, no seed) gives
the best single expert (picked on the search split) and the uniform average of all experts; the
searched runs leave those rows out of their tables (table_baselines=false).

Which row of which run each table cell is:
  GENOME+            plus          ensemble top-3
  GENOME             nosuccession  best individual (crossover, mutation, selection; its search
                                   is GENOME's: the ensemble only answers after it)
  - succession       nosuccession  ensemble top-3
  - ensemble         plus          best individual
  - crossover / mutation / selection: that run's ensemble top-3
  CMA-ES mixing      mixing        best mixture (LoraHub-style weights, one per expert)
"""
from __future__ import annotations

import statistics

SEEDS = (0, 1, 2)
# N=6, 50 of the 200 search items, 100 of the 200 test items, 24 evaluations: the 19 runs, three
# at a time, in about 30 min on two CPU cores shared with other work (one GENOME+ run at 30
# evaluations of 100 items took 6.8 min of wall time at a load average of 15)
BUDGET = ("n_trials=24", "genome.population=6", "genome.iterations=100", "+objective.search.limit=50",
          "+objective.test.limit=100")
ARMS = {
    "plus": (),
    "nosuccession": ("genome.succession=false",),
    "nocrossover": ("genome.crossover=false",),
    "nomutation": ("genome.mutation=false",),
    "noselection": ("genome.selection=false",),
    "mixing": ("+experiment=mixing",),
}
ENSEMBLE, BEST = "ensemble top-3", "best individual"
METRIC = "acc"


def run_overrides(arm: str, seed: int) -> tuple[str, ...]:
    return (*ARMS[arm], *BUDGET, f"seed={seed}", "table_baselines=false", f"study_name=genome_{arm}")


EXPERTS_RUN = ("+experiment=experts", "+objective.search.limit=50", "+objective.test.limit=100")


def runs() -> dict[str, tuple[str, ...]]:
    """bench/results.py's run name -> the evo_genome overrides."""
    return {"genome_experts": EXPERTS_RUN,
            **{f"genome_{arm}_seed{s}": run_overrides(arm, s) for arm in ARMS for s in SEEDS}}


def _cells(tables, arm: str, row: str) -> list[float]:
    return [100 * tables[f"genome_{arm}_seed{s}"][row][METRIC] for s in SEEDS]


def _line(label: str, cells: list[float]) -> str:
    return (f"| {label} | " + " | ".join(f"{c:.1f}" for c in cells)
            + f" | {statistics.mean(cells):.1f} ({min(cells):.1f}-{max(cells):.1f}) |")


def render(tables) -> str:
    """Two tables: the comparison and the ablation, test acc (%) per seed, mean (spread)."""
    experts = tables["genome_experts"]
    head = "| " + " | ".join(f"seed {s}" for s in SEEDS) + " | mean (spread) |"
    rule = "|---" * (len(SEEDS) + 2) + "|"
    lines = [f"| method (test {METRIC}, %) {head}", rule,
             _line("GENOME+ (ensemble of the top 3)", _cells(tables, "plus", ENSEMBLE)),
             _line("GENOME (best individual)", _cells(tables, "nosuccession", BEST)),
             _line("best single expert (picked on the search split)", [100 * experts["best expert"][METRIC]] * 3),
             _line("uniform average of all experts", [100 * experts["uniform average"][METRIC]] * 3),
             _line("CMA-ES over per-expert mixing weights (LoraHub-style)", _cells(tables, "mixing", "best mixture")),
             "", f"| ablation of GENOME+ (test {METRIC}, %) {head}", rule,
             _line("GENOME+ (all five operators)", _cells(tables, "plus", ENSEMBLE))]
    for label, arm, row in (("- crossover", "nocrossover", ENSEMBLE), ("- mutation", "nomutation", ENSEMBLE),
                            ("- selection", "noselection", ENSEMBLE), ("- succession", "nosuccession", ENSEMBLE),
                            ("- ensemble (its best individual)", "plus", BEST)):
        lines.append(_line(label, _cells(tables, arm, row)))
    return "\n".join(lines) + "\n"
