"""InMemoryMerger == mergekit 0.1.5 run_merge on the tiny models, per layer, per method."""
from __future__ import annotations

import pytest
import torch

from evo_ps import MERGE_METHODS, InMemoryMerger, build_space, merge_method

ATOL = 2e-6  # fp32: a few ulps of the merged values (|w| <= ~1)


def live(pool) -> dict[str, torch.Tensor]:
    return {k: p.detach().clone() for k, p in pool.model.named_parameters()}


def space_for(pool, method, **kwargs):
    return build_space(method=method, sources=pool.source_names, tensor_names=pool.param_names,
                       num_layers=pool.num_layers, **kwargs)


def handwritten_setting(space, values, key, source=None):
    """mergekit conditional parameters written independently of our exporter: one filter per layer,
    `embed_tokens` for the embeddings, the last (unfiltered) entry for the final norm and lm_head."""
    entries = []
    for group in space.groups:
        name = ".".join(p for p in (group, source, key) if p)
        if group == "embed":
            entries.insert(0, {"filter": "embed_tokens", "value": values[name]})
        elif group == "head":
            head = {"value": values[name]}
        else:
            entries.append({"filter": f"layers.{int(group[1:])}.", "value": values[name]})
    return entries + [head]


def mergekit_config(pool, method, space, values):
    paths = {s: str(pool.paths[s]) for s in pool.source_names}
    config = {"merge_method": method.name, "dtype": "float32",
              "parameters": {**method.options, **{k: handwritten_setting(space, values, k) for k in method.shared}},
              "models": [{"model": paths[s], "parameters": {k: handwritten_setting(space, values, k, s)
                                                            for k in method.per_source}}
                         for s in pool.source_names]}
    if method.mergekit_base == "base":
        config["base_model"] = str(pool.paths["base"])
    elif method.mergekit_base == "first_source":  # slerp's t = 0, nearswap's a
        config["base_model"] = paths[pool.source_names[0]]
    return config


def assert_close_all(ours, theirs):
    assert set(ours) == set(theirs)
    worst = max(((ours[k] - theirs[k]).abs().max().item(), k) for k in ours)
    assert worst[0] <= ATOL, f"max |ours - mergekit| = {worst[0]:.3g} in {worst[1]}"


CASES = [  # (method, options, pinned values, space options)
    ("linear", None, {}, {}),
    ("linear", {"normalize": False}, {}, {}),
    ("task_arithmetic", None, {}, {}),
    ("task_arithmetic", {"normalize": True, "lambda": 0.8}, {}, {}),
    ("ties", None, {}, {}),
    ("ties", {"normalize": False, "rescale": True, "lambda": 1.3}, {}, {}),
    ("dare_ties", None, {"density": 1.0}, {}),
    ("dare_linear", None, {"density": 1.0}, {}),
    ("dare_linear", {"normalize": True, "lambda": 0.7}, {"density": 1.0}, {}),
    ("della", None, {"density": 1.0}, {}),
    ("della_linear", None, {"density": 1.0}, {}),
    ("breadcrumbs", None, {}, {}),
    ("breadcrumbs", {"gamma": 0.2, "rescale": True, "normalize": True}, {}, {}),
    ("breadcrumbs_ties", {"gamma": 0.05, "lambda": 1.2}, {}, {}),
    ("slerp", None, {}, {}),
    ("nuslerp", None, {}, {}),
    ("nuslerp", {"nuslerp_flatten": False, "nuslerp_row_wise": True}, {}, {}),
    ("nuslerp", {"nuslerp_flatten": False}, {}, {}),
    ("multislerp", None, {}, {}),
    ("multislerp", {"normalize_weights": False}, {}, {}),
    ("sce", None, {}, {}),
    ("model_stock", None, {}, {}),
    ("model_stock", {"filter_wise": True}, {}, {}),
    ("karcher", None, {}, {}),
    ("karcher", {"max_iter": 3, "tol": 1e-3}, {}, {}),
    ("nearswap", None, {}, {"bounds": {"t": (0.0, 0.05)}}),  # |a - b| ~ 0.03 in the tiny models
]


