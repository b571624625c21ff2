"""LiveModelLM gives lm-eval's HF backend's (HFLM's) results, item by item.

Local tasks only (lm-eval's `dataset_path: json` with data_files written here, read through a
TaskManager(include_path=...)): one multiple_choice, one generate_until, one loglikelihood_rolling
task, scored with `lm_eval.simple_evaluate(..., log_samples=True)` by HFLM(pretrained=<model>) and
by LiveModelLM(model=<the same model>), compared sample by sample: log-likelihoods within
TOLERANCE (fp32), is_greedy flags and generated texts equal. Two models: the zoo's trained `ja`
(Qwen3, character tokenizer, no BOS) and a tiny random GPT-2 with a byte-level BPE tokenizer
trained here that adds a BOS, with a 64-token window, so the tasks also hit BPE merges across the
context/continuation boundary, left truncation of contexts and prompts, and several rolling windows
per document (each checked to happen).
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import lm_eval
import pytest
import torch
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from objectives import LiveModelLM
from objectives._lm_eval_model import reads_choice_mask
from tests.conftest import REPO_ROOT
from zoo.tokenizer import build_tokenizer
from zoo.world import COLOURS, LIKES, PLACES, task_items

ATOL, RTOL = 1e-4, 1e-5  # |ours - HFLM's| <= ATOL + RTOL * |HFLM's|, per log-likelihood (fp32)
TASKS = ("live_choice", "live_generate", "live_rolling")
STAND_IN_WINDOW = 64  # the GPT-2 stand-in's n_positions: small, so truncation and rolling windows happen


def _write_task(folder: Path, name: str, rows: list[dict], body: str) -> None:
    data = folder / f"{name}.jsonl"
    data.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    (folder / f"{name}.yaml").write_text(
        f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {json.dumps(str(data))}\n"
        f"test_split: test\n{body}metadata:\n  version: 1.0\n", encoding="utf-8")


@pytest.fixture(scope="module")
def task_manager(tmp_path_factory) -> TaskManager:
    folder = tmp_path_factory.mktemp("lm_eval_tasks")
    rng = random.Random(0)
    choice_rows = []
    for n, (question, answer) in enumerate(task_items("ja_qa", "test")[:12]):
        kind = COLOURS if "なにいろ" in question else PLACES if "どこに" in question else LIKES
        choices = rng.sample([ja for _, ja in kind if ja != answer], 3)
        label = rng.randrange(4)
        choices.insert(label, answer)
        # a few long contexts: left truncation in the stand-in's 64-token window
        context = " ".join([question] * (4 if n % 4 == 0 else 1))
        choice_rows.append({"context": f"Q: {context}\nA:", "choices": [" " + c for c in choices], "label": label})
    # contexts that end inside a word the BPE merges with the continuation's first letters
    for question, _ in task_items("en_math", "test")[:4]:
        word = question.split()[3]  # "Sora has 37 cookies. ..." -> "cookies."
        choice_rows.append({"context": f"Q: {question}\nA: {word[:3]}", "choices": [word[3:], "s", "x", "les"],
                            "label": 0})
    _write_task(folder, "live_choice", choice_rows, (
        'output_type: multiple_choice\ndoc_to_text: "{{context}}"\ntarget_delimiter: ""\ndoc_to_choice: choices\n'
        "doc_to_target: label\nmetric_list:\n  - metric: acc\n"))
    # every third prompt long: left truncation to the stand-in's window less max_gen_toks
    generate_rows = [{"question": " ".join([q] * (3 if n % 3 == 0 else 1)), "answer": a}
                     for n, (q, a) in enumerate(task_items("ja_math", "test")[:8])]
    _write_task(folder, "live_generate", generate_rows, (
        'output_type: generate_until\ndoc_to_text: "Q: {{question}}\\nA:"\ndoc_to_target: answer\n'
        'generation_kwargs:\n  until: ["\\n", "。"]\n  do_sample: false\n  max_gen_toks: 24\n'
        "metric_list:\n  - metric: exact_match\n"))
    rolling_rows = [{"text": f"Q: {q}\nA: {a}" * (1 + n % 3)} for n, (q, a) in enumerate(task_items("ja_qa", "test")[:8])]
    _write_task(folder, "live_rolling", rolling_rows, (
        'output_type: loglikelihood_rolling\ndoc_to_text: ""\ndoc_to_target: "{{text}}"\n'
        "metric_list:\n  - metric: word_perplexity\n"))
    return TaskManager(include_path=str(folder), include_defaults=False)  # indexing lm-eval's own tasks takes ~20 s


def _stand_in_tokenizer(folder: Path) -> PreTrainedTokenizerFast:
    """A byte-level BPE (GPT-2's kind) trained on zoo text, with a BOS added to every encoding."""
    texts = [f"Q: {q}\nA: {a}" for task in ("en_math", "ja_qa", "ja_math") for q, a in task_items(task, "search")]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=500, special_tokens=["<s>", "</s>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    bpe.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B",
                                                       special_tokens=[("<s>", bpe.token_to_id("<s>"))])
    PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>").save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="module")
def stand_in_dir(tmp_path_factory) -> Path:
    """A tiny random GPT-2 and its tokenizer, saved as an HF model directory (no hub)."""
    folder = tmp_path_factory.mktemp("gpt2_stand_in")
    tokenizer = _stand_in_tokenizer(folder)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=STAND_IN_WINDOW, n_embd=64, n_layer=2, n_head=4,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    GPT2LMHeadModel(config).eval().save_pretrained(folder)
    return folder


def _samples(lm, task_manager: TaskManager) -> dict[str, list[dict]]:
    results = lm_eval.simple_evaluate(model=lm, tasks=list(TASKS), task_manager=task_manager, log_samples=True,
                                      verbosity="ERROR")
    return {task: sorted(samples, key=lambda s: s["doc_id"]) for task, samples in results["samples"].items()}


def _assert_same_samples(ours: dict[str, list[dict]], theirs: dict[str, list[dict]]) -> None:
    assert set(ours) == set(theirs) == set(TASKS)
    for task in TASKS:
        assert [s["doc_id"] for s in ours[task]] == [s["doc_id"] for s in theirs[task]]
        for mine, ref in zip(ours[task], theirs[task]):
            where = f"{task} doc {ref['doc_id']}"
            assert len(mine["resps"]) == len(ref["resps"]), where
            for (got,), (want,) in zip(mine["resps"], ref["resps"]):
                if task == "live_generate":
                    assert got == want, where
                    continue
                if task == "live_rolling":  # a document's summed log-likelihood
                    got, want = (got, None), (want, None)
                assert abs(got[0] - want[0]) <= ATOL + RTOL * abs(want[0]), (where, got, want)
                assert got[1] == want[1], (where, "is_greedy", got, want)
            assert mine["target"] == ref["target"], where
    assert len(ours["live_choice"]) == 16 and len(ours["live_generate"]) == 8 and len(ours["live_rolling"]) == 8


def _hflm(model, tokenizer) -> HFLM:
    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=8)


