"""Full evaluation vs racing (evaluation=racing) on the zoo default, side by side, over seeds; and
the whole study vs a mergekit-evolve-style loop at the same number of trials.

    python -m bench.adaptive_eval                    # 3 seeds x {full, racing}: 6 studies, one at a time
    python -m bench.adaptive_eval --seeds 0 --sample 2
    python -m bench.adaptive_eval --docs             # also docs/results/adaptive_eval.json and its block
    python -m bench.adaptive_eval --out FILE         # the table as JSON (bench/results.py's way)
    python -m bench.adaptive_eval --replay-only --docs   # no runs: the replay below on the stored studies
    python -m bench.adaptive_eval --arms full racing racing_fast --reuse --docs   # finished runs read, not re-run

Each study is the command a user types, in its own run dir under outputs/bench_adaptive/:
  full     python -m evo_ps seed=S                       (= make demo: 40 uniform + 80 per-layer trials)
  racing   python -m evo_ps seed=S evaluation=racing     (the same trials, conf/evaluation/racing.yaml)
Per study, from its study.db (both phases, every finished trial's user attributes): the generated
and forward tokens and the search items scored, summed over trials; the command's wall time (with
--reuse, a finished run's: from its output.log's creation to its last write); the best merge's test
acc_ja (test_table.json, always the whole 300-problem test split).
The study-level ratio: bench/ps_trial_loop.py's loop (b) (run_merge to disk + lm-eval on the
merged dir, per trial) is timed on --sample trials of seed 0's full study (their own parameters
and merge seeds, after one untimed warm-up), and its mean per-trial time is scaled to the study's
trial count; the output says so, and compares it with the seed-0 studies, which run right before it
(under the same machine load). Studies run one at a time (1 torch thread each).
The replay: the racing rule (evo_core/_racing.race) applied, for a few settings, to the generations
of the full-evaluation studies themselves (their per-item acc_ja, stored on every trial), without
running a model: how many search items each setting would have scored on the same candidates.
It shows how the saving depends on the settings; it cannot show what the changed search would find.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "outputs" / "bench_adaptive"
ARMS = {"full": (), "racing": ("evaluation=racing",),
        # looser settings, which the replay below puts at >= 4x fewer items on full evaluation's generations
        "racing_fast": ("evaluation=racing", "evaluation.first_block=20", "evaluation.block=20",
                        "evaluation.confidence=0.68", "evaluation.tolerance=0.1")}
# (first_block, block, confidence, tolerance); the first is conf/evaluation/racing.yaml
REPLAYED = ((30, 30, 0.9, 0.05), (20, 20, 0.9, 0.05), (30, 30, 0.68, 0.05), (20, 20, 0.68, 0.1), (10, 10, 0.5, 0.1))
WORK = ("generated_tokens", "forward_tokens", "n")


def run_study(arm: str, seed: int, reuse: bool = False) -> dict[str, float]:
    """One study from scratch (with `reuse`, a finished run of it is read instead); its summed work,
    wall time and test acc_ja."""
    from bench.results import run_logged

    run_dir = OUT / f"{arm}_seed{seed}"
    command = [sys.executable, "-m", "evo_ps", f"seed={seed}", *ARMS[arm], f"run_dir={run_dir}",
               f"tracking.mlruns_dir={run_dir / 'mlruns'}"]
    if reuse and (run_dir / "test_table.json").is_file():
        wall = log_seconds(run_dir / "output.log")
        print(f"reuse   {arm} seed {seed}: {run_dir} ({wall / 60:.1f} min)", flush=True)
    else:
        wall = run_logged(f"{arm} seed {seed}", command, run_dir)
    trials = finished_trials(run_dir)
    work = {key: sum(t.user_attrs.get(key, 0) for t in trials) for key in WORK}
    table = json.loads((run_dir / "test_table.json").read_text())
    return {**work, "trials": len(trials), "wall_seconds": round(wall, 1), "test_acc_ja": table["best_merge"]["acc_ja"],
            "full_trials": sum(not t.user_attrs.get("partial") for t in trials)}


def log_seconds(log: Path) -> float:
    """A finished run's wall time from its output.log: created as the command started, last
    written as it ended (GNU stat's birth and modification times)."""
    import subprocess

    born, modified = map(int, subprocess.run(["stat", "-c", "%W %Y", str(log)], capture_output=True, text=True,
                                             check=True).stdout.split())
    if born == 0:
        raise SystemExit(f"error: this filesystem keeps no creation time for {log}: run without --reuse")
    return float(modified - born)


def finished_trials(run_dir: Path) -> list:
    import optuna

    storage = f"sqlite:///{run_dir / 'study.db'}"
    return [t for summary in optuna.get_all_study_summaries(storage)
            for t in optuna.load_study(study_name=summary.study_name, storage=storage).trials
            if t.state.is_finished() and t.state.name == "COMPLETE"]


def loop_b_seconds(run_dir: Path, sample: int) -> float:
    """Mean seconds per trial of the mergekit-evolve-style loop (b) on `sample` per-layer trials of
    the study in run_dir (after one untimed warm-up trial)."""
    import optuna
    import torch

    from bench.ps_trial_loop import MergekitEvolveLoop, objective_settings, zoo_paths
    from evo_core import load_pool
    from evo_ps import build_space, merge_method

    torch.set_num_threads(1)
    storage = f"sqlite:///{run_dir / 'study.db'}"
    trials = [t for t in optuna.load_study(study_name="toy_ja_math", storage=storage).trials if t.state.name == "COMPLETE"]
    base, sources = zoo_paths(ROOT / "zoo" / "models")
    pool = load_pool(base=base, sources=sources, dtype="float32", device="cpu")
    method = merge_method("dare_ties")
    space = build_space(method=method, sources=pool.source_names, tensor_names=pool.param_names,
                        num_layers=pool.num_layers)
    settings = objective_settings(150)
    loop = MergekitEvolveLoop(method=method, base=base, sources=sources, settings=settings,
                              batch_size=settings["batch_size"], workdir=None)
    chosen = trials[:: max(1, len(trials) // (sample + 1))][: sample + 1]
    seconds = []
    for i, trial in enumerate(chosen):
        result = loop.trial(space.tensor_params(trial.params), seed=trial.number)
        print(f"loop b  trial {trial.number}: {result['total']:.1f} s (merge {result['merge']:.1f}, eval "
              f"{result['eval']:.1f}){'  warm-up' if i == 0 else ''}", flush=True)
        if i:
            seconds.append(result["total"])
    return statistics.mean(seconds)


def replay(run_dir: Path, first_block: int, block: int, confidence: float, tolerance: float) -> float:
    """Search items of the full study in run_dir / those a race with these settings scores on the
    same generations (each phase's trials after its start point, popsize at a time)."""
    import optuna

    from evo_core import EvaluationConfig, paper_popsize
    from evo_core import race

    storage = f"sqlite:///{run_dir / 'study.db'}"
    z = EvaluationConfig(confidence=confidence).z
    full = raced = 0
    for summary in optuna.get_all_study_summaries(storage):
        trials = [t for t in optuna.load_study(study_name=summary.study_name, storage=storage).trials
                  if t.state.name == "COMPLETE"]
        popsize = paper_popsize(len(trials[0].params))
        for start in range(1, len(trials), popsize):
            truth = {t.number: t.user_attrs["item_scores"]["acc_ja"] for t in trials[start:start + popsize]}
            n_items = len(next(iter(truth.values())))
            verdicts = race(list(truth), score=lambda key, items: [truth[key][i] for i in items], n_items=n_items,
                            first_block=first_block, block=block, mu=popsize // 2, z=z, tolerance=tolerance)
            full += n_items * len(truth)
            raced += sum(len(v.scores) for v in verdicts.values())
    return full / raced


def render(table: dict) -> str:
    """The docs' block: per seed and arm the work, wall time and test acc_ja; the means, full
    evaluation's standard error, each racing arm's ratios and goals, and the study-level ratio
    against loop (b)."""
    seeds = sorted({int(k.rsplit("seed", 1)[1]) for k in table["studies"]})
    arms = [arm for arm in ARMS if f"{arm}_seed{seeds[0]}" in table["studies"]]
    rows = ["| study | trials (fully scored) | search items scored | generated tokens | forward tokens | wall min "
            "| test acc_ja % |", "|---" * 7 + "|"]
    for seed in seeds:
        for arm in arms:
            s = table["studies"][f"{arm}_seed{seed}"]
            rows.append(f"| {arm}, seed {seed} | {s['trials']} ({s['full_trials']}) | {s['n']:,.0f} | "
                        f"{s['generated_tokens']:,.0f} | {s['forward_tokens']:,.0f} | {s['wall_seconds'] / 60:.1f} | "
                        f"{100 * s['test_acc_ja']:.1f} |")
    mean = {arm: {key: statistics.mean(table["studies"][f"{arm}_seed{s}"][key] for s in seeds)
                  for key in (*WORK, "trials", "wall_seconds", "test_acc_ja")} for arm in arms}
    for arm in arms:
        m = mean[arm]
        rows.append(f"| **{arm}, mean of {len(seeds)}** | | {m['n']:,.0f} | {m['generated_tokens']:,.0f} | "
                    f"{m['forward_tokens']:,.0f} | {m['wall_seconds'] / 60:.1f} | {100 * m['test_acc_ja']:.1f} |")
    full_ja = [100 * table["studies"][f"full_seed{s}"]["test_acc_ja"] for s in seeds]
    se = statistics.stdev(full_ja) / math.sqrt(len(full_ja)) if len(full_ja) > 1 else float("nan")
    lines = ["\n".join(rows), "", f"- the standard error of full evaluation's mean test acc_ja is {se:.1f} points "
                                  f"(sd of its {len(seeds)} seeds / sqrt {len(seeds)})."]
    for arm in arms[1:]:
        ratio = {key: mean["full"][key] / mean[arm][key] for key in (*WORK, "wall_seconds")}
        gap = 100 * (mean[arm]["test_acc_ja"] - mean["full"]["test_acc_ja"])
        lines += [f"- full / {arm} ({' '.join(ARMS[arm])}), means over seeds: generated tokens "
                  f"**{ratio['generated_tokens']:.2f}x**, forward tokens {ratio['forward_tokens']:.2f}x, search items "
                  f"{ratio['n']:.2f}x, wall time {ratio['wall_seconds']:.2f}x; test acc_ja "
                  f"{100 * mean[arm]['test_acc_ja']:.1f} vs {100 * mean['full']['test_acc_ja']:.1f} ({gap:+.1f} points). "
                  f"Goals: >= 4x less generation work **{'met' if ratio['generated_tokens'] >= 4 else 'not met'}**; "
                  f"test acc_ja within one standard error **{'met' if gap >= -se else 'not met'}**."]
    b = table.get("loop_b")
    if b:  # against seed 0's studies: loop (b) runs right after them, under the same machine load
        first = {arm: table["studies"][f"{arm}_seed{seeds[0]}"] for arm in arms}
        trials = first["full"]["trials"]
        estimate = b["seconds_per_trial"] * trials
        lines.append(f"- study level: loop (b) (run_merge to disk + lm-eval, per trial) timed on {b['sample']} trials "
                     f"of the full seed-{seeds[0]} study: {b['seconds_per_trial']:.1f} s per trial, **scaled** to "
                     f"{trials} trials: {estimate / 60:.1f} min, against our seed-{seeds[0]} studies (wall, with "
                     f"loading and the test table), goal >= 10x: " + ", ".join(
                         f"{arm} {first[arm]['wall_seconds'] / 60:.1f} min (**{estimate / first[arm]['wall_seconds']:.1f}x**"
                         f" cheaper, {'met' if estimate / first[arm]['wall_seconds'] >= 10 else 'not met'})"
                         for arm in arms) + ".")
    if "replay" in table:
        lines += ["", "Replay of the racing rule on the full studies' own generations (no model run; items only):", "",
                  "| first_block / block | confidence | tolerance | " + " | ".join(
                      f"items full / raced, seed {s}" for s in seeds) + " | mean |", "|---" * (4 + len(seeds)) + "|"]
        for row in table["replay"]:
            ratios = [row["ratios"][str(s)] for s in seeds]
            lines.append(f"| {row['first_block']} / {row['block']} | {row['confidence']} | {row['tolerance']} | "
                         + " | ".join(f"{r:.2f}x" for r in ratios) + f" | {statistics.mean(ratios):.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sample", type=int, default=4, help="loop (b) trials timed (0: skip loop (b))")
    parser.add_argument("--out", type=Path, help="write the table as JSON here")
    parser.add_argument("--docs", action="store_true", help="write docs/results/adaptive_eval.json and its block")
    parser.add_argument("--arms", nargs="+", default=["full", "racing"], choices=list(ARMS))
    parser.add_argument("--add", action="store_true",
                        help="add these runs to the stored docs/results/adaptive_eval.json (no loop (b))")
    parser.add_argument("--reuse", action="store_true",
                        help="a study whose run dir holds a finished run is read, not run again")
    parser.add_argument("--replay-only", action="store_true",
                        help="run no study: add the replay to the stored docs/results/adaptive_eval.json")
    args = parser.parse_args(argv)
    if args.sample < 0 or not args.seeds:
        raise SystemExit("error: --sample must be >= 0 and --seeds non-empty")

    from bench.results import load

    table = load("adaptive_eval")["adaptive_eval"] if args.replay_only or args.add else {"studies": {}}
    if not args.replay_only:
        table["studies"] |= {f"{arm}_seed{seed}": run_study(arm, seed, args.reuse)
                             for seed in args.seeds for arm in args.arms}
        if args.sample and not args.add:
            seconds = loop_b_seconds(OUT / f"full_seed{args.seeds[0]}", args.sample)
            table["loop_b"] = {"sample": args.sample, "seconds_per_trial": round(seconds, 2)}
    if all((OUT / f"full_seed{seed}" / "test_table.json").is_file() for seed in args.seeds):
        table["replay"] = [{"first_block": f, "block": b, "confidence": c, "tolerance": t,
                            "ratios": {str(seed): round(replay(OUT / f"full_seed{seed}", f, b, c, t), 3)
                                       for seed in args.seeds}} for f, b, c, t in REPLAYED]
    print()
    print(render(table) if any(key.startswith("full_") for key in table["studies"]) else json.dumps(table, indent=2))
    text = json.dumps(table, indent=2) + "\n"
    if args.out:
        args.out.write_text(text)
    if args.docs:
        from bench import results

        results.write_block("adaptive_eval", table)


if __name__ == "__main__":
    main()
