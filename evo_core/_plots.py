"""Study pictures saved as PNG artifacts, drawn by Optuna's matplotlib visualization.

Optuna draws with pyplot (it makes its own figure), so the figure is made under the caller's
backend, which is never switched: any backend saves a PNG. Style changes Optuna makes stay inside a
style context, and the figure is closed after saving (nothing is shown, nothing left in pyplot).
The project's other pictures use bare matplotlib Figures, with no pyplot at all.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import optuna


def plot_history(study: optuna.Study, out_png: Path, *, fitness: str) -> None:
    """Optuna's optimization history: fitness per trial and the best so far (the first objective)."""
    import matplotlib.pyplot as plt  # here: slow to import, and only this function needs it

    # multi-objective studies: plot the first objective, the fitness the search ranks by
    target = (lambda t: t.values[0]) if len(study.directions) > 1 else None
    # plt.style.context: Optuna switches to its own style; keep it off the other plots
    with warnings.catch_warnings(), plt.style.context("default"):
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        ax = optuna.visualization.matplotlib.plot_optimization_history(
            study, target=target, target_name=f"{fitness} (search split)")
        fig = ax.figure
        try:
            ax.set_title(f"{study.study_name}: optimization history")
            fig.set_size_inches(8, 4)
            fig.savefig(out_png, dpi=120, bbox_inches="tight")  # the legend sits outside the axes
        finally:
            plt.close(fig)
