"""The study pictures: Optuna's optimization history for one- and two-objective studies, and the
comparison chart; neither switches the process's matplotlib backend."""
from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import optuna
import pytest
from PIL import Image

from evo_core import plot_history
from evo_core.compare import plot_tables
from tests.conftest import assert_png


@pytest.mark.parametrize("directions", [["maximize"], ["maximize", "minimize"]])
def test_history_png_for_any_study(tmp_path, directions):
    study = optuna.create_study(directions=directions, study_name="toy")
    study.optimize(lambda t: [t.suggest_float(f"x{i}", 0, 1) for i in range(len(directions))], n_trials=6)
    def style():
        return dict(plt.rcParams)

    style_before = style()
    plot_history(study, tmp_path / "history.png", fitness="acc_ja")
    with Image.open(tmp_path / "history.png") as image:
        width, height = image.size
    assert width > 600 and height > 300
    assert style() == style_before, "Optuna's plot style leaked into later plots"


def test_the_core_pictures_leave_the_backend_as_it_was(tmp_path, another_backend):
    study = optuna.create_study(study_name="toy")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=4)
    plot_history(study, tmp_path / "history.png", fitness="acc_ja")
    tables = {"run a": {"base": {"acc_ja": 0.25}, "best_merge": {"acc_ja": 0.5}},
              "run b": {"base": {"acc_ja": 0.25}, "best_merge": {"acc_ja": 0.75}}}
    plot_tables(tables, tmp_path / "compare.png")
    assert matplotlib.get_backend() == another_backend
    assert_png(tmp_path / "history.png", min_width=600)
    assert_png(tmp_path / "compare.png")
