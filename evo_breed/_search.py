"""Population breeding (M2N2) as a search of the study lifecycle (evo_core/_lifecycle.py).

    run_study(cfg, BreedSearch(cfg), resolved=yaml)     # what `python -m evo_breed` does

Two phases, one Optuna study each, on the lifecycle's storage:
  <study>-init   one trial per starting model (base, every source, `archive.init_merges` uniform
                 task-arithmetic merges), scored and offered to the archive;
  <study>        one trial per child: parents picked from the archive (fitness, attraction), SLERP
                 at a split point with weight w (the trial's Optuna params `split` and `w`, drawn
                 per trial from (seed, trial number); parents, split tensor, crossover in the user
                 attribute `breed`), scored by the lifecycle, then offered to the archive.
Each COMPLETE trial is offered to the archive when the lifecycle tells it (Search.on_scored): right
after it is recorded, when the live model still holds the weights scored. After a kill, the
archive on disk (evo_breed/_archive.py) holds the state before the last trial at worst; on resume
the lifecycle tells first the trials the study already holds, and those the archive has not seen
are offered then, the one child whose weights were lost recomputed from its parents (still in the
archive: nothing was offered after it), so the archive is the one an uninterrupted run would have.
The lineage (every scored model's parents, split and score) is built from the same telling.

The test table: base, every source, and the champion (the best search-split score ever seen, kept
even if it left the archive): the search's best (`best`), which the final line names. The champion
is exported as an HF model directory with a model card
giving its lineage; the lineage tree and the archive's per-item coverage are MLflow artifacts.
"""
from __future__ import annotations

import dataclasses
import json
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from evo_core import (Best, ParamSpec, Phases, Scored, Search, atomic_dir, check_device, check_finite, load_pool,
                      model_fingerprint, name_models_in_configs, published_name, require_models, use_weights)

from ._archive import Archive, Member, pick_parents
from ._config import BreedConfig
from ._crossover import split_index, split_slerp
from ._plots import plot_coverage, plot_lineage

PARAMS = (ParamSpec("split", 0.0, 1.0), ParamSpec("w", 0.0, 1.0))


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """Each parameter of trial t drawn uniformly from a generator seeded by (seed, t, name): the
    same trial number gets the same draw whether or not the run was interrupted before it."""

    def __init__(self, seed: int):
        self.seed = seed

    def infer_relative_search_space(self, study, trial):
        return {}

    def sample_relative(self, study, trial, search_space):
        return {}

    def sample_independent(self, study, trial, param_name, param_distribution):
        rng = np.random.default_rng([self.seed, trial.number, zlib.crc32(param_name.encode())])
        return param_distribution.low + rng.random() * (param_distribution.high - param_distribution.low)


