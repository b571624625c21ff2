"""greedy_generate equals HF generate(do_sample=False), batched or not, for any forward-only model.

Two tiny random models: the zoo's Qwen3 (RoPE: left-padding offsets cancel out) and a GPT-2
(learned absolute positions: wrong position_ids change the outputs).
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from transformers import GPT2Config, GPT2LMHeadModel

from objectives import CACHE_ARG, greedy_generate

PROMPTS = ["Q: 1+1\nA:", "こたえは", "a", "The quick brown fox jumps over", "xyz 123 456", "ねこ と いぬ"]


@pytest.fixture(scope="module")
def gpt2(tok):
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=2, n_positions=128,
                        initializer_range=0.3, pad_token_id=0, eos_token_id=1, bos_token_id=1)
    return GPT2LMHeadModel(config).eval()


@pytest.fixture(params=["qwen3", "gpt2"])
def model(request):
    return request.getfixturevalue("tiny_model" if request.param == "qwen3" else "gpt2")


def hf_generate(model, tok, prompts, max_new_tokens, eos_token_id):
    enc = tok(prompts, return_tensors="pt", padding=True)
    assert tok.padding_side == "left"
    out = model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens,
                         pad_token_id=tok.pad_token_id, eos_token_id=eos_token_id)
    texts = []
    for row in out[:, enc["input_ids"].shape[1]:].tolist():
        cut = next((i for i, t in enumerate(row) if t in eos_token_id), len(row))
        texts.append(tok.decode(row[:cut], skip_special_tokens=True))
    return texts


def test_equals_hf_generate_batched_and_unbatched(model, tok):
    hf = hf_generate(model, tok, PROMPTS, 16, [tok.eos_token_id])
    batched = greedy_generate(model, tok, PROMPTS, max_new_tokens=16, batch_size=4)
    single = greedy_generate(model, tok, PROMPTS, max_new_tokens=16, batch_size=1)
    assert batched == hf
    assert single == hf


def frequent_token(model, tok):
    """A token the random model emits often, to act as an extra EOS so rows end early."""
    text = "".join(greedy_generate(model, tok, PROMPTS, max_new_tokens=16, batch_size=8))
    return max(set(text), key=text.count)


def test_rows_end_at_eos_like_hf(model, tok):
    eos_char = frequent_token(model, tok)
    extra_eos = tok.convert_tokens_to_ids(eos_char)
    eos_ids = [tok.eos_token_id, extra_eos]
    hf = hf_generate(model, tok, PROMPTS, 16, eos_ids)
    # our loop reads extra EOS ids from the model's generation_config, as HF does
    old = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = eos_ids
    try:
        ours = greedy_generate(model, tok, PROMPTS, max_new_tokens=16, batch_size=3)
    finally:
        model.generation_config.eos_token_id = old
    assert ours == hf
    assert all(eos_char not in t for t in ours)
    assert len({len(t) for t in ours}) > 1  # rows ended at different steps


def test_stop_strings_cut_output(model, tok):
    full = greedy_generate(model, tok, PROMPTS, max_new_tokens=24, batch_size=4)
    stop = full[0][3:5]  # a 2-char string the first row surely produces
    ours = greedy_generate(model, tok, PROMPTS, max_new_tokens=24, stop_strings=[stop], batch_size=4)
    for long, short in zip(full, ours):
        expected = long[: long.find(stop)] if stop in long else long
        assert short == expected
    assert ours[0] == full[0][: full[0].find(stop)]
    assert len(ours[0]) <= 3


def test_token_id_prompts_equal_text_prompts(model, tok):
    ids = tok(PROMPTS)["input_ids"]
    assert greedy_generate(model, tok, ids, max_new_tokens=8, batch_size=2) == \
        greedy_generate(model, tok, PROMPTS, max_new_tokens=8, batch_size=5)


class ForwardOnly(torch.nn.Module):
    """Only the bare forward signature: no generate, no generation_config, no logits_to_keep."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.calls = []

    def forward(self, input_ids, attention_mask, position_ids, use_cache, **cache):
        self.calls.append(input_ids.shape)
        assert list(cache) == [CACHE_ARG], cache.keys()
        out = self.inner(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         use_cache=use_cache, **cache)
        return SimpleNamespace(logits=out.logits, **{CACHE_ARG: getattr(out, CACHE_ARG)})


def test_forward_only_model(model, tok):
    wrapped = ForwardOnly(model).eval()
    expected = greedy_generate(model, tok, PROMPTS, max_new_tokens=10, batch_size=3)
    assert greedy_generate(wrapped, tok, PROMPTS, max_new_tokens=10, batch_size=3) == expected
    # 2 batches x (1 prefill + 9 one-token steps): the KV cache is used, prompts are not re-run
    assert len(wrapped.calls) == 20
    assert sum(shape[1] == 1 for shape in wrapped.calls) == 18


def test_training_mode_is_refused(model, tok):
    model.train()
    try:
        with pytest.raises(AssertionError, match="eval"):
            greedy_generate(model, tok, PROMPTS[:1], max_new_tokens=2)
    finally:
        model.eval()


def test_bad_arguments(model, tok):
    with pytest.raises(ValueError, match="max_new_tokens"):
        greedy_generate(model, tok, PROMPTS, max_new_tokens=0)
    with pytest.raises(ValueError, match="batch_size"):
        greedy_generate(model, tok, PROMPTS, max_new_tokens=2, batch_size=0)


def test_work_counts_the_tokens_spent(model, tok):
    """prompt = real prompt tokens; generated = kept tokens + each row's ending EOS; forward = every
    position run (the padded prefill, then one per row per further step, finished rows included)."""
    from objectives import GenerationWork

    work = GenerationWork()
    outputs = greedy_generate(model, tok, PROMPTS, max_new_tokens=12, batch_size=len(PROMPTS), work=work)
    ids = tok(PROMPTS)["input_ids"]
    assert work.prompt_tokens == sum(len(i) for i in ids)
    kept = [len(tok(o, add_special_tokens=False)["input_ids"]) for o in outputs]
    ended = sum(k < 12 for k in kept)  # rows that stopped at an EOS generated it as a 13th-or-less token
    assert work.generated_tokens == sum(kept) + ended
    steps = max(kept) + (max(kept) < 12)
    assert work.forward_tokens == len(PROMPTS) * max(len(i) for i in ids) + len(PROMPTS) * (steps - 1)
