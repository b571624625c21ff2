"""Search-space helpers: names, bounds, x0 (= model A), genome vectors, compact genome strings."""
from __future__ import annotations

import numpy as np
import pytest

from evo_core import pack_genome, unpack_genome
from evo_dfs import DFSSpace, SlotLayout

LAYOUT = SlotLayout(layers_per_model=(3, 2), repeats=2)


def test_paper_scale_dimensions():
    paper = DFSSpace(layout=SlotLayout(layers_per_model=(32, 32), repeats=3))
    assert paper.dim == 192 + 64 * 64 == 4288
    names = paper.names()
    assert names[0] == "I.t000" and names[191] == "I.t191" and names[192] == "W.i00.j00" and names[-1] == "W.i63.j63"
    assert len(set(names)) == paper.dim
    assert DFSSpace(layout=paper.layout, scales="wnet", hidden=8).dim == 192 + 41


@pytest.mark.parametrize("scales", ["matrix", "wnet"])
def test_x0_is_model_a_with_unit_scales(scales):
    space = DFSSpace(layout=LAYOUT, scales=scales)
    x0 = space.x0()
    assert list(x0) == space.names()
    assert x0["I.t000"] == 0.5 and x0["I.t003"] == -0.5 and x0["I.t005"] == -0.5  # slot 5: repetition 2's A0
    path = space.path(x0)
    assert path.layers == (0, 1, 2) and path.scales == (1.0, 1.0, 1.0)
    bounds = space.bounds()
    assert all(bounds[n][0] <= v <= bounds[n][1] for n, v in x0.items())


def test_vector_params_roundtrip_and_errors():
    space = DFSSpace(layout=LAYOUT)
    rng = np.random.default_rng(1)
    lo, hi = space.bounds_arrays()
    v = rng.uniform(lo, hi)
    assert np.array_equal(space.vector(space.params(v)), v)
    assert space.path(v) == space.path(space.params(v))
    with pytest.raises(ValueError, match="missing"):
        space.vector({"I.t000": 1.0})
    with pytest.raises(ValueError, match="the space 35"):
        space.path(np.zeros(3))
    with pytest.raises(ValueError, match="indicator_init"):
        DFSSpace(layout=LAYOUT, indicator_init=2.0)


def test_pack_genome_is_compact_and_float32_exact():
    v = np.random.default_rng(0).normal(size=4288)
    text = pack_genome(v)
    assert isinstance(text, str) and len(text) < 4288 * 6
    assert np.allclose(unpack_genome(text), v, rtol=1e-6) and unpack_genome(text).dtype == np.float64
