"""Generative objectives: prompt -> generated output -> judged answer, scored per split.

An objective is three parts, built once per study: the prepared splits (_prepared.py: every split
loaded, checked to share no problem, its prompts tokenized and planned into batches), a Generator
(_generator.py: backend, decoding, generation settings, image-feature cache) and a Judge
(_judges.py: per-item scores and records from outputs, with the language detector). Per trial, `score(model, split)` only runs the model (hot-path rule: no data or
tokenizer work inside a trial).

    obj = objectives.build("mgsm_ja", tokenizer=tok,
                           splits={"search": {"source": "zoo", "task": "ja_math", "split": "search"},
                                   "test": {"source": "tsv", "path": "mgsm_ja.tsv"}},
                           prompt_template="Q: {question}\\nA:", max_new_tokens=48,
                           stop_strings=["\\n\\n"], batch_size=16)
    obj.score_items(model, "search")     # {"acc": [1.0, 0.0, ...], "acc_ja": [1.0, 0.0, ...], "paper_acc": ...}
    obj.score(model, "search")           # their means: {"acc": 0.4, "acc_ja": 0.35, ..., "n": 250}
    obj.score_outputs(texts, "test")     # the same metrics for given outputs
    obj.records(texts, "test")           # per-item dicts, for logging

This is evo_core's objective contract (evo_core/_objective.py) for generated text, with every
optional member (n_items, aggregate, last_work, write_samples). Its keyword options are the
generation settings (`objective.options` in a config; defaults in conf/objective/*.yaml). Metrics
of the default judge (AnswerJudge), per item: acc = 1 if the prediction equals the gold answer; acc_ja = 1 if right AND Japanese (P(ja) >
0.5, see _language.py). Their means are the aggregate scores; `default_fitness` ("acc_ja", the
paper's) is what a search maximises unless the config names another metric (objective.fitness).
A judge with a second way to judge an output (NumericJudge, "mgsm_ja": the paper's released
extraction, paper_acc / paper_acc_ja) adds its record fields in `judge` and its metrics in
`accuracy_fields`.

decoding={"num_beams": 5, "repetition_penalty": 1.5} (`objective.options.decoding`) decodes as HF
`generate` does with those settings (the paper's VQA decoding); the default is greedy. The backend
(`generation_backend`, objective.options) follows it unless chosen: fast_greedy for greedy,
hf_generate otherwise; a greedy-only backend chosen with other decoding is refused (_generation.py).

chat_template=True wraps each filled prompt in the tokenizer's own chat template (one user turn,
generation prompt added): instruction-tuned models expect it; the paper's raw templates do not.

A registered objective subclasses GenerativeObjective and says only how to read a gold answer
(`parse_gold`) and an output (`predict`): an output is right when its prediction equals the gold.
Or it returns its own judge from `make_judge`: NumericJudge (mgsm_ja), AnswerJudge with a regex
(answer_match), VQAJudge (graded ROUGE-L, ja_vqa: _vqa.py).

Items are (question, answer) pairs, or dicts {"question", "answer", "image"} for visual QA. Image
items need the processor of a vision-language model (the lifecycle gives it): each prompt is
tokenized with its image placeholder expanded and the image turned into pixels once, at
construction. The image features (Generator) (vision tower + projector) are computed on the first score of a
split and reused by every later trial while the model's vision weights are unchanged: a merge only
writes the language model, so a study runs the vision tower once per split, not once per trial.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import torch

from evo_core import OBJECTIVES, Metric, ObjectiveDefaults, atomic_write_text, mean_scores

from ._data import Item, check_disjoint, load_split
from ._generator import Generator
from ._judges import AnswerJudge, Judge
from ._language import language_detector as load_detector
from ._likelihood import reference_logprobs
from ._prepared import PreparedSplit, Prompts, item_fields, prepare_split
from ._prompts import resolve_template

register = OBJECTIVES.register
get = OBJECTIVES.get
names = OBJECTIVES.names


def build(name: str, **kwargs: Any) -> "GenerativeObjective":
    return get(name)(**kwargs)


class GenerativeObjective(ObjectiveDefaults):
    """Prepared splits (_prepared.py), a Generator (_generator.py) and a Judge (_judges.py), built
    once; the objective contract on top of them (module docstring)."""

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
        generation_backend: str | None = None,
        decoding: Mapping[str, Any] | None = None,
        processor: Any = None,
        reference_template: str = " {answer}",
    ):
        # cheap argument checks first, before any data is read
        if not splits:
            raise ValueError("splits must name at least one split, e.g. {'search': spec, 'test': spec}")
        if chat_template and not getattr(tokenizer, "chat_template", None):
            raise ValueError("objective.options.chat_template=true but the tokenizer has no chat template")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if "{answer}" not in reference_template:
            raise ValueError(f"reference_template {reference_template!r} must contain {{answer}}")
        self.reference_template = reference_template
        self.generator = Generator(
            tokenizer=tokenizer, max_new_tokens=self.default_max_new_tokens if max_new_tokens is None else max_new_tokens,
            stop_strings=self.default_stop_strings if stop_strings is None else stop_strings, decoding=decoding,
            backend=generation_backend)
        self.prompts = Prompts(tokenizer=tokenizer, template=resolve_template(prompt_template or self.default_prompt_template),
                               chat_template=chat_template, processor=processor)
        self.tokenizer, self.processor = tokenizer, processor
        self.judge = self.make_judge(load_detector(language_detector))

        items = {name: load_split(name, spec) for name, spec in splits.items()}
        if not allow_overlap:
            check_disjoint(items)
        self._splits = {name: prepare_split(name, split_items, prompts=self.prompts, parse_gold=self.judge.parse_gold,
                                            batch_size=batch_size) for name, split_items in items.items()}
        for name, split in self._splits.items():
            self.judge.prepare(name, split.golds)
        # the likelihood fidelity's reference answers, tokenized once (hot-path rule)
        self._references = {name: [self._reference_ids(item_fields(item)[1]) for item in split.items]
                            for name, split in self._splits.items()}
        self.likelihood_work: dict[str, int] = {}  # what the last likelihood_items spent
        self._last_outputs: dict[str, list[str]] = {}  # split -> the outputs its last score judged

    # -- what a registered objective defines ------------------------------------------------
    def make_judge(self, ja_probability: Callable[[str], float]) -> Judge:
        """The judge of this objective's outputs (_judges.py). The default: right when `predict`
        of the output equals `parse_gold` of the answer (acc, acc_ja)."""
        return AnswerJudge(parse_gold=self.parse_gold, predict=self.predict, ja_probability=ja_probability)

    def parse_gold(self, answer: str) -> Any:
        """The gold answer as compared with predictions; ValueError if it cannot be one."""
        raise NotImplementedError

    def predict(self, output: str) -> Any | None:
        """The answer an output gives, or None if it gives none."""
        raise NotImplementedError

    # -- public API --------------------------------------------------------------------------
    @property
    def metrics(self) -> tuple[Metric, ...]:
        return self.judge.metrics

    @property
    def last_work(self) -> dict[str, int]:
        return self.generator.last_work

    # the generation settings, as the generator and the prompts hold them
    max_new_tokens = property(lambda self: self.generator.max_new_tokens)
    stop_strings = property(lambda self: self.generator.stop_strings)
    decoding = property(lambda self: self.generator.decoding)
    prompt_template = property(lambda self: self.prompts.template)
    chat_template = property(lambda self: self.prompts.chat_template)

    def prompt_ids(self, question: str) -> list[int]:
        """The token ids the model is prompted with for one question."""
        return self.prompts.ids(question)

    def split_names(self) -> list[str]:
        return list(self._splits)

    def items(self, split: str) -> list[Item]:
        return list(self._split(split).items)

    def n_items(self, split: str) -> int:
        return len(self._split(split).items)

    def generate(self, model: Any, split: str, items: Sequence[int] | None = None) -> list[str]:
        """The outputs for the split's items (or for `items`, indices into it, in that order)."""
        return self.generator.generate(model, self._split(split), items)

    def image_features(self, model: Any, split: str) -> list[torch.Tensor]:
        """Each item's image features as `model` sees them, computed once while its vision weights stay."""
        return self.generator.image_features(model, self._split(split))

    def score_items(self, model: Any, split: str, items: Sequence[int] | None = None) -> dict[str, list[float]]:
        """Per metric, per item: of the whole split, or of `items` (indices into it, in that order)."""
        outputs = self.generate(model, split, items)
        if items is None:  # the samples written at the end are a whole split's
            self._last_outputs[split] = outputs
        return self.item_scores(outputs, split, items)

    def likelihood_items(self, model: Any, split: str, items: Sequence[int] | None = None) -> list[float]:
        """Per item (of the split, or `items`, in that order): the mean log-probability per token of
        its reference answer(s) (`reference_template` filled with the item's answer; a list of
        answers: their mean) after its prompt, teacher-forced, prefill only (_likelihood.py)."""
        data = self._split(split)
        index = data.index(items)
        if items is not None:
            data.subset_batches(items)  # the same checks of the indices as a generated subset's
        features = self.image_features(model, split) if data.pixels is not None else None
        values, self.likelihood_work = reference_logprobs(
            model, self.tokenizer, contexts=[data.prompt_ids[i] for i in index],
            references=[self._references[split][i] for i in index], batch_size=data.batch_size,
            image_features=None if features is None else [features[i] for i in index])
        self.generator.last_work = dict(self.likelihood_work)  # last_work: what the last scoring spent, either way
        return values

    def _reference_ids(self, answer: Any) -> list[list[int]]:
        answers = answer if isinstance(answer, (list, tuple)) else [answer]
        return [self.tokenizer(self.reference_template.replace("{answer}", str(a)), add_special_tokens=False)["input_ids"]
                for a in answers]

    def write_samples(self, split: str, out_dir: str | Path, *, n: int = 24) -> list[Path]:
        """The last scored outputs of `split` (at the end of a study: the best merge's on the test
        split), as `samples.jsonl` records of the first `n` items, each item's image beside it as a
        PNG. The lifecycle logs them as MLflow artifacts."""
        outputs = self._last_outputs.get(split)
        if outputs is None:
            return []
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        files, lines = [], []
        for i, (item, record) in enumerate(zip(self.items(split)[:n], self.records(outputs, split)[:n])):
            image = item_fields(item)[2]
            if image is not None:
                files.append(out / f"{split}_{i:03d}.png")
                image.save(files[-1])
                record = {"image": files[-1].name, **record}
            lines.append(json.dumps(record, ensure_ascii=False, default=str))
        files.insert(0, out / "samples.jsonl")
        atomic_write_text(files[0], "\n".join(lines) + "\n")
        return files

    def score(self, model: Any, split: str) -> dict[str, float | int]:
        return mean_scores(self.score_items(model, split))

    def aggregate(self, item_scores: Mapping[str, Sequence[float]]) -> dict[str, float]:
        """A whole split's metrics from its per-item scores, plus n: as the judge aggregates."""
        return self.judge.aggregate(item_scores)

    def item_scores(self, outputs: Sequence[str], split: str,
                    items: Sequence[int] | None = None) -> dict[str, list[float]]:
        data = self._checked(outputs, split, items)
        return self.judge.item_scores(split, outputs, data.golds, items)

    def score_outputs(self, outputs: Sequence[str], split: str) -> dict[str, float | int]:
        return mean_scores(self.item_scores(outputs, split))

    def records(self, outputs: Sequence[str], split: str, items: Sequence[int] | None = None) -> list[dict[str, Any]]:
        """Per output, its item's judgement; `items`: the outputs are of those items of the split."""
        data = self._checked(outputs, split, items)
        fields = self.judge.fields(split, outputs, data.golds, items)
        return [{"question": item_fields(data.items[i])[0], "answer": item_fields(data.items[i])[1], "output": output,
                 **judged} for i, output, judged in zip(data.index(items), outputs, fields)]

    def _checked(self, outputs: Sequence[str], split: str, items: Sequence[int] | None) -> PreparedSplit:
        data = self._split(split)
        if len(outputs) != len(data.index(items)):
            raise ValueError(f"split {split!r} has {len(data.index(items))} items but got {len(outputs)} outputs")
        return data

    def _split(self, split: str) -> PreparedSplit:
        if split not in self._splits:
            raise ValueError(f"unknown split {split!r}; known: {', '.join(self._splits)}")
        return self._splits[split]