@pytest.mark.parametrize("name,options,pinned,space_kwargs", CASES)
def test_matches_mergekit_per_layer(name, options, pinned, space_kwargs, pool2, pool3, run_mergekit, spread):
    method = merge_method(name, options)
    pool = pool2 if method.exact_sources == 2 else pool3
    if method.params:
        space = space_for(pool, method, **space_kwargs)
        values = spread(space, **pinned)
        params = space.tensor_params(values)
    else:  # a baseline (model_stock, karcher): merged once, no space
        space, values, params = None, {}, {k: {} for k in pool.param_names}
    InMemoryMerger(pool=pool, method=method).apply(params, seed=0)
    ours = live(pool)
    assert any((ours[k] - pool.base[k]).abs().max() > 1e-3 for k in ours), "merge left the base unchanged"
    assert_close_all(ours, run_mergekit(mergekit_config(pool, method, space, values)))


def test_every_registered_method_is_checked_against_mergekit():
    assert {case[0] for case in CASES} == set(MERGE_METHODS)


@pytest.mark.parametrize("name,options", [("ties", None), ("ties", {"rescale": True}), ("breadcrumbs", None),
                                          ("breadcrumbs_ties", {"gamma": 0.1, "rescale": True})])
def test_magnitude_selection_keeps_exactly_mergekits_elements_among_ties(name, options, tied_pool, run_mergekit,
                                                                        spread):
    # every |d| is 0, 1/64 or 1/32: each density's cut falls inside a run of equal magnitudes, and
    # mergekit keeps exactly k of them (those its argsort puts first), not the whole run
    method = merge_method(name, options)
    space = space_for(tied_pool, method)
    values = spread(space)
    InMemoryMerger(pool=tied_pool, method=method, chunk_elements=256).apply(space.tensor_params(values))
    assert_close_all(live(tied_pool), run_mergekit(mergekit_config(tied_pool, method, space, values)))


def test_magnitude_sort_waits_for_a_trial_that_thins(pool3, spread, monkeypatch):
    sorts = []
    argsort = torch.argsort
    monkeypatch.setattr(torch, "argsort", lambda *args, **kwargs: sorts.append(1) or argsort(*args, **kwargs))
    method = merge_method("ties")
    space = space_for(pool3, method)
    merger = InMemoryMerger(pool=pool3, method=method)
    merger.apply(space.tensor_params(spread(space, density=1.0)))
    assert not sorts  # nothing is thinned at density 1: no sort, neither at construction nor here
    thinned = space.tensor_params(spread(space))
    merger.apply(thinned)
    assert len(sorts) == len(pool3.param_names) * len(pool3.source_names)  # once per (tensor, source)
    merger.apply(thinned)
    assert len(sorts) == len(pool3.param_names) * len(pool3.source_names)


def test_per_layer_values_reach_their_layers(pool3):
    # task arithmetic with weight 1 for src_a in layer 2 only: exactly that layer becomes src_a
    method = merge_method("task_arithmetic")
    space = space_for(pool3, method)
    values = {p.name: (1.0 if p.name == "L02.src_a.weight" else 0.0) for p in space.params}
    InMemoryMerger(pool=pool3, method=method).apply(space.tensor_params(values))
    for k, p in pool3.model.named_parameters():
        expected = pool3.sources["src_a"][k] if ".layers.2." in k else pool3.base[k]
        assert torch.equal(p.detach(), expected), k


