"""What the paper's decoding costs against greedy, side by side in one run (issue 20).

    .venv/bin/python bench/beam_cost.py                  # 48 items per task, best of 3 runs
    .venv/bin/python bench/beam_cost.py --items 24 --reps 1

Two zoo workloads on 1 thread, each objective as its zoo config has it (prompt template,
max_new_tokens, stop string "\\n") with batch 16: ja_math (mgsm_ja on zoo/models/math_abel) and
ja_vqa (the zoo VLM; its image features are computed in a warm-up run, as a study reuses them).
Per decoding: CPU and wall milliseconds per item (the best of --reps runs; on a shared machine
wall time also counts waits for a core, CPU time does not), the forward and generated tokens the
objective recorded (GenerationWork), the fitness metrics, and how many outputs differ from
fast_greedy's. hf_generate greedy is printed to show that the backend alone (HF generate instead
of the fast loop) is not what beams cost.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PAPER = {"num_beams": 5, "repetition_penalty": 1.5}
RUNS = [("fast_greedy", {}), ("hf_generate, greedy", {"generation_backend": "hf_generate"}),
        ("hf_generate, 5 beams, rep 1.5", {"decoding": PAPER})]


def measure(objective, model, n: int, reps: int) -> tuple[float, float, list[str]]:
    objective.generate(model, "search")  # warm-up; the VLM's image features are computed here
    best_cpu = best_wall = float("inf")
    for _ in range(reps):
        wall, cpu = time.perf_counter(), time.process_time()
        outputs = objective.generate(model, "search")
        best_wall, best_cpu = min(best_wall, time.perf_counter() - wall), min(best_cpu, time.process_time() - cpu)
    return 1000 * best_cpu / n, 1000 * best_wall / n, outputs


def table(title: str, build, model, n: int, reps: int) -> None:
    print(title)
    print(f"  {'decoding':31s} {'cpu ms/item':>11s} {'x':>5s} {'wall ms/item':>12s} {'forward':>8s} "
          f"{'generated':>9s}  differ  fitness")
    first = None
    for label, options in RUNS:
        objective = build(**options)
        cpu, wall, outputs = measure(objective, model, n, reps)
        first = first or (cpu, outputs)
        fitness = objective.default_fitness  # one column, whatever other metrics the objective has
        scores = objective.item_scores(outputs, "search")[fitness]
        work = objective.last_work
        print(f"  {label:31s} {cpu:11.1f} {cpu / first[0]:5.1f} {wall:12.1f} {work['forward_tokens']:8d} "
              f"{work['generated_tokens']:9d}  {sum(a != b for a, b in zip(outputs, first[1])):3d}/{n}  {fitness} {sum(scores) / len(scores):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=48)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from transformers import AutoModelForCausalLM, AutoProcessor, AutoTokenizer

    import objectives
    import zoo  # noqa: F401  (the "zoo" data source)
    from evo_core import load_pool

    models = ROOT / "zoo" / "models"
    n = args.items
    math = AutoModelForCausalLM.from_pretrained(models / "math_abel").eval()
    tokenizer = AutoTokenizer.from_pretrained(models / "math_abel")
    table(f"zoo ja_math: mgsm_ja on math_abel, {n} items, batch 16, max_new_tokens 40",
          lambda **o: objectives.build("mgsm_ja", tokenizer=tokenizer, prompt_template="Q: {question}\nA:",
                                       splits={"search": {"source": "zoo", "task": "ja_math", "split": "search",
                                                          "limit": n}},
                                       max_new_tokens=40, stop_strings=["\n"], batch_size=16, **o),
          math, n, args.reps)
    pool = load_pool(base=models / "base", sources={"vlm": models / "vlm", "ja": models / "ja_vqa"})
    processor = AutoProcessor.from_pretrained(models / "vlm")
    table(f"zoo ja_vqa: the zoo VLM, {n} items, batch 16, max_new_tokens 16",
          lambda **o: objectives.build("ja_vqa", tokenizer=processor.tokenizer, processor=processor,
                                       prompt_template="<image>Q: {question}\nA:",
                                       splits={"search": {"source": "zoo", "task": "ja_vqa", "split": "search",
                                                          "limit": n}},
                                       max_new_tokens=16, stop_strings=["\n"], batch_size=16, **o),
          pool.model, n, args.reps)


if __name__ == "__main__":
    main()
