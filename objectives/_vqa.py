"""Visual QA scored by ROUGE-L, as in the paper's EvoVLM-JP evaluation.

    obj = objectives.build("ja_vqa", tokenizer=processor.tokenizer, processor=processor,
                           splits={"search": {"source": "zoo", "task": "ja_vqa", "split": "search"},
                                   "test": {"source": "ja_vlm_wild", "path": "wild.parquet"}})
    obj.score_items(vlm, "search")      # {"rougeL": [0.67, ...], "rougeL_ja": [0.67, 0.0, ...]}

Items are dicts {"image", "question", "answer"}; the prompt is tokenized by the vision-language
model's processor and the image features are computed once per split (_base.py). Per item:
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

from typing import Any, ClassVar, Sequence

from evo_core import Metric, mean_scores

from ._base import GenerativeObjective, item_fields, register
from ._rouge import RELEASED_BOOTSTRAP_ORDER, VQAScorer, bootstrap_mid

AGGREGATES = ("mean", "bootstrap_mid")


@register("ja_vqa")
class VQAObjective(GenerativeObjective):
    metrics: ClassVar[tuple[Metric, ...]] = (Metric("rougeL"), Metric("rougeL_ja"))
    default_fitness: ClassVar[str] = "rougeL_ja"
    default_prompt_template: ClassVar[str] = "evovlm_ja"
    default_max_new_tokens: ClassVar[int] = 256

    def __init__(self, *, aggregate: str = "mean", **kwargs: Any):
        if aggregate not in AGGREGATES:
            raise ValueError(f"objective option aggregate={aggregate!r}; known: {', '.join(AGGREGATES)}")
        self.aggregate_kind = aggregate
        super().__init__(**kwargs)
        # the references' words and languages once per split, not once per trial
        self._scorers = {split: VQAScorer(data.golds, ja_probability=self._ja_probability)
                         for split, data in self._splits.items()}

    def aggregate(self, item_scores: dict[str, Sequence[float]]) -> dict[str, float]:
        """A whole split's metrics from its per-item scores, plus n (module docstring)."""
        means = mean_scores(item_scores)
        if self.aggregate_kind == "mean":
            return means
        return {metric: bootstrap_mid(scores, preceding=RELEASED_BOOTSTRAP_ORDER[metric])
                for metric, scores in item_scores.items()} | {"n": means["n"]}

    def parse_gold(self, answer: str) -> str:
        if not str(answer).strip():
            raise ValueError("reference answer is empty")
        return str(answer)

    def predict(self, output: str) -> str:
        return output

    def item_scores(self, outputs: Sequence[str], split: str,
                    items: Sequence[int] | None = None) -> dict[str, list[float]]:
        index = range(len(self._split(split).golds)) if items is None else items
        if len(outputs) != len(index):
            raise ValueError(f"split {split!r} has {len(index)} items but got {len(outputs)} outputs")
        return self._scorers[split].item_scores(list(outputs), items)

    def records(self, outputs: Sequence[str], split: str, items: Sequence[int] | None = None) -> list[dict[str, Any]]:
        scores = self.item_scores(outputs, split, items)
        index = range(len(outputs)) if items is None else items
        data = self._split(split).items
        return [{"question": item_fields(data[i])[0], "answer": item_fields(data[i])[1], "output": output,
                 **{metric: values[row] for metric, values in scores.items()}}
                for row, (i, output) in enumerate(zip(index, outputs))]