@pytest.mark.parametrize(("name", "attention"), [("ja", "sdpa"), ("ja", "eager"),
                                                  pytest.param("base", "sdpa", marks=pytest.mark.slow),
                                                  pytest.param("math_wiz", "sdpa", marks=pytest.mark.slow)])
def test_zoo_model_results_equal_hflms_item_by_item(task_manager, name, attention):
    # eager attention adds the packed choices' 4-D mask itself, sdpa hands it to torch
    model = AutoModelForCausalLM.from_pretrained(REPO_ROOT / "zoo" / "models" / name,
                                                 attn_implementation=attention).eval()
    theirs = _samples(_hflm(model, build_tokenizer()), task_manager)
    lm = LiveModelLM(model=model, tokenizer=build_tokenizer(), batch_size=8)
    assert lm._packs, "the zoo's Qwen3 scores choices packed"
    ours = _samples(lm, task_manager)
    _assert_same_samples(ours, theirs)
    # the trained zoo models answer: not a comparison of empty strings
    assert sum(bool(s["resps"][0][0].strip()) for s in ours["live_generate"]) == 8


@pytest.mark.parametrize("pack_choices", [None, False], ids=["packed", "kv_copies"])
def test_gpt2_stand_in_results_equal_hflms_with_truncation_bpe_merges_and_windows(task_manager, stand_in_dir,
                                                                                 pack_choices):
    # both ways of scoring choices: packed in the context's row, and the fallback from KV cache copies
    model = AutoModelForCausalLM.from_pretrained(stand_in_dir).eval()
    lm = LiveModelLM(model=model, tokenizer=AutoTokenizer.from_pretrained(stand_in_dir), batch_size=8,
                     pack_choices=pack_choices)
    assert lm._packs == (pack_choices is None)
    theirs = _samples(_hflm(model, AutoTokenizer.from_pretrained(stand_in_dir)), task_manager)
    ours = _samples(lm, task_manager)
    _assert_same_samples(ours, theirs)

    # the cases the stand-in is here for did occur
    assert lm.max_length == STAND_IN_WINDOW and lm.prefix_token_id == lm.tokenizer.bos_token_id
    pairs = [tuple(args) for s in ours["live_choice"] for args in s["arguments"]]
    encoded = [lm._encode_pair(context, continuation) for context, continuation in pairs]
    assert any(len(c) + len(k) > STAND_IN_WINDOW + 1 for c, k in encoded), "no context was left-truncated"
    assert any(lm.tok_encode(context + continuation)[:len(c)] != c
               for (context, continuation), (c, _) in zip(pairs, encoded)), "no BPE merge across the boundary"
    assert any(len(lm.tok_encode(s["arguments"][0][0])) > STAND_IN_WINDOW for s in ours["live_rolling"]), \
        "no document needed several rolling windows"
    assert any(len(lm.tok_encode(s["arguments"][0][0])) > STAND_IN_WINDOW - 24 for s in ours["live_generate"]), \
        "no prompt was left-truncated"


