"""Picture of a layer path like Fig. 4 of Akiba et al. 2025: x = step (hop), y = layer, colour = source
model, intensity = scale.

    plot_path(path.layers, path.scales, layout.layer_owner, "path.png", model_names=["A", "B"])
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_path(path, scales, layer_owner, out_png, *, model_names=None, title: str | None = None) -> Path:
    """path: global layer per hop; scales: per hop; layer_owner: source-model index per global layer."""
    layers = np.asarray(path, dtype=int)
    sc = np.asarray(scales, dtype=float)
    owner = np.asarray(layer_owner, dtype=int)
    if layers.ndim != 1 or not layers.size or sc.shape != layers.shape:
        raise ValueError(f"need one scale per hop: {layers.size} hops, {sc.size} scales")
    if layers.min() < 0 or layers.max() >= owner.size:
        raise ValueError(f"path layers must lie in 0..{owner.size - 1}")
    n_models = int(owner.max()) + 1
    names = list(model_names) if model_names is not None else [f"model {k}" for k in range(n_models)]
    if len(names) < n_models:
        raise ValueError(f"{n_models} source models but {len(names)} names")
    # imported here: matplotlib costs ~0.5 s and only this function needs it; Figure() without pyplot is
    # headless (Agg) and leaves the global backend alone
    from matplotlib import colormaps
    from matplotlib.colors import to_rgba
    from matplotlib.figure import Figure

    palette = colormaps["tab10"]

    steps = np.arange(layers.size)
    # intensity: scale relative to the largest one on the path, kept visible for tiny scales
    alpha = np.clip(np.abs(sc) / max(np.abs(sc).max(), 1e-12), 0.15, 1.0)
    colours = [to_rgba(palette(owner[g] % 10), a) for g, a in zip(layers, alpha)]

    fig = Figure(figsize=(max(6.0, 0.12 * layers.size + 3), max(3.0, 0.1 * owner.size + 2)))
    ax = fig.add_subplot()
    ax.plot(steps, layers, color="0.8", linewidth=0.8, zorder=1)
    ax.scatter(steps, layers, c=colours, s=28, marker="s", edgecolors="none", zorder=2)
    for boundary in np.flatnonzero(np.diff(owner)) + 0.5:  # separate the source models' layer bands
        ax.axhline(boundary, color="0.6", linestyle="--", linewidth=0.6)
    for k in range(n_models):
        ax.scatter([], [], color=palette(k % 10), marker="s", label=names[k])
    ax.set_xlabel("step")
    ax.set_ylabel("layer (global index)")
    ax.set_ylim(-0.5, owner.size - 0.5)
    ax.set_title(title or f"layer path: {layers.size} steps (intensity = scale, max {np.abs(sc).max():.2f})")
    ax.legend(loc="upper left", fontsize="small", frameon=False)
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    return out
