"""evaluation=multi_fidelity against full evaluation on the zoo default and on toy_ja_vqa, 3 seeds.

    python -m bench.multi_fidelity                       # the multi-fidelity studies, one at a time
    python -m bench.multi_fidelity --arms zoo_full zoo_mf zoo_mf_informative vqa_full vqa_mf vqa_mf_first   # make results
    python -m bench.multi_fidelity --reuse --docs        # finished runs read; docs/results/multi_fidelity.json + block
    python -m bench.multi_fidelity --out FILE            # the table as JSON (bench/results.py's way)

Each study is the command a user types, in its own run dir under outputs/bench_fidelity/:
  zoo_mf    python -m evo_ps seed=S evaluation=multi_fidelity         (conf/evaluation/multi_fidelity.yaml)
  vqa_mf    python -m evo_ps +experiment=toy_ja_vqa seed=S evaluation=multi_fidelity evaluation.cheap_items=40
            evaluation.cheap_subset=informative
  zoo_mf_informative, vqa_mf_first   each with the other cheap_subset (the ablation)
  zoo_mf_likelihood   python -m evo_ps seed=S evaluation=multi_fidelity evaluation.cheap=likelihood
  zoo_full  python -m evo_ps seed=S          (= make demo)
  vqa_full  python -m evo_ps +experiment=toy_ja_vqa seed=S
A full arm that was not run here is read from the project's stored runs of the same command
(docs/results/adaptive_eval.json's full studies for the zoo: their work, wall and test acc_ja;
docs/results/vqa_seeds.json for toy_ja_vqa: its test table only, so its work is estimated as
trials x the mean work of the fully evaluated trials of the multi-fidelity study of that seed,
and says so). Per study, from its study.db (both phases, every finished trial's user attributes):
trials and those evaluated in full, the generated tokens, the positions the model ran (generation's
forward tokens, and the likelihood's prefill positions: `cheap_tokens`) summed, the cheap-vs-full
rank correlation each phase logged (and whether it fell back), the command's wall time, and the
best merge's test metric (test_table.json: the whole test split).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
from pathlib import Path

from bench.adaptive_eval import finished_trials, log_seconds

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "outputs" / "bench_fidelity"
DATA = ROOT / "docs" / "results"
SEEDS = (0, 1, 2)
VQA = ("+experiment=toy_ja_vqa",)
VQA_MF = (*VQA, "evaluation=multi_fidelity", "evaluation.cheap_items=40")
ARMS = {"zoo_full": (), "zoo_mf": ("evaluation=multi_fidelity",), "vqa_full": VQA,
        # ROUGE-L's graded items tell close merges apart less well: 40 of its 300, the informative ones
        "vqa_mf": (*VQA_MF, "evaluation.cheap_subset=informative"),
        # the other subset of each (the ablation docs/cheaper-fitness.md reports)
        "zoo_mf_informative": ("evaluation=multi_fidelity", "evaluation.cheap_subset=informative"),
        "vqa_mf_first": (*VQA_MF, "evaluation.cheap_subset=first"),
        # the zoo screened by the likelihood of its answer phrase: what docs/cheaper-fitness.md measured first
        "zoo_mf_likelihood": ("evaluation=multi_fidelity", "evaluation.cheap=likelihood")}
METRIC = {"zoo": "acc_ja", "vqa": "rougeL_ja"}


def run_study(arm: str, seed: int, reuse: bool) -> dict:
    """One study (with `reuse`, a finished run is read); its work, correlations, wall and test metric."""
    import optuna

    from bench.results import run_logged

    run_dir = OUT / f"{arm}_seed{seed}"
    command = [sys.executable, "-m", "evo_ps", f"seed={seed}", *ARMS[arm], f"run_dir={run_dir}",
               f"tracking.mlruns_dir={run_dir / 'mlruns'}"]
    ticks = OUT / f"cpu_{arm}_seed{seed}.ticks"  # a run started by hand: its CPU sampled from /proc while it ran
    if reuse and (run_dir / "test_table.json").is_file():
        wall = log_seconds(run_dir / "output.log")
        cpu = int(ticks.read_text()) / os.sysconf("SC_CLK_TCK") if ticks.is_file() else None
        print(f"reuse   {arm} seed {seed}: {run_dir} ({wall / 60:.1f} min)", flush=True)
    else:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall = run_logged(f"{arm} seed {seed}", command, run_dir)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    trials = finished_trials(run_dir)
    full = [t for t in trials if not t.user_attrs.get("partial")]
    work = {key: sum(t.user_attrs.get(key, 0) for t in trials) for key in ("generated_tokens", "forward_tokens")}
    # the likelihood's prefill positions (a generated subset's are in forward_tokens already)
    work["cheap_tokens"] = sum(t.user_attrs.get("cheap_tokens", 0) for t in trials
                               if "likelihood" in t.user_attrs.get("fidelities", ()))
    storage = f"sqlite:///{run_dir / 'study.db'}"
    phases = {s.study_name: s.user_attrs for s in (optuna.load_study(study_name=summary.study_name, storage=storage)
                                                    for summary in optuna.get_all_study_summaries(storage))}
    table = json.loads((run_dir / "test_table.json").read_text())
    return {**work, "trials": len(trials), "full_trials": len(full), "wall_seconds": round(wall, 1),
            "cpu_seconds": None if cpu is None else round(cpu, 1),
            "test": table["best_merge"][METRIC[arm.split("_")[0]]],
            # per fully evaluated trial: what a full-evaluation study of the same trials would spend each
            "forward_per_full_trial": statistics.mean(t.user_attrs.get("forward_tokens", 0) for t in full),
            "generated_per_full_trial": statistics.mean(t.user_attrs.get("generated_tokens", 0) for t in full),
            "correlation": {name: [attrs.get("fidelity_correlation"), attrs.get("fidelity_pairs"),
                                   bool(attrs.get("fidelity_fallback"))]
                            for name, attrs in phases.items() if "fidelity_pairs" in attrs}}


def stored_full(task: str, seed: int, mf: dict | None) -> dict | None:
    """A full-evaluation study of this seed from the project's stored runs (module docstring)."""
    if task == "zoo":
        study = json.loads((DATA / "adaptive_eval.json").read_text())["adaptive_eval"]["studies"].get(f"full_seed{seed}")
        if study is None:  # a seed the racing bench did not run
            return None
        return {**{k: study[k] for k in ("generated_tokens", "forward_tokens", "trials", "full_trials",
                                          "wall_seconds")}, "cheap_tokens": 0, "test": study["test_acc_ja"],
                "source": "docs/results/adaptive_eval.json"}
    tables = json.loads((DATA / "vqa_seeds.json").read_text())
    if mf is None or f"vqa_seed{seed}" not in tables:
        return None
    return {"generated_tokens": mf["trials"] * mf["generated_per_full_trial"],
            "forward_tokens": mf["trials"] * mf["forward_per_full_trial"], "cheap_tokens": 0,
            "trials": mf["trials"], "full_trials": mf["trials"], "wall_seconds": None,
            "test": tables[f"vqa_seed{seed}"]["best_merge"]["rougeL_ja"],
            "source": "docs/results/vqa_seeds.json (test); work estimated from the multi-fidelity study's full trials"}


