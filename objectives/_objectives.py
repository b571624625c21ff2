"""The registered objectives.

- "mgsm_ja" (NumericAnswerObjective): math word problems; an output is right when its LAST
  number equals the gold number (see _answers.py). The same code scores the zoo's ja_math and
  en_math tasks and the real MGSM-JA benchmark: only data and prompt template differ. Defaults
  are the paper's MGSM-JA setting (prompt "ja_alpaca_cot", its stop strings, 1024 new tokens).
  Four metrics per item: acc / acc_ja by the project's extraction (thousands separators, minus
  signs, full-width points; superscripts and unit symbols never read as digits), and paper_acc /
  paper_acc_ja by the paper's released extraction, bugs included ("2,125" reads 125), so a
  number can be compared with the paper's. The fitness is `objective.fitness` (default acc_ja);
  each record (samples.jsonl) carries both predictions.
- "answer_match" (AnswerMatchObjective): free-text answers; the last capture of `answer_pattern`
  in the output must equal the gold string (both NFKC-normalised and stripped). The default
  pattern reads the zoo's Japanese Q&A outputs, which end like 「…。こたえは Y です。」.
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from typing import Any

from ._base import GenerativeObjective, register
from ._judges import AnswerJudge, Judge, NumericJudge
from ._prompts import MGSM_JA_MAX_NEW_TOKENS, MGSM_JA_STOP_STRINGS


@register("mgsm_ja")
class NumericAnswerObjective(GenerativeObjective):
    default_prompt_template = "ja_alpaca_cot"
    default_stop_strings = MGSM_JA_STOP_STRINGS
    default_max_new_tokens = MGSM_JA_MAX_NEW_TOKENS

    def make_judge(self, ja_probability: Callable[[str], float]) -> Judge:
        return NumericJudge(ja_probability=ja_probability)


ZOO_QA_ANSWER_PATTERN = r"こたえは\s*(.+?)\s*です"


def _normalise(text: str) -> str:
    return unicodedata.normalize("NFKC", text).strip()


def _gold_string(answer: str) -> str:
    gold = _normalise(answer)
    if not gold:
        raise ValueError("gold answer is empty")
    return gold


@register("answer_match")
class AnswerMatchObjective(GenerativeObjective):
    default_max_new_tokens = 64

    def __init__(self, *, answer_pattern: str = ZOO_QA_ANSWER_PATTERN, **kwargs: Any):
        try:
            self.answer_pattern = re.compile(answer_pattern)
        except re.error as err:
            raise ValueError(f"answer_pattern {answer_pattern!r} is not a regex: {err}") from None
        if self.answer_pattern.groups != 1:
            raise ValueError(f"answer_pattern {answer_pattern!r} must have exactly one capture group")
        super().__init__(**kwargs)

    def make_judge(self, ja_probability: Callable[[str], float]) -> Judge:
        return AnswerJudge(parse_gold=_gold_string, predict=self.predict, ja_probability=ja_probability)

    def predict(self, output: str) -> str | None:
        matches = self.answer_pattern.findall(_normalise(output))
        return _normalise(matches[-1]) if matches else None
