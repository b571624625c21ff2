"""Batched greedy generation for any model with the HF causal-LM forward signature.

    outputs = greedy_generate(model, tokenizer, ["Q: 1+1\\nA:", "Q: 2+3\\nA:"],
                              max_new_tokens=48, stop_strings=["\\n"], batch_size=16)

    # or plan the batches once (at objective construction) and run them per trial:
    batches = plan_batches(prompt_ids, pad_id=tokenizer.pad_token_id, batch_size=16)
    outputs = run_batches(model, tokenizer, batches, max_new_tokens=48, stop_strings=["\\n"])

Generation backends: `GENERATION_BACKENDS` maps a name to a function with run_batches' signature,
`backend(model, tokenizer, batches, *, max_new_tokens, stop_strings, work=None) -> list[str]`
(greedy, outputs in prompt order, cut before the first stop string); given a `GenerationWork`, a
backend adds what it spent to it (prompt, generated and forward tokens: the study records them
per trial, so cheaper-fitness schemes are judged on work done, not on seconds). Picked with
`objective.options.generation_backend`:
  - "hf_greedy": the loop below, for any model with the forward described next;
  - "fast_greedy" (_fast_generation.py, the objectives' default): the same outputs token for
    token, with a preallocated KV cache, ended rows dropped and prefill grouped by length, for
    Llama/Mistral/Qwen2/Qwen3; it runs this loop for every other model;
  - "hf_generate" (end of this module): each planned batch through the model's own HF
    `generate(do_sample=False, num_beams=, repetition_penalty=)`; the one backend for decoding
    other than greedy (below). Any HF model (and the DFS layer-path models, which have generate).
`run_each_batch`, `take_token` and `output_text` are the frame every backend shares.

Decoding (`objective.options.decoding`, `Decoding`): greedy by default; {num_beams: 5,
repetition_penalty: 1.5} is the paper's EvoVLM-JP evaluation. The backend follows it unless
`generation_backend` is set: fast_greedy for greedy, hf_generate for anything else; a greedy-only
backend (hf_greedy, fast_greedy) set explicitly with other decoding is refused in one line
when the objective is built, before any data is read (`decoding_backend`). hf_generate's outputs
are generate()'s token for token (tests/objectives/test_beam_generation.py): the batch as
planned, left-padded, positions from the attention mask, EOS ids as below, pad = the tokenizer's
pad (else EOS), max_new_tokens; the model's generation_config gives every other setting
(length_penalty, early_stopping), as generate does in the paper's code. Semantics that differ
from greedy's:
  - stop strings go to generate (`stop_strings=`, with the tokenizer): a beam whose text ends
    with one (possibly inside its newest token) is a finished hypothesis, as at an EOS, and the
    best hypothesis may be another beam; the output is then cut before the first stop string.
    Not the same as beam search without stop strings cut afterwards (the test shows one case);
  - image batches: generate gets input_ids (for the repetition penalty, which counts prompt
    tokens too, image tokens included, as generate with pixel values does) and inputs_embeds
    built as in the loop below;
  - `work`: forward tokens are counted by a forward pre-hook on every call generate makes, so
    all rows x num_beams sequences, finished beams included; generated tokens are those of the
    returned hypothesis (its EOS included). With 1 beam and a repetition penalty, a row that
    ended at a stop string counts one token more when pad is an EOS id (HF pads it with pad);
  - batch_size counts prompts: a batch runs batch_size x num_beams sequences.
In half precision generate's own outputs depend on the batch (padding width; on the tiny LLaVA,
fp16, 1 of 5 items differed between one batch and one at a time): hf_generate equals generate on
the same batches, which are planned by prompt length here, not in dataset order.

The model is only called as model(input_ids=, attention_mask=, position_ids=, <cache>=,
use_cache=True) (for a batch with image features, the first call passes inputs_embeds= instead:
the token embeddings with the image tokens' rows replaced by the features, as LLaVA's own forward
does with pixel values) and must return .logits and .<cache>, where <cache> is the installed transformers'
name for the KV cache (`CACHE_ARG`: `cache` from 5.24 on, `past_key_values` before); with None on
the first call the model builds its own cache, e.g. an HF DynamicCache. So the same loop drives HF models
and the data-flow (layer-path) models. Not HF `generate`: that one is tied to HF model classes.

Semantics (equal to HF `generate(do_sample=False)`): prompts are left-padded, positions come
from the attention mask, the next token is the argmax. A row ends at an EOS token (not part of
the output) or when its text contains a stop string (the output is cut before the first stop
string, as vLLM does in the paper's evaluation of EvoLLM-JP); the batch ends when every row has ended.
Prompts are sorted by length (longest first, so memory trouble shows in the first batch) and the
outputs come back in the original order.
"""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
from transformers.modeling_outputs import CausalLMOutputWithPast

