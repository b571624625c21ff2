"""Data-flow-space evolutionary merging, end to end.

    python -m evo_dfs                                  # the embedded default (zoo, toy_ja_math)
    python -m evo_dfs +experiment=toy_hybrid           # PS + DFS, after `python -m evo_ps`
    python -m evo_dfs +experiment=ja_math              # the paper's 7B setup (GPU)
    python -m evo_dfs sampler=nsga2 minimize=[path_length]   # accuracy vs path length
    python -m evo_dfs space.scales=wnet seed=1         # any override; same run_dir = resume

Top to bottom: load the source models once (model A first) -> slot layout, search space and the
path model over the live layers (nothing copied) -> prepare the objective once -> open (or resume)
the Optuna study -> per trial: genome -> path -> set_path -> score on the search split, log to
MLflow -> the best path re-scored on the test split next to every source -> the best path exported
(HF dir loadable with trust_remote_code=True, model card), path picture, history and table logged.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig
from transformers import AutoConfig, AutoTokenizer

from evo_core import (ParamSpec, Progress, Tracker, best_trial, build_objective, load_models, make_sampler,
                      mlflow_ui_command, open_study, plot_history, require_models, run_cli, run_trials, sqlite_url_in)
from evo_dfs import (DFSSpace, GenomeCMA, LayerPath, LayerPathForCausalLM, SlotLayout, export_layer_path, plot_path,
                     unpack_genome, write_model_card)
from evo_dfs._config import DFSConfig, PoolConfig, validate

CONF_DIR = Path(__file__).resolve().parents[1] / "conf" / "dfs"
# above this many values full CMA-ES costs minutes per sample (4,288: 3 s per draw, up to 101 draws per ask)
FULL_CMA_MAX_VALUES = 1000


def check_sources(pool: PoolConfig) -> None:
    """Every source model can be had: a missing output of another run names the command that writes
    it, any other missing model the key to set."""
    for name, command in pool.made_by.items():
        if not Path(pool.sources[name]).exists():
            raise FileNotFoundError(f"model {name!r}: {pool.sources[name]} does not exist; it is written by "
                                    f"`{command}`: run that first")
    require_models({f"pool.sources.{name}": path for name, path in pool.sources.items()})


def build_space(cfg: DFSConfig) -> DFSSpace:
    """The search space from the sources' configs alone (no weights read), checked against the sampler."""
    layers = tuple(AutoConfig.from_pretrained(path).num_hidden_layers for path in cfg.pool.sources.values())
    space = DFSSpace(layout=SlotLayout(layers_per_model=layers, repeats=cfg.space.repeats), scales=cfg.space.scales,
                     indicator_init=cfg.space.indicator_init,
                     **({"hidden": cfg.space.wnet_hidden} if cfg.space.scales == "wnet" else {}))
    if cfg.sampler.kind == "cmaes" and not cfg.sampler.separable and space.dim > FULL_CMA_MAX_VALUES:
        raise ValueError(f"full CMA-ES on {space.dim} values is impractical (each sample is an n^3 product, redrawn "
                         f"until inside the bounds: bench/dfs_trial_time.py); set sampler.separable=true or "
                         f"space.scales=wnet")
    return space


def study_signature(cfg: DFSConfig, layout: SlotLayout, sampler) -> dict:
    """What a resumed study must share with its first run (else its trials mean something else)."""
    signature = {"sources": list(cfg.pool.sources), "layers_per_model": list(layout.layers_per_model),
                 "repeats": layout.repeats, "scales": cfg.space.scales, "indicator_init": cfg.space.indicator_init,
                 "encoding": cfg.space.encoding, "fitness": cfg.fitness}
    if cfg.space.scales == "wnet":
        signature["wnet_hidden"] = cfg.space.wnet_hidden
    if isinstance(sampler, GenomeCMA):  # the genomes are replayed from these
        signature.update(seed=sampler.seed, sigma0=sampler.sigma0, popsize=sampler.popsize,
                         separable=sampler.separable)
    return signature


