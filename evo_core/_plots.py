"""Study pictures saved as PNG artifacts (matplotlib, no display)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402


def plot_history(study: optuna.Study, out_png: Path, *, fitness: str) -> None:
    """Fitness per trial and the best so far (Optuna's optimization history, for one objective)."""
    trials = [t for t in study.trials if t.state.name == "COMPLETE"]
    numbers = [t.number for t in trials]
    values = [t.values[0] for t in trials]
    best, running = [], float("-inf")
    for v in values:
        running = max(running, v)
        best.append(running)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.scatter(numbers, values, s=10, alpha=0.6, label="trial")
    ax.plot(numbers, best, color="crimson", label="best so far")
    ax.set(xlabel="trial", ylabel=f"{fitness} (search split)", title=study.study_name)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