class BreedSearch(Search):
    def __init__(self, cfg: BreedConfig):
        self.cfg = cfg
        self.tokenizer_path = cfg.pool.base
        self.nodes: dict[str, dict[str, Any]] = {}  # every scored model, as told: id -> breed info, study, trial, score

    def check_objective(self, objective: Any) -> None:
        """archive.resources names metrics of the objective: checked before the study exists."""
        cfg = self.cfg
        names = [m.name for m in objective.metrics]
        self.resources = list(cfg.archive.resources) or [cfg.objective.fitness]
        unknown = [r for r in self.resources if r not in names]
        if unknown:
            raise ValueError(f"archive.resources: {', '.join(unknown)} not a metric of objective "
                             f"{cfg.objective.name!r}; known: {', '.join(names)}")

    def check(self) -> None:
        pool = self.cfg.pool
        require_models({"pool.base": pool.base, **{f"pool.sources.{k}": v for k, v in pool.sources.items()}},
                       allow_pickle_weights=pool.allow_pickle_weights)
        check_device(pool.device, key="pool.device")

    def load(self, tokenizer: Any) -> None:
        pool = self.cfg.pool
        self.pool = load_pool(base=pool.base, sources=pool.sources, dtype=pool.dtype, device=pool.device,
                              tokenizer=tokenizer, allow_pickle_weights=pool.allow_pickle_weights)
        self.names = list(self.pool.param_names)
        self.model_hashes = {name: model_fingerprint(path) for name, path in self.pool.paths.items()}
        self.initial = [self.pool.base_name, *self.pool.source_names,
                        *(f"u{k}" for k in range(self.cfg.archive.init_merges))]

    def signature(self) -> dict[str, Any]:
        cfg = self.cfg
        return {"search": "evo_breed", "archive": dataclasses.asdict(cfg.archive),
                "crossover": dataclasses.asdict(cfg.crossover), "seed": cfg.seed, "models": dict(self.pool.paths),
                "model_hashes": self.model_hashes, "objective": cfg.objective.name, "fitness": cfg.objective.fitness,
                "search_split": str(cfg.objective.search), "objective_options": dict(cfg.objective.options)}

    # -- the phases -------------------------------------------------------------------------------

    def search(self, phases: Phases) -> optuna.Study:
        cfg = self.cfg
        self.phases = phases
        self.archive = Archive(Path(cfg.run_dir) / "archive", capacity=cfg.archive.pop_size, alpha=cfg.archive.alpha)
        a = cfg.archive
        pull = "no attraction" if not a.attraction else (
            "attraction" + (f" (weight {a.attraction_weight:g})" if a.attraction_weight < 1 else ""))
        print(f"archive {a.pop_size} models, alpha {a.alpha:g}, {pull}, "
              f"{a.selection} selection, items of {' + '.join(self.resources)}; {len(self.initial)} starting models, "
              f"{cfg.n_trials - len(self.initial)} children; {len(self.names)} tensors to split")
        init_name = f"{cfg.study_name}-init"
        phases.run(name=init_name, params=[], candidate=self._initial,
                   n_trials=len(self.initial) + _killed(phases.storage, init_name))
        study = phases.run(name=cfg.study_name, params=PARAMS, candidate=self._child,
                           n_trials=cfg.n_trials - len(self.initial), sampler=TrialSeededSampler(cfg.seed))
        champion = self.archive.champion
        if champion is None:
            raise ValueError(f"no model of study {cfg.study_name!r} was scored (every trial failed; see their "
                             f"fail_reason in the dashboard)")
        print(f"archive {', '.join(f'{m.id} {m.mean:.3f}' for m in self.archive.members)}; "
              f"champion {champion.id} {champion.mean:.3f}")
        return study

    def _initial(self, values: dict[str, float], number: int):
        todo = [m for m in self.initial if m not in self.nodes]
        if not todo:
            raise ValueError("every starting model is scored already")
        weights = self._initial_weights(todo[0])
        return self._candidate(number, weights, {"kind": "initial", "id": todo[0], "parents": []})

    def _child(self, values: dict[str, float], number: int):
        cfg, archive = self.cfg, self.archive
        if not archive.members:
            raise ValueError("the archive is empty: no starting model could be scored")
        a = cfg.archive
        rng = np.random.default_rng([cfg.seed, number, 1])
        i, j = pick_parents(archive.scores, rng, alpha=a.alpha, use_attraction=a.attraction,
                            attraction_weight=a.attraction_weight, selection=a.selection,
                            tournament_size=a.tournament_size)
        first, second = archive.members[i].id, archive.members[j].id
        split = split_index(values["split"], len(self.names))
        info = {"kind": "child", "id": f"c{number}", "parents": [first, second], "split": split,
                "split_tensor": self.names[split], "w": values["w"], "crossover": cfg.crossover.method,
                "mutation_std": cfg.crossover.mutation_std}
        started = time.perf_counter()
        weights = self._crossover(info, number)
        extra = {"merge_seconds": time.perf_counter() - started}
        return self._candidate(number, weights, info, extra)

    def _candidate(self, number: int, weights: dict[str, torch.Tensor], info: dict[str, Any],
                   extra: dict[str, float] | None = None):
        use_weights(self.pool.model, weights)
        check_finite(f"{info['id']} (trial {number})", self.pool.model)
        return self.pool.model, {**(extra or {}), "breed": info}

    def on_scored(self, scored: Scored) -> None:
        """Each COMPLETE trial, once (module docstring): into the lineage, and offered to the archive
        unless it was before a kill. A trial scored just now is offered with the live model's
        weights (what was scored); one scored by an earlier run with its weights made again."""
        info = scored.attrs["breed"]
        self.nodes[info["id"]] = {**info, "study": scored.phase, "trial": scored.number,
                                  "score": float(scored.values[0])}
        if self.archive.was_offered(scored.phase, scored.number):
            return
        if not scored.earlier:
            weights = self.pool.live_params()
        elif info["kind"] == "initial":
            weights = self._initial_weights(info["id"])
        else:  # scored, but its process died before the offer: the same crossover again
            weights = self._crossover(info, scored.number)
        member = Member(id=info["id"], scores=[float(s) for r in self.resources for s in scored.item_scores[r]],
                        mean=float(scored.values[0]), trial=[scored.phase, scored.number],
                        parents=list(info["parents"]))
        self.archive.offer(member, weights)

    # -- weights ----------------------------------------------------------------------------------

    def _initial_weights(self, member: str) -> dict[str, torch.Tensor]:
        pool = self.pool
        if member == pool.base_name:
            return pool.base
        if member in pool.sources:
            return pool.sources[member]
        k = int(member[1:])  # "u<k>": base + sum_i w_i (source_i - base), w_i ~ U(0, 1) from (seed, k)
        w = np.random.default_rng([self.cfg.seed, k, 7]).random(len(pool.source_names))
        return {name: pool.base[name] + sum(float(wi) * (pool.sources[s][name] - pool.base[name])
                                            for wi, s in zip(w, pool.source_names)) for name in self.names}

    def _crossover(self, info: dict[str, Any], number: int) -> dict[str, torch.Tensor]:
        parent_a, parent_b = (self.archive.weights(p) for p in info["parents"])
        return split_slerp(parent_a, parent_b, self.names, split=info["split"], w=info["w"],
                           mutation_std=info["mutation_std"], seed=zlib.crc32(f"{self.cfg.seed}/{number}".encode()))

    # -- results ----------------------------------------------------------------------------------

    def best(self, study: optuna.Study) -> Best:
        """The champion (the best search-split score ever offered), from whichever phase it came."""
        champion = self.archive.champion
        phase, number = champion.trial
        [trial] = [t for s in self.phases.studies if s.study_name == phase
                   for t in s.get_trials(deepcopy=False) if t.number == number]
        return Best(trial, f"champion {champion.id} of {len(self.nodes)} scored models (trial {number} of {phase})")

    def table_models(self, best: FrozenTrial) -> Iterator[tuple[str, Any, dict[str, float]]]:
        pool = self.pool
        for name in (pool.base_name, *pool.source_names):
            use_weights(pool.model, pool.base if name == pool.base_name else pool.sources[name])
            yield name, pool.model, {}
        use_weights(pool.model, self.archive.weights("champion"))
        yield "champion", pool.model, {}

    def unchanged_model(self, name: str) -> str | None:
        """The base and source rows: their weights, dtype and device."""
        pool = self.pool
        if name not in (pool.base_name, *pool.source_names):
            return None
        return f"{self.model_hashes[name]} as {self.cfg.pool.dtype} on {self.cfg.pool.device}"

    def lineage(self) -> dict[str, dict[str, Any]]:
        """Every scored model of the run: id -> its trial, parents, split, w, search score, entered."""
        entered = {m.id for m in self.archive.members} | set(self.archive.evicted)
        return {i: {**node, "entered": i in entered} for i, node in self.nodes.items()}

    def export(self, best: FrozenTrial, study: optuna.Study, table: dict[str, dict[str, float]]) -> list[Path]:
        cfg, pool = self.cfg, self.pool
        run_dir, model_dir = Path(cfg.run_dir), Path(cfg.run_dir) / "best_model"
        nodes = self.lineage()
        champion = self.archive.champion
        ancestry = ancestors(nodes, champion.id)
        use_weights(pool.model, self.archive.weights("champion"))  # loaded here: export needs no earlier step
        with atomic_dir(model_dir) as tmp:
            pool.model.save_pretrained(tmp)
            pool.tokenizer.save_pretrained(tmp)
            name_models_in_configs(tmp)  # a source config's own path is not published
            (tmp / "lineage.json").write_text(json.dumps({i: nodes[i] for i in ancestry}, indent=2) + "\n")
            (tmp / "README.md").write_text(model_card(cfg, champion, ancestry, nodes, table, dict(pool.paths)),
                                           encoding="utf-8")
        plot_lineage(nodes, ancestry, run_dir / "lineage.png", fitness=cfg.objective.fitness)
        plot_coverage(self.archive.members, run_dir / "coverage.png", resources=self.resources)
        return [run_dir / "lineage.png", run_dir / "coverage.png", self.archive.root / "state.json",
                model_dir / "README.md", model_dir / "lineage.json"]


