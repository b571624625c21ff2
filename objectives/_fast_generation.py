"""The "fast_greedy" generation backend: run_batches' semantics, at close to the compute floor.

    outputs = GENERATION_BACKENDS.get("fast_greedy")(model, tokenizer, batches, max_new_tokens=40,
                                                     stop_strings=["\\n"], work=work)

Same signature and `GenerationWork` accounting as "hf_greedy" (_generation.py). What holds, by dtype:
  - float32: token for token the same outputs as hf_greedy and HF `generate(do_sample=False)`
    (the tests: zoo models, 150 prompts a batch; tiny Qwen3, Llama, Qwen2, Mistral; issue 26's
    probe on a real 135M Llama checkpoint: 124/124 sequences);
  - bfloat16/float16: not token for token. The cache and the last-position-only prefill round
    differently, and where the two best next tokens are within half-precision rounding of each
    other the argmax can flip and the rest of the sequence follows (7 of 8 tiny-Llama prompts
    equal on this machine; 40/48 on the 135M Llama). HF `generate` itself is not batch-invariant
    in bf16 either. The test holds fast_greedy to: where it parts from hf_greedy, the two tokens
    are the fp32 model's top two. On CPU, bf16 gave no speed-up over HF generate (0.95x on the
    135M Llama, against 1.2-2.1x in fp32: issue 26's measurement); on a GPU bf16 is the setting.
What it does differently (issue 12's profile of the hf_greedy loop):
  - a KV cache preallocated per batch (rows x (prompt width + max_new_tokens)): each step writes
    one column instead of concatenating every layer's cache (27% of decode);
  - rows that ended are dropped from the batch (their cache rows compacted away) once an eighth
    of the rows have ended, instead of being computed to the end (13% of decode row-steps);
  - the prefill runs in groups of rows of equal prompt length (no padding), written right-aligned
    into the shared cache, instead of padding every row to the longest;
  - in the prefill's last layer only the last position's query, attention and MLP are run: the
    other positions' outputs feed nothing but logits that are never read;
  - single-query attention is one fused SDPA call over the key/value heads (GQA packed, as HF does).
It runs the model's own modules (embeddings, norms, projections, MLPs, rotary embedding, lm_head),
reading their parameters in place: an in-memory merge written into the model is seen at once.
Only the attention core and the cache are its own; they do HF's sdpa ops in HF's order, which is
what keeps the argmax equal in float32.

Fast path: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM and Qwen3ForCausalLM (by
`config.model_type`) with sdpa attention, any dtype and device, tied or untied lm_head, any rope
parameters (the model's own rotary module computes them). Everything else runs the hf_greedy loop
unchanged: other architectures (GPT-2, the DFS layer-path models), batches with image features,
eager/flash attention, and a sliding window shorter than prompt + max_new_tokens.

Greedy only: an objective with other `objective.options.decoding` (beams, a repetition penalty) refuses
this backend when chosen explicitly and, when not, generates with "hf_generate" (_generation.py).

torch.compile of the decode step was tried on the zoo (CPU, 1 thread) and not kept: minutes of
compilation, no faster (docs/benchmarks.md, "Generation at the compute floor", has the figures
against the compute floor).
"""
from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F

from ._generation import (
    GENERATION_BACKENDS,
    Batch,
    GenerationWork,
    _device,
    _generate_batch,
    output_text,
    pad_token_id,
    run_each_batch,
    take_token,
)

FAST_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})
# Ended rows are dropped once they are this share of the batch: each compaction copies the whole
# cache, and computing an ended row a few more steps is cheaper than that. On the zoo (rows end
# within a few steps of each other) dropping at every ended row, at 1/8 and never timed the same
# within noise; 1/8 bounds both the copies and the wasted row-steps of long-tailed batches.
DROP_SHARE = 1 / 8


def takes_fast_path(model: Any, batch: Batch, max_new_tokens: int) -> bool:
    config = getattr(model, "config", None)
    if batch.image_features is not None or getattr(config, "model_type", None) not in FAST_MODEL_TYPES:
        return False
    if getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    # a window at least as long as the whole sequence masks nothing: plain causal attention
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None)
    sliding = window is not None and (layer_types is None or "sliding_attention" in layer_types)
    return not sliding or batch.input_ids.shape[1] + max_new_tokens <= window


