"""The "vllm" generation backend: our planned batches through a vLLM engine, for GPU users.

    from vllm import LLM
    llm = LLM(model="/models/merged", dtype="bfloat16")
    outputs = GENERATION_BACKENDS.get("vllm")(llm, tokenizer, batches, max_new_tokens=40,
                                              stop_strings=["\\n"], work=work)

Picked with `objective.options.generation_backend=vllm`. `model` is a `vllm.LLM` (anything with
its `generate(prompts, sampling_params, use_tqdm=)`): each batch's prompts go in as token ids
(padding removed, `{"prompt_token_ids": [...]}`) with greedy `SamplingParams(temperature=0,
max_tokens=max_new_tokens, stop=stop_strings, stop_token_ids=<the EOS ids>)`; vLLM schedules and
pages the KV cache itself, so our batch plan only fixes which prompts go in one call. Outputs are
the returned token ids without a trailing EOS, decoded by our tokenizer and cut before the first
stop string, as every backend does; they come back in prompt order. `work`: prompt tokens as
given, generated tokens as vLLM returns them (per row: `len(token_ids)`, the ending token
included), forward tokens = prompt + generated - 1 per row (vLLM pads nothing, and the last token
of a row is never fed back).

Greedy only: an objective with other `objective.decoding` refuses this backend at construction,
naming "hf_generate" (_generation.py): vLLM's beam search is a separate call (`LLM.beam_search`
with `BeamSearchParams`: beam width, max tokens, length penalty, no repetition penalty, no stop
strings in its documented fields), so the paper's {num_beams: 5, repetition_penalty: 1.5} has no
vLLM equivalent to hold to generate()'s outputs.

vllm is imported on first use, so this module costs nothing where it is not installed; it is not
in the lock file. The adapter does not move weights: a study that merges in memory must load each
merge into the engine before scoring it. Tests: a stand-in engine checks the mapping everywhere;
a real-vLLM test runs where vllm is importable (tests/objectives/test_vllm_backend.py).
"""
from __future__ import annotations

from typing import Any, Sequence

from ._generation import GENERATION_BACKENDS, Batch, GenerationWork, _eos_ids, output_text


@GENERATION_BACKENDS.register("vllm")
def vllm_run_batches(model: Any, tokenizer: Any, batches: Sequence[Batch], *, max_new_tokens: int,
                     stop_strings: Sequence[str] = (), work: GenerationWork | None = None) -> list[str]:
    from vllm import SamplingParams

    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if any(b.image_features is not None for b in batches):
        raise ValueError("the vllm backend takes text prompts only (no image features)")
    eos_ids = _eos_ids(model, tokenizer)
    params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, stop=list(stop_strings),
                            stop_token_ids=sorted(eos_ids))
    work = work if work is not None else GenerationWork()
    outputs: dict[int, str] = {}
    for batch in batches:
        prompts = [ids[mask.bool()].tolist() for ids, mask in zip(batch.input_ids, batch.attention_mask)]
        results = model.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
        for i, prompt, result in zip(batch.indices, prompts, results, strict=True):
            ids = list(result.outputs[0].token_ids)
            work.prompt_tokens += len(prompt)
            work.generated_tokens += len(ids)
            work.forward_tokens += len(prompt) + len(ids) - 1
            outputs[i] = output_text(tokenizer, ids[:-1] if ids and ids[-1] in eos_ids else ids, tuple(stop_strings))
    return [outputs[i] for i in range(len(outputs))]
