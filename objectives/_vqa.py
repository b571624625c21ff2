"""Visual QA scored by ROUGE-L, as in the paper's EvoVLM-JP evaluation.

    obj = objectives.build("ja_vqa", tokenizer=processor.tokenizer, processor=processor,
                           splits={"search": {"source": "zoo", "task": "ja_vqa", "split": "search"},
                                   "test": {"source": "ja_vlm_wild", "path": "wild.parquet"}})
    obj.score_items(vlm, "search")      # {"rougeL": [0.67, ...], "rougeL_ja": [0.67, 0.0, ...]}

Items are dicts {"image", "question", "answer"}; the prompt is tokenized by the vision-language
model's processor and the image features are computed once per split (_prepared.py,
_generator.py); the outputs are judged by VQAJudge (_judges.py). Per item:
rougeL = ROUGE-L F-measure of the output against the reference (MeCab words of normalised text,
_rouge.py); rougeL_ja = the same, except that an output that is not Japanese scores as an empty
one when the reference is Japanese. rougeL_ja is the fitness (the paper's).

A whole split's score (`aggregate`: a full-evaluation trial's values and the test table):
- `objective.options.aggregate: mean` (the default): each metric's mean over the items. What racing
  and breeding combine, and the estimate the paper's number approximates;
- `bootstrap_mid`: the paper's aggregate, rouge-score's BootstrapAggregator mid drawn as the
  released evaluation draws it (_rouge.bootstrap_mid). Another estimate of the same mean, apart from
  it by bootstrap noise only (measured, in points of the x 100 scale: +0.04 rougeL and +0.18
  rougeL_ja on the 186 pairs of tests/objectives/data; at most 0.13 on 20 random 500-item splits);
  about 0.3 s per whole-split report of 500 items (both metrics, busy machine). A race still ranks
  on means: its blocks of items are never bootstrapped.
Mean is the default because the per-item means are what racing, breeding and the search's
comparisons combine, and a bootstrap adds resampling noise to a number the paper only reported.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from ._base import GenerativeObjective, register
from ._judges import VQA_AGGREGATES, Judge, VQAJudge


@register("ja_vqa")
class VQAObjective(GenerativeObjective):
    default_fitness: ClassVar[str] = "rougeL_ja"
    default_prompt_template: ClassVar[str] = "evovlm_ja"
    default_max_new_tokens: ClassVar[int] = 256

    def __init__(self, *, aggregate: str = "mean", **kwargs: Any):
        if aggregate not in VQA_AGGREGATES:  # before any data is read
            raise ValueError(f"objective option aggregate={aggregate!r}; known: {', '.join(VQA_AGGREGATES)}")
        self.aggregate_kind = aggregate
        super().__init__(**kwargs)

    def make_judge(self, ja_probability: Callable[[str], float]) -> Judge:
        return VQAJudge(ja_probability=ja_probability, aggregate=self.aggregate_kind)
