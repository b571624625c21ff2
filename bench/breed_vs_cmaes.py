"""Population breeding (M2N2) against the per-layer CMA-ES PS study and a plain GA, on the zoo at an
equal number of evaluations, over seeds: the best model's test acc_ja, and how much of each
expert's own skill it keeps (English math: en_math acc vs the math experts'; Japanese Q&A: ja_qa
acc via the answer_match objective vs the Japanese expert's).

    python -m bench.breed_vs_cmaes                          # 3 seeds x 3 searches x 120 evaluations
    python -m bench.breed_vs_cmaes --evaluations 60 --jobs 2
    python -m bench.breed_vs_cmaes --docs                   # also docs/results/breed_vs_cmaes.json + its block
    python -m bench.breed_vs_cmaes --out FILE               # the table as JSON (bench/results.py's way)

The searches, each the command a user types (its own run dir under outputs/bench_breed/):
  m2n2    python -m evo_breed n_trials=N                  (12 starting models counted in N)
  ga      python -m evo_breed n_trials=N archive.alpha=0 archive.attraction=false
  cmaes   python -m evo_ps space.warm_start_trials=N/3 n_trials=N-N/3   (= make demo at N = 120)
Every evaluation scores the objective's search split (150 ja_math problems). The best model of
each run (best_model/) is then scored on the test splits of the three zoo tasks (zoo/report.py).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "outputs" / "bench_breed"
SEARCHES = {
    "m2n2": ("evo_breed", ()),
    "ga": ("evo_breed", ("archive.alpha=0", "archive.attraction=false")),
    "cmaes": ("evo_ps", ()),
}
LABELS = {"m2n2": "M2N2 (alpha 1, attraction)", "ga": "plain GA (alpha 0, no attraction)",
          "cmaes": "per-layer CMA-ES (PS, 1/3 uniform warm start)"}
EXPERTS = {"en_math.acc": ("math_wiz", "math_abel"), "ja_qa.acc": ("ja",)}


def command(search: str, seed: int, evaluations: int, run_dir: Path) -> list[str]:
    module, extra = SEARCHES[search]
    budget = ([f"n_trials={evaluations}"] if module == "evo_breed" else
              [f"space.warm_start_trials={evaluations // 3}", f"n_trials={evaluations - evaluations // 3}"])
    return [sys.executable, "-m", module, *extra, *budget, f"seed={seed}", f"run_dir={run_dir}",
            f"tracking.mlruns_dir={run_dir / 'mlruns'}"]


def run(search: str, seed: int, evaluations: int) -> tuple[str, float]:
    name = f"{search}_seed{seed}"
    run_dir = OUT / name
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    started = time.perf_counter()
    with open(run_dir / "output.log", "w") as log:
        proc = subprocess.run(command(search, seed, evaluations, run_dir), cwd=ROOT, stdout=log,
                              stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if proc.returncode != 0:
        raise SystemExit(f"error: {name} failed (exit {proc.returncode}); see {run_dir / 'output.log'}")
    seconds = time.perf_counter() - started
    print(f"done    {name} in {seconds / 60:.1f} min", flush=True)
    return name, seconds


def skills(model_dirs: dict[str, Path]) -> dict[str, dict[str, float]]:
    """Each model's test accuracy on the zoo tasks (zoo/report.py's objectives and settings)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from zoo.report import TASKS, score_row, task_objective

    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(next(iter(model_dirs.values())))
    tasks = {task: task_objective(task, tokenizer) for task in TASKS}
    rows = {}
    for name, path in model_dirs.items():
        model = AutoModelForCausalLM.from_pretrained(path).eval()
        rows[name] = score_row(model, tasks)
        print(f"scored  {name}: " + ", ".join(f"{k} {100 * v:.1f}" for k, v in rows[name].items()), flush=True)
    return rows


def render(table: dict[str, dict[str, float]]) -> str:
    """The docs' block: per search, test acc_ja per seed, mean (spread), and the skills kept."""
    experts = {metric: max(table[f"expert {e}"][metric] for e in names) for metric, names in EXPERTS.items()}
    seeds = sorted({int(k.rsplit("seed", 1)[1]) for k in table if " seed" in k})
    n = int(next(row["evaluations"] for k, row in table.items() if " seed" in k))
    lines = [f"| search ({n} evaluations each) | " + " | ".join(f"seed {s} acc_ja" for s in seeds)
             + " | mean acc_ja (spread) | en_math kept | ja_qa kept |", "|---" * (len(seeds) + 4) + "|"]
    for search, label in LABELS.items():
        rows = [table[f"{search} seed{s}"] for s in seeds]
        ja = [100 * r["ja_math.acc_ja"] for r in rows]
        kept = {m: statistics.mean(r[m] for r in rows) / experts[m] for m in EXPERTS}
        lines.append(f"| {label} | " + " | ".join(f"{v:.1f}" for v in ja)
                     + f" | {statistics.mean(ja):.1f} ({min(ja):.1f}-{max(ja):.1f}) | "
                     + " | ".join(f"{100 * kept[m]:.0f}%" for m in EXPERTS) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluations", type=int, default=120, help="evaluations per run (default 120, as make demo)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--searches", nargs="+", default=list(SEARCHES), choices=list(SEARCHES))
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (each uses one CPU thread)")
    parser.add_argument("--out", type=Path, help="write the table as JSON here")
    parser.add_argument("--docs", action="store_true", help="write docs/results/breed_vs_cmaes.json and its block")
    args = parser.parse_args(argv)

    runs = [(search, seed) for seed in args.seeds for search in args.searches]
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        seconds = dict(pool.map(lambda r: run(*r, args.evaluations), runs))
    zoo = ROOT / "zoo" / "models"
    models = {f"expert {e}": zoo / e for names in EXPERTS.values() for e in names}
    models |= {f"{search} seed{seed}": OUT / f"{search}_seed{seed}" / "best_model" for search, seed in runs}
    table = skills(models)
    for search, seed in runs:
        table[f"{search} seed{seed}"] |= {"evaluations": args.evaluations,
                                          "minutes": round(seconds[f"{search}_seed{seed}"] / 60, 1)}
    print(f"\n{len(runs)} runs of {args.evaluations} evaluations, {(time.perf_counter() - started) / 60:.0f} min "
          f"({args.jobs} at a time); test splits, accuracy in %, skills kept relative to the best expert:\n")
    text = json.dumps(table, indent=2) + "\n"
    if args.out:
        args.out.write_text(text)
    if args.searches == list(SEARCHES):
        print(render(table))
    if args.docs:
        from bench import results

        results.write_block("breed_vs_cmaes", table)


if __name__ == "__main__":
    main()
