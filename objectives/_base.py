"""Generative objectives: prompt -> greedy output -> judged answer, scored per split.

An objective is built once per study: it loads every split, checks that the splits share no
problem, tokenizes the prompts and plans the generation batches, and loads the language
detector. Per trial, `score(model, split)` only runs the model (hot-path rule: no data or
tokenizer work inside a trial).

    obj = objectives.build("mgsm_ja", tokenizer=tok,
                           splits={"search": {"source": "zoo", "task": "ja_math", "split": "search"},
                                   "test": {"source": "tsv", "path": "mgsm_ja.tsv"}},
                           prompt_template="Q: {question}\\nA:", max_new_tokens=48,
                           stop_strings=["\\n\\n"], batch_size=16)
    obj.score_items(model, "search")     # {"acc": [1.0, 0.0, ...], "acc_ja": [1.0, 0.0, ...]}
    obj.score(model, "search")           # their means: {"acc": 0.4, "acc_ja": 0.35, "n": 250}
    obj.score_outputs(texts, "test")     # the same metrics for given outputs
    obj.records(texts, "test")           # per-item dicts, for logging

This is evo_core's objective contract (evo_core/_objective.py) for generated text. Metrics, per
item: acc = 1 if the prediction equals the gold answer; acc_ja = 1 if right AND Japanese (P(ja) >
0.5, see _language.py). Their means are the aggregate scores; `default_fitness` ("acc_ja", the
paper's) is what a search maximises unless the config names another metric.

chat_template=True wraps each filled prompt in the tokenizer's own chat template (one user turn,
generation prompt added): instruction-tuned models expect it; the paper's raw templates do not.

A registered objective subclasses GenerativeObjective and says only how to read a gold answer
(`parse_gold`) and an output (`predict`); an output is right when its prediction equals the gold.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

from evo_core import OBJECTIVES, Metric, mean_scores

from ._data import Item, check_disjoint, load_split
from ._generation import GENERATION_BACKENDS, Batch, pad_token_id, plan_batches
from ._language import JA_THRESHOLD
from ._language import language_detector as load_detector
from ._prompts import fill, resolve_template

register = OBJECTIVES.register
get = OBJECTIVES.get
names = OBJECTIVES.names


def build(name: str, **kwargs: Any) -> "GenerativeObjective":
    return get(name)(**kwargs)


@dataclass(frozen=True)
class _Split:
    items: list[Item]
    golds: list[Any]  # parse_gold of each item's answer
    batches: list[Batch]  # the tokenized prompts, padded and batched once


class GenerativeObjective:
    metrics: ClassVar[tuple[Metric, ...]] = (Metric("acc"), Metric("acc_ja"))
    default_fitness: ClassVar[str] = "acc_ja"
    default_prompt_template: ClassVar[str] = "plain"
    default_stop_strings: ClassVar[tuple[str, ...]] = ()
    default_max_new_tokens: ClassVar[int] = 256

    def __init__(
        self,
        *,
        tokenizer: Any,
        splits: Mapping[str, Mapping[str, Any]],
        prompt_template: str | None = None,
        max_new_tokens: int | None = None,
        stop_strings: Sequence[str] | None = None,
        batch_size: int = 8,
        language_detector: str = "fasttext",
        chat_template: bool = False,
        allow_overlap: bool = False,
        generation_backend: str = "hf_greedy",
    ):
        # cheap argument checks first, before any data is read
        if not splits:
            raise ValueError("splits must name at least one split, e.g. {'search': spec, 'test': spec}")
        if chat_template and not getattr(tokenizer, "chat_template", None):
            raise ValueError("objective.chat_template=true but the tokenizer has no chat template")
        self.max_new_tokens = self.default_max_new_tokens if max_new_tokens is None else max_new_tokens
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if isinstance(stop_strings, str):
            raise ValueError(f"stop_strings must be a list of strings, got the string {stop_strings!r}")
        self.stop_strings = tuple(self.default_stop_strings if stop_strings is None else stop_strings)
        if "" in self.stop_strings:
            raise ValueError("stop_strings must not contain the empty string")
        self.prompt_template = resolve_template(prompt_template or self.default_prompt_template)
        self.chat_template = chat_template
        self._generate = GENERATION_BACKENDS.get(generation_backend)
        self.tokenizer = tokenizer
        self._ja_probability = load_detector(language_detector)

        items = {name: load_split(name, spec) for name, spec in splits.items()}
        if not allow_overlap:
            check_disjoint(items)
        pad = pad_token_id(tokenizer)
        self._splits = {}
        for name, split_items in items.items():
            golds = []
            for i, (_, answer) in enumerate(split_items):
                try:
                    golds.append(self.parse_gold(answer))
                except ValueError as err:
                    raise ValueError(f"split {name!r} item {i}: {err}") from None
            prompt_ids = [self.prompt_ids(q) for q, _ in split_items]
            self._splits[name] = _Split(split_items, golds, plan_batches(prompt_ids, pad_id=pad, batch_size=batch_size))

    # -- what a registered objective defines ------------------------------------------------
    def parse_gold(self, answer: str) -> Any:
        """The gold answer as compared with predictions; ValueError if it cannot be one."""
        raise NotImplementedError

    def predict(self, output: str) -> Any | None:
        """The answer an output gives, or None if it gives none."""
        raise NotImplementedError

    # -- public API --------------------------------------------------------------------------
    def prompt_ids(self, question: str) -> list[int]:
        """The token ids the model is prompted with for one question."""
        prompt = fill(self.prompt_template, question)
        if self.chat_template:
            return list(self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=True,
                                                           add_generation_prompt=True, return_dict=False))
        return self.tokenizer(prompt)["input_ids"]

    def split_names(self) -> list[str]:
        return list(self._splits)

    def items(self, split: str) -> list[Item]:
        return list(self._split(split).items)

    def generate(self, model: Any, split: str) -> list[str]:
        return self._generate(
            model,
            self.tokenizer,
            self._split(split).batches,
            max_new_tokens=self.max_new_tokens,
            stop_strings=self.stop_strings,
        )

    def score_items(self, model: Any, split: str) -> dict[str, list[float]]:
        return self.item_scores(self.generate(model, split), split)

    def score(self, model: Any, split: str) -> dict[str, float | int]:
        return mean_scores(self.score_items(model, split))

    def item_scores(self, outputs: Sequence[str], split: str) -> dict[str, list[float]]:
        records = self.records(outputs, split)
        return {"acc": [float(r["correct"]) for r in records],
                "acc_ja": [float(r["correct"] and r["japanese"]) for r in records]}

    def score_outputs(self, outputs: Sequence[str], split: str) -> dict[str, float | int]:
        return mean_scores(self.item_scores(outputs, split))

    def records(self, outputs: Sequence[str], split: str) -> list[dict[str, Any]]:
        data = self._split(split)
        if len(outputs) != len(data.items):
            raise ValueError(f"split {split!r} has {len(data.items)} items but got {len(outputs)} outputs")
        records = []
        for (question, answer), gold, output in zip(data.items, data.golds, outputs):
            prediction = self.predict(output)
            ja = self._ja_probability(output)
            records.append({
                "question": question,
                "answer": answer,
                "output": output,
                "prediction": None if prediction is None else str(prediction),
                "correct": prediction is not None and prediction == gold,
                "ja_probability": ja,
                "japanese": ja > JA_THRESHOLD,
            })
        return records

    def _split(self, split: str) -> _Split:
        if split not in self._splits:
            raise ValueError(f"unknown split {split!r}; known: {', '.join(self._splits)}")
        return self._splits[split]
