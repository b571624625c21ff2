"""Data-flow-space merging as a search of the study lifecycle (evo_core/_lifecycle.py).

    run_study(cfg, DFSSearch(cfg), resolved=yaml, ...)   # what `python -m evo_dfs` does

Load the source models once (model A first) -> slot layout, search space and the path model over
the live layers (nothing copied) -> per trial: genome -> path -> set_path (no weights touched),
scored by the lifecycle -> the test table (every source and the best path) -> the best path
exported (HF dir loadable with trust_remote_code=True, model card) and its picture.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial
from transformers import AutoConfig

from evo_core import (GenomeCMA, ParamSpec, Phases, Search, check_device, load_models, model_fingerprint,
                      require_models, unpack_genome)

from ._config import DFSConfig, PoolConfig
from ._export import export_layer_path, write_model_card
from ._path import LayerPath, SlotLayout
from ._plot import plot_path
from ._space import DFSSpace
from .modeling_layer_path import LayerPathForCausalLM

# above this many values full CMA-ES costs minutes per sample (4,288: 3 s per draw, up to 101 draws per ask)
FULL_CMA_MAX_VALUES = 1000


def check_sources(pool: PoolConfig) -> None:
    """Every source model can be had: a missing output of another run names the command that writes
    it, any other missing model the key to set."""
    for name, command in pool.made_by.items():
        if not Path(pool.sources[name]).exists():
            raise FileNotFoundError(f"model {name!r}: {pool.sources[name]} does not exist; it is written by "
                                    f"`{command}`: run that first")
    require_models({f"pool.sources.{name}": path for name, path in pool.sources.items()},
                   allow_pickle_weights=pool.allow_pickle_weights)


def dfs_space(cfg: DFSConfig) -> DFSSpace:
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


class DFSSearch(Search):
    def __init__(self, cfg: DFSConfig):
        self.cfg = cfg
        self.names = list(cfg.pool.sources)
        self.tokenizer_path = cfg.pool.sources[self.names[0]]  # model A's

    def check(self) -> None:
        check_sources(self.cfg.pool)
        check_device(self.cfg.pool.device, key="pool.device")
        self.space = dfs_space(self.cfg)

    def load(self, tokenizer: Any) -> None:
        cfg, layout = self.cfg, self.space.layout
        # no same-shape check: only decoder layers are shared between the sources, and from_sources checks those
        self.models = load_models(cfg.pool.sources, dtype=cfg.pool.dtype, device=cfg.pool.device, same_shapes=False,
                                  allow_pickle_weights=cfg.pool.allow_pickle_weights)
        self.model_hashes = {name: model_fingerprint(path) for name, path in cfg.pool.sources.items()}
        assert SlotLayout.of(list(self.models.values()), repeats=layout.repeats) == layout
        start = self.space.path(self.space.x0_vector())
        self.path_model = LayerPathForCausalLM.from_sources(list(self.models.values()), start.layers, start.scales,
                                                            source_names=self.names).eval()
        self.tokenizer = tokenizer
        # parameter count of a path = model A's embeddings, norm and head + each visited layer once
        self.frame = sum(p.numel() for n, p in self.models[self.names[0]].named_parameters() if ".layers." not in n)
        self.layer_sizes = [sum(p.numel() for p in layer.parameters()) for layer in self.path_model.model.layers]

    def signature(self) -> dict[str, Any]:
        cfg, layout = self.cfg, self.space.layout
        signature = {"search": "evo_dfs", "models": dict(cfg.pool.sources), "model_hashes": self.model_hashes,
                     "layers_per_model": list(layout.layers_per_model),
                     "repeats": layout.repeats, "scales": cfg.space.scales, "indicator_init": cfg.space.indicator_init,
                     "encoding": cfg.space.encoding, "fitness": cfg.fitness, "objective": cfg.objective.name,
                     "search_split": str(cfg.objective.search)}
        if cfg.space.scales == "wnet":
            signature["wnet_hidden"] = cfg.space.wnet_hidden
        if cfg.space.encoding == "genome":  # the genomes are replayed from these
            signature.update(seed=cfg.seed, sigma0=cfg.sampler.sigma0, popsize=cfg.sampler.popsize,
                             separable=cfg.sampler.separable)
        return signature

    def search(self, phases: Phases) -> optuna.Study:
        cfg, space, layout = self.cfg, self.space, self.space.layout
        print(f"space   {space.dim} values ({cfg.space.encoding}), T = {layout.num_slots} slots over "
              f"M = {layout.num_layers} layers")
        if cfg.space.encoding == "genome":  # no Optuna parameters: GenomeCMA hands each trial its whole genome
            self.sampler = GenomeCMA(space=space, seed=cfg.seed, sigma0=cfg.sampler.sigma0,
                                     popsize=cfg.sampler.popsize, separable=cfg.sampler.separable)
            return phases.run(name=cfg.study_name, params=[], sampler=self.sampler, directions=cfg.directions,
                              n_trials=cfg.n_trials, candidate=lambda _, number: self._candidate(
                                  self.space.path(self.sampler.genome(number))))
        x0 = space.x0()  # trial 0 = model A, the baseline
        params = [ParamSpec(name=n, low=lo, high=hi, init=x0[n]) for n, (lo, hi) in space.bounds().items()]
        return phases.run(name=cfg.study_name, params=params, x0=x0, directions=cfg.directions, n_trials=cfg.n_trials,
                          candidate=lambda values, _: self._candidate(self.space.path(values)))

    def table_models(self, best: FrozenTrial) -> Iterator[tuple[str, Any, dict[str, float]]]:
        for name, model in self.models.items():
            yield name, model, {"layers": len(model.model.layers)}
        path = self._path_of(best)
        self.path_model.set_path(path.layers, path.scales)
        yield "best_path", self.path_model, {"layers": len(path.layers)}

    def unchanged_model(self, name: str) -> str | None:
        """The source rows: each source model as loaded, dtype and device."""
        if name not in self.models:
            return None
        return f"{self.model_hashes[name]} as {self.cfg.pool.dtype} on {self.cfg.pool.device}"

    def export(self, best: FrozenTrial, study: optuna.Study, table: dict[str, dict[str, float]]) -> list[Path]:
        cfg, run_dir, path = self.cfg, Path(self.cfg.run_dir), self._path_of(best)
        self.path_model.set_path(path.layers, path.scales)  # the path exported is the best trial's, set here
        model_dir = export_layer_path(self.path_model, run_dir / "best_model", tokenizer=self.tokenizer, overwrite=True)
        search = {**{k: best.user_attrs[k] for k in (m for m in cfg.fitness if m in best.user_attrs)},
                  **{k: int(best.user_attrs[k]) for k in ("path_length", "unique_layers", "n_params")}}
        write_model_card(
            model_dir, title=f"{cfg.study_name}: best of {len(study.trials)} trials (trial {best.number})",
            sources=cfg.pool.sources, origins=self.path_model.config.stored_layer_origins, path=path,
            scores={f"search split (trial {best.number})": search,
                    **{f"test split: {name}": row for name, row in table.items()}})
        plot_path(path.layers, path.scales, self.space.layout.layer_owner, run_dir / "path.png", model_names=self.names,
                  title=f"{cfg.study_name}: trial {best.number}, {cfg.objective.fitness} {best.values[0]:.3f} (search)")
        artifacts = [run_dir / "path.png", model_dir / "README.md", model_dir / "config.json"]
        if len(cfg.fitness) > 1:  # the trade-off found, on the search split
            front = sorted(study.best_trials, key=lambda t: t.number)
            (run_dir / "pareto_front.md").write_text(
                "| trial | " + " | ".join(cfg.fitness) + " |\n" + "|---" * (len(cfg.fitness) + 1) + "|\n"
                + "".join(f"| {t.number} | " + " | ".join(f"{v:g}" for v in t.values) + " |\n" for t in front))
            artifacts.append(run_dir / "pareto_front.md")
        return artifacts

    def _path_of(self, trial: FrozenTrial) -> LayerPath:
        genome_mode = self.cfg.space.encoding == "genome"
        return self.space.path(unpack_genome(trial.user_attrs["genome"]) if genome_mode else trial.params)

    def _candidate(self, path: LayerPath):
        self.path_model.set_path(path.layers, path.scales)
        hops = Counter(self.space.layout.layer_owner[i] for i in path.layers)
        return self.path_model, {
            "path_length": len(path.layers), "unique_layers": len(set(path.layers)),
            "n_params": self.frame + sum(self.layer_sizes[i] for i in set(path.layers)),
            **{f"hops_{name}": hops[k] for k, name in enumerate(self.names)}}
