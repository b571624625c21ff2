"""Path picture (Fig. 4 style)."""
from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pytest

from evo_dfs import plot_path


def test_plot_path_writes_a_coloured_png(tmp_path):
    out = plot_path([0, 1, 5, 5, 1, 9, 3], [1.0, 1.1, 0.9, 1.2, 0.3, 1.0, 1.05], [0] * 4 + [1] * 4 + [2] * 4,
                    tmp_path / "sub" / "path.png", model_names=["A", "B", "C"])
    img = mpimg.imread(out)
    assert img.shape[0] > 100 and img.shape[1] > 100
    rgb = img[..., :3].reshape(-1, 3)
    assert (np.ptp(rgb, axis=1) > 0.3).sum() > 50, "expect coloured markers, not just greys"


def test_plot_path_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="one scale per hop"):
        plot_path([0, 1], [1.0], [0, 0], tmp_path / "x.png")
    with pytest.raises(ValueError, match="0..1"):
        plot_path([0, 2], [1.0, 1.0], [0, 0], tmp_path / "x.png")
