"""bench/generation_floor.py's FLOP count: its matmuls are what the fast path runs for one prompt,
as torch's FlopCounterMode counts them (it does not count CPU SDPA, so attention is checked by
hand)."""
from __future__ import annotations

from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoModelForCausalLM

from bench import generation_floor as bench
from objectives import GENERATION_BACKENDS, GenerationWork
from objectives import plan_batches
from zoo.tokenizer import build_tokenizer


def test_needed_flops_are_what_the_fast_path_computes_for_one_prompt(tiny_model_dirs):
    tiny_model = AutoModelForCausalLM.from_pretrained(tiny_model_dirs["base"]).eval()
    tok = build_tokenizer()
    ids = tok(["Q: 12+30\nA:"])["input_ids"]
    batches = plan_batches(ids, pad_id=tok.pad_token_id, batch_size=1)
    work = GenerationWork()
    with FlopCounterMode(display=False) as counter:
        GENERATION_BACKENDS.get("fast_greedy")(tiny_model, tok, batches, max_new_tokens=7, work=work)
    flops = bench.needed_flops(tiny_model.config, [len(ids[0])], [work.generated_tokens])
    assert work.generated_tokens == 7  # the random model runs to max_new_tokens: 6 fed-back tokens
    assert counter.get_total_flops() == flops["prefill matmul"] + flops["decode matmul"]


def test_attention_counts_the_keys_each_query_sees(tiny_model_dirs):
    config = AutoModelForCausalLM.from_pretrained(tiny_model_dirs["base"]).config
    attend = 4 * config.num_attention_heads * config.head_dim  # 4 layers
    # prompt of 3: queries see 1, 2, 3 keys in 3 layers, the last query 3 in the last layer;
    # 2 generated tokens: the first is fed back and sees 4 keys in every layer
    flops = bench.needed_flops(config, [3], [2])
    assert flops["prefill attention"] == attend * (3 * 6 + 3)
    assert flops["decode attention"] == attend * 4 * 4