from evo_core import Registry, report_progress

# transformers 5.24 renamed `past_key_values` to `cache` (argument and output field); the old name
# still works there but warns, and goes in 5.40
CACHE_ARG = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"

GENERATION_BACKENDS: Registry[Callable[..., list[str]]] = Registry("generation backend")


@dataclass
class GenerationWork:
    """Token counts of generation, summed over calls: `prompt_tokens` (real prompt tokens, no
    padding), `generated_tokens` (tokens kept in outputs, plus each row's ending EOS), and
    `forward_tokens` (every token position the model ran, padding and finished rows included:
    what the FLOPs follow)."""

    prompt_tokens: int = 0
    generated_tokens: int = 0
    forward_tokens: int = 0

    def add(self, other: GenerationWork) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.generated_tokens += other.generated_tokens
        self.forward_tokens += other.forward_tokens


@dataclass(frozen=True)
class Batch:
    indices: list[int]  # positions of these rows in the caller's prompt list
    input_ids: torch.Tensor  # (rows, width), left-padded
    attention_mask: torch.Tensor  # (rows, width), 0 on padding
    # visual QA: the rows' image features, row after row, one per image token of input_ids
    # (model.config.image_token_id); they replace those tokens' embeddings in the first forward
    image_features: torch.Tensor | None = None


def plan_batches(prompt_ids: Sequence[Sequence[int]], *, pad_id: int, batch_size: int) -> list[Batch]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if any(len(ids) == 0 for ids in prompt_ids):
        raise ValueError("a prompt tokenized to 0 tokens")
    order = sorted(range(len(prompt_ids)), key=lambda i: -len(prompt_ids[i]))
    batches = []
    for start in range(0, len(order), batch_size):
        indices = order[start:start + batch_size]
        width = len(prompt_ids[indices[0]])
        input_ids = torch.full((len(indices), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(indices), width), dtype=torch.long)
        for row, i in enumerate(indices):
            ids = prompt_ids[i]
            input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, width - len(ids):] = 1
        batches.append(Batch(indices, input_ids, attention_mask))
    return batches


def greedy_generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str] | Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    stop_strings: Sequence[str] = (),
    batch_size: int = 8,
    work: GenerationWork | None = None,
) -> list[str]:
    """Greedy continuations of `prompts` (texts, or token-id lists used as they are)."""
    if prompts and isinstance(prompts[0], str):
        prompt_ids = tokenizer(list(prompts))["input_ids"]
    else:
        prompt_ids = [list(p) for p in prompts]
    batches = plan_batches(prompt_ids, pad_id=pad_token_id(tokenizer), batch_size=batch_size)
    return run_batches(model, tokenizer, batches, max_new_tokens=max_new_tokens, stop_strings=stop_strings,
                       work=work)


def pad_token_id(tokenizer: Any) -> int:
    # Many causal-LM tokenizers have no pad token; padding is masked out, so EOS serves.
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ValueError("tokenizer has neither a pad nor an eos token")
    return pad


@GENERATION_BACKENDS.register("hf_greedy")
def run_batches(
    model: Any,
    tokenizer: Any,
    batches: Sequence[Batch],
    *,
    max_new_tokens: int,
    stop_strings: Sequence[str] = (),
    work: GenerationWork | None = None,
) -> list[str]:
    return run_each_batch(_generate_batch, model, tokenizer, batches, max_new_tokens=max_new_tokens,
                          stop_strings=stop_strings, work=work)


