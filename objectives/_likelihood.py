"""The likelihood fidelity: how likely the live model finds the reference answer(s), prefill only.

    logprobs, work = reference_logprobs(model, tokenizer, contexts=[[...prompt ids], ...],
                                        references=[[[...answer ids]], ...], batch_size=64)
    logprobs[i]   # item i: the mean log-probability per token of its reference(s), averaged over them
    work          # {"likelihood_tokens": positions run through the model, "likelihood_answer_tokens": ...}

No generation: one teacher-forced forward over prompt + reference per item, through lm-eval's
LiveModelLM (_lm_eval_model.py), so the batching is the one multiple choice already uses: requests
grouped by the context they share, contexts sorted by length before they are batched, and a batch
closed before its padding passes MAX_PADDING of its positions (so the cost is the prompts' and
answers' own tokens, within that share, however their lengths spread), a
context shared by several references run once (packed with a 4-D mask, or from copies of its KV
cache). Image items pass their image features (Generator.image_features: computed once per split
while the vision weights stay) in place of the image tokens' embeddings.

The value is a mean per token (not a sum) so that items with long and short answers weigh alike,
and an item with several references (a list of answers) averages them.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ._lm_eval_model import LiveModelLM

MAX_PADDING = 0.1  # a batch closes before padding passes this share of its positions


def reference_logprobs(model: Any, tokenizer: Any, *, contexts: Sequence[Sequence[int]],
                       references: Sequence[Sequence[Sequence[int]]], batch_size: int,
                       image_features: Sequence[torch.Tensor] | None = None) -> tuple[list[float], dict[str, int]]:
    """Per item, the mean log-probability per token of its references after its context (module
    docstring), and the work: positions the model ran (padding included) and answer tokens."""
    if len(contexts) != len(references):
        raise ValueError(f"{len(contexts)} contexts but {len(references)} reference lists")
    requests, owners = [], []
    for i, (context, refs) in enumerate(zip(contexts, references)):
        if not refs or not all(refs) or not context:
            raise ValueError(f"item {i} needs a non-empty prompt and at least one non-empty reference")
        for ref in refs:
            requests.append((None, list(context), list(ref)))
            owners.append(i)
    lm = LiveModelLM(model=model, tokenizer=tokenizer, batch_size=batch_size,
                     max_length=max(len(c) + len(r) for _, c, r in requests), max_padding=MAX_PADDING)
    counted = _ForwardCounter(model)
    with counted:
        results = lm._loglikelihood_tokens(requests, image_features=None if image_features is None else
                                           [image_features[i] for i in owners])
    sums = [0.0] * len(contexts)
    for (logprob, _), (_, _, ref), i in zip(results, requests, owners):
        sums[i] += logprob / len(ref)
    values = [total / len(refs) for total, refs in zip(sums, references)]
    return values, {"likelihood_tokens": counted.positions,
                    "likelihood_answer_tokens": sum(len(r) for _, _, r in requests)}


class _ForwardCounter:
    """Counts the token positions (rows x columns, padding included) the model's forwards run."""

    def __init__(self, model: Any):
        self.model, self.positions, self.handle = model, 0, None

    def __enter__(self) -> "_ForwardCounter":
        def count(_: Any, args: tuple, kwargs: dict) -> None:
            x = kwargs.get("input_ids")
            x = kwargs.get("inputs_embeds") if x is None else x
            self.positions += int(x.shape[0] * x.shape[1])

        self.handle = self.model.register_forward_pre_hook(count, with_kwargs=True)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.handle.remove()
