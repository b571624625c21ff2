"""A pool whose sources include a vision-language model: only its LLM is merged, under causal-LM
names; its vision tower, projector and appended vocabulary rows are never written."""
from __future__ import annotations

import pytest
import torch
from transformers import LlavaForConditionalGeneration

from evo_core import is_vision_language, language_model_params, load_pool, vision_language_sources


@pytest.fixture(scope="module")
def vlm_pool(tiny_vlm_dirs):
    return load_pool(base=tiny_vlm_dirs["base"], sources={"vlm": tiny_vlm_dirs["vlm"], "ja": tiny_vlm_dirs["ja"]})


def _vision_state(model):
    llm = {id(p) for p in language_model_params(model).values()}
    return {k: p.detach().clone() for k, p in model.named_parameters() if id(p) not in llm}


def test_the_live_model_is_the_vlm_and_merged_names_are_the_llms(vlm_pool, tiny_vlm_dirs):
    pool = vlm_pool
    assert isinstance(pool.model, LlavaForConditionalGeneration) and pool.live_name == "vlm"
    assert is_vision_language(pool.config) and pool.num_layers == 4
    assert vision_language_sources({"vlm": tiny_vlm_dirs["vlm"], "ja": tiny_vlm_dirs["ja"]}) == ["vlm"]
    # the same names and shapes as the text base: the VLM's <image> row is not part of the merge
    assert all(k.startswith(("model.embed_tokens", "model.layers.", "model.norm", "lm_head")) for k in pool.param_names)
    for key, tensor in pool.live_params().items():
        assert tensor.shape == pool.base[key].shape == pool.sources["ja"][key].shape == pool.sources["vlm"][key].shape
    assert pool.model.lm_head.weight.shape[0] == pool.base["lm_head.weight"].shape[0] + 1


def test_merges_write_the_llm_only(vlm_pool):
    pool = vlm_pool
    vision, image_rows = _vision_state(pool.model), pool.model.lm_head.weight[-1:].clone()
    embed_row = pool.model.get_input_embeddings().weight[-1:].clone()
    with torch.no_grad():
        for key, tensor in pool.live_params().items():
            tensor.copy_(0.5 * pool.sources["vlm"][key] + 0.5 * pool.sources["ja"][key])
    llm = language_model_params(pool.model)
    torch.testing.assert_close(llm["model.norm.weight"],
                               0.5 * pool.sources["vlm"]["model.norm.weight"] + 0.5 * pool.sources["ja"]["model.norm.weight"])
    assert all(torch.equal(p, vision[k]) for k, p in pool.model.named_parameters() if k in vision)
    assert torch.equal(pool.model.lm_head.weight[-1:], image_rows)
    assert torch.equal(pool.model.get_input_embeddings().weight[-1:], embed_row)
    # use() a source: its weights, exactly; reset(): the base's
    pool.use(pool.sources["vlm"])
    reloaded = LlavaForConditionalGeneration.from_pretrained(pool.paths["vlm"])
    assert all(torch.equal(p, reloaded.get_parameter(k)) for k, p in pool.model.named_parameters())
    pool.reset()
    assert torch.equal(pool.model.get_input_embeddings().weight[:-1], pool.base["model.embed_tokens.weight"])
    assert torch.equal(pool.model.lm_head.weight[-1:], image_rows)


def test_bad_vlm_pools_fail_in_one_line(tiny_vlm_dirs, tiny_model_dirs):
    with pytest.raises(ValueError, match="base .* is a vision-language model"):
        load_pool(base=tiny_vlm_dirs["vlm"], sources={"a": tiny_model_dirs["src_a"], "b": tiny_model_dirs["src_b"]})
    with pytest.raises(ValueError, match="at most one source may be a VLM"):
        load_pool(base=tiny_vlm_dirs["base"], sources={"a": tiny_vlm_dirs["vlm"], "b": tiny_vlm_dirs["vlm"]})