def render(table: dict) -> str:
    studies = table["studies"]
    lines = ["| study | trials (fully evaluated) | generated tokens | model positions (generation + likelihood) "
             "| wall min | CPU min | test metric % | cheap-vs-full Spearman per phase (pairs) |", "|---" * 8 + "|"]
    summary = []
    seeds = sorted({int(name.rsplit("_seed", 1)[1]) for name in studies})  # those run (--seeds)
    for task in ("zoo", "vqa"):
        rows = {arm: [studies.get(f"{task}_{arm}_seed{s}") for s in seeds]
                for arm in ("full", "mf", "mf_informative", "mf_first", "mf_likelihood")}
        for arm in rows:
            for seed, st in zip(seeds, rows[arm]):
                if st is None:
                    continue
                positions = st["forward_tokens"] + st["cheap_tokens"]
                corr = "; ".join(f"{'warm start' if name.endswith('-uniform') else 'per layer'} {c:.2f} ({n})"
                                 f"{' fell back' if fb else ''}"
                                 for name, (c, n, fb) in sorted(st.get("correlation", {}).items(), reverse=True)
                                 if c is not None) or "-"
                wall = "-" if st["wall_seconds"] is None else f"{st['wall_seconds'] / 60:.1f}"
                cpu = "-" if st.get("cpu_seconds") is None else f"{st['cpu_seconds'] / 60:.1f}"
                mark = "" if "source" not in st else " (stored)"
                lines.append(f"| {task} {arm}{mark}, seed {seed} | {st['trials']} ({st['full_trials']}) | "
                             f"{st['generated_tokens']:,.0f} | {positions:,.0f} | {wall} | {cpu} | {100 * st['test']:.1f} | {corr} |")
        if not all(rows["full"]) or not all(rows["mf"]):
            for seed, full, mf in zip(seeds, rows["full"], rows["mf"]):
                if full and mf:
                    summary.append(
                        f"- {task}, seed {seed} only: full / multi_fidelity: generated tokens "
                        f"**{full['generated_tokens'] / mf['generated_tokens']:.2f}x**, model positions **"
                        f"{full['forward_tokens'] / (mf['forward_tokens'] + mf['cheap_tokens']):.2f}x**; test "
                        f"{METRIC[task]} {100 * mf['test']:.1f} vs {100 * full['test']:.1f}.")
            continue
        full_test = [100 * s["test"] for s in rows["full"]]
        se = statistics.stdev(full_test) / len(full_test) ** 0.5
        for arm in ("mf", "mf_informative", "mf_first"):
            if not all(rows[arm]):
                continue
            mf_test = [100 * s["test"] for s in rows[arm]]
            gen = statistics.mean(s["generated_tokens"] for s in rows["full"]) / statistics.mean(
                s["generated_tokens"] for s in rows[arm])
            pos = statistics.mean(s["forward_tokens"] for s in rows["full"]) / statistics.mean(
                s["forward_tokens"] + s["cheap_tokens"] for s in rows[arm])
            delta = statistics.mean(mf_test) - statistics.mean(full_test)
            # the difference of two 3-seed means has its own standard error: both arms' seeds vary
            se_delta = (se ** 2 + statistics.stdev(mf_test) ** 2 / len(mf_test)) ** 0.5
            summary.append(
                f"- {task}: full / {arm}, means over seeds: generated tokens **{gen:.2f}x**, model positions "
                f"**{pos:.2f}x**; test {METRIC[task]} {statistics.mean(mf_test):.1f} vs {statistics.mean(full_test):.1f} "
                f"({delta:+.1f} points; one standard error of full evaluation's mean: {se:.1f}; of the difference of "
                f"the two means: {se_delta:.1f}). Goals: >= 4x less generation-equivalent compute (model positions) "
                f"**{'met' if pos >= 4 else 'not met'}**; within one standard error of full evaluation's mean "
                f"**{'met' if abs(delta) <= se or delta > 0 else 'not met'}**.")
        full_walls, mf_walls = ([st["wall_seconds"] for st in rows[arm]] for arm in ("full", "mf"))
        full_cpus, mf_cpus = ([st.get("cpu_seconds") for st in rows[arm]] for arm in ("full", "mf"))
        # a stored full run ran on another day's machine: its wall is not comparable
        if None not in full_walls + mf_walls and not any("source" in st for st in rows["full"]):
            line = (f"- {task}: wall, means: full {statistics.mean(full_walls) / 60:.1f} min, mf "
                    f"{statistics.mean(mf_walls) / 60:.1f} min")
            if None not in full_cpus + mf_cpus:  # the whole command: start-up, test table and export included
                line += (f"; CPU, means: full {statistics.mean(full_cpus):.0f} s, mf {statistics.mean(mf_cpus):.0f} s "
                         f"({statistics.mean(full_cpus) / statistics.mean(mf_cpus):.2f}x)")
            summary.append(line + ".")
    sources = sorted({s["source"] for s in studies.values() if "source" in s})
    notes = [f"- (stored) rows: {source}." for source in sources]
    return "\n".join(lines) + "\n\n" + "\n".join(summary + notes) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.multi_fidelity", description=__doc__.split("\n")[0])
    parser.add_argument("--arms", nargs="+", default=["zoo_mf", "vqa_mf"], choices=list(ARMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--reuse", action="store_true", help="read finished runs instead of running them again")
    parser.add_argument("--finished-only", action="store_true",
                        help="with --reuse: leave out the studies that have no finished run (said per study)")
    parser.add_argument("--out", type=Path, help="write the table as JSON here")
    parser.add_argument("--docs", action="store_true", help="write docs/results/multi_fidelity.json and its block")
    args = parser.parse_args(argv)
    studies = {}
    for arm in args.arms:
        for seed in args.seeds:
            if args.reuse and args.finished_only and not (OUT / f"{arm}_seed{seed}" / "test_table.json").is_file():
                print(f"missing {arm} seed {seed}: no finished run, left out", flush=True)
                continue
            studies[f"{arm}_seed{seed}"] = run_study(arm, seed, args.reuse)
    for task in ("zoo", "vqa"):
        for seed in args.seeds:
            if f"{task}_full_seed{seed}" not in studies:
                stored = stored_full(task, seed, studies.get(f"{task}_mf_seed{seed}"))
                if stored is not None:
                    studies[f"{task}_full_seed{seed}"] = stored
    table = {"studies": studies}
    print(render(table))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"multi_fidelity": table}, indent=2) + "\n")
    if args.docs:
        from bench.results import write_block

        write_block("multi_fidelity", table)


if __name__ == "__main__":
    main()