@torch.inference_mode()
def _fast_batch(model: Any, tokenizer: Any, batch: Batch, max_new_tokens: int, stop_strings: tuple[str, ...],
                eos_ids: frozenset[int], work: GenerationWork) -> list[str]:
    if not takes_fast_path(model, batch, max_new_tokens):
        return _generate_batch(model, tokenizer, batch, max_new_tokens, stop_strings, eos_ids, work)
    device = _device(model)
    lengths = batch.attention_mask.sum(-1)
    # buffer row j holds batch row alive[j]; longest prompts first, so prefill groups are consecutive
    alive = sorted(range(len(lengths)), key=lambda r: -int(lengths[r]))
    width = batch.input_ids.shape[1]
    decoder = _Decoder(model, len(alive), width + max_new_tokens, device)
    input_ids = batch.input_ids[alive].to(device)
    decoder.key_real[:, :width] = batch.attention_mask[alive].to(device, torch.bool)
    positions = lengths[alive].to(device)[:, None] - 1  # of each row's newest token
    work.prompt_tokens += int(lengths.sum())

    groups = _prefill_groups([int(lengths[r]) for r in alive])
    next_tokens = torch.cat([decoder.prefill(input_ids[start:stop, width - w:], start, stop, width, w)
                             for start, stop, w in groups])
    work.forward_tokens += sum((stop - start) * w for start, stop, w in groups)
    generated: list[list[int]] = [[] for _ in range(len(lengths))]
    ended = [False] * len(alive)
    pad = pad_token_id(tokenizer)
    for step in range(max_new_tokens):
        if step:
            work.forward_tokens += len(alive)
            positions = positions + 1
            next_tokens = decoder.step(next_tokens.masked_fill(torch.tensor(ended, device=device), pad),
                                       positions, width + step - 1)
        for j, token in enumerate(next_tokens.tolist()):
            if not ended[j]:
                ended[j] = take_token(generated[alive[j]], token, tokenizer, stop_strings, eos_ids, work)
        if all(ended):
            break
        if sum(ended) >= max(1, int(len(alive) * DROP_SHARE)):
            keep = [j for j, e in enumerate(ended) if not e]
            decoder.keep_rows(torch.tensor(keep, device=device), width + step)
            alive, ended = [alive[j] for j in keep], [False] * len(keep)
            next_tokens, positions = next_tokens[keep], positions[keep]
    return [output_text(tokenizer, ids, stop_strings) for ids in generated]


def _prefill_groups(lengths: list[int]) -> list[tuple[int, int, int]]:
    """(start, stop, width) of the runs of equal length in `lengths` (sorted longest first).
    Equal lengths, not a padding budget: on the zoo (prompts of 66-76 tokens, a group per length)
    that was faster than groups padded up to 1/16 and than one group padded to the longest prompt
    (measured in development, CPU time, 1 thread): the extra calls cost less than the padding."""
    groups, start = [], 0
    for i, n in enumerate(lengths):
        if n != lengths[start]:
            groups.append((start, i, lengths[start]))
            start = i
    groups.append((start, len(lengths), lengths[start]))
    return groups


