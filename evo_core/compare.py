"""The final tables of several runs side by side, as one chart: a panel per metric, a group of bars
per model (row of the test table), a bar per run.

    python -m evo_core.compare RUN_ID RUN_ID ... [--uri http://127.0.0.1:5000 | --mlruns-dir mlruns] [--out compare.png]
    python -m evo_core.compare RUN_ID ... --test-set ja_vlm_wild      # a run with named test sets: one of them

A run is a study's MLflow parent run (`mlflow  run <id>` in the CLI's output); its table is read from
its `test.<model>.<metric>` metrics (with named test sets, `test.<set>.<model>.<metric>`), as
Tracker.log_table logged them. Scores in [0, 1] are shown as
percentages, as in the printed tables. For the same runs in MLflow's own UI: select them in the
experiment's run list and press Compare (docs/scale-out.md).
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path


def run_tables(client, run_ids: Sequence[str], prefix: str = "test") -> dict[str, dict[str, dict[str, float]]]:
    """run label -> model -> metric -> value, from each run's `prefix.model.metric` metrics (prefix
    "test", or "test.<set>" for a named test set). The label is the run's name, with its id's first
    8 characters when two runs share a name."""
    runs = [client.get_run(run_id) for run_id in run_ids]
    names = [run.info.run_name or run.info.run_id for run in runs]
    tables = {}
    for run, name in zip(runs, names):
        label = f"{name} ({run.info.run_id[:8]})" if names.count(name) > 1 else name
        table: dict[str, dict[str, float]] = {}
        sets = set()  # the named test sets below `prefix`, if the run has those instead
        for key, value in run.data.metrics.items():
            parts = key.removeprefix(prefix + ".").split(".") if key.startswith(prefix + ".") else []
            if len(parts) == 2:
                table.setdefault(parts[0], {})[parts[1]] = value
            elif len(parts) == 3:
                sets.add(parts[0])
        if not table and sets:
            raise ValueError(f"run {run.info.run_id} ({name}) has named test sets ({', '.join(sorted(sets))}): "
                             f"choose one with --test-set")
        if not table:
            raise ValueError(f"run {run.info.run_id} ({name}) has no {prefix}.<model>.<metric> metrics: "
                             f"not a finished study's parent run")
        tables[label] = table
    return tables


def plot_tables(tables: dict[str, dict[str, dict[str, float]]], out: str | Path,
                metrics: Sequence[str] | None = None) -> Path:
    """The chart of `tables` (run_tables' shape) as a PNG at `out`."""
    # a bare Figure, not pyplot: a file only, and the caller's backend stays as it was
    from matplotlib.figure import Figure

    models: list[str] = []
    for table in tables.values():
        models += [m for m in table if m not in models]
    models.sort(key=lambda m: m.startswith("best"))  # baselines first, the search's results last (stable)
    metrics = list(metrics or sorted({k for t in tables.values() for row in t.values() for k in row}))
    fig = Figure(figsize=(max(6.0, 1.1 * len(models) * len(metrics) + 2), 4.2))
    axes = fig.subplots(1, len(metrics), squeeze=False)
    width = 0.8 / len(tables)
    for ax, metric in zip(axes[0], metrics):
        values_seen = [row.get(metric) for t in tables.values() for row in t.values() if row.get(metric) is not None]
        percent = all(0 <= v <= 1 for v in values_seen)
        for i, (label, table) in enumerate(tables.items()):
            xs = [j + (i - (len(tables) - 1) / 2) * width for j in range(len(models))]
            ys = [table.get(m, {}).get(metric, float("nan")) * (100 if percent else 1) for m in models]
            bars = ax.bar(xs, ys, width, label=label)
            ax.bar_label(bars, fmt="%.1f" if percent else "%g", fontsize=7, padding=1)
        ax.set_xticks(range(len(models)), models, rotation=30, ha="right")
        ax.set_title(metric + (" (%)" if percent else ""))
        if percent:
            ax.set_ylim(0, 105)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=8, loc="upper left")
    fig.suptitle("final test tables, side by side")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m evo_core.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_ids", nargs="+", metavar="RUN_ID")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--uri", help="an MLflow tracking server (tracking.uri)")
    where.add_argument("--mlruns-dir", default="mlruns", help="the local store (tracking.mlruns_dir; default mlruns)")
    parser.add_argument("--out", default="compare.png")
    parser.add_argument("--metric", action="append", help="only these metrics (repeatable); default all")
    parser.add_argument("--test-set", help="a named test set's table (objective.test.<name>); default the one test split")
    args = parser.parse_args(argv)
    from mlflow.tracking import MlflowClient

    from ._secrets import mask_secrets, tracking_uri_without_credentials

    # a server's credentials reach MLflow as its environment variables, never through its URI
    local = f"sqlite:///{Path(args.mlruns_dir).resolve() / 'mlflow.db'}"
    uri = tracking_uri_without_credentials(args.uri) if args.uri else local
    if not args.uri and not (Path(args.mlruns_dir) / "mlflow.db").is_file():
        parser.error(f"no MLflow store at {Path(args.mlruns_dir) / 'mlflow.db'}; pass --mlruns-dir or --uri")
    try:
        tables = run_tables(MlflowClient(uri), args.run_ids, prefix=f"test.{args.test_set}" if args.test_set else "test")
    except Exception as err:  # noqa: BLE001  (an unknown run id, a run without a table: one line)
        raise SystemExit(f"error: {mask_secrets(str(err).splitlines()[0])}") from None
    out = plot_tables(tables, args.out, args.metric)
    print(f"{out}: {len(tables)} runs, {len({m for t in tables.values() for m in t})} models")
    return out


if __name__ == "__main__":
    main()
