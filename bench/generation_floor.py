"""A trial's generation against its compute floor, per generation backend, side by side (issue 12).

    .venv/bin/python bench/generation_floor.py                      # zoo base and math_abel, 5 repetitions
    .venv/bin/python bench/generation_floor.py --models math_abel --reps 3 --no-hf-generate

The workload is the zoo default fitness (conf/objective/zoo_ja_math.yaml): its 150 search prompts
in the objective's own batches, max_new_tokens and stop strings, on 1 thread.

FLOPs the trial must do (2 per multiply-add), for the tokens actually needed:
  - prefill: every real prompt token (no padding) through every layer's projections and MLP, and
    its causal attention over the real tokens before it (QK^T and PV: 4 x heads x head_dim x
    context); in the last layer only the keys/values of all tokens and the rest for the last one;
    the lm_head for the last prompt token only;
  - decode: every generated token that is fed back (all but each row's last, which only has to be
    read off the logits) through all layers, attention over its context, and the lm_head;
  - a row's generated tokens are its kept output tokens plus the ending token (checked to sum to
    GenerationWork.generated_tokens). Norms, rotary embedding and activations are not counted.
Matmul rate: the model's own weights in F.linear at the trial's shapes, single thread: the
projections, MLP and lm_head for all real prompt tokens in one call each (prefill), and for one
row per prompt (decode); the best of --reps in CPU time (a floor: the core at its fastest, not
counting waits for it on a shared machine). Compute
floor = prefill FLOPs / prefill rate + decode FLOPs / decode rate. Per backend: median seconds
of --reps runs of the whole generation, the ratio to the floor, the same for the process's CPU
seconds (on a shared machine, wall time also counts the waits for a core; CPU time does not),
and whether its outputs equal hf_greedy's, item by item. --profile adds, per model, the top ops
of one fast_greedy run by CPU time (torch.profiler): where the time above the floor goes.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import objectives  # noqa: E402
import zoo  # noqa: E402,F401  (registers the "zoo" data source)
from zoo.tokenizer import build_tokenizer  # noqa: E402

OBJECTIVE_CONF = ROOT / "conf" / "objective" / "zoo_ja_math.yaml"
BACKENDS = ("hf_greedy", "fast_greedy")


def build_objective(tokenizer) -> objectives.GenerativeObjective:
    cfg = OmegaConf.to_container(OmegaConf.load(OBJECTIVE_CONF))
    return objectives.build(cfg["name"], tokenizer=tokenizer, splits={"search": cfg["search"]},
                            **cfg["options"] | {"language_detector": "script"})  # the YAML's generation settings


def layer_flops(config) -> tuple[int, int, int]:
    """(per token per layer: q,o projections + MLP; k,v projections; lm_head per token)."""
    hidden, head_dim = config.hidden_size, config.head_dim
    q = hidden * config.num_attention_heads * head_dim
    kv = hidden * config.num_key_value_heads * head_dim
    return 2 * (2 * q + 3 * hidden * config.intermediate_size), 2 * 2 * kv, 2 * hidden * config.vocab_size


def needed_flops(config, prompt_lengths: list[int], generated: list[int]) -> dict[str, int]:
    """FLOPs by phase and kind ("prefill"/"decode" x "matmul"/"attention"), counted as the module
    docstring says."""
    rest, kv, head = layer_flops(config)
    layers = config.num_hidden_layers
    attend = 4 * config.num_attention_heads * config.head_dim  # per query per key
    flops = dict.fromkeys(("prefill matmul", "prefill attention", "decode matmul", "decode attention"), 0)
    for p, g in zip(prompt_lengths, generated):
        flops["prefill matmul"] += (layers - 1) * p * (rest + kv) + p * kv + rest + head
        # each query sees the keys up to its own: 1 + 2 + ... + p, and the last layer's last query p
        flops["prefill attention"] += (layers - 1) * attend * p * (p + 1) // 2 + attend * p
        fed = range(p + 1, p + g)  # the contexts of the fed-back tokens
        flops["decode matmul"] += len(fed) * (layers * (rest + kv) + head)
        flops["decode attention"] += layers * attend * sum(fed)
    return flops


def seconds(fn: Callable[[], object], reps: int, clock: Callable[[], float] = time.perf_counter) -> list[float]:
    times = []
    for _ in range(reps):
        start = clock()
        fn()
        times.append(clock() - start)
    return times


def matmul_rate(model, rows: int, reps: int) -> float:
    """FLOP/s of the model's linear layers (and lm_head) on `rows` input rows."""
    weights = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
    inputs = {w.shape[1]: torch.randn(rows, w.shape[1], dtype=w.dtype) for w in weights}
    flops = sum(2 * rows * w.shape[0] * w.shape[1] for w in weights)
    with torch.inference_mode():
        best = min(seconds(lambda: [F.linear(inputs[w.shape[1]], w) for w in weights], reps, time.process_time))
    return flops / best


