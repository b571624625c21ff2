"""Real PEFT LoRA adapters on the tests' tiny base (tests/conftest.py tiny_model_dirs)."""
from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from evo_genome import live_lora_params


def _make_adapter(base_dir, out, *, seed: int, r: int = 2, targets=("q_proj", "v_proj")):
    """A real peft adapter on `base_dir` with random (non-zero) A and B, saved in `out`."""
    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir),
                           LoraConfig(r=r, lora_alpha=2 * r, target_modules=list(targets), task_type="CAUSAL_LM"))
    with torch.no_grad():
        for param in live_lora_params(model).values():
            param.copy_(0.2 * torch.randn(param.shape))
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def make_adapter():
    """make_adapter(base_dir, out, seed=, r=2, targets=("q_proj", "v_proj")) -> out"""
    return _make_adapter