@pytest.mark.parametrize("name", ["dare_ties", "dare_linear", "della_linear"])
def test_random_drops_match_mergekit_statistically(name, pool3, run_mergekit):
    method = merge_method(name)
    space = space_for(pool3, method, uniform=True)
    InMemoryMerger(pool=pool3, method=method).apply(space.tensor_params({p.name: 0.5 for p in space.params}),
                                                    seed=7)
    ours = live(pool3)
    per_layer = space_for(pool3, method)
    config = mergekit_config(pool3, method, per_layer, {p.name: 0.5 for p in per_layer.params})
    theirs = run_mergekit(config, seed=7)
    checked = 0
    for k, base in pool3.base.items():
        if base.numel() < 4096:
            continue
        ours_d, theirs_d = (ours[k] - base).flatten(), (theirs[k] - base).flatten()
        # share of untouched entries: all three dropped (1/8) plus ties-election zeros (dare_ties)
        assert abs((ours_d == 0).float().mean() - (theirs_d == 0).float().mean()) < 0.03, k
        assert abs(ours_d.std() / theirs_d.std() - 1) < 0.08, k  # rescale and weights right
        assert abs(ours_d.mean() - theirs_d.mean()) < 0.1 * theirs_d.std(), k
        assert not torch.equal(ours_d, theirs_d)  # really random (different generators)
        checked += 1
    assert checked >= 20


def test_seeded_reproducible_and_chunk_invariant(pool3, spread):
    # a, b: same seed, different chunking; c: another seed
    for name in ("dare_ties", "della"):
        method = merge_method(name)
        space = space_for(pool3, method)
        params = space.tensor_params(spread(space))
        runs = {}
        for key, chunk, seed in (("a", None, 3), ("b", 64, 3), ("c", None, 4)):
            InMemoryMerger(pool=pool3, method=method, chunk_elements=chunk).apply(params, seed=seed)
            runs[key] = live(pool3)
        for k, base in pool3.base.items():  # same masks; the L1 sums differ only in rounding
            assert torch.equal(runs["a"][k] == base, runs["b"][k] == base), (name, k)
            assert torch.allclose(runs["a"][k], runs["b"][k], rtol=0, atol=ATOL), (name, k)
        assert not all(torch.equal(runs["a"][k], runs["c"][k]) for k in runs["a"]), name


def kept_mask(pool, source: str, density: float, seed: int) -> dict[str, torch.Tensor]:
    """dare_ties with only `source` weighted: the entries its random mask keeps are those that moved."""
    method = merge_method("dare_ties")
    space = space_for(pool, method, uniform=True)
    values = {p.name: (density if p.name.endswith("density") else float(f".{source}." in p.name))
              for p in space.params}
    InMemoryMerger(pool=pool, method=method).apply(space.tensor_params(values), seed=seed)
    return {k: (p.detach() != pool.base[k]).flatten() for k, p in pool.model.named_parameters()}


def test_random_masks_are_fair_and_independent(pool3):
    # masks read one draw table at offsets from (seed, tensor, source): each must keep ~density, and
    # masks of another source or another seed must overlap as independent draws would (density^2)
    density = 0.3
    a3, a4, b3 = (kept_mask(pool3, source, density, seed) for source, seed in (("src_a", 3), ("src_a", 4), ("src_b", 3)))
    large = [k for k in a3 if a3[k].numel() >= 4096]
    mask = {key: torch.cat([m[k] for k in large]).float() for key, m in (("a3", a3), ("a4", a4), ("b3", b3))}
    n = mask["a3"].numel()
    tolerance = 4 * (density * (1 - density) / n) ** 0.5  # 4 standard errors
    for key, m in mask.items():
        assert abs(m.mean() - density) < tolerance, key
    for x, y in (("a3", "a4"), ("a3", "b3")):
        assert abs((mask[x] * mask[y]).mean() - density**2) < tolerance, (x, y)
    for k in large:  # and tensor by tensor, no two masks alike
        assert not torch.equal(a3[k], a4[k]) and not torch.equal(a3[k], b3[k]), k


