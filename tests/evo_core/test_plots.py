"""The study pictures: Optuna's optimization history for one- and two-objective studies."""
from __future__ import annotations

import matplotlib.pyplot as plt
import optuna
import pytest
from PIL import Image

from evo_core import plot_history


@pytest.mark.parametrize("directions", [["maximize"], ["maximize", "minimize"]])
def test_history_png_for_any_study(tmp_path, directions):
    study = optuna.create_study(directions=directions, study_name="toy")
    study.optimize(lambda t: [t.suggest_float(f"x{i}", 0, 1) for i in range(len(directions))], n_trials=6)
    def style():  # everything but the backend, which plot_history sets to Agg (files only)
        return {k: v for k, v in plt.rcParams.items() if k != "backend"}

    style_before = style()
    plot_history(study, tmp_path / "history.png", fitness="acc_ja")
    with Image.open(tmp_path / "history.png") as image:
        width, height = image.size
    assert width > 600 and height > 300
    assert style() == style_before, "Optuna's plot style leaked into later plots"
