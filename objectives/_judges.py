"""Judges: a generative objective's per-item scores and records from a split's outputs.

    judge = AnswerJudge(parse_gold=parse_number, predict=extract_last_number, ja_probability=p)
    golds = [judge.parse_gold(answer) for answer in answers]        # once, when the split is prepared
    judge.item_scores("search", outputs, golds)     # {"acc": [1.0, 0.0, ...], "acc_ja": [...]}
    judge.fields("search", outputs, golds)          # per output, the record fields judging it

A judge sees outputs and gold answers only, never a model. `items` (indices into the split, in
the outputs' order; None: the whole split) say which items the outputs answer.

- AnswerJudge: an output is right when its prediction equals the gold. Per item, for each metric
  X of `accuracy_fields` (acc: the record field "correct"): X = right, X_ja = right AND the output
  is Japanese (P(ja) > JA_THRESHOLD, _language.py).
- NumericJudge ("mgsm_ja"): the last number (_answers.py) for acc / acc_ja, and the paper's
  released extraction, bugs included, for paper_acc / paper_acc_ja.
- VQAJudge ("ja_vqa"): graded ROUGE-L (_rouge.py): rougeL, and rougeL_ja, where a non-Japanese
  output to a Japanese reference scores as an empty one; a whole split's aggregate is the mean or
  the paper's bootstrap mid (_vqa.py).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, ClassVar

from evo_core import Metric, mean_scores

from ._answers import extract_last_number, paper_correct, paper_extract_number, parse_number
from ._language import JA_THRESHOLD
from ._rouge import RELEASED_BOOTSTRAP_ORDER, VQAScorer, bootstrap_mid

JaProbability = Callable[[str], float]


class Judge:
    """What every judge has; `prepare`, `aggregate` and the metrics have defaults to override."""

    metrics: tuple[Metric, ...] = ()

    def parse_gold(self, answer: str) -> Any:
        """The gold answer as compared with outputs; ValueError if it cannot be one."""
        raise NotImplementedError

    def prepare(self, split: str, golds: Sequence[Any]) -> None:
        """Once per split, before any output is judged (e.g. the references' words)."""

    def item_scores(self, split: str, outputs: Sequence[str], golds: Sequence[Any],
                    items: Sequence[int] | None = None) -> dict[str, list[float]]:
        """Per metric, per output: in [0, 1]."""
        raise NotImplementedError

    def fields(self, split: str, outputs: Sequence[str], golds: Sequence[Any],
               items: Sequence[int] | None = None) -> list[dict[str, Any]]:
        """Per output, the record fields judging it (samples.jsonl)."""
        raise NotImplementedError

    def aggregate(self, item_scores: Mapping[str, Sequence[float]]) -> dict[str, float]:
        """A whole split's metrics from its per-item scores, plus n."""
        return mean_scores(item_scores)


def _pairs(outputs: Sequence[str], golds: Sequence[Any], items: Sequence[int] | None):
    return zip(outputs, golds if items is None else [golds[i] for i in items])


class AnswerJudge(Judge):
    metrics = (Metric("acc"), Metric("acc_ja"))
    # accuracy metric -> the record field saying an output is right; each metric X in it scores
    # X (right) and X_ja (right AND Japanese). A judge with a second judgement (the paper's
    # extraction) adds its field here and in `judge`, and both metrics to `metrics`.
    accuracy_fields: ClassVar[Mapping[str, str]] = {"acc": "correct"}

    def __init__(self, *, parse_gold: Callable[[str], Any], predict: Callable[[str], Any | None],
                 ja_probability: JaProbability):
        self._parse_gold, self.predict, self.ja_probability = parse_gold, predict, ja_probability

    def parse_gold(self, answer: str) -> Any:
        return self._parse_gold(answer)

    def judge(self, output: str, gold: Any) -> dict[str, Any]:
        """The fields judging one output: its prediction and whether it is right."""
        prediction = self.predict(output)
        return {"prediction": None if prediction is None else str(prediction),
                "correct": prediction is not None and prediction == gold}

    def fields(self, split: str, outputs: Sequence[str], golds: Sequence[Any],
               items: Sequence[int] | None = None) -> list[dict[str, Any]]:
        records = []
        for output, gold in _pairs(outputs, golds, items):
            ja = self.ja_probability(output)
            records.append({**self.judge(output, gold), "ja_probability": ja, "japanese": ja > JA_THRESHOLD})
        return records

    def item_scores(self, split: str, outputs: Sequence[str], golds: Sequence[Any],
                    items: Sequence[int] | None = None) -> dict[str, list[float]]:
        records = self.fields(split, outputs, golds, items)
        scores = {}
        for metric, field in self.accuracy_fields.items():
            scores[metric] = [float(r[field]) for r in records]
            scores[f"{metric}_ja"] = [float(r[field] and r["japanese"]) for r in records]
        return scores


class NumericJudge(AnswerJudge):
    """The last number must equal the gold number; the paper's extraction scored beside it."""

    metrics = (*AnswerJudge.metrics, Metric("paper_acc"), Metric("paper_acc_ja"))
    accuracy_fields = {**AnswerJudge.accuracy_fields, "paper_acc": "paper_correct"}

    def __init__(self, *, ja_probability: JaProbability):
        super().__init__(parse_gold=parse_number, predict=extract_last_number, ja_probability=ja_probability)

    def judge(self, output: str, gold: Decimal) -> dict[str, Any]:
        paper = paper_extract_number(output)
        return super().judge(output, gold) | {"paper_prediction": paper, "paper_correct": paper_correct(paper, gold)}


VQA_AGGREGATES = ("mean", "bootstrap_mid")


class VQAJudge(Judge):
    """ROUGE-L against one reference per item (_rouge.VQAScorer), graded."""

    metrics = (Metric("rougeL"), Metric("rougeL_ja"))

    def __init__(self, *, ja_probability: JaProbability, aggregate: str = "mean"):
        if aggregate not in VQA_AGGREGATES:
            raise ValueError(f"objective option aggregate={aggregate!r}; known: {', '.join(VQA_AGGREGATES)}")
        self.aggregate_kind = aggregate
        self.ja_probability = ja_probability
        self._scorers: dict[str, VQAScorer] = {}

    def parse_gold(self, answer: str) -> str:
        if not str(answer).strip():
            raise ValueError("reference answer is empty")
        return str(answer)

    def prepare(self, split: str, golds: Sequence[Any]) -> None:
        # the references' words and languages once per split, not once per trial
        self._scorers[split] = VQAScorer(golds, ja_probability=self.ja_probability)

    def item_scores(self, split: str, outputs: Sequence[str], golds: Sequence[Any],
                    items: Sequence[int] | None = None) -> dict[str, list[float]]:
        return self._scorers[split].item_scores(list(outputs), items)

    def fields(self, split: str, outputs: Sequence[str], golds: Sequence[Any],
               items: Sequence[int] | None = None) -> list[dict[str, Any]]:
        scores = self.item_scores(split, outputs, golds, items)
        return [{metric: values[row] for metric, values in scores.items()} for row in range(len(outputs))]

    def aggregate(self, item_scores: Mapping[str, Sequence[float]]) -> dict[str, float]:
        means = mean_scores(item_scores)
        if self.aggregate_kind == "mean":
            return means
        return {metric: bootstrap_mid(scores, preceding=RELEASED_BOOTSTRAP_ORDER[metric])
                for metric, scores in item_scores.items()} | {"n": means["n"]}
