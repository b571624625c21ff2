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
"""
from __future__ import annotations

from typing import Any, ClassVar, Sequence

from evo_core import Metric

from ._base import GenerativeObjective, item_fields, register
from ._rouge import VQAScorer


@register("ja_vqa")
class VQAObjective(GenerativeObjective):
    metrics: ClassVar[tuple[Metric, ...]] = (Metric("rougeL"), Metric("rougeL_ja"))
    default_fitness: ClassVar[str] = "rougeL_ja"
    default_prompt_template: ClassVar[str] = "evovlm_ja"
    default_max_new_tokens: ClassVar[int] = 256

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        # the references' words and languages once per split, not once per trial
        self._scorers = {split: VQAScorer(data.golds, ja_probability=self._ja_probability)
                         for split, data in self._splits.items()}

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
