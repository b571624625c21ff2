"""The likelihood fidelity (objectives/_likelihood.py, likelihood_items of the generative
objectives): each item's mean log-probability per reference token equals a plain HF forward pass
over prompt + reference, for text items (packed rows of a Qwen3, and the KV-copy path), items with
several references, any subset of items in its order, and image items (LLaVA: image features in
place of the image tokens); its cost is the prompts' and references' tokens, with little padding."""
from __future__ import annotations

import pytest
import torch
from transformers import AutoProcessor

from evo_core import load_pool
from objectives import SOURCES, build
from objectives._likelihood import MAX_PADDING, reference_logprobs
from tests.conftest import tiny_images
from tests.objectives.conftest import IMAGE_TEMPLATE, EchoObjective

ATOL = 1e-4  # fp32: the batched, left-padded forward against one unpadded row


def plain_mean_logprob(model, prompt_ids, reference_ids, **inputs):
    """HF's own forward on one unpadded row: the mean log-probability of the reference tokens."""
    ids = torch.tensor([list(prompt_ids) + list(reference_ids)])
    with torch.no_grad():
        logprobs = model(input_ids=ids, **inputs).logits[0].float().log_softmax(-1)
    start = len(prompt_ids)
    return sum(logprobs[start - 1 + j, ids[0, start + j]].item() for j in range(len(reference_ids))) / len(reference_ids)


QA = [("りんごは なにいろ?", "あか"), ("そらは なにいろ?", "あお です"), ("ねこは なんと なく?", "にゃー"),
      ("いぬは なんと なく? よく きいて ください", "わん"), ("うみは どこ?", "とおく")]


@pytest.fixture
def qa_objective(tok, write_tsv):
    return build("answer_match", tokenizer=tok, splits={"search": {"source": "tsv", "path": str(write_tsv(QA))}},
                 prompt_template="Q: {question}\nA:", batch_size=2, language_detector="script",
                 reference_template=" こたえは {answer} です。")


@pytest.mark.parametrize("pack", [True, False], ids=["packed", "kv_copies"])
def test_likelihood_equals_a_plain_forward_pass(qa_objective, tiny_model, tok, monkeypatch, pack):
    if not pack:  # the path of models that do not read a 4-D mask (e.g. LLaVA)
        monkeypatch.setattr("objectives._lm_eval_model.reads_choice_mask", lambda model, max_length: False)
    values = qa_objective.likelihood_items(tiny_model, "search")
    assert len(values) == len(QA)
    for (question, answer), value in zip(QA, values):
        prompt = qa_objective.prompt_ids(question)
        reference = tok(f" こたえは {answer} です。", add_special_tokens=False)["input_ids"]
        assert value == pytest.approx(plain_mean_logprob(tiny_model, prompt, reference), abs=ATOL)
    # a subset, in the order asked, gives the same per-item values
    assert qa_objective.likelihood_items(tiny_model, "search", [3, 0]) == pytest.approx([values[3], values[0]], abs=ATOL)
    work = qa_objective.last_work
    assert work["likelihood_answer_tokens"] == sum(
        len(tok(f" こたえは {a} です。", add_special_tokens=False)["input_ids"]) for a in (QA[3][1], QA[0][1]))


def test_cost_is_the_tokens_of_prompts_and_references_sorted_into_batches(tiny_model, tok):
    # 12 items of very different prompt lengths, batches of 4: rows are sorted by length before
    # batching, so the positions run are close to the tokens themselves, not 12 x the longest row
    prompts = [[5] * n for n in (3, 40, 4, 41, 5, 42, 6, 43, 7, 44, 8, 45)]
    references = [[[7, 8]] for _ in prompts]
    values, work = reference_logprobs(tiny_model, tok, contexts=prompts, references=references, batch_size=4)
    tokens = sum(len(p) + 1 for p in prompts)  # a row is the prompt and the reference but its last token
    assert tokens <= work["likelihood_tokens"] <= tokens / (1 - MAX_PADDING) < 12 * (45 + 2)
    assert values[1] == pytest.approx(plain_mean_logprob(tiny_model, prompts[1], [7, 8]), abs=ATOL)


