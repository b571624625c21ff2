"""A split as a generative objective scores it, built once per study: its items, their gold
answers, the tokenized prompts planned into batches, and (visual QA) each item's pixel inputs.

    prompts = Prompts(tokenizer=tok, template="Q: {question}\\nA:", chat_template=False, processor=None)
    split = prepare_split("search", items, prompts=prompts, parse_gold=judge.parse_gold, batch_size=16)
    split.batches                 # the whole split's generation batches
    split.subset_batches([3, 7])  # a subset's (racing's blocks), planned on first use and kept

Nothing here runs a model: a trial only generates from these batches (hot-path rule).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ._data import Item
from ._generation import Batch, pad_token_id, plan_batches
from ._prompts import fill


def item_fields(item: Item | Mapping[str, Any]) -> tuple[str, str, Any]:
    """(question, answer, image or None) of a text item (a pair) or a visual-QA item (a dict)."""
    if isinstance(item, Mapping):
        return item["question"], item["answer"], item.get("image")
    question, answer = item
    return question, answer, None


@dataclass(frozen=True)
class Prompts:
    """How a question becomes the token ids the model is prompted with."""

    tokenizer: Any
    template: str  # resolved (_prompts.resolve_template)
    chat_template: bool = False  # wrap the filled prompt in the tokenizer's chat template (one user turn)
    processor: Any = None  # a vision-language model's processor (image items)

    def ids(self, question: str) -> list[int]:
        """The token ids the model is prompted with for one question."""
        prompt = fill(self.template, question)
        if self.chat_template:
            return list(self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=True,
                                                           add_generation_prompt=True, return_dict=False))
        return self.tokenizer(prompt)["input_ids"]

    def image_ids(self, split: str, fields: list[tuple[str, str, Any]]) -> tuple[list[list[int]], list[dict]]:
        """Token ids (image placeholder expanded) and pixel inputs of visual-QA items."""
        if self.processor is None or not hasattr(self.processor, "image_processor"):
            raise ValueError(f"split {split!r} has images but the prompting model has no image processor: "
                             f"visual QA needs a vision-language model among the pool's sources")
        image_token = getattr(self.processor, "image_token", "<image>")
        if image_token not in self.template:
            raise ValueError(f"prompt template {self.template!r} has no {image_token!r}: the image would "
                             f"not reach the model; put {image_token!r} where the image goes")
        prompt_ids, pixels = [], []
        for i, (question, _, image) in enumerate(fields):
            if image is None:
                raise ValueError(f"split {split!r} item {i} has no image, unlike the split's other items")
            encoded = self.processor(images=[image], text=[fill(self.template, question)], return_tensors="pt")
            prompt_ids.append(encoded["input_ids"][0].tolist())
            pixels.append({k: v for k, v in encoded.items() if k not in ("input_ids", "attention_mask")})
        return prompt_ids, pixels


@dataclass(frozen=True)
class PreparedSplit:
    name: str
    items: list[Item]
    golds: list[Any]  # the judge's parse_gold of each item's answer
    batches: list[Batch]  # the tokenized prompts, padded and batched once
    prompt_ids: list[list[int]]  # each item's tokenized prompt: a subset's batches are planned from them
    pad_id: int
    batch_size: int
    pixels: list[dict[str, torch.Tensor]] | None = None  # per item: the processor's image inputs
    subsets: dict[tuple[int, ...], list[Batch]] = field(default_factory=dict)  # planned subsets, kept

    def subset_batches(self, items: Sequence[int]) -> list[Batch]:
        """The batches of a subset of the items, planned from their prompts as tokenized at
        construction; planned once per subset (racing scores the same blocks in every trial)."""
        key = tuple(items)
        if key not in self.subsets:
            bad = [i for i in items if not 0 <= i < len(self.items)]
            if bad or not items or len(set(items)) != len(items):
                raise ValueError(f"items for split {self.name!r} must be distinct indices in 0..{len(self.items) - 1}; "
                                 f"got {len(items)} with {bad[:3] or 'repeats or none'}")
            self.subsets[key] = plan_batches([self.prompt_ids[i] for i in items], pad_id=self.pad_id,
                                             batch_size=self.batch_size)
        return self.subsets[key]

    def index(self, items: Sequence[int] | None) -> Sequence[int]:
        """The split's item indices `items` stands for (None: all of them, in order)."""
        return range(len(self.items)) if items is None else items


def prepare_split(name: str, items: list[Item], *, prompts: Prompts, parse_gold: Callable[[str], Any],
                  batch_size: int) -> PreparedSplit:
    """A split's golds, prompts and batches (and pixels, for image items); a gold answer that cannot
    be one fails naming its item."""
    golds = []
    for i, item in enumerate(items):
        try:
            golds.append(parse_gold(item_fields(item)[1]))
        except ValueError as err:
            raise ValueError(f"split {name!r} item {i}: {err}") from None
    fields = [item_fields(item) for item in items]
    if any(image is not None for _, _, image in fields):
        prompt_ids, pixels = prompts.image_ids(name, fields)
    else:
        prompt_ids, pixels = [prompts.ids(q) for q, _, _ in fields], None
    pad = pad_token_id(prompts.tokenizer)
    return PreparedSplit(name, items, golds, plan_batches(prompt_ids, pad_id=pad, batch_size=batch_size), prompt_ids,
                         pad, batch_size, pixels)
