"""Genome -> path: slot layout, the paper's start/end rule, matrix and WNet scales."""
from __future__ import annotations

import numpy as np
import pytest

from evo_dfs import SCALE_MODELS, MatrixScales, SlotLayout, WNet, layer_path, make_scale_model, select_hops

LAYOUT = SlotLayout(layers_per_model=(3, 2), repeats=2)  # M = 5 (A: 0-2, B: 3-4), T = 10


def indicator(on):
    ind = -np.ones(LAYOUT.num_slots)
    ind[list(on)] = 0.3
    return ind


def test_layout():
    assert (LAYOUT.num_layers, LAYOUT.num_slots) == (5, 10)
    assert LAYOUT.layer_owner == (0, 0, 0, 1, 1)
    assert (LAYOUT.first_layer, LAYOUT.last_layer) == (0, 2)
    assert LAYOUT.identity_slots().tolist() == [True] * 3 + [False] * 7
    with pytest.raises(ValueError, match="repeats"):
        SlotLayout(layers_per_model=(3,), repeats=0)


def test_identity_indicator_gives_model_a():
    layers, slots = select_hops(np.where(LAYOUT.identity_slots(), 1.0, -1.0), LAYOUT)
    assert (layers, slots) == ([0, 1, 2], [0, 1, 2])


def test_slots_in_order_across_repetitions_and_pinned_ends():
    # slot 4 = B's layer 1 (global 4), slot 6 = second repetition's A layer 1 (global 1), slot 8 = global 3
    assert select_hops(indicator([4, 6, 8]), LAYOUT) == ([0, 4, 1, 3, 2], [0, 4, 6, 8, 10])
    # already starting with A's first / ending with A's last (slot 5 = global 0, slot 7 = global 2): no pins
    assert select_hops(indicator([5, 6, 7]), LAYOUT) == ([0, 1, 2], [5, 6, 7])
    assert select_hops(-np.ones(10), LAYOUT) == ([0, 2], [0, 10])
    assert select_hops(indicator([0]), LAYOUT)[0] == [0, 2]  # I_t > 0 strictly; 0.3 is on
    with pytest.raises(ValueError, match="expected \\(10,\\)"):
        select_hops(np.ones(9), LAYOUT)


def test_matrix_scales_index_source_and_target_layer():
    scales = MatrixScales(LAYOUT)
    w = np.arange(25, dtype=float).reshape(5, 5) / 10  # W[i, j] = (5 i + j) / 10
    path = layer_path(indicator([4, 6, 8]), w.ravel(), scales)
    assert path.layers == (0, 4, 1, 3, 2)
    # first hop is embedding -> A's first layer: fixed 1; then W[0,4], W[4,1], W[1,3], W[3,2]
    assert path.scales == pytest.approx((1.0, 0.4, 2.1, 0.8, 1.7))
    assert scales.param_names()[:2] == ["W.i00.j00", "W.i00.j01"] and scales.param_names()[-1] == "W.i04.j04"
    with pytest.raises(ValueError, match="expected 25"):
        scales.hop_scales(np.ones(24), [0, 1], [0, 1])


def test_wnet_flat_params_start_at_unit_scales_and_depend_on_i_j_t():
    net = WNet(LAYOUT, hidden=4)
    assert net.num_params == 4 * 3 + 2 * 4 + 1 == len(net.param_names())
    assert net.param_names()[0] == "wnet.p000"
    x0 = net.x0()
    assert x0.shape == (net.num_params,)
    assert np.array_equal(x0, WNet(LAYOUT, hidden=4).x0()), "x0 is deterministic"
    layers, slots = [0, 4, 1, 3, 2], [0, 4, 6, 8, 10]
    assert net.hop_scales(x0, layers, slots) == [1.0] * 5
    p = x0.copy()
    p[-5:-1] = [0.5, -0.3, 0.2, 0.1]  # v
    got = net.hop_scales(p, layers, slots)
    assert got[0] == 1.0 and len(set(np.round(got[1:], 6))) == 4
    # same (i, j), different step t -> different scale
    assert net.scale(p, 0, 1, 1) != pytest.approx(net.scale(p, 0, 1, 9))


def test_scale_model_registry():
    assert set(SCALE_MODELS) == {"matrix", "wnet"}
    assert make_scale_model("wnet", LAYOUT, hidden=2).num_params == 11
    with pytest.raises(ValueError, match="unknown scale model 'mlp'; known: matrix, wnet"):
        make_scale_model("mlp", LAYOUT)