def run_each_batch(generate_batch: Callable[..., list[str]], model: Any, tokenizer: Any, batches: Sequence[Batch],
                   *, max_new_tokens: int, stop_strings: Sequence[str] = (),
                   work: GenerationWork | None = None) -> list[str]:
    """A backend's common frame: checks, EOS ids, then `generate_batch(model, tokenizer, batch,
    max_new_tokens, stop_strings, eos_ids, work)` per batch, outputs put back in prompt order."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    assert not getattr(model, "training", False), "generate with model.eval(): dropout would change outputs"
    eos_ids = _eos_ids(model, tokenizer)
    outputs: dict[int, str] = {}
    total = sum(len(batch.indices) for batch in batches)
    for batch in batches:
        texts = generate_batch(model, tokenizer, batch, max_new_tokens, tuple(stop_strings), eos_ids,
                               work if work is not None else GenerationWork())
        outputs.update(zip(batch.indices, texts))
        report_progress(len(outputs), total)  # the lifecycle's lines while a long test split is scored
    return [outputs[i] for i in range(len(outputs))]


def _eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    ids = {tokenizer.eos_token_id}
    # instruction-tuned models often end turns with an extra token listed in generation_config
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(config_eos if isinstance(config_eos, (list, tuple)) else [config_eos])
    return frozenset(i for i in ids if i is not None)


def _device(model: Any) -> torch.device:
    param = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
    return param.device if param is not None else torch.device("cpu")


def _accepts_logits_to_keep(model: Any) -> bool:
    # HF models can skip the LM head on all but the last position: without it the prefill of a
    # 7B model with a 150k vocabulary materialises batch x prompt x vocab logits (gigabytes).
    try:
        return "logits_to_keep" in inspect.signature(model.forward).parameters
    except (AttributeError, TypeError, ValueError):
        return False


def take_token(generated: list[int], token: int, tokenizer: Any, stop_strings: tuple[str, ...],
               eos_ids: frozenset[int], work: GenerationWork) -> bool:
    """Record a live row's next token in its `generated` ids; True if the row ends with it (an EOS,
    which is not kept, or a stop string completed)."""
    work.generated_tokens += 1
    if token in eos_ids:
        return True
    generated.append(token)
    return bool(stop_strings) and any(s in tokenizer.decode(generated[-_stop_window(stop_strings):])
                                      for s in stop_strings)


def _stop_window(stop_strings: tuple[str, ...]) -> int:
    # Tokens to decode when checking for a stop string that the newest token may complete: a
    # token carries at least one UTF-8 byte, so 4 tokens per character always cover the string;
    # the margin absorbs decoders that drop a leading space at the start of the window.
    return 4 * max(len(s) for s in stop_strings) + 8


@torch.inference_mode()
def _generate_batch(
    model: Any,
    tokenizer: Any,
    batch: Batch,
    max_new_tokens: int,
    stop_strings: tuple[str, ...],
    eos_ids: frozenset[int],
    work: GenerationWork,
) -> list[str]:
    device = _device(model)
    input_ids = batch.input_ids.to(device)
    attention_mask = batch.attention_mask.to(device)
    # HF's convention: positions count real tokens; padding gets a dummy position (masked anyway)
    position_ids = (attention_mask.cumsum(-1) - 1).masked_fill(attention_mask == 0, 1)
    extra = {"logits_to_keep": 1} if _accepts_logits_to_keep(model) else {}
    pad = pad_token_id(tokenizer)

    rows = input_ids.shape[0]
    generated: list[list[int]] = [[] for _ in range(rows)]
    done = [False] * rows
    past = None
    inputs = {"input_ids": input_ids}
    if batch.image_features is not None:
        inputs = {"inputs_embeds": _embed_with_images(model, input_ids, batch.image_features)}
    work.prompt_tokens += int(attention_mask.sum())
    for _ in range(max_new_tokens):
        work.forward_tokens += attention_mask.shape[0] * (input_ids.shape[1] if past is None else 1)
        out = model(
            **inputs,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=True,
            **{CACHE_ARG: past},
            **extra,
        )
        past = getattr(out, CACHE_ARG)
        next_tokens = out.logits[:, -1, :].argmax(dim=-1)
        for row, token in enumerate(next_tokens.tolist()):
            if not done[row]:
                done[row] = take_token(generated[row], token, tokenizer, stop_strings, eos_ids, work)
        if all(done):
            break
        # finished rows keep stepping (their tokens are ignored) so the cache stays rectangular
        finished = torch.tensor(done, device=device)
        inputs = {"input_ids": next_tokens.masked_fill(finished, pad)[:, None]}
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones((rows, 1))], dim=-1)
        position_ids = position_ids[:, -1:] + 1
    return [output_text(tokenizer, ids, stop_strings) for ids in generated]


def output_text(tokenizer: Any, ids: list[int], stop_strings: tuple[str, ...]) -> str:
    """A row's output: its kept tokens decoded, cut before the first stop string."""
    return _cut(tokenizer.decode(ids, skip_special_tokens=True), stop_strings)


