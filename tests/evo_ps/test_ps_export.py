"""Export: mergekit YAML round trip (in-memory merge == mergekit on our YAML), HF dir + model card."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from evo_ps import InMemoryMerger, build_space, merge_method, mergekit_yaml, save_merged
from evo_ps._export import _first_match, _setting

ATOL = 2e-6


def merged_and_yaml(pool, name, spread, *, options=None, pinned=None, **space_kwargs):
    method = merge_method(name, options)
    if method.params:
        space = build_space(method=method, sources=pool.source_names, tensor_names=pool.param_names,
                            num_layers=pool.num_layers, **space_kwargs)
        params = space.tensor_params(spread(space, **(pinned or {})))
    else:  # a baseline (model_stock, karcher): merged once, no space
        params = {k: {} for k in pool.param_names}
    InMemoryMerger(pool=pool, method=method).apply(params, seed=0)
    ours = {k: p.detach().clone() for k, p in pool.model.named_parameters()}
    text = mergekit_yaml(method=method, tensor_params=params, base=pool.paths["base"],
                         sources={s: pool.paths[s] for s in pool.source_names})
    return ours, text


@pytest.mark.parametrize("name,pinned,space_kwargs", [
    ("linear", None, {}),
    ("task_arithmetic", None, {"split_components": True}),
    ("ties", None, {"granularity": 2}),
    ("dare_ties", {"density": 1.0}, {}),
    ("dare_linear", {"density": 1.0}, {"granularity": 2}),
    ("della", {"density": 1.0}, {"split_components": True}),
    ("della_linear", {"density": 1.0}, {}),
    ("breadcrumbs", None, {"split_components": True}),
    ("breadcrumbs_ties", None, {}),
    ("slerp", None, {}),
    ("nuslerp", None, {}),
    ("multislerp", None, {"split_components": True}),
    ("sce", None, {}),
    ("model_stock", None, {}),
    ("karcher", None, {}),
    ("nearswap", None, {"bounds": {"t": (0.0, 0.05)}}),
    ("ties", None, {"uniform": True}),
])
def test_yaml_round_trip_through_mergekit(name, pinned, space_kwargs, pool2, pool3, spread, run_mergekit):
    pool = pool2 if merge_method(name).exact_sources == 2 else pool3
    ours, text = merged_and_yaml(pool, name, spread, pinned=pinned, **space_kwargs)
    theirs = run_mergekit(yaml.safe_load(text))
    worst = max(((ours[k] - theirs[k]).abs().max().item(), k) for k in ours)
    assert worst[0] <= ATOL, f"max |in-memory - mergekit(yaml)| = {worst[0]:.3g} in {worst[1]}"


def test_yaml_of_shared_parameters_and_no_base():
    names = ["model.layers.0.mlp.up_proj.weight", "model.layers.1.mlp.up_proj.weight"]
    sce = yaml.safe_load(mergekit_yaml(method=merge_method("sce"), base="B", sources={"a": "A", "b": "C"},
                                       tensor_params={n: {"select_topk": v} for n, v in zip(names, (0.2, 0.6))}))
    assert sce["base_model"] == "B" and sce["models"] == [{"model": "A"}, {"model": "C"}]
    assert sce["parameters"] == {"select_topk": [{"filter": "model.layers.0.", "value": 0.2},
                                                 {"filter": "model.layers.1.", "value": 0.6}]}
    karcher = yaml.safe_load(mergekit_yaml(method=merge_method("karcher"), base="B", sources={"a": "A", "b": "C"},
                                           tensor_params={n: {} for n in names}))
    assert "base_model" not in karcher and karcher["parameters"] == {"max_iter": 10, "tol": 1e-5}
    with pytest.raises(ValueError, match="nearswap merges exactly 2 source models; got 3"):
        mergekit_yaml(method=merge_method("nearswap"), base="B", sources={"a": "A", "b": "C", "c": "D"},
                      tensor_params={n: {"t": 1e-4} for n in names})


def test_yaml_is_compact_and_readable(pool3, spread):
    _, text = merged_and_yaml(pool3, "dare_ties", spread, options={"lambda": 0.9})
    config = yaml.safe_load(text)
    assert config["merge_method"] == "dare_ties" and config["base_model"] == pool3.paths["base"]
    assert config["parameters"] == {"normalize": False, "rescale": True, "lambda": 0.9}
    weight = config["models"][0]["parameters"]["weight"]
    # one entry per layer plus embed, final norm and lm_head -- not one per tensor
    assert sorted(e["filter"] for e in weight) == sorted(
        ["model.embed_tokens.", "model.norm.", "lm_head."] + [f"model.layers.{i}." for i in range(4)])
    _, uniform = merged_and_yaml(pool3, "dare_ties", spread, uniform=True)
    assert isinstance(yaml.safe_load(uniform)["models"][1]["parameters"]["density"], float)


def test_setting_is_exact_even_when_filters_overlap():
    values = {"a.b": 1.0, "x.a.b": 2.0, "x.a.c": 2.0, "layers.1.w": 3.0, "layers.11.w": 4.0, "y.norm.weight": 5.0}
    entries = [(e["filter"], e["value"]) for e in _setting(values)]
    assert all(_first_match(entries, name) == value for name, value in values.items())
    assert _setting({"a": 0.5, "b": 0.5}) == 0.5


@pytest.mark.slow
def test_mergekit_yaml_cli_runs_our_file(pool3, spread, tmp_path):
    ours, text = merged_and_yaml(pool3, "task_arithmetic", spread)
    (tmp_path / "merge.yml").write_text(text)
    subprocess.run([sys.executable, "-m", "mergekit.scripts.run_yaml", str(tmp_path / "merge.yml"),
                    str(tmp_path / "out")], check=True, capture_output=True)
    theirs = load_file(tmp_path / "out" / "model.safetensors")
    assert max((ours[k] - theirs[k]).abs().max().item() for k in ours) <= ATOL


def test_save_merged_writes_hf_dir_and_card(pool3, spread, tmp_path, tiny_model_dirs, machine_paths):
    _, text = merged_and_yaml(pool3, "dare_ties", spread)
    card = {"method": "dare_ties", "base": str(pool3.paths["base"]),
            "sources": {s: str(pool3.paths[s]) for s in pool3.source_names},
            "parameters": {"L00.src_a.weight": 0.25}, "scores": {"test": {"acc_ja": 0.375}, "seconds": 12},
            "mergekit_yaml": text}
    out = save_merged(pool3.model, pool3.tokenizer, tmp_path / "best", card=card)
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md", "mergekit_config.yml"} <= {
        p.name for p in out.iterdir()}
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    for k, p in pool3.model.named_parameters():
        assert torch.equal(reloaded.get_parameter(k), p.detach()), k
    readme = (out / "README.md").read_text()
    assert readme.startswith("---\nlibrary_name: transformers\n")
    # given this machine's paths, what is written names the models by folder name only
    assert machine_paths(out, also=[tmp_path, tiny_model_dirs["base"].parent]) == {}
    assert "base_model:\n- base\n- src_a\n- src_b\n- src_c\n" in readme and "| base | | `base` |" in readme
    recipe = yaml.safe_load((out / "mergekit_config.yml").read_text())
    assert recipe["base_model"] == "base" and [m["model"] for m in recipe["models"]] == ["src_a", "src_b", "src_c"]
    assert (out / "mergekit_config.yml").read_text().startswith("# models named by hub id, or by folder name")
    for needle in ("**dare_ties**", "| source | src_b |", "| test | acc_ja | 0.3750 |", "|  | seconds | 12 |",
                   "| `L00.src_a.weight` | 0.2500 |", "```yaml\n# models named by hub id", "\nmerge_method: dare_ties\n"):
        assert needle in readme, needle
    with pytest.raises(ValueError, match="unknown model card keys \\['score'\\]"):
        save_merged(pool3.model, pool3.tokenizer, tmp_path / "x", card={**card, "score": 1})
    with pytest.raises(ValueError, match="model card needs 'sources'"):
        save_merged(pool3.model, pool3.tokenizer, tmp_path / "x", card={"method": "ties"})


def test_a_vlm_merge_publishes_no_path_its_source_config_carried(tiny_vlm_dirs, tmp_path, machine_paths):
    # the tiny VLM's config holds its builder's path (text_config._name_or_path), as a user's own may
    import json

    from transformers import AutoProcessor

    from evo_core import load_pool

    carried = json.loads((tiny_vlm_dirs["vlm"] / "config.json").read_text())["text_config"]["_name_or_path"]
    assert carried.startswith("/")
    pool = load_pool(base=tiny_vlm_dirs["base"], sources={"vlm": tiny_vlm_dirs["vlm"], "ja": tiny_vlm_dirs["ja"]})
    out = save_merged(pool.model, AutoProcessor.from_pretrained(tiny_vlm_dirs["vlm"]), tmp_path / "best",
                      card={"method": "linear", "base": str(pool.paths["base"]),
                            "sources": {s: str(pool.paths[s]) for s in pool.source_names}})
    assert machine_paths(out, also=[tmp_path, tiny_vlm_dirs["vlm"].parent, tiny_vlm_dirs["base"].parent]) == {}
    assert json.loads((out / "config.json").read_text())["text_config"]["_name_or_path"] == "src_a"
