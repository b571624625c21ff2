"""Measure the zoo: every model (and a simple merge) on the target and on each expert's own task.

    python -m zoo.report                 # the zoo table of docs/zoo.md, on the test splits
    python -m zoo.report --zoo /tmp/zoo  # a freshly built zoo
    python -m zoo.report --out t.json    # also write the table (bench/results.py renders docs from it)

The simple merge is task arithmetic (base + sum_i w_i (expert_i - base)) with one weight per
expert, picked on the target's SEARCH split from a small grid, then scored on the test split.
"""
from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import torch

import objectives
from evo_core import load_pool, use_weights
from evo_ps import InMemoryMerger, build_space, merge_method
from zoo import world

ZOO_MODELS = Path(__file__).resolve().parent / "models"
EXPERTS = tuple(world.EXPERTS)
# task -> (objective, metrics shown); ja_qa answers are words, so it matches 「こたえは Y です」
TASKS = {"ja_math": ("mgsm_ja", ("acc", "acc_ja")), "en_math": ("mgsm_ja", ("acc",)),
         "ja_qa": ("answer_match", ("acc",))}
GENERATION = {"prompt_template": world.PROMPT, "max_new_tokens": 40, "stop_strings": ["\nQ:", "\n\n"],
              "batch_size": 150}
MERGE_GRID = (0.5, 1.0, 1.5)


def task_objective(task: str, tokenizer, *, search_limit: int | None = None):
    name, _ = TASKS[task]
    search = {"source": "zoo", "task": task, "split": "search"}
    if search_limit:
        search["limit"] = search_limit
    return objectives.build(name, tokenizer=tokenizer,
                            splits={"search": search, "test": {"source": "zoo", "task": task, "split": "test"}},
                            **GENERATION)


def load_zoo(zoo_dir: Path = ZOO_MODELS):
    """The zoo as a merge pool: base + every expert, loaded once."""
    return load_pool(base=zoo_dir / "base", sources={e: zoo_dir / e for e in EXPERTS})


def score_row(model, tasks: dict) -> dict[str, float]:
    row = {}
    for task, objective in tasks.items():
        metrics = objective.score(model, "test")
        row.update({f"{task}.{m}": metrics[m] for m in TASKS[task][1]})
    return row


def best_simple_merge(pool, target) -> dict[str, float]:
    """Task-arithmetic weights (one per expert) with the best target acc_ja on the search split."""
    method = merge_method("task_arithmetic")
    space = build_space(method=method, sources=pool.source_names, tensor_names=pool.param_names,
                        num_layers=pool.num_layers, uniform=True, bounds={"weight": [0.0, 2.0]})
    merger = InMemoryMerger(pool=pool, method=method)
    best, best_score = None, -1.0
    for weights in itertools.product(MERGE_GRID, repeat=len(pool.source_names)):
        values = {f"all.{s}.weight": w for s, w in zip(pool.source_names, weights)}
        merger.apply(space.tensor_params(values))
        score = target.score(pool.model, "search")["acc_ja"]
        if score > best_score:
            best, best_score = values, score
    merger.apply(space.tensor_params(best))
    return {k.split(".")[1]: v for k, v in best.items()}


def zoo_table(zoo_dir: Path = ZOO_MODELS, *, with_merge: bool = True) -> dict[str, dict[str, float]]:
    pool = load_zoo(zoo_dir)
    tasks = {task: task_objective(task, pool.tokenizer) for task in TASKS}
    table = {}
    for name in (pool.base_name, *pool.source_names):
        use_weights(pool.model, pool.base if name == pool.base_name else pool.sources[name])
        table[name] = score_row(pool.model, tasks)
    if with_merge:
        weights = best_simple_merge(pool, task_objective("ja_math", pool.tokenizer, search_limit=150))
        label = "task arithmetic " + ", ".join(f"{s} {w:g}" for s, w in weights.items())
        table[label] = score_row(pool.model, tasks)
    return table


def markdown(table: dict[str, dict[str, float]]) -> str:
    columns = list(next(iter(table.values())))
    lines = ["| model | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(f"{100 * row[c]:.1f}" for c in columns) + " |" for name, row in table.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, default=ZOO_MODELS)
    parser.add_argument("--out", type=Path, help="write the table as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    sizes = {task: len(world.task_items(task, "test")) for task in TASKS}
    print(f"test splits: {sizes} (accuracy in %)")
    table = zoo_table(args.zoo)
    print(markdown(table))
    if args.out:
        args.out.write_text(json.dumps(table, indent=2) + "\n")


if __name__ == "__main__":
    main()