class _Decoder:
    """The model's own modules around a preallocated KV cache of `rows` x `columns` positions;
    column c of every row holds the same step (prompts right-aligned, as left padding does)."""

    def __init__(self, model: Any, rows: int, columns: int, device: torch.device):
        self.model = model
        self.inner = model.model
        self.layers = list(self.inner.layers[:model.config.num_hidden_layers])
        attn = self.layers[0].self_attn
        self.head_dim = attn.head_dim
        self.groups = attn.num_key_value_groups
        dtype = self.inner.embed_tokens.weight.dtype
        shape = (rows, model.config.num_key_value_heads, columns, self.head_dim)
        # zeros, not empty: masked keys still enter q.k (then get -inf), and a NaN in garbage would stay NaN
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in self.layers]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in self.layers]
        self.key_real = torch.ones((rows, columns), dtype=torch.bool, device=device)

    def prefill(self, input_ids: torch.Tensor, start: int, stop: int, width: int, w: int) -> torch.Tensor:
        """Rows start:stop (their last `w` prompt columns): fill their cache, return each row's first token."""
        real = self.key_real[start:stop, width - w:width]
        # a group has no padding, so this is 0..w-1 and a causal mask; built from the mask as HF
        # builds them (padding would get a dummy position, masked anyway)
        positions = (real.cumsum(-1) - 1).masked_fill(~real, 1)
        causal = torch.ones((w, w), dtype=torch.bool, device=real.device).tril()
        mask = causal[None, None] & real[:, None, None, :]
        h = self.inner.embed_tokens(input_ids)
        cos, sin = self.inner.rotary_emb(h, positions)
        for i in range(len(self.layers)):
            last = i == len(self.layers) - 1
            h = self._layer(i, h, cos, sin, mask[:, :, -1:] if last else mask, slice(start, stop),
                            slice(width - w, width), last_only=last)
        return self._next_tokens(h)

    def step(self, tokens: torch.Tensor, positions: torch.Tensor, column: int) -> torch.Tensor:
        """One decode step of the first len(tokens) rows, writing cache `column`: their next tokens."""
        rows = tokens.shape[0]
        h = self.inner.embed_tokens(tokens[:, None])
        cos, sin = self.inner.rotary_emb(h, positions)
        mask = self.key_real[:rows, None, None, :column + 1]
        for i in range(len(self.layers)):
            h = self._layer(i, h, cos, sin, mask, slice(0, rows), column, last_only=False)
        return self._next_tokens(h)

    def keep_rows(self, keep: torch.Tensor, columns: int) -> None:
        """Compact the cache to rows `keep` (in that order), first `columns` columns."""
        for buffer in (*self.keys, *self.values):
            buffer[:len(keep), :, :columns] = buffer[keep, :, :columns]
        self.key_real[:len(keep), :columns] = self.key_real[keep, :columns]

    def _next_tokens(self, h: torch.Tensor) -> torch.Tensor:
        return self.model.lm_head(self.inner.norm(h[:, -1:]))[:, -1].argmax(dim=-1)

    def _heads(self, x: torch.Tensor, norm: Any) -> torch.Tensor:
        x = x.view(*x.shape[:-1], -1, self.head_dim)
        return (x if norm is None else norm(x)).transpose(1, 2)

    def _layer(self, i: int, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor,
               rows: slice, columns: slice | int, *, last_only: bool) -> torch.Tensor:
        """The decoder layer's forward as HF's modules compute it, keys and values stored in the
        cache at `rows` x `columns` (a prefill's slice, or a decode step's one column);
        last_only: the output at the last position only (keys and values at all)."""
        layer = self.layers[i]
        attn = layer.self_attn
        x = layer.input_layernorm(h)
        k = self._heads(attn.k_proj(x), getattr(attn, "k_norm", None))
        v = self._heads(attn.v_proj(x), None)
        k = _rotate(k, cos, sin)
        if last_only:
            h, x, cos, sin = h[:, -1:], x[:, -1:], cos[:, -1:], sin[:, -1:]
        q = _rotate(self._heads(attn.q_proj(x), getattr(attn, "q_norm", None)), cos, sin)
        if isinstance(columns, slice):  # a prefill group attends to its own keys
            self.keys[i][rows, :, columns], self.values[i][rows, :, columns] = k, v
        else:  # a decode step adds one column and attends to the cache so far
            self.keys[i][rows, :, columns], self.values[i][rows, :, columns] = k[:, :, 0], v[:, :, 0]
            k, v = self.keys[i][rows, :, :columns + 1], self.values[i][rows, :, :columns + 1]
        out = _attention(q, k, v, mask, self.groups, attn.scaling)
        h = h + attn.o_proj(out)
        return h + layer.mlp(layer.post_attention_layernorm(h))


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """The four families' apply_rotary_pos_emb for one tensor (their q and k share cos and sin,
    but here q may be the last position only), in their order of ops."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    half = x.shape[-1] // 2
    return (x * cos) + (torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin)


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, groups: int,
               scale: float) -> torch.Tensor:
    """transformers' sdpa_attention_forward for a boolean mask: one query runs on the key/value
    heads with the query heads packed (no repeated keys), several on repeated keys."""
    rows, heads, queries, dim = q.shape
    if groups > 1 and queries == 1:
        q = q.reshape(rows, heads // groups, groups, dim)
    elif groups > 1:
        k = k[:, :, None].expand(-1, -1, groups, -1, -1).reshape(rows, heads, -1, dim)
        v = v[:, :, None].expand(-1, -1, groups, -1, -1).reshape(rows, heads, -1, dim)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    return out.reshape(rows, heads, queries, dim).transpose(1, 2).contiguous().reshape(rows, queries, -1)


# the common frame (checks, EOS ids, prompt order) around _fast_batch
fast_run_batches = GENERATION_BACKENDS.register("fast_greedy", functools.partial(run_each_batch, _fast_batch))