def _killed(storage: str, name: str) -> int:
    """Trials of study `name` that a dead worker left FAILed (no fail_reason): each is run again."""
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return 0
    return sum("fail_reason" not in t.user_attrs for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))


def ancestors(nodes: dict[str, dict[str, Any]], start: str) -> list[str]:
    """`start` and every model it descends from, newest first."""
    seen, todo = [], [start]
    while todo:
        node = todo.pop()
        if node in seen or node not in nodes:
            continue
        seen.append(node)
        todo += nodes[node]["parents"]
    return sorted(seen, key=lambda i: (nodes[i]["kind"] == "child", nodes[i]["trial"]), reverse=True)


def model_card(cfg: BreedConfig, champion: Member, ancestry: list[str], nodes: dict[str, dict[str, Any]],
               table: dict[str, dict[str, float]], paths: dict[str, str]) -> str:
    """The champion's README.md; the starting models named by hub id or folder name (published_name)."""
    import yaml

    paths = {name: published_name(path) for name, path in paths.items()}
    front = yaml.safe_dump({"library_name": "transformers", "tags": ["merge", "evolutionary-model-merge", "m2n2"],
                            "base_model": list(paths.values())}, sort_keys=False)
    a = cfg.archive
    lines = [f"---\n{front}---", f"# {cfg.study_name}: champion {champion.id} (seed {cfg.seed})", "",
             f"Bred by population merging (M2N2: competition for resources with alpha {a.alpha:g}, "
             f"{'attraction' if a.attraction else 'no attraction'}, {a.selection} selection, archive of {a.pop_size}; "
             f"split-point SLERP crossover) after Abrantes et al., *Competition and Attraction Improve Model "
             f"Fusion* (GECCO 2025): the best {cfg.objective.fitness} on the search split "
             f"({champion.mean:.4f}) of {len(nodes)} scored models.", "",
             "## Starting models", "", "| name | model |", "|---|---|"]
    lines += [f"| {name} | `{path}` |" for name, path in paths.items()]
    lines += ["", "## Scores (test split)", "", "| model | metric | value |", "|---|---|---|"]
    lines += [f"| {model} | {metric} | {value:.4f} |" for model, row in table.items() for metric, value in row.items()]
    lines += ["", "## Lineage (newest first; tensors before the split take w towards parent 2, the rest 1 - w)", "",
              "| model | trial | parents | split tensor | w | search score |", "|---|---|---|---|---|---|"]
    for i in ancestry:
        n = nodes[i]
        lines.append(f"| {i} | {n['study']}#{n['trial']} | {' x '.join(n['parents']) or 'starting model'} | "
                     f"{n.get('split_tensor', '')} | {'' if 'w' not in n else format(n['w'], '.3f')} | {n['score']:.4f} |")
    return "\n".join(lines) + "\n"
