"""An lm-eval `LM` over a live in-memory model: lm-eval tasks scored on the pool's merge as it is.

    lm = LiveModelLM(model=model, tokenizer=tokenizer, batch_size=32)
    results = lm_eval.simple_evaluate(model=lm, tasks=["my_task"], task_manager=..., log_samples=True)

No reload and no copy to disk: every call runs the model object it was given, so weights the pool
writes into it between trials are what the next call scores. Nothing that depends on the weights
(logits, KV caches) is kept from one call to the next.

Semantics are lm-eval's HF backend's (`lm_eval.models.huggingface.HFLM`, lm-eval 0.4.13), decoder-
only models; tests/objectives/test_lm_eval_model.py holds them equal per item on the zoo and on a
tiny GPT-2 with a byte-level BPE tokenizer:
  - tokens: lm-eval's TemplateLM splits (context, continuation) (trailing spaces of the context
    move to the continuation; the continuation's tokens are those of context+continuation after
    the context's own token count; an empty context is the prefix token: BOS, else EOS), and
    `tok_encode` follows HFLM's (the tokenizer's own special tokens unless `add_bos_token` says,
    none for a string that already starts with the prefix token's text);
  - loglikelihood: the model reads (context + continuation)[-(max_length + 1):][:-1] (left
    truncation) and the continuation's log-probabilities (log_softmax in the logits' dtype) are
    summed; is_greedy: every continuation token is the argmax at its position;
  - loglikelihood_rolling: lm-eval's rolling windows of max_length tokens (prefix token first,
    disjoint windows), summed per document;
  - generate_until: contexts left-truncated to max_length - max_gen_toks, generation until a stop
    string of `until` (plus the EOS token's text) or max_gen_toks tokens, the text cut before the
    first stop string. The generation runs through the project's backends (GENERATION_BACKENDS,
    `generation_backend`; _generation.py): greedy (do_sample false) or, with num_beams or
    repetition_penalty in the task's generation_kwargs, hf_generate. Sampling is refused.
Tolerance, fp32: |log-likelihood - HFLM's| <= 1e-4 + 1e-5 x |HFLM's| per request (float rounding:
the context runs apart from its continuations and the matmuls' shapes differ; measured at most
1.4e-5 on the zoo bench's 800 requests; 1.0e-4 to 1.2e-4 at -30.9 on a request whose doubled
space is a very unlikely token),
is_greedy flags and generated texts equal.

Faster multiple choice: the choices of an item share their context. Requests are grouped by the
exact tokens the model reads before the continuation (after truncation); each group's context runs
once, with the tokens all its continuations start with (its prefill), and each continuation's
rest reads it once: choices equal but for their last token share one segment, as HFLM's
logits_cache shares their forwards. The grouping key is the token prefix itself, so sharing is
exact by construction: HFLM, too, feeds context tokens + continuation tokens (not the tokens of
the joined string, which may merge across the boundary). Where left truncation cuts into a
context, each continuation length gets its own truncated prefix, so such requests share only with
choices of the same length, or run alone. Two ways to run a batch of groups:
  - packed (where `reads_choice_mask`: HF llama/mistral/qwen2/qwen3/gpt2 with sdpa or eager
    attention and no sliding window shorter than max_length): one forward, a row per group: its
    prefill then its segments one after the other, each segment positioned right after the
    prefill and seeing the prefill and itself only (a 4-D additive mask, which HF's
    create_causal_mask passes through as given). No KV copies, no padding between choices;
  - from KV copies (any other model): the prefills batched (left-padded, the last positions'
    logits only), the context's KV cache copied once per segment (`Cache.reorder_cache`), all
    segments of the batch in a second forward from those caches.
bench/lm_eval_choice.py measures the gain (docs/benchmarks.md). The model is called as
model(input_ids=, attention_mask=, position_ids=, <cache>=, use_cache=) and, for the KV copies, must
return an HF Cache with reorder_cache (what _generation.py's loop needs, plus that); the tests run
HF Qwen3 (sdpa, eager) and GPT-2 both ways, not the DFS layer-path models (model_type layer_path:
the KV copies; their DynamicCache has reorder_cache).

Not supported (refused in one line): sampling (do_sample true), generation_kwargs other than
until, max_gen_toks and its aliases, num_beams, repetition_penalty and sampling-only settings;
batch_size "auto". Seq2seq models and thinking tokens (HFLM's think_end_token) are not handled.
"""
from __future__ import annotations

