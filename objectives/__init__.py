"""Fitness functions, registered by name.

    import objectives
    obj = objectives.build("mgsm_ja", tokenizer=tok,
                           splits={"search": {"source": "zoo", "task": "ja_math", "split": "search"},
                                   "test": {"source": "mgsm", "lang": "ja", "path": objectives.MGSM_JA_TSV}},
                           prompt_template="Q: {question}\\nA:", max_new_tokens=48, batch_size=16)
    obj.score(model, "search")        # {"acc": float, "acc_ja": float, "paper_acc": ..., "paper_acc_ja": ..., "n": int}
    obj.score_items(model, "search")  # {"acc": [1.0, 0.0, ...], "acc_ja": [...], ...}: per item
    obj.default_fitness               # "acc_ja": what a search maximises unless told otherwise

Registered: "mgsm_ja" (last number must equal the gold number; the zoo's math tasks and real
MGSM-JA, which the project ships: MGSM_JA_TSV, data/mgsm/README.md; acc/acc_ja by the project's
extraction, paper_acc/paper_acc_ja by the paper's released one, bugs included: _answers.py),
"answer_match" (a regex capture must equal the gold string; the zoo's Q&A) and "ja_vqa"
(_vqa.py: visual QA through a VLM's processor, metrics rougeL and rougeL_ja, the fitness) and
"lm_eval" (_lm_eval.py: any lm-evaluation-harness tasks, weighted as mergekit-evolve weighs them;
the zoo's own in zoo/lm_eval_tasks/).

Japanese visual QA (the paper's EvoVLM-JP evaluation): _rouge.py scores outputs with ROUGE-L on
MeCab tokens of normalised text, per item, and rougeL_ja gates non-Japanese predictions to
Japanese references (vqa_item_scores, VQAScorer, rouge_l, normalize_text); _vqa_data.py reads
JA-VG-VQA-500 ("ja_vg_vqa") and JA-VLM-Bench-In-the-Wild ("ja_vlm_wild") from local files into
VQA items {"image", "question", "answer"}; "evovlm_ja" is the paper's VQA prompt template.
A generative objective is a prepared split (_prepared.py), a Generator (_generator.py) and a
Judge (_judges.py: AnswerJudge, NumericJudge, VQAJudge); its generation settings are its options.
lm-eval tasks on the live model: LiveModelLM (_lm_eval_model.py) is an lm-eval `LM` over an
in-memory model and tokenizer (log-likelihoods, rolling log-likelihoods, generation through
GENERATION_BACKENDS), equal per item to lm-eval's HF backend, with multiple-choice contexts run once.
Unknown names fail listing the known ones: objectives.names(). See _base.py for the metrics,
_data.py for split specs, _generation.py for the generation loop, _language.py for the
Japanese detectors ("fasttext" as in the paper, "script" as a fallback).
"""
from __future__ import annotations

from ._answers import extract_last_number, paper_correct, paper_extract_number, parse_number
from ._base import GenerativeObjective, build, get, names, register
from ._data import (MGSM_JA_TSV, SOURCES, Item, VQAItem, check_disjoint, image_key, load_split, overlap_keys,
                    question_key)
from ._generation import CACHE_ARG, GENERATION_BACKENDS, Decoding, GenerationWork, greedy_generate, plan_batches
from ._generator import Generator
from ._judges import AnswerJudge, Judge, NumericJudge, VQAJudge
from ._prepared import PreparedSplit, Prompts, prepare_split
from . import _fast_generation  # noqa: F401  (registers the "fast_greedy" generation backend)
from ._language import DETECTORS, JA_THRESHOLD, language_detector
from ._lm_eval import LMEvalObjective, live_lm
from ._lm_eval_model import LiveModelLM
from ._objectives import ZOO_QA_ANSWER_PATTERN, AnswerMatchObjective, NumericAnswerObjective
from ._prompts import (
    EVOVLM_JA_MAX_NEW_TOKENS,
    EVOVLM_JA_PROMPT_TEMPLATE,
    IMAGE_TOKEN,
    MGSM_JA_MAX_NEW_TOKENS,
    MGSM_JA_PROMPT_TEMPLATE,
    MGSM_JA_STOP_STRINGS,
    PROMPT_TEMPLATES,
    fill,
    resolve_template,
)
from ._rouge import (JA_GATE, MecabTokenizer, VQAScorer, bootstrap_mid, mecab_tokenizer, normalize_text, rouge_l,
                     vqa_item_scores)
from ._vqa import VQAObjective
from ._vqa_data import load_ja_vg_vqa, load_ja_vlm_wild

__all__ = [
    "CACHE_ARG",
    "AnswerJudge",
    "AnswerMatchObjective",
    "DETECTORS",
    "Decoding",
    "EVOVLM_JA_MAX_NEW_TOKENS",
    "EVOVLM_JA_PROMPT_TEMPLATE",
    "GENERATION_BACKENDS",
    "GenerationWork",
    "GenerativeObjective",
    "Generator",
    "Judge",
    "LMEvalObjective",
    "NumericJudge",
    "PreparedSplit",
    "Prompts",
    "VQAJudge",
    "prepare_split",
    "IMAGE_TOKEN",
    "Item",
    "JA_GATE",
    "JA_THRESHOLD",
    "LiveModelLM",
    "MGSM_JA_MAX_NEW_TOKENS",
    "MGSM_JA_PROMPT_TEMPLATE",
    "MGSM_JA_TSV",
    "MGSM_JA_STOP_STRINGS",
    "MecabTokenizer",
    "NumericAnswerObjective",
    "PROMPT_TEMPLATES",
    "SOURCES",
    "VQAItem",
    "VQAObjective",
    "VQAScorer",
    "ZOO_QA_ANSWER_PATTERN",
    "build",
    "check_disjoint",
    "extract_last_number",
    "fill",
    "get",
    "greedy_generate",
    "image_key",
    "language_detector",
    "live_lm",
    "load_ja_vg_vqa",
    "load_ja_vlm_wild",
    "load_split",
    "mecab_tokenizer",
    "names",
    "normalize_text",
    "overlap_keys",
    "paper_correct",
    "paper_extract_number",
    "parse_number",
    "plan_batches",
    "question_key",
    "register",
    "resolve_template",
    "rouge_l",
    "bootstrap_mid",
    "vqa_item_scores",
]
