"""LayerPathForCausalLM at search time: identity, per-hop KV cache, scales, sharing, bad input."""
from __future__ import annotations

import pytest
import torch

from evo_dfs import LayerPathForCausalLM, SlotLayout
from objectives import CACHE_ARG

# global layers: src_a 0-3, src_b 4-7, src_c 8-11. Visits b's layer 1 twice in a row and a's layer 1 twice.
MIXED = [0, 1, 5, 5, 1, 9, 3]
MIXED_SCALES = [1.0, 1.1, 0.9, 1.2, 0.8, 1.0, 1.05]
STEPS = 8


@pytest.fixture()
def model(sources):
    return LayerPathForCausalLM.from_sources(sources, MIXED, MIXED_SCALES, source_names=["a", "b", "c"])


def positions(mask):
    return (mask.cumsum(-1) - 1).clamp(min=0)


@torch.no_grad()
def test_identity_path_is_model_a(sources, batch, greedy):
    a = sources[0]
    ids, mask = batch
    model = LayerPathForCausalLM.from_sources(sources, [0, 1, 2, 3])
    ref = a(input_ids=ids, attention_mask=mask, position_ids=positions(mask)).logits
    got = model(input_ids=ids, attention_mask=mask, position_ids=positions(mask)).logits
    real = mask.bool()  # padded positions carry no meaning
    torch.testing.assert_close(got[real], ref[real], rtol=1e-6, atol=1e-6)
    assert torch.equal(greedy(model, ids, mask, STEPS, use_cache=True),
                       greedy(a, ids, mask, STEPS, use_cache=True))