def check_resume(study, signature: dict, storage: str) -> None:
    stored = study.user_attrs.get("dfs")
    if stored is None:
        study.set_user_attr("dfs", signature)
    elif stored != signature:
        diff = ", ".join(f"{key} {stored.get(key)!r} (now {signature.get(key)!r})"
                         for key in sorted(set(stored) | set(signature)) if stored.get(key) != signature.get(key))
        raise ValueError(f"study {study.study_name!r} in {storage} was run with {diff}; use those settings, "
                         f"or another study_name / run_dir")


def run(cfg: DFSConfig, resolved: str) -> dict[str, dict[str, float]]:
    # first the checks: a missing model or an impractical space stops the run before anything is written
    check_sources(cfg.pool)
    space = build_space(cfg)
    layout = space.layout
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)

    # everything a trial needs is built once, here; the data first (model A's tokenizer), so that
    # a bad split fails in seconds rather than after loading the models; no same-shape check: only
    # decoder layers are shared between the sources, and from_sources checks those
    names = list(cfg.pool.sources)
    tokenizer = AutoTokenizer.from_pretrained(cfg.pool.sources[names[0]])
    objective = build_objective(cfg.objective, tokenizer)
    models = load_models(cfg.pool.sources, dtype=cfg.pool.dtype, device=cfg.pool.device, same_shapes=False)
    assert SlotLayout.of(list(models.values()), repeats=layout.repeats) == layout and list(models) == names
    start = space.path(space.x0_vector())
    path_model = LayerPathForCausalLM.from_sources(list(models.values()), start.layers, start.scales,
                                                   source_names=names).eval()

    storage = cfg.tracking.storage or sqlite_url_in(run_dir / "study.db")
    genome_mode = cfg.space.encoding == "genome"
    x0 = space.x0()
    if genome_mode:  # no Optuna parameters: GenomeCMA hands each trial its whole genome
        specs, sampler = [], GenomeCMA(space=space, seed=cfg.seed, sigma0=cfg.sampler.sigma0,
                                       popsize=cfg.sampler.popsize, separable=cfg.sampler.separable)
    else:
        specs = [ParamSpec(name=n, low=lo, high=hi, init=x0[n]) for n, (lo, hi) in space.bounds().items()]
        sampler = make_sampler(cfg.sampler.kind, space=specs, seed=cfg.seed, sigma0=cfg.sampler.sigma0,
                               popsize=cfg.sampler.popsize, separable=cfg.sampler.separable)
    study = open_study(name=cfg.study_name, storage_url=storage, sampler=sampler, directions=cfg.directions)
    check_resume(study, study_signature(cfg, layout, sampler), storage)
    if not genome_mode and not study.trials:
        study.enqueue_trial(x0)  # trial 0 = model A, the baseline (GenomeCMA does the same by itself)
    print(f"study   {cfg.study_name!r}: {space.dim} values ({cfg.space.encoding}), T = {layout.num_slots} slots "
          f"over M = {layout.num_layers} layers, storage {storage}")
    print(f"        inspect: optuna-dashboard {storage}")

    tracker = Tracker(mlruns_dir=cfg.tracking.mlruns_dir, experiment=cfg.tracking.experiment)
    run_id = tracker.start(run_id=study.user_attrs.get("mlflow_run_id"), run_name=f"{cfg.study_name}-seed{cfg.seed}",
                           params={"config": resolved, "seed": cfg.seed, "storage": storage,
                                   "encoding": cfg.space.encoding, "n_values": space.dim, "slots": layout.num_slots,
                                   **{f"source.{k}": v for k, v in cfg.pool.sources.items()}})
    study.set_user_attr("mlflow_run_id", run_id)
    print(f"mlflow  run {run_id}; browse: {mlflow_ui_command(tracker.mlruns_dir)}")

    # parameter count of a path = model A's embeddings, norm and head + each visited layer once
    frame = sum(p.numel() for n, p in models[names[0]].named_parameters() if ".layers." not in n)
    layer_sizes = [sum(p.numel() for p in layer.parameters()) for layer in path_model.model.layers]

    def describe(path: LayerPath) -> dict[str, float]:
        hops = Counter(layout.layer_owner[i] for i in path.layers)
        return {"path_length": len(path.layers), "unique_layers": len(set(path.layers)),
                "n_params": frame + sum(layer_sizes[i] for i in set(path.layers)),
                **{f"hops_{name}": hops[k] for k, name in enumerate(names)}}

    def evaluate(values: dict[str, float], number: int) -> dict[str, float]:
        path = space.path(sampler.genome(number) if genome_mode else values)
        started = time.perf_counter()
        path_model.set_path(path.layers, path.scales)
        metrics = objective.score(path_model, "search")
        return {**metrics, **describe(path), "eval_seconds": time.perf_counter() - started}

    progress = Progress(n_trials=cfg.n_trials, fitness=cfg.objective.fitness)
    run_trials(study, space=specs, evaluate=evaluate, fitness=cfg.fitness, n_trials=cfg.n_trials,
               timeout=cfg.timeout_minutes and 60 * cfg.timeout_minutes,
               on_trial=[progress, tracker.log_trial])

    # the final table: every source model and the best path on the test split
    best = best_trial(study)
    best_path = space.path(unpack_genome(best.user_attrs["genome"]) if genome_mode else best.params)
    table = {name: {**objective.score(model, "test"), "layers": len(model.model.layers)}
             for name, model in models.items()}
    path_model.set_path(best_path.layers, best_path.scales)
    table["best_path"] = {**objective.score(path_model, "test"), "layers": len(best_path.layers)}
    table = {name: {k: v for k, v in row.items() if k != "n"} for name, row in table.items()}
    markdown = tracker.log_table(table, prefix="test")
    (run_dir / "test_table.json").write_text(json.dumps(table, indent=2) + "\n")

    model_dir = export_layer_path(path_model, run_dir / "best_model", tokenizer=tokenizer, overwrite=True)
    search = {**{k: best.user_attrs[k] for k in ("acc", "acc_ja")},
              **{k: int(best.user_attrs[k]) for k in ("path_length", "unique_layers", "n_params")}}
    write_model_card(
        model_dir, title=f"{cfg.study_name}: best of {len(study.trials)} trials (trial {best.number})",
        sources=cfg.pool.sources, origins=path_model.config.stored_layer_origins, path=best_path,
        scores={f"search split (trial {best.number})": search,
                **{f"test split: {name}": row for name, row in table.items()}})
    plot_history(study, run_dir / "history.png", fitness=cfg.objective.fitness)
    plot_path(best_path.layers, best_path.scales, layout.layer_owner, run_dir / "path.png", model_names=names,
              title=f"{cfg.study_name}: trial {best.number}, {cfg.objective.fitness} {best.values[0]:.3f} (search)")
    artifacts = ["history.png", "path.png", "best_model/README.md", "best_model/config.json"]
    if len(cfg.fitness) > 1:  # the trade-off found, on the search split
        front = sorted(study.best_trials, key=lambda t: t.number)
        (run_dir / "pareto_front.md").write_text(
            "| trial | " + " | ".join(cfg.fitness) + " |\n" + "|---" * (len(cfg.fitness) + 1) + "|\n"
            + "".join(f"| {t.number} | " + " | ".join(f"{v:g}" for v in t.values) + " |\n" for t in front))
        artifacts.append("pareto_front.md")
    for artifact in artifacts:
        tracker.log_artifact(run_dir / artifact)
    tracker.finish()

    print(f"\ntest split ({len(objective.items('test'))} problems), best of {len(study.trials)} trials "
          f"(trial {best.number}: {len(best_path.layers)} hops):\n{markdown}")
    print(f"best path: {model_dir}   mlflow run: {run_id}")
    return table


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_cli(cfg, validate=validate, run=run)


if __name__ == "__main__":
    main()
