"""Fixtures for the DFS tests: the tiny Qwen3 sources loaded once, a left-padded batch, a greedy loop."""
from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from objectives import CACHE_ARG

PROMPTS = ["1+1=", "こんにちは、3つ", "ab"]  # different lengths -> left padding


def greedy_tokens(model, input_ids, attention_mask, steps: int, *, use_cache: bool) -> torch.Tensor:
    """Batched greedy decoding with position ids from the mask (what the objectives loop does); with
    use_cache=False every step recomputes the whole sequence."""
    ids, mask, past, new = input_ids, attention_mask, None, []
    for _ in range(steps):
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        if use_cache and past is not None:
            out = model(input_ids=ids[:, -1:], attention_mask=mask, position_ids=pos[:, -1:],
                        use_cache=True, **{CACHE_ARG: past})
        else:
            out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=use_cache)
        past = getattr(out, CACHE_ARG)
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        new.append(nxt)
        ids = torch.cat([ids, nxt], dim=1)
        mask = torch.cat([mask, torch.ones_like(nxt)], dim=1)
    return torch.cat(new, dim=1)


@pytest.fixture(scope="session")
def sources(tiny_model_dirs):
    """[src_a, src_b, src_c] as fp32 eval models (model A = src_a)."""
    names = ("src_a", "src_b", "src_c")
    return [AutoModelForCausalLM.from_pretrained(tiny_model_dirs[n], dtype=torch.float32).eval() for n in names]


@pytest.fixture(scope="session")
def tokenizer(tiny_model_dirs):
    return AutoTokenizer.from_pretrained(tiny_model_dirs["src_a"])


@pytest.fixture(scope="session")
def prompts():
    return list(PROMPTS)


@pytest.fixture(scope="session")
def batch(tokenizer, prompts):
    enc = tokenizer(prompts, return_tensors="pt", padding=True)
    assert enc["attention_mask"][:, 0].min() == 0, "the batch must be left-padded"
    return enc["input_ids"], enc["attention_mask"]


@pytest.fixture(scope="session")
def greedy():
    return greedy_tokens
