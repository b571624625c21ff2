"""Breeding with 4 workers (1 primary + 3 helpers on one SQLite study and archive) against 1, at an
equal number of evaluations, on the zoo: wall-clock speed-up measured on this machine, and projected
for one core per worker from each worker's CPU time.

    python -m bench.breed_workers                           # 40 evaluations, 30 search items
    python -m bench.breed_workers --evaluations 60 --items 50 --workers 4

Each run is the command a user types (run dirs under outputs/bench_breed_workers/):
  1 worker    python -m evo_breed n_trials=N ...
  4 workers   the same, plus 3 x the same with helper=true, started together, one run_dir
How the figures are made:
  measured   wall(1) / wall(4): from starting the workers to the last one's exit (start-up, the
             starting models, the children, the test table and export: the whole command), the
             same for the children's phase alone (its first trial's start to its last one's end,
             from the study), and per finished child (each extra worker may finish one child
             beyond n_trials, as any helper of any search may);
  projected  CPU(1) / max over workers of CPU(w): each process's user + system CPU time
             (os.wait4). With a core per worker and nothing else running, a worker's wall time is
             its CPU time plus its waits (a helper waits for the starting models, the primary for
             the helpers' last trials), so the run takes about as long as its busiest worker's CPU
             time: the primary's, which also scores the starting models and the test table. Lock
             waits and the extra crossovers a replica makes when replaying others' offers are in
             the CPU times; storage contention on more cores is not.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "outputs" / "bench_breed_workers"
STUDY = "breed_toy_ja_math"


def run(workers: int, *, evaluations: int, items: int, seed: int, out: Path = OUT,
        extra: tuple[str, ...] = ()) -> dict[str, float]:
    """One run with `workers` workers (run dir out/workers<N>_seed<S>); its wall time, its
    children's phase and each worker's CPU time."""
    run_dir = out / f"workers{workers}_seed{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    args = [sys.executable, "-m", "evo_breed", f"n_trials={evaluations}", f"seed={seed}", f"run_dir={run_dir}",
            f"tracking.mlruns_dir={run_dir / 'mlruns'}", f"objective.search.limit={items}", "archive.init_merges=1",
            *(f"objective.options.tasks.{t}.search.limit={items}" for t in ("en_math", "ja_qa")), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    procs = []
    for k in range(workers):
        log = open(run_dir / (f"helper{k}.log" if k else "primary.log"), "w")
        procs.append(subprocess.Popen(args + (["helper=true", "helper_wait_minutes=60"] if k else []), cwd=ROOT,
                                      stdout=log, stderr=subprocess.STDOUT, env=env))
    cpu = []
    for proc in procs:
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise SystemExit(f"a worker failed: see {run_dir}/*.log")
        cpu.append(usage.ru_utime + usage.ru_stime)
    wall = time.perf_counter() - started
    children = [t for t in optuna.load_study(study_name=STUDY, storage=f"sqlite:///{run_dir / 'study.db'}").trials
                if t.state.is_finished()]
    phase = max(t.datetime_complete for t in children) - min(t.datetime_start for t in children)
    return {"wall": wall, "children_wall": phase.total_seconds(), "cpu": cpu, "children": len(children)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--evaluations", type=int, default=40)
    parser.add_argument("--items", type=int, default=30, help="search items per task")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    a = parser.parse_args()
    one = run(1, evaluations=a.evaluations, items=a.items, seed=a.seed)
    many = run(a.workers, evaluations=a.evaluations, items=a.items, seed=a.seed)
    print(f"evo_breed on the zoo, {a.evaluations} evaluations ({one['children']} / {many['children']} children "
          f"finished), {a.items} search items per task, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}")
    print(f"| | 1 worker | {a.workers} workers | speed-up |\n|---|---|---|---|")
    print(f"| wall, whole command | {one['wall']:.0f} s | {many['wall']:.0f} s | {one['wall'] / many['wall']:.2f}x |")
    print(f"| wall, children's phase | {one['children_wall']:.0f} s | {many['children_wall']:.0f} s | "
          f"{one['children_wall'] / many['children_wall']:.2f}x |")
    # each extra worker may finish one child beyond the budget: per child is the like-for-like rate
    per_one, per_many = one["children_wall"] / one["children"], many["children_wall"] / many["children"]
    print(f"| wall per finished child | {per_one:.2f} s | {per_many:.2f} s | {per_one / per_many:.2f}x |")
    print(f"| CPU per worker (primary first) | {one['cpu'][0]:.0f} s | {' / '.join(f'{c:.0f}' for c in many['cpu'])} s "
          f"| projected, a core per worker: {one['cpu'][0] / max(many['cpu']):.2f}x |")


if __name__ == "__main__":
    main()
