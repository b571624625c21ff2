"""Generation for a generative objective: the backend and decoding it runs, the generation
settings, the work it spent, and the image features it reuses across trials.

    generator = Generator(tokenizer=tok, max_new_tokens=48, stop_strings=["\\n"], decoding=None)
    outputs = generator.generate(model, prepared_split)            # the whole split
    outputs = generator.generate(model, prepared_split, [3, 7])    # a subset, in that order
    generator.last_work                                            # tokens the last call spent

Image features (vision tower + projector) are computed on the first generation of a split and
reused by every later trial while the model's vision weights are unchanged: a merge only writes the
language model, so a study runs the vision tower once per split, not once per trial.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from evo_core import language_model_params

from ._generation import Decoding, GenerationWork, decoding_backend
from ._prepared import PreparedSplit


class Generator:
    def __init__(self, *, tokenizer: Any, max_new_tokens: int, stop_strings: Sequence[str],
                 decoding: Mapping[str, Any] | Decoding | None = None, backend: str | None = None):
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if isinstance(stop_strings, str):
            raise ValueError(f"stop_strings must be a list of strings, got the string {stop_strings!r}")
        self.stop_strings = tuple(stop_strings)
        if "" in self.stop_strings:
            raise ValueError("stop_strings must not contain the empty string")
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        # greedy unless objective.options.decoding says otherwise; the backend, unless chosen, follows it
        self.decoding = Decoding.parse(decoding)
        self.backend = decoding_backend(backend, self.decoding)
        self.last_work: dict[str, int] = {}  # the tokens the last generate spent (GenerationWork)
        self.features: dict[str, tuple[Any, list[torch.Tensor]]] = {}  # split -> (vision state, per item)

    def generate(self, model: Any, split: PreparedSplit, items: Sequence[int] | None = None) -> list[str]:
        """The outputs for the split's items (or for `items`, indices into it, in that order)."""
        batches = split.batches if items is None else split.subset_batches(items)
        if split.pixels is not None:
            features = self.image_features(model, split)
            index = split.index(items)  # batch row -> split item
            batches = [dataclasses.replace(b, image_features=torch.cat([features[index[i]] for i in b.indices]))
                       for b in batches]
        work = GenerationWork()
        outputs = self.backend(model, self.tokenizer, batches, max_new_tokens=self.max_new_tokens,
                               stop_strings=self.stop_strings, work=work)
        self.last_work = dataclasses.asdict(work)
        return outputs

    @torch.inference_mode()
    def image_features(self, model: Any, split: PreparedSplit) -> list[torch.Tensor]:
        """Each item's image features (tokens x hidden) as `model` sees them: computed on the
        first call, then reused while the model's vision weights (all but its language model) are
        the same tensors, unmodified (their in-place version counters are part of the key)."""
        llm = {id(p) for p in language_model_params(model).values()}
        state = (id(model), tuple((p.data_ptr(), p._version) for p in model.parameters() if id(p) not in llm))
        cached = self.features.get(split.name)
        if cached is not None and cached[0] == state:
            return cached[1]
        features = [_image_tokens(model, pixels) for pixels in split.pixels]
        self.features[split.name] = (state, features)
        return features


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
