"""The committed LoRA zoo: plain PEFT adapters on the zoo base, built by their recipe, each good at
its own slice, none good at the targets (the precondition GENOME has to beat), on the test splits."""
from __future__ import annotations

import json
import random

import pytest
from peft import PeftModel
from transformers import AutoModelForCausalLM

from evo_genome import check_same_shapes, read_adapter
from zoo import build, build_lora, lora_report, lora_world

LORA = build.MODELS_DIR / build_lora.LORA_DIR


@pytest.mark.parametrize("name", lora_world.EXPERTS)
def test_lora_expert_loads_with_peft_alone(name):
    folder = LORA / name
    assert (folder / "adapter_model.safetensors").stat().st_size < 500_000  # a few hundred kB
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["base_model_name_or_path"] == "zoo/models/base"
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(build.MODELS_DIR / "base"), folder)
    assert model.peft_config["default"].r == 4


def test_at_least_six_experts_of_one_shape():
    adapters = [read_adapter(LORA / name) for name in lora_world.EXPERTS]
    assert len(adapters) >= 6
    check_same_shapes(adapters)


def test_committed_lora_zoo_matches_its_recipe():
    manifest = json.loads((build.MODELS_DIR / build_lora.MANIFEST).read_text())
    assert manifest["recipe_hash"] == build_lora.recipe_hash(), (
        "zoo/lora_recipe.yaml, lora_world.py, build_lora.py (or the text zoo's sources) changed since the "
        "LoRA zoo was built: rebuild it with `python -m zoo.build_lora` and commit zoo/models/lora*")
    assert manifest["base"] == build.file_sha256(build.MODELS_DIR / "base" / "model.safetensors")
    assert set(manifest["adapters"]) == set(lora_world.EXPERTS)
    for name, digest in manifest["adapters"].items():
        assert build.file_sha256(LORA / name / build_lora.ADAPTER_WEIGHTS) == digest, name


@pytest.mark.slow
def test_lora_builder_is_deterministic(tmp_path):
    """Two smoke builds of one expert give bit-identical adapter files."""
    files = []
    for run in ("a", "b"):
        build_lora.main(["--out", str(tmp_path / run), "--only", "count_ja", "--steps-scale", "0.05"])
        folder = tmp_path / run / build_lora.LORA_DIR / "count_ja"
        files.append({p.name: p.read_bytes() for p in sorted(folder.iterdir())})
    assert files[0] == files[1] and set(files[0]) == {"adapter_config.json", "adapter_model.safetensors"}


def test_lora_tasks_have_disjoint_200_item_splits_never_trained_on():
    seen: dict[str, str] = {}
    for task in lora_world.TASKS:
        search, test = lora_world.task_items(task, "search"), lora_world.task_items(task, "test")
        if task != "ja_qa":  # the text zoo's own Q&A task (100 + 200)
            assert len(search) == len(test) == 200, task
        for question, _ in search + test:
            assert seen.setdefault(question, task) == task, (task, question)  # no question in two tasks
        assert not {q for q, _ in search} & {q for q, _ in test}
    held_out = lora_world.held_out_questions()
    assert set(seen) <= held_out
    rng = random.Random(7)
    question = lambda doc: doc.prompt[len("Q: "):-len("\nA:")]  # noqa: E731
    for expert in lora_world.EXPERTS:
        assert not any(question(lora_world.expert_doc(expert, rng)) in held_out for _ in range(2000)), expert
    with pytest.raises(ValueError, match="unknown LoRA zoo task 'nope'; known: lora_en_add"):
        lora_world.task_items("nope", "test")


@pytest.fixture(scope="module")
def lora_scores():
    return lora_report.lora_table(limit=100)


@pytest.mark.slow
def test_each_lora_expert_is_best_at_its_own_slice_and_none_does_the_targets(lora_scores):
    # measured on the full test splits (docs/zoo.md): own tasks 21.5-99.5%, the base 0%, the
    # targets at most 1.5% for any expert (and 0% for the uniform average of all six)
    for expert, task in lora_world.OWN_TASK.items():
        own = lora_scores[expert][task]
        assert own > lora_scores["base"][task] + 0.1, (expert, task, own)
        assert own == max(lora_scores[e][task] for e in lora_world.EXPERTS), (expert, task)  # its strength
    assert sum(lora_scores[e][lora_world.OWN_TASK[e]] >= 0.8 for e in lora_world.EXPERTS) >= 4
    for target in lora_world.TARGETS:
        best_single = max(lora_scores[e][target] for e in lora_world.EXPERTS)
        assert best_single <= 0.1, (target, best_single)
