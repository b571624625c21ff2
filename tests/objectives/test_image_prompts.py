"""Visual-QA items in the generative objective: prompts through the VLM's processor, image features
computed once and reused while the vision weights stay, outputs equal to HF generate's."""
from __future__ import annotations

import pytest
import torch
from transformers import AutoProcessor

from evo_core import load_pool
from objectives import SOURCES
from tests.conftest import tiny_images
from tests.objectives.conftest import IMAGE_TEMPLATE, EchoObjective



@pytest.fixture(scope="module")
def vqa_setup(tiny_vlm_dirs):
    images = tiny_images(9, seed=3)
    items = [{"image": image, "question": f"What is {i}?" + " x" * (i % 3), "answer": "1"} for i, image in enumerate(images)]
    if "tiny_vqa" not in SOURCES:
        SOURCES.register("tiny_vqa", lambda *, split: items[:5] if split == "search" else items[5:])
    pool = load_pool(base=tiny_vlm_dirs["base"], sources={"vlm": tiny_vlm_dirs["vlm"], "ja": tiny_vlm_dirs["ja"]})
    processor = AutoProcessor.from_pretrained(tiny_vlm_dirs["vlm"])
    objective = EchoObjective(tokenizer=processor.tokenizer, processor=processor, prompt_template=IMAGE_TEMPLATE,
                      splits={s: {"source": "tiny_vqa", "split": s} for s in ("search", "test")},
                      max_new_tokens=6, batch_size=2, language_detector="script")
    return items, pool, processor, objective


def test_outputs_equal_hf_generate_with_pixels(vqa_setup):
    items, pool, processor, objective = vqa_setup
    pool.use(pool.sources["vlm"])
    outputs = objective.generate(pool.model, "search")
    for item, output in zip(items[:5], outputs):
        enc = processor(images=[item["image"]], text=[IMAGE_TEMPLATE.replace("{question}", item["question"])],
                        return_tensors="pt")
        with torch.no_grad():
            ids = pool.model.generate(**enc, max_new_tokens=6, do_sample=False)
        assert output == processor.tokenizer.decode(ids[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def test_image_features_are_computed_once_per_vision_state(vqa_setup):
    _, pool, _, objective = vqa_setup
    first = objective.image_features(pool.model, "search")
    assert first[0].shape == (16, pool.model.config.text_config.hidden_size)
    pool.use(pool.sources["ja"])  # a merge writes the LLM only: the features stay
    assert objective.image_features(pool.model, "search") is first
    projector = pool.model.model.multi_modal_projector.linear_1.weight
    saved = projector.detach().clone()
    with torch.no_grad():
        projector.add_(0.1)  # a changed vision path must not reuse stale features
    try:
        assert objective.image_features(pool.model, "search") is not first
    finally:
        with torch.no_grad():
            projector.copy_(saved)


def test_image_items_need_a_processor_and_a_placeholder(vqa_setup, tiny_vlm_dirs):
    _, _, processor, _ = vqa_setup
    splits = {s: {"source": "tiny_vqa", "split": s} for s in ("search", "test")}
    with pytest.raises(ValueError, match="has images but the prompting model has no image processor"):
        EchoObjective(tokenizer=processor.tokenizer, splits=splits, prompt_template=IMAGE_TEMPLATE, language_detector="script")
    with pytest.raises(ValueError, match="has no '<image>'"):
        EchoObjective(tokenizer=processor.tokenizer, processor=processor, splits=splits, prompt_template="Q: {question}\nA:",
              language_detector="script")
