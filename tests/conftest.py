"""Session fixtures shared by every test package.

`tiny_model_dirs`: a random tiny Qwen3 base and three "fine-tunes" of it (base + noise), saved as
ordinary HF model directories with the zoo tokenizer. Cheap (< 1 s); for merge/path mechanics.
The trained zoo itself (for effects) is in `zoo/models/`, see `zoo_dirs`.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

from zoo.tokenizer import build_tokenizer

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
TINY_SOURCES = ("src_a", "src_b", "src_c")


def tiny_config(vocab_size: int) -> Qwen3Config:
    return Qwen3Config(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=1,
    )


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_models")
    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    base = Qwen3ForCausalLM(tiny_config(len(tokenizer))).eval()
    base_state = {k: v.clone() for k, v in base.state_dict().items()}
    dirs = {}
    for i, name in enumerate(("base",) + TINY_SOURCES):
        gen = torch.Generator().manual_seed(100 + i)
        with torch.no_grad():
            for key, param in base.state_dict().items():
                noise = 0.0 if name == "base" else 0.02 * torch.randn(param.shape, generator=gen)
                param.copy_(base_state[key] + noise)
        out = root / name
        base.save_pretrained(out)
        tokenizer.save_pretrained(out)
        dirs[name] = out
    return dirs


@pytest.fixture(scope="session")
def mgsm_ja_tsv() -> Path:
    path = SHARED / "data" / "mgsm" / "mgsm_ja.tsv"
    assert path.is_file(), f"shared MGSM data missing at {path}"
    return path
