"""The "vllm" generation backend maps our batches to vLLM's LLM.generate and back.

Everywhere: against a stand-in for vLLM (a fake `vllm` module with a SamplingParams record and an
engine with LLM.generate's interface that returns scripted token ids): what it is asked and what
comes back. Where vllm is importable: the real engine on a zoo model, against hf_greedy.
"""
from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

from objectives import GENERATION_BACKENDS, GenerationWork
from objectives._generation import plan_batches

REPO_ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ["Q: 1+1\nA:", "a", "xyz 123 456", "ねこ"]


class StandInSamplingParams:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


class StandInLLM:
    """LLM.generate's interface: prompts as {"prompt_token_ids"}, one result per prompt, in order,
    each with .outputs[0].token_ids; here the continuation of each prompt is scripted."""

    def __init__(self, replies):
        self.replies = replies  # prompt ids (tuple) -> generated token ids
        self.calls = []
        self.generation_config = SimpleNamespace(eos_token_id=[1, 7])

    def generate(self, prompts, sampling_params, *, use_tqdm):
        self.calls.append((prompts, sampling_params.kwargs))
        return [SimpleNamespace(outputs=[SimpleNamespace(token_ids=self.replies[tuple(p["prompt_token_ids"])])])
                for p in prompts]


@pytest.fixture
def stand_in_vllm(monkeypatch):
    module = ModuleType("vllm")
    module.SamplingParams = StandInSamplingParams
    monkeypatch.setitem(sys.modules, "vllm", module)


def test_batches_go_in_as_token_ids_and_outputs_come_back_in_order(tok, stand_in_vllm):
    ids = tok(PROMPTS)["input_ids"]
    text = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    replies = {tuple(ids[0]): text("2です") + [tok.eos_token_id],  # the tokenizer's EOS: not in the output
               tuple(ids[1]): text("bc\n"),               # a stop string: cut before it
               tuple(ids[2]): text("789") + [7],          # an extra EOS from the generation config
               tuple(ids[3]): text("いぬ")}              # max_tokens reached
    llm = StandInLLM(replies)
    batches = plan_batches(ids, pad_id=tok.pad_token_id, batch_size=3)
    work = GenerationWork()
    outputs = GENERATION_BACKENDS.get("vllm")(llm, tok, batches, max_new_tokens=5, stop_strings=["\n"], work=work)
    assert outputs == ["2です", "bc", "789", "いぬ"]
    assert len(llm.calls) == 2  # one generate per planned batch
    sent = [p["prompt_token_ids"] for prompts, _ in llm.calls for p in prompts]
    assert sorted(sent) == sorted(ids)  # padding removed
    assert llm.calls[0][1] == {"temperature": 0.0, "max_tokens": 5, "stop": ["\n"], "stop_token_ids": [1, 7]}
    generated = sum(len(r) for r in replies.values())
    assert work == GenerationWork(prompt_tokens=sum(map(len, ids)), generated_tokens=generated,
                                  forward_tokens=sum(map(len, ids)) + generated - len(ids))


def test_image_batches_are_refused(tok, stand_in_vllm):
    import dataclasses

    import torch

    batch = plan_batches(tok(PROMPTS)["input_ids"], pad_id=tok.pad_token_id, batch_size=4)[0]
    batch = dataclasses.replace(batch, image_features=torch.zeros(1, 8))
    with pytest.raises(ValueError, match="text prompts only"):
        GENERATION_BACKENDS.get("vllm")(StandInLLM({}), tok, [batch], max_new_tokens=2)


def test_real_vllm_equals_hf_greedy_on_the_zoo(tok):
    vllm = pytest.importorskip("vllm")
    from transformers import AutoModelForCausalLM

    path = REPO_ROOT / "zoo" / "models" / "math_abel"
    prompts = [f"Q: {a}+{b}\nA:" for a in range(10, 14) for b in range(20, 25)]
    batches = plan_batches(tok(prompts)["input_ids"], pad_id=tok.pad_token_id, batch_size=8)
    settings = dict(max_new_tokens=40, stop_strings=["\n"])
    llm = vllm.LLM(model=str(path), dtype="float32")
    hf = AutoModelForCausalLM.from_pretrained(path).eval()
    assert GENERATION_BACKENDS.get("vllm")(llm, tok, batches, **settings) == \
        GENERATION_BACKENDS.get("hf_greedy")(hf, tok, batches, **settings)
