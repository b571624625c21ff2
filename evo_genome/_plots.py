"""The picture of a GENOME(+) run: each population's fitness (mean, max, min) and diversity."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def plot_generations(history: Sequence[Any], out_png: Path, *, fitness: str) -> None:
    """x: generation; left: the population's fitness mean with its min-max band; right: diversity
    (mean pairwise L2 distance of the LoRA weights)."""
    from matplotlib.figure import Figure  # here: slow to import, and only the plots need it

    gens = [h.generation for h in history]
    fig = Figure(figsize=(10, 4))
    left, right = fig.subplots(1, 2)
    left.fill_between(gens, [min(h.fitness) for h in history], [max(h.fitness) for h in history], alpha=0.25,
                      label="min-max")
    left.plot(gens, [sum(h.fitness) / len(h.fitness) for h in history], marker="o", label="mean")
    left.plot(gens, [max(h.fitness) for h in history], marker=".", lw=0.8, label="max")
    left.set_xlabel("generation")
    left.set_ylabel(f"{fitness} (search split)")
    left.legend(fontsize=8)
    right.plot(gens, [h.diversity for h in history], marker="o", color="tab:green")
    right.set_xlabel("generation")
    right.set_ylabel("mean pairwise L2 distance of the weights")
    fig.suptitle("population by generation")
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
