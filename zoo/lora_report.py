"""Measure the LoRA zoo: the base, each expert, the uniform average of all experts and the best pair
mix, on every expert's own task and on the targets (test splits).

    python -m zoo.lora_report                # the table of docs/zoo.md's LoRA section
    python -m zoo.lora_report --limit 100    # the first 100 items of every split (quicker)

The uniform average is GENOME's initialisation operator at equal weights: A and B are each the
mean of the experts' A and B (not the mean of the experts' B @ A products). The best pair mix is
GENOME's initialisation t * w_a + (1 - t) * w_b (A and B separately): for each target, every pair
of experts at t = 0.5 is scored on the target's SEARCH split, the best pair (first in expert order
on a tie) also at t = 0.25 and 0.75, and the best of those is then scored on the test split, as a
search would report it.

Every task is scored by the objective config `lora_world.objective_options` gives it:
answer_match with the answer phrase in the item's own style (ja_qa: answer_match's default).
"""
from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import objectives
from evo_genome import apply_lora, check_same_shapes, interpolate, lora_model, read_adapter
from zoo import lora_world
from zoo.build_lora import LORA_DIR
from zoo.report import GENERATION

ZOO_MODELS = Path(__file__).resolve().parent / "models"
PAIR_GRID = (0.5, 0.25, 0.75)  # t of t * w_a + (1 - t) * w_b (0.5 first: it wins ties)
BEST_PAIR = "best pair mix"


def task_objective(task: str, tokenizer, *, limit: int | None = None):
    splits = {split: {"source": "zoo", "task": task, "split": split, **({"limit": limit} if limit else {})}
              for split in lora_world.EVAL_SIZES}
    return objectives.build("answer_match", tokenizer=tokenizer, splits=splits,
                            **lora_world.objective_options(task), **GENERATION)


class LoraScorer:
    """One live PeftModel of the zoo base; scores any LoRA weights on any task, written in place."""

    def __init__(self, *, zoo_dir: Path = ZOO_MODELS, limit: int | None = None):
        adapters = [read_adapter(zoo_dir / LORA_DIR / name) for name in lora_world.EXPERTS]
        check_same_shapes(adapters)
        self.experts = {a.name: a.weights for a in adapters}
        tokenizer = AutoTokenizer.from_pretrained(zoo_dir / "base")
        self.model = lora_model(AutoModelForCausalLM.from_pretrained(zoo_dir / "base", dtype=torch.float32),
                                adapters[0])
        self.scored = self.model.get_base_model()  # the causal LM with LoRA layers inside: the fast path
        self.tasks = {task: task_objective(task, tokenizer, limit=limit) for task in lora_world.TASKS}

    def accuracy(self, weights, task: str, split: str = "test") -> float:
        apply_lora(self.model, weights)
        return self.tasks[task].score(self.scored, split)["acc"]

    def rows(self) -> dict[str, dict]:
        """The base (zero LoRA), every expert and the uniform average of all experts."""
        first = next(iter(self.experts.values()))
        return {"base": {k: torch.zeros_like(v) for k, v in first.items()}, **self.experts,
                "uniform average": {k: sum(w[k] for w in self.experts.values()) / len(self.experts) for k in first}}

    def best_pair(self, target: str) -> tuple[str, str, float]:
        """The pair mix t * w_a + (1 - t) * w_b best on the target's search split: every pair at
        t = 0.5, then the best pair's t refined over PAIR_GRID."""
        def search(a: str, b: str, t: float) -> float:
            return self.accuracy(interpolate(self.experts[a], self.experts[b], t), target, "search")

        pairs = list(itertools.combinations(self.experts, 2))
        halves = [search(a, b, 0.5) for a, b in pairs]
        a, b = pairs[halves.index(max(halves))]
        scores = {t: (max(halves) if t == 0.5 else search(a, b, t)) for t in PAIR_GRID}
        return a, b, max(scores, key=scores.get)


def lora_table(zoo_dir: Path = ZOO_MODELS, *, limit: int | None = None,
               pairs: bool = True) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """(table: row -> task -> test accuracy, best pair per target: "a 0.25 + b 0.75")."""
    scorer = LoraScorer(zoo_dir=zoo_dir, limit=limit)
    table = {}
    for label, weights in scorer.rows().items():
        table[label] = {task: scorer.accuracy(weights, task) for task in lora_world.TASKS}
        print(label, {t: round(100 * v, 1) for t, v in table[label].items()}, flush=True)
    found: dict[str, str] = {}
    if pairs:
        table[BEST_PAIR] = {}
        for target in lora_world.TARGETS:
            a, b, t = scorer.best_pair(target)
            found[target] = f"{a} {t:g} + {b} {1 - t:g}"
            table[BEST_PAIR][target] = scorer.accuracy(interpolate(scorer.experts[a], scorer.experts[b], t), target)
            print(f"{target}: best pair on search {found[target]}, test {100 * table[BEST_PAIR][target]:.1f}",
                  flush=True)
    return table, found


def markdown(table: dict[str, dict[str, float]]) -> str:
    columns = list(lora_world.TASKS)
    lines = ["| model | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(f"{100 * row[c]:.1f}" if c in row else "" for c in columns) + " |"
              for name, row in table.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, default=ZOO_MODELS)
    parser.add_argument("--limit", type=int, help="score the first N items of each split")
    parser.add_argument("--out", type=Path, help="write the table and the best pairs as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    table, found = lora_table(args.zoo, limit=args.limit)
    print(markdown(table))
    for target, pair in found.items():
        print(f"{BEST_PAIR} for {target} (on its search split): {pair}")
    if args.out:
        args.out.write_text(json.dumps({"table": table, "best_pairs": found}, indent=2) + "\n")


if __name__ == "__main__":
    main()
