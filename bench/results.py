"""Re-run the demo studies and rewrite the result tables in README.md and docs/ from their runs.

    python -m bench.results                        # every block: 11 studies, the zoo reports, the 9-run breeding bench and
                                                   # the 9-study racing bench (bench/adaptive_eval.py), ~3 h on 2 cores
    python -m bench.results ps_demo dfs_demo       # only these blocks (and the runs they need)
    python -m bench.results --check                # no runs: do the docs show what docs/results/ holds?
    python -m bench.results --render               # no runs: rewrite the docs from docs/results/

`make results` runs the first. A block is a table in the docs, between the lines
`<!-- results:NAME -->` and `<!-- /results:NAME -->`, in README.md or any docs/*.md. Its figures come
from the `test_table.json` that its runs wrote (each run is a fresh run dir under outputs/results/,
the same command a user types plus that dir); they are kept in docs/results/NAME.json, and the
block is rendered from that file alone. So no figure in the docs is copied by hand, and
tests/bench/test_results.py fails when a block and its JSON disagree.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bench.adaptive_eval import render as adaptive_eval
from bench.breed_vs_cmaes import render as breed_vs_cmaes
from bench.multi_fidelity import render as multi_fidelity
from bench import genome_table
from evo_core import markdown_table
from zoo.report import markdown as zoo_markdown
from zoo.vlm_report import markdown as zoo_vlm_markdown

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "outputs" / "results"
DATA = ROOT / "docs" / "results"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@dataclass(frozen=True)
class Run:
    """`python -m module overrides...` in its own run dir (and MLflow store: parallel runs must not
    race on one fresh database), which writes its table to test_table.json there; `after` runs
    first (its outputs are this run's inputs). study=False: a plain command told `--out FILE`."""

    module: str
    overrides: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    study: bool = True

    def command(self, run_dir: Path) -> list[str]:
        where = ([f"run_dir={run_dir}", f"tracking.mlruns_dir={run_dir / 'mlruns'}"] if self.study
                 else ["--out", str(run_dir / "test_table.json")])
        return [sys.executable, "-m", self.module, *self.overrides, *where]


UNIFORM_120 = ("space=uniform", "n_trials=120", "study_name=toy_uniform120")
MULTI_FIDELITY_ARMS = ("zoo_full", "zoo_mf", "zoo_mf_informative", "vqa_full", "vqa_mf", "vqa_mf_first")
RUNS = {
    "ps_seed0": Run("evo_ps"),  # = make demo
    "ps_seed1": Run("evo_ps", ("seed=1",)),
    "ps_seed2": Run("evo_ps", ("seed=2",)),
    "uniform120_seed0": Run("evo_ps", UNIFORM_120),
    "uniform120_seed1": Run("evo_ps", (*UNIFORM_120, "seed=1")),
    "uniform120_seed2": Run("evo_ps", (*UNIFORM_120, "seed=2")),
    "dfs": Run("evo_dfs"),
    "hybrid": Run("evo_dfs", ("+experiment=toy_hybrid", f"pool.sources.ps_merge={OUT / 'ps_seed0' / 'best_model'}"),
                  after=("ps_seed0",)),
    "zoo_report": Run("zoo.report", study=False),
    "zoo_vlm_report": Run("zoo.vlm_report", study=False),
    **{f"vqa_seed{seed}": Run("evo_ps", ("+experiment=toy_ja_vqa", f"seed={seed}")) for seed in (0, 1, 2)},
    "breed_vs_cmaes": Run("bench.breed_vs_cmaes", study=False),  # 9 runs inside (3 searches x 3 seeds)
    # gen781, 3 seeds at 60 evaluations each, beside the M2N2, GA and CMA-ES runs of
    # docs/results/breed_vs_cmaes.json (same commands and budget)
    "breed_gen781": Run("bench.breed_vs_cmaes", ("--evaluations", "60", "--searches", "gen781", "--jobs", "3", "--add",
                                                 "docs/results/breed_vs_cmaes.json"), study=False),
    "adaptive_eval": Run("bench.adaptive_eval", ("--arms", "full", "racing", "racing_fast"), study=False),  # 9 studies inside
    "toy_lm_eval": Run("evo_ps", ("+experiment=toy_lm_eval",)),
    # 18 studies inside, one at a time: full evaluation and multi-fidelity side by side, on the zoo and
    # toy_ja_vqa, each with its cheap_subset ablation, 3 seeds each
    "multi_fidelity": Run("bench.multi_fidelity", ("--arms", *MULTI_FIDELITY_ARMS), study=False),
    "zoo_lm_eval_report": Run("zoo.build_lm_eval_tasks", ("--report",), study=False),
    **{name: Run("evo_genome", overrides) for name, overrides in genome_table.runs().items()},  # GENOME(+): 19 runs
}

Tables = dict[str, dict[str, dict[str, float]]]  # run -> model -> metric -> value


def uniform_vs_per_layer(tables: Tables) -> str:
    """The same budget (120 evaluations) spent on the uniform space alone, or on 40 uniform + 80
    per-layer trials (the default study), over three seeds: the best merges' test scores."""
    seeds = (0, 1, 2)
    arms = {"uniform: one weight + density per source, 120 trials": "uniform120",
            "per-layer: 40 uniform + 80 per-layer trials (the default)": "ps"}
    lines = ["| search (120 evaluations each) | " + " | ".join(f"seed {s} acc / acc_ja" for s in seeds)
             + " | mean acc_ja (spread) |", "|---" * (len(seeds) + 2) + "|"]
    for arm, prefix in arms.items():
        rows = [tables[f"{prefix}_seed{s}"]["best_merge"] for s in seeds]
        ja = [100 * r["acc_ja"] for r in rows]
        lines.append(f"| {arm} | " + " | ".join(f"{100 * r['acc']:.1f} / {100 * r['acc_ja']:.1f}" for r in rows)
                     + f" | {statistics.mean(ja):.1f} ({min(ja):.1f}-{max(ja):.1f}) |")
    return "\n".join(lines) + "\n"


def vqa_seeds(tables: Tables) -> str:
    """The VQA study (`+experiment=toy_ja_vqa`) over three seeds: every row of its test table, per
    seed rougeL / rougeL_ja, the mean rougeL_ja and its spread; then the evolved merge's margin
    over the best of the other rows, per seed."""
    seeds = (0, 1, 2)
    runs = [tables[f"vqa_seed{s}"] for s in seeds]
    lines = ["| model | " + " | ".join(f"seed {s} rougeL / rougeL_ja" for s in seeds)
             + " | mean rougeL_ja (spread) |", "|---" * (len(seeds) + 2) + "|"]
    for model in runs[0]:
        rows = [run[model] for run in runs]
        ja = [100 * r["rougeL_ja"] for r in rows]
        lines.append(f"| {model} | " + " | ".join(f"{100 * r['rougeL']:.1f} / {100 * r['rougeL_ja']:.1f}" for r in rows)
                     + f" | {statistics.mean(ja):.1f} ({min(ja):.1f}-{max(ja):.1f}) |")
    margins = [100 * (run["best_merge"]["rougeL_ja"] - max(v["rougeL_ja"] for k, v in run.items() if k != "best_merge"))
               for run in runs]
    lines.append("| best_merge minus the best other row | " + " | ".join(f"{m:+.1f}" for m in margins)
                 + f" | {statistics.mean(margins):+.1f} ({min(margins):+.1f} to {max(margins):+.1f}) |")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Block:
    runs: tuple[str, ...]
    render: Callable[[Tables], str]


# the columns a run's test table shows in the docs, in this order (those the stored table has): a
# metric an objective gains later (mgsm_ja's paper_acc) shows up only where it is listed here
MGSM_COLUMNS = ("acc", "acc_ja", "paper_acc", "paper_acc_ja")


def table_block(run: str, *columns: str) -> Block:
    return Block((run,), lambda t: markdown_table(t[run], columns))


BLOCKS = {
    "ps_demo": table_block("ps_seed0", *MGSM_COLUMNS),
    "uniform_vs_per_layer": Block(tuple(f"{arm}_seed{s}" for arm in ("uniform120", "ps") for s in (0, 1, 2)),
                                  uniform_vs_per_layer),
    "dfs_demo": table_block("dfs", *MGSM_COLUMNS, "layers"),
    "hybrid_demo": table_block("hybrid", *MGSM_COLUMNS, "layers"),
    "zoo_report": Block(("zoo_report",), lambda t: zoo_markdown(t["zoo_report"])),
    "zoo_vlm_report": Block(("zoo_vlm_report",), lambda t: zoo_vlm_markdown(t["zoo_vlm_report"])),
    "vqa_demo": table_block("vqa_seed0", "rougeL", "rougeL_ja"),
    "vqa_seeds": Block(tuple(f"vqa_seed{s}" for s in (0, 1, 2)), vqa_seeds),
    "breed_vs_cmaes": Block(("breed_vs_cmaes",), lambda t: breed_vs_cmaes(t["breed_vs_cmaes"])),
    "breed_gen781": Block(("breed_gen781",), lambda t: breed_vs_cmaes(t["breed_gen781"], lineage=True)),
    "adaptive_eval": Block(("adaptive_eval",), lambda t: adaptive_eval(t["adaptive_eval"])),
    "toy_lm_eval_demo": table_block("toy_lm_eval", "score", "zoo_en_math_choice.acc", "zoo_ja_qa_choice.acc",
                                    "zoo_tally_choice.acc"),
    "zoo_lm_eval_report": Block(("zoo_lm_eval_report",), lambda t: zoo_markdown(t["zoo_lm_eval_report"])),
    "multi_fidelity": Block(("multi_fidelity",), lambda t: multi_fidelity(t["multi_fidelity"])),
    "genome": Block(tuple(genome_table.runs()), genome_table.render),
}


def run_all(names: list[str], jobs: int) -> dict[str, float]:
    """Run these studies from scratch, `jobs` at a time, each after the runs it needs; -> seconds each."""
    seconds: dict[str, float] = {}
    pending = list(names)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        while pending:  # in waves: a run starts once every run it needs is done
            wave = [n for n in pending if all(dep not in pending for dep in RUNS[n].after)]
            assert wave, f"circular `after` among {pending}"
            seconds.update(zip(wave, pool.map(run_one, wave)))
            pending = [n for n in pending if n not in wave]
    return seconds


def run_one(name: str) -> float:
    return run_logged(name, RUNS[name].command(OUT / name), OUT / name)


def run_logged(label: str, command: list[str], run_dir: Path) -> float:
    """`command` from the repo root in a fresh `run_dir`, its output in run_dir/output.log; a failed
    run exits in one line naming that log; -> its wall seconds."""
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    print(f"run     {label}: {' '.join(command[1:])}", flush=True)
    started = time.perf_counter()
    with open(run_dir / "output.log", "w") as log:
        proc = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise SystemExit(f"error: run {label} failed (exit {proc.returncode}); see {run_dir / 'output.log'}")
    elapsed = time.perf_counter() - started
    print(f"done    {label} in {elapsed / 60:.1f} min", flush=True)
    return elapsed


def write_block(block: str, table: dict) -> None:
    """A bench's table (`--docs`) as docs/results/<block>.json, and its block rendered in the docs."""
    path = DATA / f"{block}.json"
    path.write_text(json.dumps({block: table}, indent=2) + "\n")
    render_docs([block], write=True)
    print(f"wrote {path.relative_to(ROOT)} and its block")


def load(block: str) -> Tables:
    return json.loads((DATA / f"{block}.json").read_text())


def render_docs(blocks: list[str], *, write: bool) -> list[str]:
    """Put each block's rendering between its markers in every doc; -> the places that differed."""
    differing = []
    for doc in DOCS:
        text = original = doc.read_text()
        for block in blocks:
            marked = re.compile(rf"(<!-- results:{block} -->\n)(.*?)(<!-- /results:{block} -->)", re.S)
            if not marked.search(text):
                continue
            wanted = BLOCKS[block].render(load(block))
            differing += [f"{os.path.relpath(doc, ROOT)}: {block}" for m in marked.finditer(text) if m[2] != wanted]
            text = marked.sub(lambda m: m[1] + wanted + m[3], text)
        if write and text != original:
            doc.write_text(text)
    return differing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("blocks", nargs="*", help=f"default: all of {', '.join(BLOCKS)}")
    parser.add_argument("--check", action="store_true", help="run nothing; exit 1 if a doc differs from its JSON")
    parser.add_argument("--render", action="store_true", help="run nothing; rewrite the docs from their JSON")
    parser.add_argument("--jobs", type=int, default=2, help="studies at a time (each uses one CPU thread)")
    args = parser.parse_args()
    unknown = sorted(set(args.blocks) - set(BLOCKS))
    if unknown:
        raise SystemExit(f"error: unknown blocks {unknown}; known: {', '.join(BLOCKS)}")
    blocks = args.blocks or list(BLOCKS)
    if args.check or args.render:
        differing = render_docs(blocks, write=args.render)
        print("\n".join(f"{'rewrote' if args.render else 'differs'}: {d}" for d in differing)
              or "the docs show docs/results/ exactly")
        raise SystemExit(1 if differing and args.check else 0)

    needed = {run for block in blocks for run in BLOCKS[block].runs}
    needed |= {dep for run in needed for dep in RUNS[run].after}
    seconds = run_all([name for name in RUNS if name in needed], args.jobs)
    DATA.mkdir(parents=True, exist_ok=True)
    for block in blocks:
        tables = {run: json.loads((OUT / run / "test_table.json").read_text()) for run in BLOCKS[block].runs}
        (DATA / f"{block}.json").write_text(json.dumps(tables, indent=2) + "\n")
    render_docs(blocks, write=True)
    timings = DATA / "run_seconds.json"  # wall time of each run, as measured here
    known = json.loads(timings.read_text()) if timings.exists() else {}
    timings.write_text(json.dumps(known | {k: round(v) for k, v in seconds.items()}, indent=2) + "\n")
    print(f"rewrote {', '.join(blocks)} in {', '.join(str(d.relative_to(ROOT)) for d in DOCS)}")


if __name__ == "__main__":
    main()
