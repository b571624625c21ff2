"""The DELLA crossover equals mergekit's della merge of the two parents (mergekit's own run_merge on
the tiny models, the parents saved as model directories), its parameters drawn from the declared
ranges, and it refuses sources that are no fine-tunes of the base."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from evo_breed import check_common_base, della_crossover, draw_della, split_slerp
from evo_breed._config import DellaRanges
from evo_core import load_pool, use_weights

ATOL = 2e-6  # fp32: a few ulps of the merged values (as tests/evo_ps/test_ps_merge.py)


@pytest.fixture(scope="module")
def pool(tiny_model_dirs):
    return load_pool(base=tiny_model_dirs["base"], sources={s: tiny_model_dirs[s] for s in ("src_a", "src_b", "src_c")})


@pytest.fixture(scope="module")
def parents(pool, tiny_model_dirs, tmp_path_factory):
    """Two archive members as breeding makes them: a SLERP child of two sources, and a third source;
    each also saved as a model directory for mergekit."""
    root = tmp_path_factory.mktemp("parents")
    child = split_slerp(pool.sources["src_a"], pool.sources["src_b"], pool.param_names, split=5, w=0.3)
    weights = {"parent_a": child, "parent_b": pool.sources["src_c"]}
    dirs = {}
    for name, w in weights.items():
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dirs["base"])
        use_weights(model, w)
        model.save_pretrained(root / name)
        dirs[name] = root / name
    return weights, dirs


def mergekit_della(run_mergekit, base_dir, dirs, draw, *, seed):
    """mergekit's della config for the two parents, written from the draw by hand."""
    return run_mergekit({
        "merge_method": "della", "base_model": str(base_dir), "dtype": "float32",
        "parameters": {"epsilon": draw["epsilon"], "lambda": draw["lambda"], "normalize": True, "rescale": True},
        "models": [{"model": str(dirs[p]), "parameters": {"weight": w, "density": d}}
                   for p, w, d in zip(("parent_a", "parent_b"), draw["weight"], draw["density"])]}, seed=seed)


def test_della_without_drops_equals_mergekit(pool, parents, tiny_model_dirs, run_mergekit):
    # density 1 keeps every task-vector entry: the rest of della (weights, sign election, the
    # normalization by the weights of each sign, lambda) is deterministic and must match to fp32 ulps
    weights, dirs = parents
    draw = {**draw_della(DellaRanges(), np.random.default_rng(3)), "density": [1.0, 1.0]}
    ours = della_crossover(pool, weights["parent_a"], weights["parent_b"], draw, seed=0)
    theirs = mergekit_della(run_mergekit, tiny_model_dirs["base"], dirs, draw, seed=0)
    assert set(ours) == set(theirs)
    worst = max(((ours[k] - theirs[k]).abs().max().item(), k) for k in ours)
    assert worst[0] <= ATOL, f"max |ours - mergekit| = {worst[0]:.3g} in {worst[1]}"
    moved = sum(float((ours[k] - pool.base[k]).abs().sum()) for k in ours)
    assert moved > 0  # a real merge, not the base


def test_della_drops_match_mergekit_statistically(pool, parents, tiny_model_dirs, run_mergekit):
    # with drawn densities the masks come from different generators (ours: seeded per tensor and
    # parent; mergekit: torch's global RNG), so the two merges agree in distribution, per tensor:
    # the share of untouched entries within 0.03, the spread of the merged task vector within 8%,
    # its mean within 0.1 of its spread (the bounds tests/evo_ps/test_ps_merge.py uses for della_linear)
    weights, dirs = parents
    draw = draw_della(DellaRanges(), np.random.default_rng(5))
    assert all(0.4 <= d <= 0.8 for d in draw["density"])
    ours = della_crossover(pool, weights["parent_a"], weights["parent_b"], draw, seed=7)
    theirs = mergekit_della(run_mergekit, tiny_model_dirs["base"], dirs, draw, seed=7)
    checked = 0
    for k, base in pool.base.items():
        if base.numel() < 4096:
            continue
        ours_d, theirs_d = (ours[k] - base).flatten(), (theirs[k] - base).flatten()
        assert abs((ours_d == 0).float().mean() - (theirs_d == 0).float().mean()) < 0.03, k
        assert abs(ours_d.std() / theirs_d.std() - 1) < 0.08, k
        assert abs(ours_d.mean() - theirs_d.mean()) < 0.1 * theirs_d.std(), k
        assert not torch.equal(ours_d, theirs_d)  # really dropped at random
        checked += 1
    assert checked >= 20
    again = della_crossover(pool, weights["parent_a"], weights["parent_b"], draw, seed=7)
    assert all(torch.equal(again[k], ours[k]) for k in ours)  # the trial's seed makes the same child


def test_della_draws_stay_in_their_ranges():
    ranges = DellaRanges(weight=[0.2, 0.4], density=[0.5, 0.6], epsilon=[0.01, 0.02], lambda_=[1.0, 1.5])
    rng = np.random.default_rng(0)
    draws = [draw_della(ranges, rng) for _ in range(200)]
    for key, (low, high) in (("weight", ranges.weight), ("density", ranges.density)):
        values = [v for d in draws for v in d[key]]
        assert low <= min(values) and max(values) <= high and max(values) - min(values) > 0.8 * (high - low)
    for key, (low, high) in (("epsilon", ranges.epsilon), ("lambda", ranges.lambda_)):
        values = [d[key] for d in draws]
        assert low <= min(values) and max(values) <= high and max(values) - min(values) > 0.8 * (high - low)


def test_sources_that_share_no_base_are_refused(pool):
    check_common_base(pool.base, pool.sources)  # fine-tunes (base + noise): accepted
    gen = torch.Generator().manual_seed(1)
    stranger = {k: torch.randn(t.shape, generator=gen) * t.std().clamp(min=0.02) for k, t in pool.base.items()}
    with pytest.raises(ValueError, match="source 'stranger' is no fine-tune of it \\(distance [0-9.]+ of the "
                                         "base's norm, > 0.5\\)"):
        check_common_base(pool.base, {**pool.sources, "stranger": stranger})
