"""The per-layer parameter picture of a PS result (like the paper's Fig. 3): one heat-map row per
source and parameter kind (weight, density), one column per group (embed, layers, head)."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ._space import SearchSpace


def plot_layer_params(space: SearchSpace, values: Mapping[str, float], out_png: Path) -> None:
    rows = sorted({(s.source or "shared", s.key) for s in space.placements}, key=lambda r: (r[1], r[0]))
    grid = np.full((len(rows), len(space.groups)), np.nan)
    for place in space.placements:
        grid[rows.index((place.source or "shared", place.key)), space.groups.index(place.group)] = values[place.name]
    # a bare Figure, not pyplot: drawn to a file only, whatever backend the caller's process uses
    fig = Figure(figsize=(max(6, 0.5 * len(space.groups) + 3), 0.5 * len(rows) + 1.5))
    ax = fig.subplots()
    image = ax.imshow(grid, aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(space.groups)), space.groups, rotation=90)
    ax.set_yticks(range(len(rows)), [f"{source} {key}" for source, key in rows])
    ax.set_title(f"{space.method.name}: best parameters per group")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
