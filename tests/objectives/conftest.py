"""Fixtures for the objectives tests: the zoo tokenizer, a tiny model, small TSV files."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from objectives import GenerativeObjective
from zoo.tokenizer import build_tokenizer

IMAGE_TEMPLATE = "<image>Q: {question}\nA:"  # the tiny VLMs' prompt: image tokens, then the question


class EchoObjective(GenerativeObjective):
    """Scores nothing of its own: the output is the prediction and the answer the gold (for tests
    of prompting and generation)."""

    def parse_gold(self, answer):
        return answer

    def predict(self, output):
        return output


@pytest.fixture(scope="session")
def tok():
    return build_tokenizer()


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dirs):
    torch.set_num_threads(1)
    return AutoModelForCausalLM.from_pretrained(tiny_model_dirs["base"]).eval()


@pytest.fixture
def write_tsv(tmp_path):
    """write_tsv(rows, name="x.tsv") -> Path; rows are (question, answer) pairs or raw lines."""

    def write(rows, name: str = "data.tsv") -> Path:
        path = tmp_path / name
        lines = [row if isinstance(row, str) else "\t".join(row) for row in rows]
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        return path

    return write
