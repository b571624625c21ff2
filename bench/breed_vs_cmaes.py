"""Population breeding (M2N2) against the per-layer CMA-ES PS study and a plain GA, on the zoo at an
equal number of evaluations, over seeds: the best model's test acc_ja, and how much of each
expert's own skill it keeps (English math: en_math acc vs the math experts'; Japanese Q&A: ja_qa
acc via the answer_match objective vs the Japanese expert's). Breeding runs also report the share
of children that entered the archive (gen781's "champions") and the share of DELLA children among
the champion's bred ancestors.

    python -m bench.breed_vs_cmaes                          # 3 seeds x 3 searches x 120 evaluations
    python -m bench.breed_vs_cmaes --evaluations 60 --jobs 2
    python -m bench.breed_vs_cmaes --docs                   # also docs/results/breed_vs_cmaes.json + its block
                                                            # (with gen781: docs/results/breed_gen781.json)
    python -m bench.breed_vs_cmaes --out FILE               # the table as JSON (bench/results.py's way)
    python -m bench.breed_vs_cmaes --evaluations 60 --searches gen781 --add docs/results/breed_vs_cmaes.json
                                                            # gen781's runs beside that file's runs

The searches, each the command a user types (its own run dir under outputs/bench_breed/):
  m2n2    python -m evo_breed n_trials=N                  (8 starting models counted in N)
  ga      python -m evo_breed n_trials=N archive.alpha=0 archive.attraction=false
  gen781  python -m evo_breed +experiment=gen781 n_trials=N   (SLERP or DELLA, children must beat both parents)
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
    "gen781": ("evo_breed", ("+experiment=gen781",)),
    "cmaes": ("evo_ps", ()),
}
LABELS = {"m2n2": "M2N2 (alpha 1, attraction)", "ga": "plain GA (alpha 0, no attraction)",
          "gen781": "gen781 (SLERP+DELLA, children beat both parents)",
          "cmaes": "per-layer CMA-ES (PS, 1/3 uniform warm start)"}
DEFAULT_SEARCHES = ("m2n2", "ga", "cmaes")  # the breed_vs_cmaes block's
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


def lineage_counts(run_dir: Path) -> dict[str, float]:
    """A breeding run's children, how many entered the archive, and the DELLA children among the
    champion's bred ancestors (itself included), from its archive state, lineage and study."""
    import optuna

    storage = f"sqlite:///{run_dir / 'study.db'}"
    [main] = [s.study_name for s in optuna.get_all_study_summaries(storage) if not s.study_name.endswith("-init")]
    children = len(optuna.load_study(study_name=main, storage=storage).get_trials(
        deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    state = json.loads((run_dir / "archive" / "state.json").read_text())
    entered = {m["id"] for m in state["members"]} | set(state["evicted"])
    ancestors = [n for n in json.loads((run_dir / "best_model" / "lineage.json").read_text()).values()
                 if n["kind"] == "child"]
    return {"children": children, "children_entered": sum(i.startswith("c") for i in entered),
            "bred_ancestors": len(ancestors), "della_ancestors": sum(n["crossover"] == "della" for n in ancestors)}


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


def render(table: dict[str, dict[str, float]], *, lineage: bool = False) -> str:
    """The docs' block: per search, test acc_ja per seed, mean (spread), and the skills kept;
    lineage=True adds the breeding runs' share of children entering the archive and of DELLA
    children among the champion's bred ancestors (summed over seeds; '-' where not recorded)."""
    experts = {metric: max(table[f"expert {e}"][metric] for e in names) for metric, names in EXPERTS.items()}
    seeds = sorted({int(k.rsplit("seed", 1)[1]) for k in table if " seed" in k})
    n = int(next(row["evaluations"] for k, row in table.items() if " seed" in k))
    extra = " children entering the archive | DELLA among the champion's bred ancestors |" if lineage else ""
    lines = [f"| search ({n} evaluations each) | " + " | ".join(f"seed {s} acc_ja" for s in seeds)
             + " | mean acc_ja (spread) | en_math kept | ja_qa kept |" + extra,
             "|---" * (len(seeds) + 4 + 2 * lineage) + "|"]
    for search, label in LABELS.items():
        if f"{search} seed{seeds[0]}" not in table:
            continue
        rows = [table[f"{search} seed{s}"] for s in seeds]
        ja = [100 * r["ja_math.acc_ja"] for r in rows]
        kept = {m: statistics.mean(r[m] for r in rows) / experts[m] for m in EXPERTS}
        line = (f"| {label} | " + " | ".join(f"{v:.1f}" for v in ja)
                + f" | {statistics.mean(ja):.1f} ({min(ja):.1f}-{max(ja):.1f}) | "
                + " | ".join(f"{100 * kept[m]:.0f}%" for m in EXPERTS) + " |")
        if lineage:
            line += "".join(f" {_share(rows, part, whole)} |" for part, whole in
                            (("children_entered", "children"), ("della_ancestors", "bred_ancestors")))
        lines.append(line)
    return "\n".join(lines) + "\n"


def _share(rows: list[dict[str, float]], part: str, whole: str) -> str:
    if not all(whole in r for r in rows):
        return "-"
    a, b = sum(r[part] for r in rows), sum(r[whole] for r in rows)
    return f"{a}/{b} ({100 * a / b:.0f}%)" if b else "0/0"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluations", type=int, default=120, help="evaluations per run (default 120, as make demo)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--searches", nargs="+", default=list(DEFAULT_SEARCHES), choices=list(SEARCHES))
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (each uses one CPU thread)")
    parser.add_argument("--out", type=Path, help="write the table as JSON here")
    parser.add_argument("--docs", action="store_true", help="write docs/results/breed_vs_cmaes.json and its block")
    parser.add_argument("--add", type=Path, help="a table this bench wrote before (JSON): its runs of other searches, "
                                                 "at the same evaluations, join this one's")
    args = parser.parse_args(argv)
    earlier = {}
    if args.add:
        data = json.loads(args.add.read_text())
        earlier = data.get("breed_vs_cmaes", data)  # docs/results' file holds the table under its block name
        budgets = {row["evaluations"] for k, row in earlier.items() if " seed" in k}
        if budgets != {args.evaluations}:
            raise SystemExit(f"error: --add {args.add}: its runs have {sorted(budgets)} evaluations, this one "
                             f"{args.evaluations}; a comparison needs equal evaluations")
        earlier = {k: row for k, row in earlier.items() if " seed" in k and k.split()[0] not in args.searches}

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
        if SEARCHES[search][0] == "evo_breed":
            table[f"{search} seed{seed}"] |= lineage_counts(OUT / f"{search}_seed{seed}")
    table |= earlier
    print(f"\n{len(runs)} runs of {args.evaluations} evaluations, {(time.perf_counter() - started) / 60:.0f} min "
          f"({args.jobs} at a time); test splits, accuracy in %, skills kept relative to the best expert:\n")
    text = json.dumps(table, indent=2) + "\n"
    if args.out:
        args.out.write_text(text)
    if all(f"{search} seed{args.seeds[0]}" in table for search in DEFAULT_SEARCHES):
        print(render(table, lineage=bool(earlier) or "gen781" in args.searches))
    if args.docs:
        from bench import results

        results.write_block("breed_gen781" if "gen781" in args.searches else "breed_vs_cmaes", table)


if __name__ == "__main__":
    main()
