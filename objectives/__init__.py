"""Fitness functions, registered by name.

    import objectives
    obj = objectives.build("mgsm_ja", tokenizer=tok,
                           splits={"search": {"source": "zoo", "task": "ja_math", "split": "search"},
                                   "test": {"source": "tsv", "path": "shared/data/mgsm/mgsm_ja.tsv"}},
                           prompt_template="Q: {question}\\nA:", max_new_tokens=48, batch_size=16)
    obj.score(model, "search")        # {"acc": float, "acc_ja": float, "n": int}
    obj.score_items(model, "search")  # {"acc": [1.0, 0.0, ...], "acc_ja": [...]}: per item
    obj.default_fitness               # "acc_ja": what a search maximises unless told otherwise

Registered: "mgsm_ja" (last number must equal the gold number; the zoo's math tasks and real
MGSM-JA) and "answer_match" (a regex capture must equal the gold string; the zoo's Q&A).
Unknown names fail listing the known ones: objectives.names(). See _base.py for the metrics,
_data.py for split specs, _generation.py for the generation loop, _language.py for the
Japanese detectors ("fasttext" as in the paper, "script" as a fallback).
"""
from __future__ import annotations

from ._answers import extract_last_number, parse_number
from ._base import GenerativeObjective, build, get, names, register
from ._data import SOURCES, Item, check_disjoint, load_split, question_key
from ._generation import CACHE_ARG, GENERATION_BACKENDS, greedy_generate
from ._language import DETECTORS, JA_THRESHOLD, language_detector
from ._objectives import ZOO_QA_ANSWER_PATTERN, AnswerMatchObjective, NumericAnswerObjective
from ._prompts import (
    MGSM_JA_MAX_NEW_TOKENS,
    MGSM_JA_PROMPT_TEMPLATE,
    MGSM_JA_STOP_STRINGS,
    PROMPT_TEMPLATES,
)

__all__ = [
    "CACHE_ARG",
    "AnswerMatchObjective",
    "DETECTORS",
    "GENERATION_BACKENDS",
    "GenerativeObjective",
    "Item",
    "JA_THRESHOLD",
    "MGSM_JA_MAX_NEW_TOKENS",
    "MGSM_JA_PROMPT_TEMPLATE",
    "MGSM_JA_STOP_STRINGS",
    "NumericAnswerObjective",
    "PROMPT_TEMPLATES",
    "SOURCES",
    "ZOO_QA_ANSWER_PATTERN",
    "build",
    "check_disjoint",
    "extract_last_number",
    "get",
    "greedy_generate",
    "language_detector",
    "load_split",
    "names",
    "parse_number",
    "question_key",
    "register",
]