def hf_generate(model, tokenizer, batches, max_new_tokens: int, stop_strings: tuple[str, ...]) -> list[str]:
    """HF generate on the same padded batches, cut like our backends (reference only)."""
    outputs: dict[int, str] = {}
    eos = tokenizer.eos_token_id
    for batch in batches:
        out = model.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask, do_sample=False,
                             max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, eos_token_id=eos)
        for i, row in zip(batch.indices, out[:, batch.input_ids.shape[1]:].tolist()):
            row = row[:row.index(eos)] if eos in row else row
            text = tokenizer.decode(row, skip_special_tokens=True)
            outputs[i] = min((text[:text.find(s)] for s in stop_strings if s in text), key=len, default=text)
    return [outputs[i] for i in range(len(outputs))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["base", "math_abel"], help="zoo/models/<name> or paths")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--no-hf-generate", action="store_true", help="skip the HF generate reference")
    parser.add_argument("--profile", action="store_true", help="top ops of one fast_greedy run per model")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from transformers import AutoModelForCausalLM

    tokenizer = build_tokenizer()
    objective = build_objective(tokenizer)
    split = objective._split("search")
    batches, n = split.batches, len(split.items)
    settings = dict(max_new_tokens=objective.max_new_tokens, stop_strings=objective.stop_strings)
    lengths = [0] * n
    for batch in batches:
        for i, length in zip(batch.indices, batch.attention_mask.sum(-1).tolist()):
            lengths[i] = length
    print(f"zoo default fitness: {n} prompts in {len(batches)} batch(es), {sum(lengths)} prompt tokens, "
          f"max_new_tokens {settings['max_new_tokens']}, stop {list(settings['stop_strings'])}, 1 thread")
    for name in args.models:
        path = Path(name) if Path(name).is_dir() else ROOT / "zoo" / "models" / name
        model = AutoModelForCausalLM.from_pretrained(path).eval()
        work = objectives.GenerationWork()
        reference = objectives.GENERATION_BACKENDS.get("hf_greedy")(model, tokenizer, batches, work=work, **settings)
        generated = [min(settings["max_new_tokens"], len(tokenizer(o, add_special_tokens=False)["input_ids"]) + 1)
                     for o in reference]
        assert sum(generated) == work.generated_tokens, (sum(generated), work.generated_tokens)
        flops = needed_flops(model.config, lengths, generated)
        prefill = flops["prefill matmul"] + flops["prefill attention"]
        decode = flops["decode matmul"] + flops["decode attention"]
        prefill_rate = matmul_rate(model, sum(lengths), args.reps)
        decode_rate = matmul_rate(model, n, args.reps * 20)
        floor = prefill / prefill_rate + decode / decode_rate
        print(f"\n{path.name}: {work.generated_tokens} generated tokens; FLOPs needed: prefill {prefill / 1e9:.2f} G "
              f"+ decode {decode / 1e9:.2f} G = {(prefill + decode) / 1e9:.2f} G")
        print(f"  matmul rate (1 thread, trial shapes): prefill {prefill_rate / 1e9:.1f} GFLOP/s, "
              f"decode {decode_rate / 1e9:.1f} GFLOP/s  ->  compute floor {floor:.3f} s")
        runs = {b: (lambda b=b: objectives.GENERATION_BACKENDS.get(b)(model, tokenizer, batches, **settings))
                for b in BACKENDS}
        if not args.no_hf_generate:
            runs["HF generate"] = lambda: hf_generate(model, tokenizer, batches, **settings)
        print(f"  {'backend':<12} {'median s':>9} {'x floor':>8} {'CPU s':>6} {'x floor':>8}  "
              f"outputs equal to hf_greedy")
        for backend, run in runs.items():
            with torch.inference_mode():
                outputs = run()
                median = statistics.median(seconds(run, args.reps))
                cpu = statistics.median(seconds(run, args.reps, time.process_time))
            same = sum(a == b for a, b in zip(outputs, reference))
            print(f"  {backend:<12} {median:>9.3f} {median / floor:>8.2f} {cpu:>6.3f} {cpu / floor:>8.2f}  {same}/{n}")
        if args.profile:
            with torch.inference_mode(), torch.profiler.profile() as profiler:
                runs["fast_greedy"]()
            ops = sorted(profiler.key_averages(), key=lambda e: -e.self_cpu_time_total)
            total = sum(e.self_cpu_time_total for e in ops)
            print("  fast_greedy profile, top ops by CPU time: " + ", ".join(
                f"{e.key} {e.self_cpu_time_total / 1e6:.3f} s ({e.count} calls)" for e in ops[:6])
                + f"; all ops {total / 1e6:.3f} s")


if __name__ == "__main__":
    main()
