"""The pictures of a breeding run: the lineage tree of every scored model and the archive's
per-item coverage (which search items each member gets right)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def plot_lineage(nodes: dict[str, dict[str, Any]], ancestry: Sequence[str], out_png: Path, *, fitness: str) -> None:
    """x: evaluation order, y: search score; grey dots never entered the archive; lines join an
    archive member to its parents; the champion's ancestry in red."""
    from matplotlib.figure import Figure  # here: slow to import, and only the plots need it

    order = list(nodes)  # scored order: starting models, then children by trial
    x = {i: k for k, i in enumerate(order)}
    fig = Figure(figsize=(max(8, 0.06 * len(order) + 4), 5))
    ax = fig.subplots()
    for i, n in nodes.items():
        if not n["entered"]:
            continue
        for p in n["parents"]:
            if p in nodes:
                red = i in ancestry and p in ancestry
                ax.plot([x[p], x[i]], [nodes[p]["score"], n["score"]], color="tab:red" if red else "tab:blue",
                        alpha=0.9 if red else 0.25, lw=1.5 if red else 0.8, zorder=2 if red else 1)
    for entered, color, label in ((False, "lightgrey", "not admitted"), (True, "tab:blue", "archive member (ever)")):
        ids = [i for i in order if nodes[i]["entered"] == entered]
        ax.scatter([x[i] for i in ids], [nodes[i]["score"] for i in ids], s=14, color=color, label=label, zorder=3)
    ax.scatter([x[i] for i in ancestry], [nodes[i]["score"] for i in ancestry], s=30, color="tab:red",
               label="champion's lineage", zorder=4)
    for i in ancestry:
        if nodes[i]["kind"] == "initial" or i == ancestry[0]:
            ax.annotate(i, (x[i], nodes[i]["score"]), textcoords="offset points", xytext=(3, 4), fontsize=8)
    ax.set_xlabel("evaluation")
    ax.set_ylabel(f"{fitness} (search split)")
    ax.set_title(f"lineage: {len(order)} models scored, champion {ancestry[0]}")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)


def plot_coverage(members: Sequence[Any], out_png: Path, *, resources: Sequence[str]) -> None:
    """Archive members (rows, by search score) x search items (columns): one block per resource
    metric (every metric scores as many items), most covered items first within a block."""
    from matplotlib.figure import Figure  # here: slow to import, and only the plots need it

    members = sorted(members, key=lambda m: -m.mean)
    grid = np.array([m.scores for m in members], dtype=float)
    size = grid.shape[1] // len(resources)
    blocks = [grid[:, k * size:(k + 1) * size] for k in range(len(resources))]
    grid = np.hstack([b[:, np.argsort(-b.sum(axis=0), kind="stable")] for b in blocks])
    fig = Figure(figsize=(10, 0.35 * len(members) + 1.8))
    ax = fig.subplots()
    ax.imshow(grid, aspect="auto", cmap="Greens", vmin=0, vmax=1, interpolation="nearest")
    for k in range(1, len(resources)):
        ax.axvline(k * size - 0.5, color="black", lw=1)
    ax.set_xticks([(k + 0.5) * size for k in range(len(resources))],
                  [f"{r}: {int((b.max(axis=0) > 0).sum())}/{size} covered" for r, b in zip(resources, blocks)])
    ax.set_yticks(range(len(members)), [f"{m.id} ({m.mean:.2f})" for m in members])
    ax.set_xlabel("search items per resource metric, most covered first")
    ax.set_title("archive coverage: which member gets which item right")
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
