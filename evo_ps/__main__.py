"""Parameter-space evolutionary merging, end to end.

    python -m evo_ps                              # the embedded default (zoo, toy_ja_math)
    python -m evo_ps +experiment=ja_math          # the paper's 7B setup (GPU)
    python -m evo_ps space=uniform seed=1         # any override; same run_dir = resume
    python -m evo_ps helper=true                  # one more worker for a running study (any number)

Top to bottom: prepare the objective's data once -> load the pool once -> build the search space ->
open (or resume) the Optuna study -> per trial: merge in memory, score on the search split, log to
MLflow -> the best trial re-scored on the test split next to the base and every source -> the best
merged model saved (HF dir + mergekit YAML + model card), plots and table logged to MLflow.

Several workers: the same command with `helper=true` (same study name and storage; the default
SQLite file serves the workers of one machine, an RDB URL in tracking.storage those of several)
joins a study that a normal ("primary") run owns: it waits for the primary to open the study, logs
its trials into the primary's MLflow run and only searches. The primary, once its own search is
over, waits for the helpers' running trials and then writes the table and the model alone.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig
from transformers import AutoTokenizer

from evo_core import (Progress, Tracker, best_trial, build_objective, load_pool, make_sampler, mlflow_ui_command,
                      open_study, plot_history, require_models, run_cli, run_trials, sqlite_url_in, start_point, use_weights,
                      wait_for_workers)
from evo_ps import InMemoryMerger, build_space, merge_method, mergekit_yaml, save_merged
from evo_ps._config import PSConfig, validate
from evo_ps._plots import plot_layer_params

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def primary_run_id(record, storage: str, wait_minutes: float) -> str:
    """The MLflow run id the primary worker stored on the study record, once it has."""
    deadline = time.monotonic() + 60 * wait_minutes
    while (run_id := record.user_attrs.get("mlflow_run_id")) is None:
        if time.monotonic() > deadline:
            raise ValueError(f"helper=true: no primary run opened study {record.study_name!r} in {storage} within "
                             f"{wait_minutes:g} min (helper_wait_minutes); start the same command without "
                             f"helper=true")
        time.sleep(1.0)
    return run_id


def run(cfg: PSConfig, resolved: str) -> dict[str, dict[str, float]]:
    require_models({"pool.base": cfg.pool.base, **{f"pool.sources.{k}": v for k, v in cfg.pool.sources.items()}})
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)

    # everything a trial needs is built once, here; the data first, so that a bad split fails in
    # seconds rather than after minutes of loading 7B models
    tokenizer = AutoTokenizer.from_pretrained(cfg.pool.base)
    objective = build_objective(cfg.objective, tokenizer)
    method = merge_method(cfg.merge.method, cfg.merge.options)
    pool = load_pool(base=cfg.pool.base, sources=cfg.pool.sources, dtype=cfg.pool.dtype, device=cfg.pool.device,
                     tokenizer=tokenizer)
    space = build_space(method=method, sources=pool.source_names, tensor_names=pool.param_names,
                        num_layers=pool.num_layers, granularity=cfg.space.granularity,
                        split_components=cfg.space.split_components, uniform=cfg.space.uniform,
                        bounds=cfg.space.bounds)
    merger = InMemoryMerger(pool=pool, method=method)

    storage = cfg.tracking.storage or sqlite_url_in(run_dir / "study.db")
    tracker = Tracker(mlruns_dir=cfg.tracking.mlruns_dir, experiment=cfg.tracking.experiment)
    record = open_study(name=cfg.study_name, storage_url=storage, sampler=make_sampler(
        "random", space=space.params, seed=cfg.seed))  # the study's record: its MLflow run id
    if cfg.helper:
        print(f"helper  joining study {cfg.study_name!r} in {storage} (waiting for its primary run if needed)")
    run_id = tracker.start(run_id=primary_run_id(record, storage, cfg.helper_wait_minutes) if cfg.helper else record.user_attrs.get("mlflow_run_id"),
                           run_name=f"{cfg.study_name}-seed{cfg.seed}",
                           params={"config": resolved, "seed": cfg.seed, "storage": storage,
                                   "method": method.name, "n_params": len(space.params),
                                   **{f"source.{k}": v for k, v in pool.paths.items()}})
    record.set_user_attr("mlflow_run_id", run_id)
    print(f"study   {cfg.study_name!r}: {len(space.params)} parameters, storage {storage}")
    print(f"        inspect: optuna-dashboard {storage}")
    print(f"mlflow  run {run_id}; browse: {mlflow_ui_command(tracker.mlruns_dir)}")

    def search(name: str, searched, n_trials: int, x0: dict[str, float] | None = None, sigma0: float | None = None):
        """One resumable study over `searched`: per trial, merge in memory and score; a given
        start x0 is also evaluated as the study's first trial."""

        def evaluate(values: dict[str, float], seed: int) -> dict[str, float]:
            started = time.perf_counter()
            merger.apply(searched.tensor_params(values), seed=seed)
            merged = time.perf_counter()
            metrics = objective.score(pool.model, "search")
            return {**metrics, "merge_seconds": merged - started, "eval_seconds": time.perf_counter() - merged}

        # helpers must not replay the primary's random stream (CMA-ES reseeds per trial number anyway)
        sampler = make_sampler(cfg.sampler.kind, space=searched.params, seed=None if cfg.helper else cfg.seed,
                               sigma0=sigma0 or cfg.sampler.sigma0, popsize=cfg.sampler.popsize,
                               separable=cfg.sampler.separable, x0=x0)
        study = open_study(name=name, storage_url=storage, sampler=sampler)
        # CMA-ES's first trial is its start point, as in the paper (Optuna's own CmaEsSampler would
        # draw trial 0 at random and only then start from x0); a given start is evaluated first too
        if not study.trials and (x0 is not None or cfg.sampler.kind == "cmaes"):
            study.enqueue_trial(start_point(searched.params, x0))
        run_trials(study, space=searched.params, evaluate=evaluate, fitness=[cfg.objective.fitness],
                   n_trials=n_trials, timeout=cfg.timeout_minutes and 60 * cfg.timeout_minutes,
                   on_trial=[Progress(n_trials=n_trials, fitness=cfg.objective.fitness), tracker.log_trial])
        return study

    # optional warm start: a short search of the uniform space (one value per source and
    # parameter kind), whose best point starts the per-layer CMA-ES instead of the paper's x0
    uniform_best = None
    if cfg.space.warm_start_trials and not cfg.space.uniform:
        uniform = build_space(method=method, sources=pool.source_names, tensor_names=pool.param_names,
                              num_layers=pool.num_layers, uniform=True, bounds=cfg.space.bounds)
        print(f"warm start: {cfg.space.warm_start_trials} trials over the {len(uniform.params)} uniform parameters")
        uniform_best = best_trial(search(f"{cfg.study_name}-uniform", uniform, cfg.space.warm_start_trials))
        start = space.broadcast({k.removeprefix("all."): v for k, v in uniform_best.params.items()})
        print(f"per-layer search starts at the best uniform merge (trial {uniform_best.number}, "
              f"{cfg.objective.fitness} {uniform_best.values[0]:.3f})")
        study = search(cfg.study_name, space, cfg.n_trials, x0=start, sigma0=cfg.space.warm_start_sigma0)
    else:
        study = search(cfg.study_name, space, cfg.n_trials)

    if cfg.helper:
        print(f"helper  done: {len(study.trials)} trials in the study; its primary run writes the table and model")
        return {}
    wait_for_workers(study, on_wait=lambda running: print(
        f"waiting for {running} running trial(s) of other workers (a dead worker's trial fails after 30 s)",
        flush=True))

    # the final table: base, every source and the best merge on the test split
    best = best_trial(study)
    table = {}
    for name in (pool.base_name, *pool.source_names):
        use_weights(pool.model, pool.base if name == pool.base_name else pool.sources[name])
        table[name] = objective.score(pool.model, "test")
    if uniform_best is not None:
        merger.apply(uniform.tensor_params(uniform_best.params), seed=uniform_best.number)
        table["best_uniform"] = objective.score(pool.model, "test")
    best_params = space.tensor_params(best.params)
    merger.apply(best_params, seed=best.number)
    table["best_merge"] = objective.score(pool.model, "test")
    table = {name: {k: v for k, v in row.items() if k != "n"} for name, row in table.items()}
    markdown = tracker.log_table(table, prefix="test")
    (run_dir / "test_table.json").write_text(json.dumps(table, indent=2) + "\n")

    model_dir = run_dir / "best_model"
    recipe = mergekit_yaml(method=method, tensor_params=best_params, base=pool.paths[pool.base_name],
                           sources={s: pool.paths[s] for s in pool.source_names}, dtype=cfg.pool.dtype)
    save_merged(pool.model, pool.tokenizer, model_dir, card={
        "title": f"{cfg.study_name}: best of {len(study.trials)} trials (trial {best.number}, seed {best.number})",
        "method": method.name, "base": pool.paths[pool.base_name],
        "sources": {s: pool.paths[s] for s in pool.source_names}, "parameters": best.params,
        "scores": {"search": {k: v for k, v in best.user_attrs.items() if not k.endswith("seconds")}, **table},
        "mergekit_yaml": recipe})
    plot_history(study, run_dir / "history.png", fitness=cfg.objective.fitness)
    plot_layer_params(space, best.params, run_dir / "layer_params.png")
    for artifact in ("history.png", "layer_params.png", "best_model/mergekit_config.yml", "best_model/README.md"):
        tracker.log_artifact(run_dir / artifact)
    tracker.finish()

    print(f"\ntest split ({len(objective.items('test'))} problems), best of {len(study.trials)} trials:\n{markdown}")
    print(f"best model: {model_dir}   mlflow run: {run_id}")
    return table


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_cli(cfg, validate=validate, run=run)


if __name__ == "__main__":
    main()