def _embed_with_images(model: Any, input_ids: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    embeds = model.get_input_embeddings()(input_ids)
    is_image = input_ids == model.config.image_token_id
    assert int(is_image.sum()) == features.shape[0], (
        f"{int(is_image.sum())} image tokens in the prompts but {features.shape[0]} image features")
    return embeds.masked_scatter(is_image[..., None], features.to(embeds.device, embeds.dtype))


def _cut(text: str, stop_strings: tuple[str, ...]) -> str:
    cut = min((i for i in (text.find(s) for s in stop_strings) if i >= 0), default=len(text))
    return text[:cut]


# -- decoding other than greedy: HF generate -------------------------------------------------

@dataclass(frozen=True)
class Decoding:
    """How the next token is chosen (`objective.options.decoding`): HF generate's `num_beams` and
    `repetition_penalty`, with do_sample=False. The default (1 beam, penalty 1.0) is greedy, what
    every backend does; anything else needs a backend in `DECODING_BACKENDS`. The paper's EvoVLM-JP
    evaluation (SakanaAI/evolutionary-model-merge, configs/vlm/*.yaml) decodes with
    {num_beams: 5, repetition_penalty: 1.5}, do_sample false, max_new_tokens 512, fp16; its other
    generate settings (length_penalty, early_stopping) are the model's generation_config's, as here."""

    num_beams: int = 1
    repetition_penalty: float = 1.0

    @classmethod
    def parse(cls, spec: Mapping[str, Any] | Decoding | None) -> Decoding:
        """From a config mapping; a one-line ValueError on an unknown key or a bad value."""
        if spec is None or isinstance(spec, Decoding):
            return spec or cls()
        known = list(cls.__dataclass_fields__)
        unknown = sorted(set(spec) - set(known))
        if unknown:
            raise ValueError(f"objective.options.decoding has no key {', '.join(unknown)}; known: {', '.join(known)}")
        decoding = cls(**spec)
        beams, penalty = decoding.num_beams, decoding.repetition_penalty
        if isinstance(beams, bool) or not isinstance(beams, int) or beams < 1:
            raise ValueError(f"objective.options.decoding.num_beams must be an integer >= 1 (1: greedy); got {beams!r}")
        if isinstance(penalty, bool) or not isinstance(penalty, (int, float)) or not penalty > 0:
            raise ValueError(f"objective.options.decoding.repetition_penalty must be a number > 0 (1.0: none); got {penalty!r}")
        return cls(num_beams=beams, repetition_penalty=float(penalty))

    @property
    def greedy(self) -> bool:
        return self.num_beams == 1 and self.repetition_penalty == 1.0


# backends that take Decoding's fields as keywords; every other backend decodes greedily only
DECODING_BACKENDS = frozenset({"hf_generate"})


# Backends users ask for that no study can use yet, and why (refused in one line, not listed)
NOT_YET_BACKENDS = {
    "vllm": "a study merges each trial in memory, and nothing loads those weights into a vLLM engine yet (every "
            "trial would score the engine's own model); use fast_greedy or hf_generate",
}


def decoding_backend(name: str | None, decoding: Decoding) -> Callable[..., list[str]]:
    """The backend function an objective generates with, its decoding bound. `name` None (not
    chosen): fast_greedy for greedy decoding, hf_generate for any other; a chosen backend that
    decodes greedily only is refused for other decoding, in one line."""
    name = name or ("fast_greedy" if decoding.greedy else "hf_generate")
    if name in NOT_YET_BACKENDS:
        raise ValueError(f"generation backend {name!r} is not available: {NOT_YET_BACKENDS[name]}")
    backend = GENERATION_BACKENDS.get(name)
    if name in DECODING_BACKENDS:
        return functools.partial(backend, num_beams=decoding.num_beams, repetition_penalty=decoding.repetition_penalty)
    if not decoding.greedy:
        raise ValueError(f"generation backend {name!r} decodes greedily only; objective.options.decoding "
                         f"{{num_beams: {decoding.num_beams}, repetition_penalty: {decoding.repetition_penalty}}} "
                         f"needs {' or '.join(sorted(DECODING_BACKENDS))} (drop objective.options.generation_backend "
                         f"to get it)")
    return backend


@GENERATION_BACKENDS.register("hf_generate")
def hf_generate_batches(model: Any, tokenizer: Any, batches: Sequence[Batch], *, max_new_tokens: int,
                        stop_strings: Sequence[str] = (), work: GenerationWork | None = None, num_beams: int = 1,
                        repetition_penalty: float = 1.0) -> list[str]:
    """Each batch through the model's own HF `generate(do_sample=False, num_beams=,
    repetition_penalty=)` (the module docstring's "hf_generate")."""
    if not callable(getattr(model, "generate", None)):
        raise ValueError(f"the hf_generate backend (objective.options.decoding other than greedy) needs a model with HF "
                         f"generate; {type(model).__name__} has none")
    generate_batch = functools.partial(_hf_generate_batch, num_beams=num_beams, repetition_penalty=repetition_penalty)
    return run_each_batch(generate_batch, model, tokenizer, batches, max_new_tokens=max_new_tokens,
                          stop_strings=stop_strings, work=work)


@torch.inference_mode()
def _hf_generate_batch(model: Any, tokenizer: Any, batch: Batch, max_new_tokens: int, stop_strings: tuple[str, ...],
                       eos_ids: frozenset[int], work: GenerationWork, *, num_beams: int,
                       repetition_penalty: float) -> list[str]:
    device = _device(model)
    inputs = {"input_ids": batch.input_ids.to(device), "attention_mask": batch.attention_mask.to(device)}
    if batch.image_features is not None:
        # generate starts from these embeddings and keeps input_ids for the repetition penalty
        inputs["inputs_embeds"] = _embed_with_images(model, inputs["input_ids"], batch.image_features)
    # HF's stop-string criterion ends a beam (a finished hypothesis, as an EOS does) when its text
    # ends with a stop string, possibly inside its newest token; the output is then cut before it
    stops = {"stop_strings": list(stop_strings), "tokenizer": tokenizer} if stop_strings else {}
    work.prompt_tokens += int(batch.attention_mask.sum())

    def count_forward(module: Any, args: tuple, kwargs: dict) -> None:
        # every sequence generate runs (rows x beams, finished beams included), every position
        x = kwargs.get("inputs_embeds")
        x = kwargs.get("input_ids") if x is None else x
        work.forward_tokens += x.shape[0] * x.shape[1]

    hook = model.register_forward_pre_hook(count_forward, with_kwargs=True)
    try:
        out = model.generate(**inputs, do_sample=False, num_beams=num_beams, repetition_penalty=repetition_penalty,
                             max_new_tokens=max_new_tokens, eos_token_id=sorted(eos_ids),
                             pad_token_id=pad_token_id(tokenizer), num_return_sequences=1,  # one output per prompt
                             return_dict_in_generate=True, **stops)
    finally:
        hook.remove()
    width, pad = batch.input_ids.shape[1], pad_token_id(tokenizer)
    new = out.sequences[:, width:].tolist()
    beam_indices = getattr(out, "beam_indices", None)
    texts = []
    for row, ids in enumerate(new):
        if beam_indices is not None:  # the hypothesis' length: its steps, its ending EOS included
            ids = ids[:int((beam_indices[row] >= 0).sum())]
        else:  # 1 beam: up to the first EOS; a row that ended at a stop string is padded after it
            ids = ids[:next((i + 1 for i, t in enumerate(ids) if t in eos_ids), len(ids))]
            while ids and ids[-1] == pad and pad not in eos_ids:
                ids = ids[:-1]
        work.generated_tokens += len(ids)
        if ids and ids[-1] in eos_ids:
            ids = ids[:-1]
        texts.append(output_text(tokenizer, ids, stop_strings))
    return texts