def test_weights_written_in_place_are_scored_at_once(tiny_model_dirs):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dirs["base"]).eval()
    lm = LiveModelLM(model=model, tokenizer=build_tokenizer(), batch_size=4)
    requests = [_Request(("Q: 1+1\nA:", c)) for c in (" 2", " 3", " 11")]
    before = lm.loglikelihood(requests, disable_tqdm=True)
    with torch.no_grad():
        model.lm_head.weight.mul_(1.5)  # what the pool does: weights written into the same model object
    after = lm.loglikelihood(requests, disable_tqdm=True)
    reference = _hflm(model, build_tokenizer()).loglikelihood(requests, disable_tqdm=True)
    assert all(abs(a[0] - b[0]) > 1e-3 for a, b in zip(before, after))
    assert all(abs(a[0] - r[0]) <= ATOL + RTOL * abs(r[0]) for a, r in zip(after, reference))


class _Request:
    """The part of lm-eval's Instance an LM reads."""

    def __init__(self, args: tuple, gen_kwargs: dict | None = None):
        self.args = args if gen_kwargs is None else (args[0], gen_kwargs)
        self.task_name = "t"


def test_bad_options_and_sampling_fail_in_one_line(tiny_model_dirs):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dirs["base"]).eval()
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 'auto'"):
        LiveModelLM(model=model, tokenizer=build_tokenizer(), batch_size="auto")
    with pytest.raises(ValueError, match="generation backend"):
        LiveModelLM(model=model, tokenizer=build_tokenizer(), generation_backend="nope")
    lm = LiveModelLM(model=model, tokenizer=build_tokenizer())
    with pytest.raises(ValueError, match="task t: generation_kwargs do_sample=true"):
        lm.generate_until([_Request(("Q: 1+1\nA:",), {"until": ["\n"], "do_sample": True, "temperature": 0.7})])
    with pytest.raises(ValueError, match="generation_kwargs penalty_alpha not supported"):
        lm.generate_until([_Request(("Q: 1+1\nA:",), {"until": ["\n"], "do_sample": False, "penalty_alpha": 0.6})])


def test_choices_are_packed_only_where_the_model_reads_a_4d_mask_as_given(stand_in_dir):
    model = AutoModelForCausalLM.from_pretrained(stand_in_dir).eval()
    assert reads_choice_mask(model, STAND_IN_WINDOW)
    model.config._attn_implementation = "flex_attention"  # a BlockMask, not an additive mask
    assert not reads_choice_mask(model, STAND_IN_WINDOW)
    assert not LiveModelLM(model=model, tokenizer=AutoTokenizer.from_pretrained(stand_in_dir))._packs
    with pytest.raises(ValueError, match="pack_choices=true needs a model that reads a 4-D attention mask as given "
                                         r"\(model_type .*\); got model_type 'gpt2', attention 'flex_attention'"):
        LiveModelLM(model=model, tokenizer=AutoTokenizer.from_pretrained(stand_in_dir), pack_choices=True)
    model.config._attn_implementation = "sdpa"
    model.config.model_type = "bloom"  # ALiBi: a position bias built from the 2-D mask
    assert not reads_choice_mask(model, STAND_IN_WINDOW)
    model.config.model_type = "gpt2"
    model.config.sliding_window = STAND_IN_WINDOW // 2  # a 4-D mask would replace the window
    assert not reads_choice_mask(model, STAND_IN_WINDOW)
    assert reads_choice_mask(model, STAND_IN_WINDOW // 2)


def test_empty_and_space_only_contexts_are_tokenized_as_lm_eval_does(stand_in_dir):
    # lm-eval: an empty context is the prefix token (BOS here); a context of spaces only moves them
    # to the continuation and keeps the tokenizer's encoding of "" (BOS) as the context
    model = AutoModelForCausalLM.from_pretrained(stand_in_dir).eval()
    requests = [_Request((context, continuation)) for context in ("", "  ", "Q:")
                for continuation in (" cookies", "<s> cookies", "les")]
    ours = LiveModelLM(model=model, tokenizer=AutoTokenizer.from_pretrained(stand_in_dir)).loglikelihood(requests)
    theirs = _hflm(model, AutoTokenizer.from_pretrained(stand_in_dir)).loglikelihood(requests)
    assert all(abs(a[0] - b[0]) <= ATOL + RTOL * abs(b[0]) and a[1] == b[1] for a, b in zip(ours, theirs))
