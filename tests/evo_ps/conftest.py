"""Fixtures for the PS tests: tiny pools and spread-out search values (the mergekit runner: tests/conftest.py)."""
from __future__ import annotations

import shutil

import pytest
import torch

from evo_core import load_pool


@pytest.fixture(scope="session")
def pool3(tiny_model_dirs):
    return load_pool(base=tiny_model_dirs["base"],
                     sources={s: tiny_model_dirs[s] for s in ("src_a", "src_b", "src_c")})


@pytest.fixture(scope="session")
def pool2(tiny_model_dirs):
    return load_pool(base=tiny_model_dirs["base"], sources={s: tiny_model_dirs[s] for s in ("src_a", "src_b")})


@pytest.fixture(scope="session")
def tied_pool(tiny_model_dirs, tmp_path_factory):
    """The tiny models with every |source - base| one of 0, 1/64, 1/32 (all exact in float32): any
    magnitude selection cuts through a run of equal |d|, where only the sort decides what stays."""
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("tied_models")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dirs["base"])
    base = {k: (v * 256).round() / 256 for k, v in model.state_dict().items()}
    dirs = {}
    for i, name in enumerate(("base", "src_a", "src_b", "src_c")):
        gen = torch.Generator().manual_seed(200 + i)
        with torch.no_grad():
            for key, param in model.state_dict().items():
                steps = 0 if name == "base" else torch.randint(-2, 3, param.shape, generator=gen) / 64
                param.copy_(base[key] + steps)
        dirs[name] = root / name
        shutil.copytree(tiny_model_dirs["base"], dirs[name])  # tokenizer and config
        model.save_pretrained(dirs[name])
    return load_pool(base=dirs["base"], sources={s: dirs[s] for s in ("src_a", "src_b", "src_c")})


def spread_values(space, **fixed: float) -> dict[str, float]:
    """A different value for every parameter inside its bounds; `fixed` pins a kind (e.g. density=1)."""
    values = {}
    for i, (place, spec) in enumerate(zip(space.placements, space.params)):
        frac = (0.1 + i * 0.618034) % 1.0
        values[spec.name] = fixed.get(place.key, spec.low + (spec.high - spec.low) * (0.1 + 0.8 * frac))
    return values


@pytest.fixture
def spread():
    return spread_values
