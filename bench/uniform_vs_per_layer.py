"""The paper's central claim on the zoo: does per-layer evolution beat the best uniform merge?

    python bench/uniform_vs_per_layer.py --seeds 0 1 2      # runs what is missing, prints the table

For each seed it runs (or resumes: finished studies cost nothing) two studies with the SAME number
of evaluations (120):
  - uniform: one weight and density per source for all layers, CMA-ES, 120 trials;
  - per-layer (the default `python -m evo_ps`): 40 uniform trials, then 80 per-layer trials
    started at the best uniform point.
and prints both best merges' test-split acc / acc_ja with mean and spread over the seeds.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARMS = {  # arm -> (overrides, the table row that holds its best merge)
    "uniform, 120 trials": (["space=uniform", "n_trials=120", "study_name=toy_uniform120"], "best_merge"),
    "per-layer, 40 uniform + 80 per-layer": ([], "best_merge"),
}


def run_dir(arm: str, seed: int) -> Path:
    name = "toy_uniform120" if arm.startswith("uniform") else "toy_ja_math"
    return ROOT / "outputs" / f"{name}-seed{seed}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {arm: [] for arm in ARMS}
    for seed in args.seeds:
        for arm, (overrides, row) in ARMS.items():
            table = run_dir(arm, seed) / "test_table.json"
            if not table.exists():
                subprocess.run([sys.executable, "-m", "evo_ps", f"seed={seed}", *overrides], cwd=ROOT, check=True)
            results[arm].append(json.loads(table.read_text())[row])
    print("| search (same budget: 120 evaluations) | " + " | ".join(f"seed {s} acc / acc_ja" for s in args.seeds)
          + " | mean acc_ja (spread) |")
    print("|---" * (len(args.seeds) + 2) + "|")
    for arm, rows in results.items():
        cells = [f"{100 * r['acc']:.1f} / {100 * r['acc_ja']:.1f}" for r in rows]
        ja = [100 * r["acc_ja"] for r in rows]
        spread = f"{min(ja):.1f}-{max(ja):.1f}"
        print(f"| {arm} | " + " | ".join(cells) + f" | {statistics.mean(ja):.1f} ({spread}) |")


if __name__ == "__main__":
    main()
