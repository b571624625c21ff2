"""Generative objectives: prompt -> generated output -> judged answer, scored per split.

An objective is built once per study: it loads every split, checks that the splits share no
problem, tokenizes the prompts and plans the generation batches, and loads the language
detector. Per trial, `score(model, split)` only runs the model (hot-path rule: no data or
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

This is evo_core's objective contract (evo_core/_objective.py) for generated text. Metrics, per
item: acc = 1 if the prediction equals the gold answer; acc_ja = 1 if right AND Japanese (P(ja) >
0.5, see _language.py). Their means are the aggregate scores; `default_fitness` ("acc_ja", the
paper's) is what a search maximises unless the config names another metric (objective.fitness).
An objective with a second way to judge an output ("mgsm_ja": the paper's released extraction,
paper_acc / paper_acc_ja) adds its record fields in `judge` and its metrics in `accuracy_fields`.

decoding={"num_beams": 5, "repetition_penalty": 1.5} (`objective.decoding`) decodes as HF
`generate` does with those settings (the paper's VQA decoding); the default is greedy. The backend
(`generation_backend`, objective.options) follows it unless chosen: fast_greedy for greedy,
hf_generate otherwise; a greedy-only backend chosen with other decoding is refused (_generation.py).

chat_template=True wraps each filled prompt in the tokenizer's own chat template (one user turn,
generation prompt added): instruction-tuned models expect it; the paper's raw templates do not.

A registered objective subclasses GenerativeObjective and says only how to read a gold answer
(`parse_gold`) and an output (`predict`); an output is right when its prediction equals the gold.
Graded metrics (ROUGE-L) override `item_scores` and `records` instead (see _vqa.py).

Items are (question, answer) pairs, or dicts {"question", "answer", "image"} for visual QA. Image
items need the processor of a vision-language model (the lifecycle gives it): each prompt is
tokenized with its image placeholder expanded and the image turned into pixels once, at
construction. The image features (vision tower + projector) are computed on the first score of a
split and reused by every later trial while the model's vision weights are unchanged: a merge only
writes the language model, so a study runs the vision tower once per split, not once per trial.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import torch

from evo_core import OBJECTIVES, Metric, atomic_write_text, language_model_params, mean_scores

from ._data import Item, check_disjoint, load_split
from ._generation import Batch, Decoding, GenerationWork, decoding_backend, pad_token_id, plan_batches
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
    prompt_ids: list[list[int]]  # each item's tokenized prompt: a subset's batches are planned from them
    pixels: list[dict[str, torch.Tensor]] | None = None  # per item: the processor's image inputs


def item_fields(item: Item | Mapping[str, Any]) -> tuple[str, str, Any]:
    """(question, answer, image or None) of a text item (a pair) or a visual-QA item (a dict)."""
    if isinstance(item, Mapping):
        return item["question"], item["answer"], item.get("image")
    question, answer = item
    return question, answer, None


class GenerativeObjective:
    metrics: ClassVar[tuple[Metric, ...]] = (Metric("acc"), Metric("acc_ja"))
    # accuracy metric -> the record field saying an output is right; each metric X in it scores
    # X (right) and X_ja (right AND Japanese). A subclass with a second judgement (the paper's
    # extraction) adds its field here and in `judge`, and both metrics to `metrics`.
    accuracy_fields: ClassVar[Mapping[str, str]] = {"acc": "correct"}
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
        # greedy unless objective.decoding says otherwise; the backend, unless chosen, follows it
        self.decoding = Decoding.parse(decoding)
        self._generate = decoding_backend(generation_backend, self.decoding)
        self.tokenizer = tokenizer
        self._ja_probability = load_detector(language_detector)

        items = {name: load_split(name, spec) for name, spec in splits.items()}
        if not allow_overlap:
            check_disjoint(items)
        self.processor = processor
        self._splits = {}
        self._features: dict[str, tuple[Any, list[torch.Tensor]]] = {}  # split -> (vision state, per item)
        self._last_outputs: dict[str, list[str]] = {}  # split -> the outputs its last score judged
        self._subset_batches: dict[tuple[str, tuple[int, ...]], list[Batch]] = {}  # racing's blocks, planned once
        self._batch_size = batch_size
        self._pad = pad_token_id(tokenizer)
        self.last_work: dict[str, int] = {}  # the tokens the last generate spent (GenerationWork)
        for name, split_items in items.items():
            golds = []
            for i, item in enumerate(split_items):
                try:
                    golds.append(self.parse_gold(item_fields(item)[1]))
                except ValueError as err:
                    raise ValueError(f"split {name!r} item {i}: {err}") from None
            fields = [item_fields(item) for item in split_items]
            if any(image is not None for _, _, image in fields):
                prompt_ids, pixels = self._image_prompts(name, fields)
            else:
                prompt_ids, pixels = [self.prompt_ids(q) for q, _, _ in fields], None
            self._splits[name] = _Split(split_items, golds, plan_batches(prompt_ids, pad_id=self._pad,
                                                                         batch_size=batch_size), prompt_ids, pixels)

    # -- what a registered objective defines ------------------------------------------------
    def parse_gold(self, answer: str) -> Any:
        """The gold answer as compared with predictions; ValueError if it cannot be one."""
        raise NotImplementedError

    def predict(self, output: str) -> Any | None:
        """The answer an output gives, or None if it gives none."""
        raise NotImplementedError

    def judge(self, output: str, gold: Any) -> dict[str, Any]:
        """The record fields judging one output: its prediction and whether it is right (the
        fields `accuracy_fields` names)."""
        prediction = self.predict(output)
        return {"prediction": None if prediction is None else str(prediction),
                "correct": prediction is not None and prediction == gold}

    # -- public API --------------------------------------------------------------------------
    def prompt_ids(self, question: str) -> list[int]:
        """The token ids the model is prompted with for one question."""
        prompt = fill(self.prompt_template, question)
        if self.chat_template:
            return list(self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=True,
                                                           add_generation_prompt=True, return_dict=False))
        return self.tokenizer(prompt)["input_ids"]

    def _image_prompts(self, split: str, fields: list[tuple[str, str, Any]]) -> tuple[list[list[int]], list[dict]]:
        """Token ids (image placeholder expanded) and pixel inputs of visual-QA items, once."""
        if self.processor is None or not hasattr(self.processor, "image_processor"):
            raise ValueError(f"split {split!r} has images but the prompting model has no image processor: "
                             f"visual QA needs a vision-language model among the pool's sources")
        image_token = getattr(self.processor, "image_token", "<image>")
        if image_token not in self.prompt_template:
            raise ValueError(f"prompt template {self.prompt_template!r} has no {image_token!r}: the image would "
                             f"not reach the model; put {image_token!r} where the image goes")
        prompt_ids, pixels = [], []
        for i, (question, _, image) in enumerate(fields):
            if image is None:
                raise ValueError(f"split {split!r} item {i} has no image, unlike the split's other items")
            encoded = self.processor(images=[image], text=[fill(self.prompt_template, question)], return_tensors="pt")
            prompt_ids.append(encoded["input_ids"][0].tolist())
            pixels.append({k: v for k, v in encoded.items() if k not in ("input_ids", "attention_mask")})
        return prompt_ids, pixels

    def split_names(self) -> list[str]:
        return list(self._splits)

    def items(self, split: str) -> list[Item]:
        return list(self._split(split).items)

    def n_items(self, split: str) -> int:
        return len(self._split(split).items)

    def generate(self, model: Any, split: str, items: Sequence[int] | None = None) -> list[str]:
        """The outputs for the split's items (or for `items`, indices into it, in that order)."""
        data = self._split(split)
        batches = data.batches if items is None else self._batches_of(split, items)
        if data.pixels is not None:
            features = self.image_features(model, split)
            index = list(range(len(data.items))) if items is None else list(items)  # batch row -> split item
            batches = [dataclasses.replace(b, image_features=torch.cat([features[index[i]] for i in b.indices]))
                       for b in batches]
        work = GenerationWork()
        outputs = self._generate(model, self.tokenizer, batches, max_new_tokens=self.max_new_tokens,
                                 stop_strings=self.stop_strings, work=work)
        self.last_work = dataclasses.asdict(work)
        return outputs

    @torch.inference_mode()
    def image_features(self, model: Any, split: str) -> list[torch.Tensor]:
        """Each item's image features (tokens x hidden) as `model` sees them: computed on the
        first call, then reused while the model's vision weights (all but its language model) are
        the same tensors, unmodified (their in-place version counters are part of the key)."""
        llm = {id(p) for p in language_model_params(model).values()}
        state = (id(model), tuple((p.data_ptr(), p._version) for p in model.parameters() if id(p) not in llm))
        cached = self._features.get(split)
        if cached is not None and cached[0] == state:
            return cached[1]
        features = [_image_tokens(model, pixels) for pixels in self._split(split).pixels]
        self._features[split] = (state, features)
        return features

    def _batches_of(self, split: str, items: Sequence[int]) -> list[Batch]:
        """The batches of a subset of a split's items, planned from their prompts as tokenized at
        construction; planned once per subset (racing scores the same blocks in every trial)."""
        key = (split, tuple(items))
        if key not in self._subset_batches:
            data = self._split(split)
            bad = [i for i in items if not 0 <= i < len(data.items)]
            if bad or not items or len(set(items)) != len(items):
                raise ValueError(f"items for split {split!r} must be distinct indices in 0..{len(data.items) - 1}; "
                                 f"got {len(items)} with {bad[:3] or 'repeats or none'}")
            self._subset_batches[key] = plan_batches([data.prompt_ids[i] for i in items], pad_id=self._pad,
                                                     batch_size=self._batch_size)
        return self._subset_batches[key]

    def score_items(self, model: Any, split: str, items: Sequence[int] | None = None) -> dict[str, list[float]]:
        """Per metric, per item: of the whole split, or of `items` (indices into it, in that order)."""
        outputs = self.generate(model, split, items)
        if items is None:  # the samples written at the end are a whole split's
            self._last_outputs[split] = outputs
        return self.item_scores(outputs, split, items)

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

    def item_scores(self, outputs: Sequence[str], split: str,
                    items: Sequence[int] | None = None) -> dict[str, list[float]]:
        records = self.records(outputs, split, items)
        scores = {}
        for metric, field in self.accuracy_fields.items():
            scores[metric] = [float(r[field]) for r in records]
            scores[f"{metric}_ja"] = [float(r[field] and r["japanese"]) for r in records]
        return scores

    def score_outputs(self, outputs: Sequence[str], split: str) -> dict[str, float | int]:
        return mean_scores(self.item_scores(outputs, split))

    def records(self, outputs: Sequence[str], split: str, items: Sequence[int] | None = None) -> list[dict[str, Any]]:
        """Per output, its item's judgement; `items`: the outputs are of those items of the split."""
        data = self._split(split)
        index = range(len(data.items)) if items is None else items
        if len(outputs) != len(index):
            raise ValueError(f"split {split!r} has {len(index)} items but got {len(outputs)} outputs")
        records = []
        for i, output in zip(index, outputs):
            item, gold = data.items[i], data.golds[i]
            question, answer, _ = item_fields(item)
            ja = self._ja_probability(output)
            records.append({
                "question": question,
                "answer": answer,
                "output": output,
                **self.judge(output, gold),
                "ja_probability": ja,
                "japanese": ja > JA_THRESHOLD,
            })
        return records

    def _split(self, split: str) -> _Split:
        if split not in self._splits:
            raise ValueError(f"unknown split {split!r}; known: {', '.join(self._splits)}")
        return self._splits[split]


def _image_tokens(model: Any, pixels: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """One image's features as the language model takes them: (image tokens, hidden)."""
    param = next(model.parameters())
    inputs = {k: v.to(param.device, param.dtype if v.is_floating_point() else v.dtype) for k, v in pixels.items()}
    out = model.get_image_features(**inputs)
    # transformers 5 returns a model output whose pooler_output holds the projected features (a
    # tensor, or a list per image); older releases return them directly
    features = getattr(out, "pooler_output", out)
    if isinstance(features, (list, tuple)):
        features = torch.cat([f.reshape(-1, f.shape[-1]) for f in features])
    return features.reshape(-1, features.shape[-1])
