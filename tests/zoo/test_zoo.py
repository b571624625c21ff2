"""The committed zoo: loadable as plain HF models, built by its recipe, and showing the skills the
merge has to compose (the preconditions of the paper's effect, measured on the test splits)."""
from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from zoo import build, report, world

MODELS = ("base", *world.EXPERTS)


@pytest.fixture(scope="session")
def zoo_scores():
    pool = report.load_zoo()
    tasks = {task: report.task_objective(task, pool.tokenizer) for task in report.TASKS}
    scores, ja_share = {}, {}
    for name in MODELS:
        report.use_weights(pool.model, pool.base if name == "base" else pool.sources[name])
        scores[name] = report.score_row(pool.model, tasks)
        outputs = tasks["ja_math"].generate(pool.model, "test")
        records = tasks["ja_math"].records(outputs, "test")
        ja_share[name] = sum(r["japanese"] for r in records) / len(records)
    return scores, ja_share


@pytest.mark.parametrize("name", MODELS)
def test_zoo_model_loads_with_auto_classes(name):
    model = AutoModelForCausalLM.from_pretrained(build.MODELS_DIR / name)
    tokenizer = AutoTokenizer.from_pretrained(build.MODELS_DIR / name)
    assert type(model).__name__ == "Qwen3ForCausalLM" and len(tokenizer) == model.config.vocab_size
    assert 1e6 < sum(p.numel() for p in model.parameters()) < 1e7


def test_committed_zoo_matches_its_recipe():
    manifest = json.loads((build.MODELS_DIR / "manifest.json").read_text())
    assert manifest["recipe_hash"] == build.recipe_hash(), (
        "zoo/recipe.yaml, world.py, tokenizer.py or build.py changed since the zoo was built: "
        "rebuild it with `make zoo` and commit zoo/models/")
    assert set(manifest["weights"]) == set(MODELS)
    for name, digest in manifest["weights"].items():
        assert build.file_sha256(build.MODELS_DIR / name / "model.safetensors") == digest, name


def test_committed_model_files_name_no_machine_path(machine_paths):
    # every export copies a model's config: a builder's absolute path (text_config._name_or_path
    # once held one) would be published with every merge of it; every text file of the zoo is read
    # (configs, tokenizers, manifests), not the weights
    from pathlib import Path

    models = Path(build.__file__).resolve().parent / "models"
    assert len(list(models.rglob("*.json"))) >= 20
    assert machine_paths(models) == {}


@pytest.mark.slow
def test_builder_is_deterministic(tmp_path):
    """Two smoke builds (one step per stage) give bit-identical weights."""
    digests = []
    for run in ("a", "b"):
        build.main(["--out", str(tmp_path / run), "--only", "base", "--steps-scale", "0.001"])
        digests.append(build.file_sha256(tmp_path / run / "base" / "model.safetensors"))
    assert digests[0] == digests[1]
    committed = load_file(build.MODELS_DIR / "base" / "model.safetensors")
    smoke = load_file(tmp_path / "a" / "base" / "model.safetensors")
    assert {k: v.shape for k, v in committed.items()} == {k: v.shape for k, v in smoke.items()}


def test_evaluation_splits_are_disjoint_and_the_math_tasks_never_trained_on():
    """No training document asks a target (ja_math) or en_math evaluation question, and the
    Japanese expert never trains on a ja_qa evaluation question. Known and measured: the BASE's
    bare-answer Q&A ("... なにいろ ですか?" -> " みどり") draws from the same 576 questions as
    ja_qa, so ja_qa measures the expert's answer format and copying, not unseen questions."""
    import random

    for task in report.TASKS:
        search = {q for q, _ in world.task_items(task, "search")}
        test = {q for q, _ in world.task_items(task, "test")}
        assert len(test) >= 200 and not search & test
    assert len(world.task_items("ja_math", "search")) >= 300 and len(world.task_items("ja_math", "test")) >= 300
    asked = {task: {q for split in ("search", "test") for q, _ in world.task_items(task, split)}
             for task in report.TASKS}
    rng = random.Random(1)
    base_docs = [world.base_stage(s, rng) for s in (1, 2, 3, 4) for _ in range(3000)]
    expert_docs = {e: [world.expert_doc(e, rng) for _ in range(3000)] for e in world.EXPERTS}
    every_doc = base_docs + [d for docs in expert_docs.values() for d in docs]
    question = lambda doc: doc.prompt[len("Q: "):-len("\nA:")]  # noqa: E731
    for task in ("ja_math", "en_math"):
        assert not any(question(d) in asked[task] for d in every_doc if d.prompt), task
    assert not any(question(d) in asked["ja_qa"] for d in expert_docs["ja"] if d.prompt)


@pytest.mark.slow
def test_each_expert_is_good_at_its_own_task(zoo_scores):
    scores, _ = zoo_scores
    assert scores["math_wiz"]["en_math.acc"] >= 0.6
    assert scores["math_abel"]["en_math.acc"] >= 0.6
    assert scores["ja"]["ja_qa.acc"] >= 0.6


@pytest.mark.slow
def test_math_experts_read_japanese_problems_but_answer_in_english(zoo_scores):
    scores, ja_share = zoo_scores
    chance = max(scores["base"]["ja_math.acc"], 0.02)
    for expert in ("math_wiz", "math_abel"):
        assert scores[expert]["ja_math.acc"] >= 0.15 > 5 * chance, expert
        assert ja_share[expert] < 0.1, expert  # English reasoning, as WizardMath does
        assert scores[expert]["ja_math.acc_ja"] < 0.05


@pytest.mark.slow
def test_japanese_expert_answers_in_japanese_but_cannot_do_the_target(zoo_scores):
    scores, ja_share = zoo_scores
    assert ja_share["ja"] >= 0.9
    assert scores["ja"]["ja_math.acc_ja"] < 0.1