import json
from collections import defaultdict
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from lm_eval.api.model import TemplateLM
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text, resolve_max_length
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from ._generation import (CACHE_ARG, Decoding, GenerationWork, _accepts_logits_to_keep, _device, _embed_with_images,
                          decoding_backend, pad_token_id, plan_batches)

DEFAULT_MAX_GEN_TOKS = 256  # HFLM's
# generation_kwargs that only matter when sampling: with do_sample false HF generate ignores them too
SAMPLING_ONLY_KWARGS = frozenset({"temperature", "top_p", "top_k", "min_p", "typical_p"})
DECODING_KWARGS = frozenset(Decoding.__dataclass_fields__)
# HF families whose forward passes a 4-D attention mask through create_causal_mask to sdpa/eager
# attention unchanged and takes positions from position_ids (rotary or learned: no position bias
# computed from the mask); the packed choices are tested on qwen3 and gpt2
PACKED_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "gpt2"})


class LiveModelLM(TemplateLM):
    """lm-eval's LM interface over `model` (an in-memory causal LM, used as it is) and `tokenizer`.

    batch_size: log-likelihood requests (context + continuation pairs) per batch, a forward of their
    distinct contexts then one of their continuations (a batch holds whole items: at least one
    item's choices); prompts per batch for generation.
    max_length: the model's window, by default from its config as HFLM resolves it.
    max_gen_toks: generate_until's limit when a task gives none (HFLM's 256).
    generation_backend, decoding: the project's generation backend (None: fast_greedy for greedy
    decoding) and objectives' Decoding, as for the generative objectives; a task's own num_beams /
    repetition_penalty override `decoding`.
    add_bos_token, prefix_token_id: HFLM's options of the same names.
    pack_choices: score an item's choices in its context's row with a 4-D mask (one forward per
    batch, no KV copies); None (default): where the model reads such a mask as given
    (reads_choice_mask), else from copies of the context's KV cache; False: always the latter.
    max_padding: None (default): batches of batch_size requests; a share (0.1): a batch also closes
    before its padding would pass that share of its positions (rows are sorted by length, so the
    cost stays the tokens' own: the likelihood fidelity's rows differ in length, _likelihood.py).
    """

    def __init__(self, *, model: Any, tokenizer: Any, batch_size: int = 32, max_length: int | None = None,
                 max_gen_toks: int = DEFAULT_MAX_GEN_TOKS, generation_backend: str | None = None,
                 decoding: Mapping[str, Any] | Decoding | None = None, add_bos_token: bool | None = None,
                 prefix_token_id: int | None = None, pack_choices: bool | None = None,
                 max_padding: float | None = None) -> None:
        super().__init__()
        for name, value in (("batch_size", batch_size), ("max_gen_toks", max_gen_toks), ("max_length", max_length)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"LiveModelLM {name} must be an integer >= 1, got {value!r}")
        if tokenizer.eos_token_id is None:
            raise ValueError("LiveModelLM needs a tokenizer with an EOS token (lm-eval's end-of-text and prefix token)")
        self.model = model
        self.tokenizer = tokenizer
        self._batch_size = batch_size
        self._max_length = max_length
        self._max_gen_toks = max_gen_toks
        self.decoding = Decoding.parse(decoding)
        self.generation_backend = generation_backend
        decoding_backend(generation_backend, self.decoding)  # refuses an unknown backend or a mismatch now
        self.max_padding = max_padding
        self.add_bos_token = add_bos_token
        self.custom_prefix_token_id = prefix_token_id
        self.generation_work = GenerationWork()  # what generate_until spent, summed over calls
        self._device = _device(model)
        self._logits_to_keep = _accepts_logits_to_keep(model)
        self._dtype = getattr(model, "dtype", torch.float32)
        packable = reads_choice_mask(model, self.max_length)
        if pack_choices and not packable:
            raise ValueError(f"LiveModelLM pack_choices=true needs a model that reads a 4-D attention mask as given "
                             f"(model_type {', '.join(sorted(PACKED_MODEL_TYPES))}; sdpa or eager attention; no sliding "
                             f"window shorter than max_length); got {_describe(model)}")
        self._packs = packable if pack_choices is None else pack_choices

    # -- what lm-eval reads --------------------------------------------------------------------

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        if self.custom_prefix_token_id is not None:
            return self.custom_prefix_token_id
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.tokenizer.eos_token_id

    @property
    def max_length(self) -> int:
        return self._max_length or resolve_max_length(self.model.config, self.tokenizer)

    @property
    def max_gen_toks(self) -> int:
        return self._max_gen_toks

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer.name_or_path.replace("/", "__")

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(chat_history, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt,
                                                  continue_final_message=not add_generation_prompt)

    def get_model_info(self) -> dict:
        return {"model_num_parameters": sum(p.numel() for p in self.model.parameters()),
                "model_dtype": str(getattr(self.model, "dtype", ""))}

    # -- tokens --------------------------------------------------------------------------------

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, left_truncate_len: int | None = None,
                   **kwargs: Any) -> list[int]:
        ids = self._encode_all([string], add_special_tokens)[0]
        return ids[-left_truncate_len:] if left_truncate_len else ids

    def _encode_all(self, strings: Sequence[str], add_special_tokens: bool | None = None) -> list[list[int]]:
        """tok_encode of each string (HFLM's rule for special tokens), one tokenizer call per rule
        (a batch call: per-string calls were a fifth of a multiple-choice run on the zoo)."""
        prefix_text = self.tokenizer.decode(self.prefix_token_id)
        by_rule: dict[bool | None, list[int]] = defaultdict(list)
        for i, string in enumerate(strings):
            special = add_special_tokens if add_special_tokens is not None else self.add_bos_token
            # a string that already starts with the prefix token's text gets no second one
            if add_special_tokens is None and string.startswith(prefix_text):
                special = False
            by_rule[special].append(i)
        encoded: list[list[int]] = [[] for _ in strings]
        for special, indices in by_rule.items():
            kwargs = {} if special is None else {"add_special_tokens": special}
            for i, ids in zip(indices, self.tokenizer([strings[i] for i in indices], **kwargs)["input_ids"]):
                encoded[i] = list(ids)
        return encoded

    def _prompt_ids(self, context: str, left_truncate_len: int) -> list[int]:
        # generation prompts, as HFLM's batch encoding: BOS text at the start means no special tokens
        # (HFLM looks at the first prompt of its batch only; here each prompt is looked at)
        bos = getattr(self.tokenizer, "bos_token", None)
        special = False if bos is not None and context.startswith(bos) else self.add_bos_token
        ids = self.tokenizer(context, **({} if special is None else {"add_special_tokens": special}))["input_ids"]
        return ids[-left_truncate_len:]

    # -- log-likelihoods -----------------------------------------------------------------------

    def loglikelihood(self, requests: list, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """TemplateLM's tokenization (module docstring, token_pairs), then the model."""
        pairs = self.token_pairs([request.args for request in requests])
        return self._loglikelihood_tokens([(request.args, context, continuation)
                                           for request, (context, continuation) in zip(requests, pairs)],
                                          disable_tqdm=disable_tqdm)

    def token_pairs(self, strings: Sequence[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
        """(context ids, continuation ids) of (context, continuation) strings as TemplateLM splits
        them (module docstring), each distinct string encoded once."""
        pairs: list[tuple[str | None, str]] = []  # (None: an empty context, continuation)
        for context, continuation in strings:
            # trailing spaces of the context belong to the continuation (word-boundary tokens)
            kept = context.rstrip()
            pairs.append((kept, context[len(kept):] + continuation) if context else (None, continuation))
        texts = sorted({text for c, k in pairs if c is not None for text in (c, c + k)})
        ids = dict(zip(texts, self._encode_all(texts)))
        empty_context = sorted({k for c, k in pairs if c is None})
        bare = dict(zip(empty_context, self._encode_all(empty_context, add_special_tokens=False)))
        out = []
        for context, continuation in pairs:
            if context is not None:
                context_ids = ids[context]
                continuation_ids = ids[context + continuation][len(context_ids):]
            else:  # the prefix token is the context, unless the continuation starts with it
                whole = bare[continuation]
                context_ids, continuation_ids = (([self.prefix_token_id], whole) if whole[0] != self.prefix_token_id
                                                 else (whole[:1], whole[1:]))
            out.append((context_ids, continuation_ids))
        return out

    def _loglikelihood_tokens(self, requests: list[tuple[tuple[str, str] | None, list[int], list[int]]],
                              disable_tqdm: bool = False, image_features: Sequence[torch.Tensor] | None = None,
                              **kwargs: Any) -> list[tuple[float, bool]]:
        """image_features (the likelihood fidelity of visual QA, objectives/_likelihood.py): per
        request, the features of the image its context shows (one row per image token of the
        context); such a request is its own group (equal tokens, another image)."""
        window = self.max_length
        # context tokens the model reads (and, with images, the request whose image they show) -> requests
        groups: dict[tuple[tuple[int, ...], int], list[int]] = defaultdict(list)
        for i, (_, context, continuation) in enumerate(requests):
            if not context or not continuation:
                raise ValueError(f"loglikelihood request {i} has an empty context or continuation after tokenization")
            if len(continuation) > window:
                raise ValueError(f"loglikelihood request {i}: a continuation of {len(continuation)} tokens does not fit "
                                 f"the model's max_length {window}")
            read = (context + continuation)[-(window + 1):]  # HFLM's left truncation
            groups[(tuple(read[:-len(continuation)]), -1 if image_features is None else i)].append(i)
        # longest contexts first (padding within a batch stays small; memory trouble shows at once)
        order = sorted(groups, key=lambda key: (-len(key[0]), key))
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        batch: list[tuple[tuple[int, ...], list[int]]] = []
        rows, width, real = 0, 0, 0  # the batch's requests, its longest row, its rows' own tokens
        for key in order:
            members = groups[key]
            length = len(key[0]) + max(len(requests[i][2]) for i in members)
            # with max_padding, a batch also closes before padding would pass that share of its positions
            padded = (rows + len(members)) * max(width, length)
            if batch and (rows + len(members) > self.batch_size or (
                    self.max_padding is not None and padded - real - len(members) * length > self.max_padding * padded)):
                self._score_batch(batch, requests, results, image_features)
                batch, rows, width, real = [], 0, 0, 0
            batch.append((key[0], members))
            rows, width, real = rows + len(members), max(width, length), real + len(members) * length
        if batch:
            self._score_batch(batch, requests, results, image_features)
        for (strings, _, _), answer in zip(requests, results):
            if strings is not None:  # rolling windows come without strings; their documents are cached whole
                self.cache_hook.add_partial("loglikelihood", strings, answer)
        return results  # type: ignore[return-value]

    @torch.inference_mode()
    def _score_batch(self, batch: list[tuple[tuple[int, ...], list[int]]], requests: list, results: list,
                     image_features: Sequence[torch.Tensor] | None = None) -> None:
        """Each context of `batch` once, with the tokens all its continuations start with (but for
        each one's last), and the rest of every continuation after it: packed in the context's row
        (one forward) where the model reads a 4-D mask, else from a copy of the context's KV cache."""
        # common[g]: how many first continuation tokens all requests of context g share (" " + choice
        # in lm-eval's multiple choice: at least the delimiter with a character tokenizer)
        common = [_shared_start([requests[i][2] for i in group]) for _, group in batch]
        prefills = [list(prefix) + requests[group[0]][2][:k] for (prefix, group), k in zip(batch, common)]
        members = [(g, i) for g, (_, group) in enumerate(batch) for i in group]
        continuations = [requests[i][2] for _, i in members]
        # the rest each request reads after its prefill: all but its shared start and its last token;
        # requests of a context that differ in their last token only read the same rest: one segment
        # for them (HFLM's logits_cache shares whole forwards so)
        segments: dict[tuple[int, tuple[int, ...]], int] = {}
        segment_of = [segments.setdefault((g, tuple(c[common[g]:-1])), len(segments))
                      for (g, _), c in zip(members, continuations)]
        forward = self._packed_forward if self._packs else self._cached_forward
        features = None if image_features is None else [image_features[group[0]] for _, group in batch]
        pool, prefill_end, segment_start = forward(prefills, common, list(segments), features)

        # where each continuation token's logits are in `pool`: the prefill's last common + 1 positions,
        # then its segment's positions
        # (lists, one tensor each: a few small tensor ops per request were a tenth of the scoring's time)
        longest = max(map(len, continuations))
        where, targets = [], []
        for r, ((g, _), c) in enumerate(zip(members, continuations)):
            k, start, fill = common[g], segment_start[segment_of[r]], longest - len(c)
            where += [*range(prefill_end[g] - k, prefill_end[g] + 1), *range(start, start + len(c) - k - 1)] + [0] * fill
            targets += c + [0] * fill
        device = self._device
        where = torch.tensor(where, dtype=torch.long).view(len(members), longest).to(device)
        targets = torch.tensor(targets, dtype=torch.long).view(len(members), longest).to(device)
        real = torch.arange(longest, device=device)[None] < torch.tensor(list(map(len, continuations)), device=device)[:, None]
        logprobs = F.log_softmax(pool[where], dim=-1)  # in the logits' dtype, as HFLM
        picked = logprobs.gather(2, targets[..., None])[..., 0].masked_fill(~real, 0).sum(-1)
        greedy = ((logprobs.argmax(-1) == targets) | ~real).all(-1)
        for (_, i), logprob, is_greedy in zip(members, picked.tolist(), greedy.tolist()):
            results[i] = (logprob, is_greedy)

    def _packed_forward(self, prefills: list[list[int]], common: list[int], segments: list[tuple[int, tuple[int, ...]]],
                        features: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, list[int], list[int]]:
        """One row per context: [padding] prefill, then its segments one after the other, each
        segment attending to the prefill and to itself only (a 4-D mask) and positioned right
        after the prefill, as if it ran alone from the prefill's cache. Returns the logits of every
        row's last positions that predict anything (rows x kept, flattened) and, in that pool, the
        index of each prefill's last position and of each segment's first."""
        device = self._device
        own: list[list[int]] = [[] for _ in prefills]  # each context's segments
        for s, (g, _) in enumerate(segments):
            own[g].append(s)
        lengths = [len(p) + sum(len(segments[s][1]) for s in mine) for p, mine in zip(prefills, own)]
        width = max(lengths)
        # the positions whose logits are read: each prefill's last ones and all segments (a suffix of its row)
        keep = max(n - len(p) + k + 1 for p, k, n in zip(prefills, common, lengths))
        keep = width if not self._logits_to_keep else min(width, keep)
        tokens, kinds, positions = [], [], []
        prefill_end, segment_start = [], [0] * len(segments)
        pad = pad_token_id(self.tokenizer)
        for g, (prefill, mine, length) in enumerate(zip(prefills, own, lengths)):
            start = width - length  # left padding: every row's last position is the row's end
            tokens += [pad] * start + prefill
            kinds += [-1] * start + [0] * len(prefill)
            positions += [1] * start + list(range(len(prefill)))
            prefill_end.append(g * keep + start + len(prefill) - 1 - (width - keep))
            at = start + len(prefill)
            for number, s in enumerate(mine, start=1):
                ids = segments[s][1]
                segment_start[s] = g * keep + at - (width - keep)
                tokens += ids
                kinds += [number] * len(ids)
                positions += range(len(prefill), len(prefill) + len(ids))
                at += len(ids)
        rows = len(prefills)
        input_ids = torch.tensor(tokens, dtype=torch.long).view(rows, width).to(device)
        kind = torch.tensor(kinds).view(rows, width).to(device)
        position_ids = torch.tensor(positions, dtype=torch.long).view(rows, width).to(device)
        index = torch.arange(width, device=device)
        key_kind, query_kind = kind[:, None, :], kind[:, :, None]
        sees = ((index[None, :, None] >= index[None, None, :]) & (key_kind >= 0)
                & ((key_kind == 0) | (key_kind == query_kind)))
        sees |= torch.eye(width, dtype=torch.bool, device=device)  # padding sees itself: no row of the softmax is empty
        # additive (0 / lowest), which both sdpa and eager attention take as given
        dtype = self._dtype
        mask = torch.zeros((rows, 1, width, width), dtype=dtype, device=device).masked_fill(
            ~sees[:, None], torch.finfo(dtype).min)
        logits = self.model(**self._inputs(input_ids, features), attention_mask=mask, position_ids=position_ids,
                            use_cache=False, **({"logits_to_keep": keep} if self._logits_to_keep else {})).logits
        return logits[:, -keep:].reshape(-1, logits.shape[-1]), prefill_end, segment_start

    def _cached_forward(self, prefills: list[list[int]], common: list[int], segments: list[tuple[int, tuple[int, ...]]],
                        features: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, list[int], list[int]]:
        """The prefills batched (left-padded, their last common + 1 positions' logits kept), then
        every segment as a row of a second forward from a copy of its prefill's KV cache
        (`Cache.reorder_cache`). Returns what _packed_forward returns."""
        device, pad = self._device, pad_token_id(self.tokenizer)
        width, keep = max(map(len, prefills)), max(common) + 1
        input_ids = torch.full((len(prefills), width), pad, dtype=torch.long)
        context_mask = torch.zeros((len(prefills), width), dtype=torch.long)
        for g, ids in enumerate(prefills):
            input_ids[g, width - len(ids):] = torch.tensor(ids)
            context_mask[g, width - len(ids):] = 1
        input_ids, context_mask = input_ids.to(device), context_mask.to(device)
        out = self.model(**self._inputs(input_ids, features), attention_mask=context_mask,
                         position_ids=_positions(context_mask), use_cache=True,
                         **({"logits_to_keep": keep} if self._logits_to_keep else {}))
        # the last `keep` positions of each prefill (left-padded: aligned), those that predict continuation tokens
        prefill_logits = out.logits[:, -keep:]
        vocab = prefill_logits.shape[-1]
        pool = [prefill_logits.reshape(-1, vocab)]
        prefill_end = [g * keep + keep - 1 for g in range(len(prefills))]
        rest = max(len(ids) for _, ids in segments)
        segment_start = [len(prefills) * keep + s * rest for s in range(len(segments))]
        if rest:
            row_context = torch.tensor([g for g, _ in segments], device=device)
            cache = getattr(out, CACHE_ARG)
            cache.reorder_cache(row_context)  # a copy of its context's keys and values per row
            cont_ids = torch.full((len(segments), rest), pad, dtype=torch.long)
            cont_mask = torch.zeros((len(segments), rest), dtype=torch.long)
            for r, (_, ids) in enumerate(segments):
                cont_ids[r, :len(ids)] = torch.tensor(ids, dtype=torch.long)
                cont_mask[r, :len(ids)] = 1
            cont_ids, cont_mask = cont_ids.to(device), cont_mask.to(device)
            # a row's padding is masked, at position 1 (counting on could pass the model's window)
            positions = (context_mask.sum(-1)[row_context][:, None]
                         + torch.arange(rest, device=device)[None]).masked_fill(cont_mask == 0, 1)
            later = self.model(input_ids=cont_ids, position_ids=positions, use_cache=True, **{CACHE_ARG: cache},
                               attention_mask=torch.cat([context_mask[row_context], cont_mask], dim=1)).logits
            pool.append(later.reshape(-1, vocab))
        return torch.cat(pool), prefill_end, segment_start

    def _inputs(self, input_ids: torch.Tensor, features: list[torch.Tensor] | None) -> dict[str, torch.Tensor]:
        """The first forward's token inputs: the ids, or (contexts showing images) their embeddings
        with the image tokens' rows replaced by the features, row after row (as generation does)."""
        if features is None:
            return {"input_ids": input_ids}
        return {"inputs_embeds": _embed_with_images(self.model, input_ids, torch.cat(features))}

    def loglikelihood_rolling(self, requests: list, disable_tqdm: bool = False) -> list[float]:
        windows, owners = [], []
        for d, request in enumerate(requests):
            (string,) = request.args
            for context, continuation in map(make_disjoint_window, get_rolling_token_windows(
                    token_list=self.tok_encode(string), prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length, context_len=1)):
                windows.append((None, context, continuation))
                owners.append(d)
        totals = [0.0] * len(requests)
        for d, (logprob, _) in zip(owners, self._loglikelihood_tokens(windows)):
            totals[d] += logprob
        for request, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, total)
        return totals

    # -- generation ----------------------------------------------------------------------------

    def generate_until(self, requests: list, disable_tqdm: bool = False) -> list[str]:
        outputs: list[str | None] = [None] * len(requests)
        by_kwargs: dict[str, list[int]] = defaultdict(list)
        for i, request in enumerate(requests):
            by_kwargs[json.dumps(request.args[1], sort_keys=True, default=str)].append(i)
        eos_text = self.tokenizer.decode(self.eot_token_id, skip_special_tokens=False)
        for indices in by_kwargs.values():
            gen_kwargs = requests[indices[0]].args[1]
            task = requests[indices[0]].task_name
            kwargs = dict(normalize_gen_kwargs(gen_kwargs, self.max_gen_toks))
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos_text)
            max_gen_toks = kwargs.pop("max_gen_toks")
            backend = self._backend(kwargs, task)
            max_context = self.max_length - max_gen_toks
            if max_context < 1:
                raise ValueError(f"task {task}: max_gen_toks {max_gen_toks} leaves no room for a prompt in the model's "
                                 f"max_length {self.max_length}")
            contexts = [requests[i].args[0] for i in indices]
            batches = plan_batches([self._prompt_ids(c, max_context) for c in contexts],
                                   pad_id=pad_token_id(self.tokenizer), batch_size=self.batch_size)
            texts = backend(self.model, self.tokenizer, batches, max_new_tokens=max_gen_toks, stop_strings=until,
                            work=self.generation_work)
            for i, context, text in zip(indices, contexts, texts):
                outputs[i] = postprocess_generated_text(text, until, None)
                self.cache_hook.add_partial("generate_until", (context, gen_kwargs), outputs[i])
        return outputs  # type: ignore[return-value]

    def _backend(self, kwargs: dict[str, Any], task: str | None) -> Any:
        """The generation backend for a task's normalised generation_kwargs (until and max_gen_toks
        taken out): greedy, or beams/repetition penalty through Decoding; sampling is refused."""
        if kwargs.pop("do_sample", False):
            raise ValueError(f"task {task}: generation_kwargs do_sample=true; LiveModelLM decodes greedily or with "
                             f"beams (the project's generation backends), set do_sample: false")
        decoding = {k: kwargs.pop(k) for k in list(kwargs) if k in DECODING_KWARGS}
        unknown = sorted(set(kwargs) - SAMPLING_ONLY_KWARGS)
        if unknown:
            raise ValueError(f"task {task}: generation_kwargs {', '.join(unknown)} not supported by LiveModelLM; "
                             f"known: until, max_gen_toks, do_sample, {', '.join(sorted(DECODING_KWARGS))}")
        chosen = Decoding.parse({**self.decoding.__dict__, **decoding}) if decoding else self.decoding
        return decoding_backend(self.generation_backend, chosen)


def reads_choice_mask(model: Any, max_length: int) -> bool:
    """Whether `model` takes a 4-D additive attention mask as given, as the packed choices need:
    an HF family whose mask builder (create_causal_mask) passes a 4-D mask through and whose
    attention adds it (sdpa, eager; flash and flex attention take no such mask), with no sliding
    window shorter than the model's window (a 4-D mask replaces the sliding one)."""
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) not in PACKED_MODEL_TYPES:
        return False
    if getattr(config, "_attn_implementation", None) not in ("sdpa", "eager"):
        return False
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None)
    sliding = window is not None and (layer_types is None or "sliding_attention" in layer_types)
    return not sliding or window >= max_length


def _describe(model: Any) -> str:
    config = getattr(model, "config", None)
    return (f"model_type {getattr(config, 'model_type', None)!r}, attention "
            f"{getattr(config, '_attn_implementation', None)!r}, sliding_window {getattr(config, 'sliding_window', None)!r}")


def _shared_start(sequences: list[list[int]]) -> int:
    """How many first tokens all `sequences` share, leaving each at least its last one."""
    limit = min(map(len, sequences)) - 1
    n = 0
    while n < limit and all(s[n] == sequences[0][n] for s in sequences):
        n += 1
    return n


def _positions(mask: torch.Tensor) -> torch.Tensor:
    # HF's convention: positions count real tokens; padding gets a dummy position (masked anyway)
    return (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)

