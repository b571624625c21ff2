"""What a trial's bookkeeping costs in a SQLite study, with SQLite's default rollback journal and
with the write-ahead log the project's stores use (evo_core/_files.py use_sqlite_write_ahead_log),
side by side in one run.

    .venv/bin/python bench/study_overhead.py                 # 40 trials of the zoo's per-layer shape
    .venv/bin/python bench/study_overhead.py --trials 120 --params 36 --attrs 25

Each trial is written as the lifecycle writes one: asked, `--params` floats suggested (one commit
each), `--attrs` user attributes set (one commit each, a 150-item score list among them), told;
then the study's trials are read back once, as a callback does. Printed per journal: CPU and wall
milliseconds per trial, and the ratio default / WAL. Each journal gets a fresh database in a
temporary directory on the same file system (`--dir`, default: the system's temp dir).
"""
from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from pathlib import Path

import optuna
from sqlalchemy import event


def trial_costs(database: Path, *, wal: bool, trials: int, params: int, attrs: int) -> tuple[float, float]:
    """(CPU ms, wall ms) per trial written to a fresh study in `database`."""
    storage = optuna.storages.RDBStorage(f"sqlite:///{database}")
    if wal:  # the pragmas use_sqlite_write_ahead_log sets, on this engine only
        @event.listens_for(storage.engine, "connect")
        def on_connect(connection: sqlite3.Connection, _record: object) -> None:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
        storage.engine.dispose()
    study = optuna.create_study(storage=storage, study_name="overhead", sampler=optuna.samplers.RandomSampler(seed=0))
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(trials):
        trial = study.ask()
        for i in range(params):
            trial.suggest_float(f"p{i}", 0.0, 1.0)
        trial.set_user_attr("item_scores", {"acc_ja": [1.0, 0.0] * 75})
        for i in range(attrs - 1):
            trial.set_user_attr(f"a{i}", float(i))
        study.tell(trial, 0.5)
        study.get_trials(deepcopy=False)
    return 1000 * (time.process_time() - cpu) / trials, 1000 * (time.perf_counter() - wall) / trials


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--params", type=int, default=36, help="floats suggested per trial (the zoo's per-layer: 36)")
    parser.add_argument("--attrs", type=int, default=25, help="user attributes set per trial")
    parser.add_argument("--dir", default=None, help="where the databases go (default: the system's temp dir)")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        rows = {name: trial_costs(Path(tmp) / f"{name}.db", wal=name == "wal", trials=args.trials,
                                  params=args.params, attrs=args.attrs) for name in ("default", "wal")}
    print(f"{args.trials} trials, {args.params} params + {args.attrs} user attributes each")
    print("| journal | CPU ms per trial | wall ms per trial |\n|---|---|---|")
    for name, (cpu, wall) in rows.items():
        print(f"| {'rollback (SQLite default)' if name == 'default' else 'write-ahead log, synchronous=NORMAL'} "
              f"| {cpu:.1f} | {wall:.1f} |")
    (cpu_d, wall_d), (cpu_w, wall_w) = rows["default"], rows["wal"]
    print(f"default / write-ahead log: CPU {cpu_d / cpu_w:.2f}x, wall {wall_d / wall_w:.2f}x")


if __name__ == "__main__":
    main()
