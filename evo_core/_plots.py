"""Study pictures saved as PNG artifacts (Optuna's matplotlib backend, no display)."""
from __future__ import annotations

import warnings
from pathlib import Path

import optuna


def plot_history(study: optuna.Study, out_png: Path, *, fitness: str) -> None:
    """Optuna's optimization history: fitness per trial and the best so far (the first objective)."""
    import matplotlib.pyplot as plt  # here: slow to import, and only this function needs it

    # multi-objective studies: plot the first objective, the fitness the search ranks by
    target = (lambda t: t.values[0]) if len(study.directions) > 1 else None
    plt.switch_backend("Agg")  # files only, whatever backend the caller's environment picked
    # plt.style.context: Optuna switches to its own style; keep it off the other plots
    with warnings.catch_warnings(), plt.style.context("default"):
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        ax = optuna.visualization.matplotlib.plot_optimization_history(
            study, target=target, target_name=f"{fitness} (search split)")
        ax.set_title(f"{study.study_name}: optimization history")
        fig = ax.figure
        fig.set_size_inches(8, 4)
        fig.savefig(out_png, dpi=120, bbox_inches="tight")  # the legend sits outside the axes
    plt.close(fig)
