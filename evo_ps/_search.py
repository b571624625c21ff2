"""Parameter-space merging as a search of the study lifecycle (evo_core/_lifecycle.py).

    run_study(cfg, PSSearch(cfg), resolved=yaml)      # what `python -m evo_ps` does

Per trial: the trial's values -> per-tensor merge parameters -> merged in memory into the pool's
live model (no disk I/O) -> checked finite (a NaN or inf tensor fails the trial, not the study) ->
scored by the lifecycle. With `space.warm_start_trials`, a first phase searches the uniform space
(one value per source and parameter kind) and the per-layer CMA-ES starts at its best point instead
of the paper's x0. The test table: base, every source, the best uniform merge (if any) and the best
merge; the best merge is saved as an HF model directory with a mergekit YAML and a model card
(export merges it again, with its trial's seed: the same weights as scored, whatever the live
model held before). What is saved names models by hub id or folder name; the same YAML with this
machine's paths, runnable here, is run_dir/mergekit_config.local.yml.

A source may be a vision-language model (evo_core/_vlm.py): its LLM is merged, the live model is the
VLM, prompts go through its processor, and the export is the whole VLM (vision tower and projector
as they were) with its processor, loadable by transformers alone. mergekit 0.1.5 knows no LLaVA
architecture, so a VLM merge comes without a mergekit YAML (the model card says so).

A source may be a PEFT LoRA adapter, one line of `pool.sources` (a folder with adapter_config.json,
or mergekit's `BASE+ADAPTER`): check() finds its base and checks it fits, the pool merges it into
its base once at load, and from then on it is a source like any other; its path, fingerprint,
mergekit YAML entry and card name are `BASE+ADAPTER` (evo_core/_adapters.py).
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial
from transformers import AutoProcessor

from evo_core import (Phases, Search, atomic_write_text, best_trial, check_adapter_sources, check_device, check_finite,
                      load_pool, model_fingerprint, published_name, require_models, resolve_adapter_sources,
                      vision_language_sources)

from ._config import PSConfig
from ._export import mergekit_yaml, random_drops_note, save_merged
from ._merge import InMemoryMerger, merge_method
from ._plots import plot_layer_params
from ._space import SearchSpace, build_space

# the mergekit YAML with the local paths, in run_dir (best_model/ has the one with published names)
LOCAL_YAML = "mergekit_config.local.yml"


class PSSearch(Search):
    def __init__(self, cfg: PSConfig):
        self.cfg = cfg
        self.tokenizer_path = cfg.pool.base
        self.uniform_best: tuple[SearchSpace, FrozenTrial] | None = None

    def check(self) -> None:
        pool = self.cfg.pool
        self.method = merge_method(self.cfg.merge.method, self.cfg.merge.options)  # unknown names/options fail here
        # LoRA adapter sources as BASE+ADAPTER, their base found (evo_core/_adapters.py)
        self.sources = resolve_adapter_sources(pool.sources, base=pool.base)
        require_models({"pool.base": pool.base, **{f"pool.sources.{k}": v for k, v in self.sources.items()}},
                       allow_pickle_weights=pool.allow_pickle_weights)
        check_adapter_sources(self.sources, base=pool.base)
        check_device(pool.device, key="pool.device")
        # a VLM source's tokenizer (with its image token) and processor prompt the models
        vlms = vision_language_sources(self.sources)
        self.tokenizer_path = self.sources[vlms[0]] if vlms else pool.base

    def load(self, tokenizer: Any) -> None:
        pool = self.cfg.pool
        self.pool = load_pool(base=pool.base, sources=self.sources, dtype=pool.dtype, device=pool.device,
                              tokenizer=tokenizer, allow_pickle_weights=pool.allow_pickle_weights)
        self.space = self._space(uniform=self.cfg.space.uniform)
        self.merger = InMemoryMerger(pool=self.pool, method=self.method)
        self.model_hashes = {name: model_fingerprint(path) for name, path in self.pool.paths.items()}

    def signature(self) -> dict[str, Any]:
        cfg = self.cfg
        return {"search": "evo_ps", "method": self.method.name, "options": dict(self.method.options),
                "space": {k: getattr(cfg.space, k) for k in ("uniform", "granularity", "split_components", "bounds",
                                                             "warm_start_trials", "warm_start_sigma0")},
                "models": dict(self.pool.paths), "model_hashes": self.model_hashes, "objective": cfg.objective.name,
                "fitness": cfg.objective.fitness, "search_split": str(cfg.objective.search)}

    def search(self, phases: Phases) -> optuna.Study:
        cfg = self.cfg
        print(f"space   {len(self.space.params)} parameters ({self.method.name})")
        if not cfg.space.warm_start_trials or cfg.space.uniform:
            return phases.run(name=cfg.study_name, params=self.space.params, candidate=self._candidate(self.space),
                              n_trials=cfg.n_trials)
        uniform = self._space(uniform=True)
        print(f"warm start: {cfg.space.warm_start_trials} trials over the {len(uniform.params)} uniform parameters")
        best = best_trial(phases.run(name=f"{cfg.study_name}-uniform", params=uniform.params,
                                     candidate=self._candidate(uniform), n_trials=cfg.space.warm_start_trials))
        self.uniform_best = (uniform, best)
        start = self.space.broadcast({k.removeprefix("all."): v for k, v in best.params.items()})
        print(f"per-layer search starts at the best uniform merge (trial {best.number}, "
              f"{cfg.objective.fitness} {best.values[0]:.3f})")
        return phases.run(name=cfg.study_name, params=self.space.params, candidate=self._candidate(self.space),
                          n_trials=cfg.n_trials, x0=start, sigma0=cfg.space.warm_start_sigma0)

    def table_models(self, best: FrozenTrial) -> Iterator[tuple[str, Any, dict[str, float]]]:
        """The rows are scored as they come: the live model holds each row's weights in turn."""
        pool = self.pool
        for name in (pool.base_name, *pool.source_names):
            pool.use(pool.base if name == pool.base_name else pool.sources[name])
            yield name, pool.model, {}
        if self.uniform_best is not None:
            uniform, trial = self.uniform_best
            self.merger.apply(uniform.tensor_params(trial.params), seed=trial.number)
            yield "best_uniform", pool.model, {}
        yield "best_merge", self._best_merge(best), {}

    def unchanged_model(self, name: str) -> str | None:
        """The base and source rows: their weights, in the live model (its architecture: a VLM's
        language model or the text base), dtype and device."""
        pool = self.pool
        if name not in (pool.base_name, *pool.source_names):
            return None
        return (f"{self.model_hashes[name]} in {self.model_hashes[pool.live_name]} as {self.cfg.pool.dtype} "
                f"on {self.cfg.pool.device}")

    def export(self, best: FrozenTrial, study: optuna.Study, table: dict[str, dict[str, float]]) -> list[Path]:
        cfg, pool = self.cfg, self.pool
        run_dir, model_dir = Path(cfg.run_dir), Path(cfg.run_dir) / "best_model"
        best_params = self.space.tensor_params(best.params)
        model = self._best_merge(best)
        sources = {s: pool.paths[s] for s in pool.source_names}
        search_scores = {k: v for k, v in best.user_attrs.items() if isinstance(v, float) and not k.endswith("seconds")}
        card = {"title": f"{cfg.study_name}: best of {len(study.trials)} trials (trial {best.number}, seed {best.number})",
                "method": self.method.name, "base": pool.paths[pool.base_name], "sources": sources,
                "parameters": best.params, "scores": {"search": search_scores, **table}}
        if pool.live_name == pool.base_name:
            card["mergekit_yaml"] = mergekit_yaml(method=self.method, tensor_params=best_params,
                                                  base=pool.paths[pool.base_name], sources=sources, dtype=cfg.pool.dtype)
            # with this machine's paths, runnable here: kept out of best_model/, which names models only
            atomic_write_text(run_dir / LOCAL_YAML, card["mergekit_yaml"])
            saver = pool.tokenizer
        else:
            card["notes"] = (f"The language model of `{published_name(pool.paths[pool.live_name])}` was merged with the text models "
                             f"above; its vision tower and projector are unchanged. mergekit 0.1.5 has no LLaVA "
                             f"architecture, so no mergekit YAML is given.")
            saver = AutoProcessor.from_pretrained(pool.paths[pool.live_name])  # tokenizer + image processor
        if self.method.sparsify in ("random", "della"):
            card["notes"] = "\n\n".join(filter(None, [card.get("notes"), random_drops_note(best.number)]))
        save_merged(model, saver, model_dir, card=card)
        plot_layer_params(self.space, best.params, run_dir / "layer_params.png")
        files = [run_dir / "layer_params.png", model_dir / "mergekit_config.yml", model_dir / "README.md"]
        return [f for f in files if f.exists()]

    def _best_merge(self, best: FrozenTrial) -> Any:
        """The live model as the best trial scored it: its merge, its drops (seed = trial number)."""
        self.merger.apply(self.space.tensor_params(best.params), seed=best.number)
        return self.pool.model

    def _space(self, *, uniform: bool) -> SearchSpace:
        cfg, pool = self.cfg.space, self.pool
        return build_space(method=self.method, sources=pool.source_names, tensor_names=pool.param_names,
                           num_layers=pool.num_layers, granularity=cfg.granularity,
                           split_components=cfg.split_components, uniform=uniform, bounds=cfg.bounds)

    def _candidate(self, space: SearchSpace):
        def merge(values: dict[str, float], number: int):
            started = time.perf_counter()
            self.merger.apply(space.tensor_params(values), seed=number)  # trial t drops with seed t
            merge_seconds = time.perf_counter() - started
            check_finite(f"merge of trial {number}", self.pool.model)
            return self.pool.model, {"merge_seconds": merge_seconds}

        return merge