@torch.no_grad()
def test_cache_equals_full_recompute_on_mixed_revisiting_path(model, batch, greedy):
    ids, mask = batch
    cached = greedy(model, ids, mask, STEPS, use_cache=True)
    full = greedy(model, ids, mask, STEPS, use_cache=False)
    assert torch.equal(cached, full)
    # and the step logits agree closely, not just their argmax
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions(mask), use_cache=True)
    nxt = out.logits[:, -1].argmax(-1, keepdim=True)
    mask2 = torch.cat([mask, torch.ones_like(nxt)], 1)
    step = model(input_ids=nxt, attention_mask=mask2, position_ids=positions(mask2)[:, -1:],
                 use_cache=True, **{CACHE_ARG: getattr(out, CACHE_ARG)}).logits[:, -1]
    whole = model(input_ids=torch.cat([ids, nxt], 1), attention_mask=mask2,
                  position_ids=positions(mask2)).logits[:, -1]
    torch.testing.assert_close(step, whole, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_each_hop_has_its_own_cache_entry(model, batch):
    ids, mask = batch
    cache = model(input_ids=ids, attention_mask=mask, position_ids=positions(mask), use_cache=True)[CACHE_ARG]
    assert len(cache.layers) == len(MIXED)
    # a shared layer writing to its own layer_idx would double an entry's length and leave others empty
    assert [entry.keys.shape[-2] for entry in cache.layers] == [ids.shape[1]] * len(MIXED)
    # hops 2 and 3 run the same layer on different inputs: distinct entries
    assert not torch.allclose(cache.layers[2].keys, cache.layers[3].keys)
    # the shared layers keep their own indices (nothing mutated)
    assert model.model.layers[5].self_attn.layer_idx == 1


@torch.no_grad()
def reference(sources, path, scales, ids):
    """Straight loop over hops on the source modules (no padding, no cache)."""
    a = sources[0]
    owners = [(m, i) for m in sources for i in range(len(m.model.layers))]
    pos = torch.arange(ids.shape[1]).unsqueeze(0)
    hidden = a.model.embed_tokens(ids)
    pe = a.model.rotary_emb(hidden, pos)
    for g, s in zip(path, scales):
        m, i = owners[g]
        hidden = m.model.layers[i](hidden * s, attention_mask=None, position_embeddings=pe, position_ids=pos)
    return a.lm_head(a.model.norm(hidden))


@torch.no_grad()
def test_scales_multiply_the_hidden_state_entering_each_hop(model, sources, tokenizer):
    ids = tokenizer(["3+4=7、"], return_tensors="pt")["input_ids"]
    got = model(input_ids=ids).logits
    torch.testing.assert_close(got, reference(sources, MIXED, MIXED_SCALES, ids), rtol=1e-5, atol=1e-5)
    unit = reference(sources, MIXED, [1.0] * len(MIXED), ids)
    assert (got - unit).abs().max() > 1e-2, "scales must change the output"


@torch.no_grad()
def test_set_path_rebuilds_nothing_and_layers_are_shared(model, sources, tokenizer):
    params = {id(p) for p in model.parameters()}
    expected = {id(p) for p in sources[0].parameters()}
    expected |= {id(p) for m in sources[1:] for p in m.model.layers.parameters()}
    assert params == expected
    assert model.model.layers[4] is sources[1].model.layers[0]
    ids = tokenizer(["12"], return_tensors="pt")["input_ids"]
    model.set_path([0, 6, 6, 3], [1.0, 0.7, 1.3, 1.0])
    assert {id(p) for p in model.parameters()} == params
    assert model.config.num_hidden_layers == 4
    torch.testing.assert_close(model(input_ids=ids).logits, reference(sources, [0, 6, 6, 3], [1.0, 0.7, 1.3, 1.0], ids),
                               rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_hf_generate_matches_greedy_loop(model, batch, greedy):
    ids, mask = batch
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=STEPS, do_sample=False,
                         min_new_tokens=STEPS, pad_token_id=0)
    assert torch.equal(out[:, ids.shape[1]:], greedy(model, ids, mask, STEPS, use_cache=True))


def test_layout_of_sources(sources):
    layout = SlotLayout.of(sources, repeats=2)
    assert (layout.num_layers, layout.num_slots) == (12, 24)
    assert layout.layer_owner[3:5] == (0, 1)


def test_bad_input_fails_fast(sources, tiny_model_dirs, model):
    with pytest.raises(ValueError, match="out of range"):
        model.set_path([0, 12], [1.0, 1.0])
    with pytest.raises(ValueError, match="2 hops but 1 scales"):
        model.set_path([0, 3], [1.0])
    with pytest.raises(ValueError, match="exactly one"):
        model()
    other = type(sources[0])(type(sources[0].config)(**{**sources[0].config.to_dict(), "hidden_size": 32,
                                                        "intermediate_size": 64}))
    with pytest.raises(ValueError, match="hidden_size"):
        LayerPathForCausalLM.from_sources([sources[0], other], [0, 3])


@pytest.mark.parametrize("family", ["mistral_sliding", "llama"])
@torch.no_grad()
def test_other_families(family, greedy):
    """Llama (no layer_types) and Mistral with a sliding window shorter than the sequence."""
    from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

    config_cls, model_cls, extra = {"mistral_sliding": (MistralConfig, MistralForCausalLM, {"sliding_window": 5}),
                                    "llama": (LlamaConfig, LlamaForCausalLM, {})}[family]
    config = config_cls(vocab_size=60, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                        num_attention_heads=4, num_key_value_heads=2, head_dim=8, pad_token_id=0, eos_token_id=1,
                        tie_word_embeddings=False, **extra)
    torch.manual_seed(0)
    srcs = [model_cls(config).eval() for _ in range(2)]
    ids = torch.randint(2, 60, (2, 11))
    mask = torch.ones_like(ids)
    ids[0, :4], mask[0, :4] = 0, 0
    ident = LayerPathForCausalLM.from_sources(srcs, [0, 1, 2])
    ref = srcs[0](input_ids=ids, attention_mask=mask, position_ids=positions(mask)).logits
    got = ident(input_ids=ids, attention_mask=mask, position_ids=positions(mask)).logits
    torch.testing.assert_close(got[mask.bool()], ref[mask.bool()], rtol=1e-6, atol=1e-6)
    assert torch.equal(greedy(ident, ids, mask, 10, use_cache=True), greedy(srcs[0], ids, mask, 10, use_cache=True))
    mixed = LayerPathForCausalLM.from_sources(srcs, [0, 4, 4, 1, 2], [1.0, 1.2, 0.8, 1.0, 1.0])
    assert torch.equal(greedy(mixed, ids, mask, 10, use_cache=True), greedy(mixed, ids, mask, 10, use_cache=False))
    # HF generate (which names the cache as the installed release does): on transformers 5.24 it
    # gave wrong tokens from the 2nd one on the identity path and crashed on a revisiting path
    def generate(model):
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=10, min_new_tokens=10,
                             do_sample=False, pad_token_id=0)
        return out[:, ids.shape[1]:]
    assert torch.equal(generate(ident), generate(srcs[0]))
    assert torch.equal(generate(mixed), greedy(mixed, ids, mask, 10, use_cache=True))


@torch.no_grad()
def test_labels_give_model_a_loss_on_identity_path(sources, tokenizer):
    ids = tokenizer(["1+1=2。"], return_tensors="pt")["input_ids"]
    model = LayerPathForCausalLM.from_sources(sources, [0, 1, 2, 3])
    torch.testing.assert_close(model(input_ids=ids, labels=ids).loss, sources[0](input_ids=ids, labels=ids).loss)
