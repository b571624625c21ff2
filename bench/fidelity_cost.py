"""What each fidelity costs on the zoo's search split: the likelihood of the reference answers
(objectives' likelihood_items) against generation (score_items), on the first N items, CPU seconds
(process time, best of 3 after one warm-up: robust to other processes on the machine) and the
positions the model ran.

    python -m bench.fidelity_cost                 # the zoo's ja model, N = 10, 20, 30, 150
    python -m bench.fidelity_cost --model zoo/models/base --items 30 150
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cpu_seconds(work, repeats: int = 3) -> float:
    work()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        work()
        best = min(best, time.process_time() - started)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fidelity_cost", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(ROOT / "zoo" / "models" / "ja"))
    parser.add_argument("--items", nargs="+", type=int, default=[10, 20, 30, 150])
    args = parser.parse_args(argv)
    import torch
    from omegaconf import OmegaConf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import objectives
    import zoo  # noqa: F401  (registers the zoo's data source)

    torch.set_num_threads(1)
    conf = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "objective" / "zoo_ja_math.yaml"))
    tokenizer = AutoTokenizer.from_pretrained(ROOT / "zoo" / "models" / "base")
    model = AutoModelForCausalLM.from_pretrained(args.model).eval()
    objective = objectives.build(conf["name"], tokenizer=tokenizer, splits={"search": conf["search"]},
                                 **conf["options"])
    print("| items | likelihood CPU s | likelihood positions | generation CPU s | generation positions "
          "| generation / likelihood |\n|---|---|---|---|---|---|")
    for n in args.items:
        items = list(range(n))
        lik = cpu_seconds(lambda: objective.likelihood_items(model, "search", items))
        lik_positions = objective.last_work["likelihood_tokens"]
        gen = cpu_seconds(lambda: objective.score_items(model, "search", items=items))
        gen_positions = objective.last_work["forward_tokens"]
        print(f"| {n} | {lik:.3f} | {lik_positions:,} | {gen:.3f} | {gen_positions:,} | {gen / lik:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
