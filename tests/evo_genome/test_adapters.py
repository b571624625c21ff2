"""PEFT LoRA adapters as genomes: reading, the shape check, and writing an individual into a live
peft model in place (the forward pass sees it at once, no parameter is replaced)."""
from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from evo_genome import apply_lora, check_same_shapes, interpolate, live_lora_params, lora_model, read_adapter


@pytest.fixture(scope="module")
def adapters(tiny_model_dirs, tmp_path_factory, make_adapter):
    root = tmp_path_factory.mktemp("adapters")
    base = tiny_model_dirs["base"]
    return {"one": make_adapter(base, root / "one", seed=1), "two": make_adapter(base, root / "two", seed=2),
            "rank4": make_adapter(base, root / "rank4", seed=3, r=4),
            "mlp": make_adapter(base, root / "mlp", seed=4, targets=("q_proj", "up_proj"))}


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_apply_lora_changes_the_live_model_in_place_as_peft_would_load_it(tiny_model_dirs, adapters):
    one, two = read_adapter(adapters["one"]), read_adapter(adapters["two"])
    assert one.name == "one" and all(".lora_A." in k or ".lora_B." in k for k in one.weights)
    model = lora_model(AutoModelForCausalLM.from_pretrained(tiny_model_dirs["base"]), one)
    ids = torch.tensor([[5, 9, 13, 40, 41, 42]])
    params_before = {k: (id(p), p.data_ptr()) for k, p in live_lora_params(model).items()}
    with_one = logits(model, ids)
    apply_lora(model, two.weights)
    with_two = logits(model, ids)
    assert {k: (id(p), p.data_ptr()) for k, p in live_lora_params(model).items()} == params_before  # no reload
    for name, expected_dir in (("one", with_one), ("two", with_two)):
        reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dirs["base"]),
                                              adapters[name]).eval()
        assert torch.allclose(logits(reference, ids), expected_dir, atol=1e-5), name
    assert not torch.allclose(with_one, with_two, atol=1e-3)
    # a mix of the two is what the live model computes once it is written in
    apply_lora(model, interpolate(one.weights, two.weights, 0.5))
    assert not torch.allclose(logits(model, ids), with_one, atol=1e-3)
    apply_lora(model, one.weights)
    assert torch.equal(logits(model, ids), with_one)


def test_apply_lora_refuses_an_individual_that_does_not_fit(tiny_model_dirs, adapters):
    one, rank4 = read_adapter(adapters["one"]), read_adapter(adapters["rank4"])
    model = lora_model(AutoModelForCausalLM.from_pretrained(tiny_model_dirs["base"]), one)
    with pytest.raises(ValueError, match=r"has shape \(4, 64\), the live model's \(2, 64\)"):
        apply_lora(model, rank4.weights)
    partial = dict(list(one.weights.items())[1:])
    with pytest.raises(ValueError, match="does not fit the live model: missing"):
        apply_lora(model, partial)


def test_check_same_shapes_names_the_difference(adapters):
    one, two = read_adapter(adapters["one"]), read_adapter(adapters["two"])
    check_same_shapes([one, two])
    with pytest.raises(ValueError, match=r"'one' and 'rank4' differ in r \(2 vs 4\)"):
        check_same_shapes([one, two, read_adapter(adapters["rank4"])])
    with pytest.raises(ValueError, match=r"'one' and 'mlp' differ in target_modules"):
        check_same_shapes([one, read_adapter(adapters["mlp"])])
    with pytest.raises(ValueError, match="an empty population"):
        check_same_shapes([])


def test_read_adapter_refuses_missing_corrupt_and_non_lora_folders(adapters, tmp_path):
    with pytest.raises(ValueError, match="no adapter_config.json in"):
        read_adapter(tmp_path)
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "adapter_config.json").write_text((adapters["one"] / "adapter_config.json").read_text())
    (corrupt / "adapter_model.safetensors").write_bytes(
        (adapters["one"] / "adapter_model.safetensors").read_bytes()[:100])
    with pytest.raises(ValueError, match="adapter 'corrupt': corrupt adapter_model.safetensors"):
        read_adapter(corrupt)
    config = json.loads((adapters["one"] / "adapter_config.json").read_text())
    (corrupt / "adapter_config.json").write_text(json.dumps({**config, "peft_type": "IA3"}))
    with pytest.raises(ValueError, match="peft_type 'IA3', expected 'LORA'"):
        read_adapter(corrupt)
