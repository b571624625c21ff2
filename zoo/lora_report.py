"""Measure the LoRA zoo: each expert, the base and the uniform average of all experts, on every
expert's own task and on the two targets (test splits).

    python -m zoo.lora_report                # the table of docs/zoo.md's LoRA section
    python -m zoo.lora_report --limit 100    # the first 100 items of every test split (quicker)

The uniform average is GENOME's initialisation operator at equal weights: A and B are each the
mean of the experts' A and B (not the mean of the experts' B @ A products).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import objectives
from evo_genome import apply_lora, check_same_shapes, lora_model, read_adapter
from zoo import lora_world
from zoo.build_lora import LORA_DIR
from zoo.report import GENERATION

ZOO_MODELS = Path(__file__).resolve().parent / "models"


def task_objective(task: str, tokenizer, split: str = "test", limit: int | None = None):
    spec = {"source": "zoo", "task": task, "split": split, **({"limit": limit} if limit else {})}
    # the answer counts only in the task's own form (lora_world.REQUIRED_FORM)
    return objectives.build("answer_match", tokenizer=tokenizer, splits={split: spec},
                            answer_pattern=lora_world.REQUIRED_FORM[task], **GENERATION)


def lora_table(zoo_dir: Path = ZOO_MODELS, *, limit: int | None = None) -> dict[str, dict[str, float]]:
    adapters = [read_adapter(zoo_dir / LORA_DIR / name) for name in lora_world.EXPERTS]
    check_same_shapes(adapters)
    tokenizer = AutoTokenizer.from_pretrained(zoo_dir / "base")
    model = lora_model(AutoModelForCausalLM.from_pretrained(zoo_dir / "base", dtype=torch.float32), adapters[0])
    scored = model.get_base_model()  # the causal LM with LoRA layers inside: the fast generation path
    tasks = {task: task_objective(task, tokenizer, limit=limit) for task in lora_world.TASKS}
    rows = {"base": {k: torch.zeros_like(v) for k, v in adapters[0].weights.items()},
            **{a.name: a.weights for a in adapters},
            "uniform average": {k: sum(a.weights[k] for a in adapters) / len(adapters) for k in adapters[0].weights}}
    table = {}
    for label, weights in rows.items():
        apply_lora(model, weights)
        table[label] = {task: objective.score(scored, "test")["acc"] for task, objective in tasks.items()}
        print(label, {t: round(100 * v, 1) for t, v in table[label].items()}, flush=True)
    return table


def markdown(table: dict[str, dict[str, float]]) -> str:
    columns = list(next(iter(table.values())))
    lines = ["| model | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(f"{100 * row[c]:.1f}" for c in columns) + " |" for name, row in table.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, default=ZOO_MODELS)
    parser.add_argument("--limit", type=int, help="score the first N items of each test split")
    parser.add_argument("--out", type=Path, help="write the table as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    table = lora_table(args.zoo, limit=args.limit)
    print(markdown(table))
    if args.out:
        args.out.write_text(json.dumps(table, indent=2) + "\n")


if __name__ == "__main__":
    main()