def test_della_keep_probability_follows_rank(pool2):
    # della keeps large-|delta| entries more often: with density 0.5 and epsilon 0.3, the top half of
    # each row by magnitude survives with p ~ 0.65, the bottom half with p ~ 0.35
    method = merge_method("della", {"epsilon": 0.3})
    space = space_for(pool2, method, uniform=True)
    values = {p.name: (0.5 if p.name.endswith("density") else (1.0 if ".src_a." in p.name else 0.0))
              for p in space.params}
    InMemoryMerger(pool=pool2, method=method).apply(space.tensor_params(values), seed=1)
    k = "model.layers.0.mlp.up_proj.weight"
    delta = pool2.sources["src_a"][k] - pool2.base[k]
    kept = (pool2.model.get_parameter(k).detach() != pool2.base[k])
    large = delta.abs() >= delta.abs().median(dim=1, keepdim=True).values
    assert abs(kept[large].float().mean() - 0.65) < 0.03
    assert abs(kept[~large].float().mean() - 0.35) < 0.03


def test_half_precision_pool_merges_in_float32(tiny_model_dirs, pool3, spread):
    from evo_core import load_pool

    half = load_pool(base=tiny_model_dirs["base"], dtype="bfloat16",
                     sources={s: tiny_model_dirs[s] for s in ("src_a", "src_b", "src_c")})
    # share of entries off by more than bf16 rounding: none for task arithmetic; for ties, bf16
    # magnitudes tie, so a few top-k picks differ (in a 16-entry norm one pick is already 6%)
    for name, limit_large, limit_small in (("task_arithmetic", 0.0, 0.0), ("ties", 0.05, 1.0)):
        method = merge_method(name)
        space = space_for(pool3, method)
        params = space.tensor_params(spread(space))
        InMemoryMerger(pool=pool3, method=method).apply(params)
        InMemoryMerger(pool=half, method=method).apply(params)
        for k, p in half.model.named_parameters():
            assert p.dtype == torch.bfloat16
            ref = pool3.model.get_parameter(k).detach()
            off = ((p.detach().float() - ref).abs() > 0.01 * ref.abs() + 2e-3).float().mean()
            assert off <= (limit_large if p.numel() >= 1024 else limit_small), (name, k, off)


def test_apply_writes_in_place(pool3, spread):
    method = merge_method("dare_ties")
    space = space_for(pool3, method)
    pointers = {k: p.data_ptr() for k, p in pool3.model.named_parameters()}
    InMemoryMerger(pool=pool3, method=method).apply(space.tensor_params(spread(space)), seed=0)
    assert pointers == {k: p.data_ptr() for k, p in pool3.model.named_parameters()}


def test_bad_inputs_fail_before_any_write(pool2, pool3, spread):
    with pytest.raises(ValueError, match="unknown merge method 'dare'; known: .*dare_ties"):
        merge_method("dare")
    with pytest.raises(ValueError, match="no option epsilon"):
        merge_method("ties", {"epsilon": 0.1})
    with pytest.raises(ValueError, match="must be a bool"):
        merge_method("ties", {"normalize": "yes"})
    with pytest.raises(ValueError, match="della option epsilon must be in \\(0, 0.5\\); got 0.5"):
        merge_method("della", {"epsilon": 0.5})
    with pytest.raises(ValueError, match="breadcrumbs option gamma must be in \\[0, 1\\)"):
        merge_method("breadcrumbs", {"gamma": 1})
    for name in ("slerp", "nuslerp", "nearswap"):
        with pytest.raises(ValueError, match=f"{name} merges exactly 2 source models; the pool has 3"):
            InMemoryMerger(pool=pool3, method=name)
    with pytest.raises(ValueError, match="multiple of 4"):
        InMemoryMerger(pool=pool2, method="ties", chunk_elements=10)

    method = merge_method("della")
    merger = InMemoryMerger(pool=pool2, method=method)
    space = space_for(pool2, method)
    params = space.tensor_params(spread(space))
    pool2.reset()
    before = live(pool2)
    last = pool2.param_names[-1]
    bad = {**params, last: {**params[last], "density": {"src_a": 0.9, "src_b": 0.5}}}
    with pytest.raises(ValueError, match=f"tensor {last}: della density 0.9 of src_a"):
        merger.apply(bad)
    with pytest.raises(ValueError, match="missing"):
        merger.apply({k: v for k, v in params.items() if k != last})
    after = live(pool2)
    assert all(torch.equal(before[k], after[k]) for k in before)
