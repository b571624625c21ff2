"""Split-point SLERP equals a plain reference computation (float64 numpy, the textbook formula)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from evo_breed import split_index, split_slerp


def reference(a: dict, b: dict, names: list, split: int, w: float) -> dict:
    out = {}
    for i, name in enumerate(names):
        x, y = a[name].double().numpy().ravel(), b[name].double().numpy().ravel()
        t = w if i < split else 1 - w
        cos = float(np.clip(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)), -1, 1))
        if abs(cos) > 0.9995:  # nearly collinear: linear (mergekit's slerp threshold)
            z = (1 - t) * x + t * y
        else:
            theta = math.acos(cos)
            z = (math.sin((1 - t) * theta) * x + math.sin(t * theta) * y) / math.sin(theta)
        out[name] = z.reshape(a[name].shape)
    return out


@pytest.fixture
def parents():
    gen = torch.Generator().manual_seed(0)
    shapes = {"embed": (10, 4), "l0.q": (4, 4), "l0.norm": (4,), "l1.q": (4, 4), "head": (10, 4)}
    a = {k: torch.randn(s, generator=gen) for k, s in shapes.items()}
    b = {k: torch.randn(s, generator=gen) for k, s in shapes.items()}
    b["l0.norm"] = 2 * a["l0.norm"]  # collinear: the linear branch
    return a, b, list(shapes)


@pytest.mark.parametrize("split, w", [(0, 0.3), (2, 0.3), (3, 0.8), (4, 0.0), (2, 1.0)])
def test_split_slerp_equals_the_reference(parents, split, w):
    a, b, names = parents
    child = split_slerp(a, b, names, split=split, w=w)
    want = reference(a, b, names, split, w)
    for name in names:
        np.testing.assert_allclose(child[name].numpy(), want[name], rtol=1e-5, atol=1e-6, err_msg=name)
        assert child[name].dtype == a[name].dtype


def test_w_zero_keeps_parent_a_before_the_split_and_takes_parent_b_after(parents):
    a, b, names = parents
    child = split_slerp(a, b, names, split=2, w=0.0)
    for name in names[:2]:
        torch.testing.assert_close(child[name], a[name])
    for name in names[2:]:
        torch.testing.assert_close(child[name], b[name])


def test_mutation_is_seeded_and_scaled_by_each_tensor(parents):
    a, b, names = parents
    plain = split_slerp(a, b, names, split=2, w=0.4)
    one = split_slerp(a, b, names, split=2, w=0.4, mutation_std=0.01, seed=7)
    assert all(torch.equal(one[k], split_slerp(a, b, names, split=2, w=0.4, mutation_std=0.01, seed=7)[k]) for k in names)
    for k in names:
        relative = ((one[k] - plain[k]).pow(2).mean().sqrt() / plain[k].pow(2).mean().sqrt()).item()
        assert 0.002 < relative < 0.03, (k, relative)


def test_split_index_covers_every_tensor():
    assert [split_index(u, 5) for u in (0.0, 0.199, 0.2, 0.999, 1.0)] == [0, 0, 1, 4, 4]