def test_several_references_are_averaged(tiny_model, tok):
    prompt = tok("Q: そらは なにいろ?\nA:")["input_ids"]
    refs = [tok(" あお", add_special_tokens=False)["input_ids"], tok(" しろ です", add_special_tokens=False)["input_ids"]]
    (value,), _ = reference_logprobs(tiny_model, tok, contexts=[prompt], references=[refs], batch_size=8)
    expected = sum(plain_mean_logprob(tiny_model, prompt, r) for r in refs) / 2
    assert value == pytest.approx(expected, abs=ATOL)


def test_bad_input_is_refused(tiny_model, tok, write_tsv):
    with pytest.raises(ValueError, match="must contain {answer}"):
        build("answer_match", tokenizer=tok, splits={"search": {"source": "tsv", "path": str(write_tsv(QA))}},
              language_detector="script", reference_template=" the answer")
    with pytest.raises(ValueError, match="at least one non-empty reference"):
        reference_logprobs(tiny_model, tok, contexts=[[5, 6]], references=[[]], batch_size=2)


def test_image_items_score_with_their_image_features(tiny_vlm_dirs):
    images = tiny_images(5, seed=11)
    # two items ask the same question of different images: equal tokens, other features
    items = [{"image": image, "question": "いくつ?" if i < 2 else f"なに {i}?", "answer": f"{i + 1} こ"}
             for i, image in enumerate(images)]
    if "tiny_vqa_likelihood" not in SOURCES:
        SOURCES.register("tiny_vqa_likelihood", lambda *, split: items)
    pool = load_pool(base=tiny_vlm_dirs["base"], sources={"vlm": tiny_vlm_dirs["vlm"], "ja": tiny_vlm_dirs["ja"]})
    pool.use(pool.sources["vlm"])
    processor = AutoProcessor.from_pretrained(tiny_vlm_dirs["vlm"])
    objective = EchoObjective(tokenizer=processor.tokenizer, processor=processor, prompt_template=IMAGE_TEMPLATE,
                              splits={"search": {"source": "tiny_vqa_likelihood", "split": "search"}}, batch_size=2,
                              language_detector="script")
    values = objective.likelihood_items(pool.model, "search")
    for item, value in zip(items, values):
        enc = processor(images=[item["image"]], text=[IMAGE_TEMPLATE.replace("{question}", item["question"])],
                        return_tensors="pt")
        reference = processor.tokenizer(f" {item['answer']}", add_special_tokens=False)["input_ids"]
        expected = plain_mean_logprob(pool.model, enc["input_ids"][0].tolist(), reference,
                                      pixel_values=enc["pixel_values"])
        assert value == pytest.approx(expected, abs=ATOL)
    assert values[0] != pytest.approx(values[1], abs=1e-6), "the same question of another image scores apart"


def test_lm_eval_generate_until_targets_score_as_a_plain_forward_pass(tok, tiny_model):
    # the zoo's generate_until task: each doc's context (as lm-eval builds it) and its target after
    # the task's target_delimiter, tokenized as lm-eval splits a log-likelihood request
    from tests.objectives.test_lm_eval_objective import build as build_lm_eval

    objective = build_lm_eval(tok, [{"name": "zoo_ja_math", "metric": "exact_match,ja_answer"}], limit=5, batch_size=4)
    values = objective.likelihood_items(tiny_model, "search")
    assert len(values) == 5 and objective.last_work["likelihood_answer_tokens"] > 0
    task = objective._splits["search"][0].task
    for (ti, d), value in zip(objective._items("search"), values):
        doc = task.eval_docs[d]
        context = task.doc_to_text(doc)  # zero-shot: the context is the doc's text
        target = " " + str(task.doc_to_target(doc))
        context_ids = tok(context)["input_ids"]
        reference = tok(context + target)["input_ids"][len(context_ids):]
        assert value == pytest.approx(plain_mean_logprob(tiny_model, context_ids, reference), abs=ATOL)
    assert objective.likelihood_items(tiny_model, "search", [4, 1]) == pytest.approx([values[4], values[1]], abs=ATOL)


def test_lm_eval_choice_tasks_are_refused_for_the_likelihood(tok, tiny_model):
    from tests.objectives.test_lm_eval_objective import build as build_lm_eval

    objective = build_lm_eval(tok, [{"name": "zoo_en_math_choice", "metric": "acc"}], limit=3)
    with pytest.raises(ValueError, match="scores the targets of generate_until tasks; lm-eval task "
                                         "'zoo_en_math_choice' is multiple_choice"):
        objective.likelihood_items(tiny_model, "search")
