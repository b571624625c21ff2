"""Model pool: loading, host copies vs the live model, and the one-line checks before loading."""
from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

from evo_core import check_model_path, load_models, load_pool


def sources(dirs, *names):
    return {n: dirs[n] for n in names}


def test_load_pool(tiny_model_dirs):
    pool = load_pool(base=tiny_model_dirs["base"], sources=sources(tiny_model_dirs, "src_a", "src_b"))
    assert pool.source_names == ("src_a", "src_b")
    assert pool.num_layers == 4 and pool.dtype == torch.float32 and pool.device.type == "cpu"
    assert pool.tokenizer.pad_token_id == 0 and pool.config.model_type == "qwen3"
    assert set(pool.paths) == {"base", "src_a", "src_b"}
    names = [k for k, _ in pool.model.named_parameters()]
    assert list(pool.param_names) == names and len(names) == 47
    for k, p in pool.model.named_parameters():
        assert torch.equal(p, pool.base[k]) and p.data_ptr() != pool.base[k].data_ptr()
        assert not p.requires_grad
        assert not torch.equal(pool.sources["src_a"][k], pool.base[k])  # sources really differ
    with torch.no_grad():
        pool.model.get_parameter(names[0]).add_(1.0)
    assert not torch.equal(pool.model.get_parameter(names[0]), pool.base[names[0]])
    pool.reset()
    assert torch.equal(pool.model.get_parameter(names[0]), pool.base[names[0]])


def test_load_models_for_dataflow(tiny_model_dirs):
    models = load_models(sources(tiny_model_dirs, "src_a", "src_b", "src_c"), dtype="bfloat16")
    assert list(models) == ["src_a", "src_b", "src_c"]
    assert all(m.dtype == torch.bfloat16 and not m.training for m in models.values())


def test_missing_path_and_hub_ids(tiny_model_dirs, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"model 'src_b': /nowhere/src_b does not exist; point model "
                                                r"'src_b' in the config at a local copy"):
        load_pool(base=tiny_model_dirs["base"], sources={"src_a": tiny_model_dirs["src_a"], "src_b": "/nowhere/src_b"})
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        check_model_path("x", tmp_path)
    assert check_model_path("x", "Qwen/Qwen3-0.6B") == "Qwen/Qwen3-0.6B"  # left to the hub loader
    with pytest.raises(FileNotFoundError):
        check_model_path("x", "./not/here")


def test_bad_pool_requests(tiny_model_dirs):
    with pytest.raises(ValueError, match="needs at least 2 source models; got 1: src_a"):
        load_pool(base=tiny_model_dirs["base"], sources=sources(tiny_model_dirs, "src_a"))
    with pytest.raises(ValueError, match="unknown dtype 'fp8'; known: float32, bfloat16, float16"):
        load_models(sources(tiny_model_dirs, "src_a"), dtype="fp8")
    with pytest.raises(ValueError, match="model name 'src.a' must use only"):
        load_pool(base=tiny_model_dirs["base"],
                  sources={"src.a": tiny_model_dirs["src_a"], "b": tiny_model_dirs["src_b"]})


def save(model, path):
    model.save_pretrained(path)
    return path


def test_mismatched_architecture_and_shapes(tiny_model_dirs, tmp_path):
    base_cfg = Qwen3Config.from_pretrained(tiny_model_dirs["base"])
    llama = save(LlamaForCausalLM(LlamaConfig(vocab_size=base_cfg.vocab_size, hidden_size=64, intermediate_size=128,
                                              num_hidden_layers=4, num_attention_heads=4)), tmp_path / "llama")
    with pytest.raises(ValueError, match=r"model 'odd' is \(\('LlamaForCausalLM',\), 'llama'\) but 'base' is "
                                         r"\(\('Qwen3ForCausalLM',\), 'qwen3'\)"):
        load_pool(base=tiny_model_dirs["base"], sources={"src_a": tiny_model_dirs["src_a"], "odd": llama})

    wide = save(Qwen3ForCausalLM(Qwen3Config(**{**base_cfg.to_dict(), "intermediate_size": 96})), tmp_path / "wide")
    with pytest.raises(ValueError, match=r"tensor model.layers.0.mlp.down_proj.weight has shape \(64, 96\) in "
                                         r"model 'odd' but \(64, 128\) in 'base'"):
        load_pool(base=tiny_model_dirs["base"], sources={"src_a": tiny_model_dirs["src_a"], "odd": wide})
    deep_cfg = Qwen3Config(**{**base_cfg.to_dict(), "num_hidden_layers": 5, "layer_types": None})
    deep = save(Qwen3ForCausalLM(deep_cfg), tmp_path / "deep")
    with pytest.raises(ValueError, match="tensor model.layers.4.input_layernorm.weight is in model 'deep' but not"):
        load_models({"base": tiny_model_dirs["base"], "deep": deep})
    assert len(load_models({"base": tiny_model_dirs["base"], "deep": deep}, same_shapes=False)) == 2
