"""Population breeding (M2N2) as a search of the study lifecycle (evo_core/_lifecycle.py).

    run_study(cfg, BreedSearch(cfg), resolved=yaml)     # what `python -m evo_breed` does

Two phases, one Optuna study each, on the lifecycle's storage:
  <study>-init   one trial per starting model (base, every source, `archive.init_merges` uniform
                 task-arithmetic merges), scored and offered to the archive;
  <study>        one trial per child: parents picked from the archive (fitness, attraction), SLERP
                 at a split point with weight w (the trial's Optuna params `split` and `w`, drawn
                 per trial from (seed, trial number); parents, split tensor, crossover in the user
                 attribute `breed`) or DELLA of their task vectors (`crossover.method` della, or
                 mixed: DELLA with `crossover.della_probability`; its parameters drawn from (seed,
                 trial number) and kept in `breed`), scored by the lifecycle, then offered to the
                 archive (under `archive.beat_parents`, with the parents' mean scores it must beat).
Workers: the primary (the plain command) and any number of helpers (`helper=true`, other
processes or machines on one SQLite or PostgreSQL storage) breed into one archive. Its truth is
the study's offer log (evo_breed/_offers.py): each COMPLETE trial is offered once, under the
study's offer lock, and recorded in order; each worker keeps a replica of the archive (the
primary's in run_dir/archive/, a helper's in run_dir/archive-helper<k>/) that replays the log. A
worker draws a child's parents from its replica right after catching up with the log (the
archive as it stands, `breed.after_offers` offers in), and offers the child right after the
lifecycle recorded it (Search.on_scored), with the live model's weights. Whatever a worker finds
COMPLETE but not in the log (scored by a worker killed before its offer) it offers too, its
weights made again: a starting model's from the pool, a child's crossover from its parents (made
the same way if they have left the archive). The starting models are the primary's (helpers wait
for them); the primary offers what the helpers finished last before it names the champion.
The lineage (every scored model's parents, split and score) is read from the study.

The test table: base, every source, and the champion (the best search-split score ever seen, kept
even if it left the archive): the search's best (`best`), which the final line names. The champion
is exported as an HF model directory with a model card
giving its lineage; the lineage tree and the archive's per-item coverage are MLflow artifacts.
"""
from __future__ import annotations

import dataclasses
import fcntl
import itertools
import json
import shutil
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from evo_core import (Best, ParamSpec, Phases, Scored, Search, atomic_dir, check_device, check_finite, killed_trials,
                      load_pool, model_fingerprint, name_models_in_configs, published_name, require_models, use_weights)

from ._archive import Archive, Member, pick_parents
from ._config import BreedConfig
from ._crossover import check_common_base, della_crossover, draw_della, split_index, split_slerp
from ._offers import offer_lock, read_log, record
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
        if self.cfg.crossover.method != "slerp":  # before the study: DELLA needs one common base
            check_common_base(self.pool.base, self.pool.sources)

    def signature(self) -> dict[str, Any]:
        cfg = self.cfg
        return {"search": "evo_breed", "archive": dataclasses.asdict(cfg.archive),
                "crossover": dataclasses.asdict(cfg.crossover), "seed": cfg.seed, "models": dict(self.pool.paths),
                "model_hashes": self.model_hashes, "objective": cfg.objective.name, "fitness": cfg.objective.fitness,
                "search_split": str(cfg.objective.search), "objective_options": dict(cfg.objective.options)}

    # -- the phases -------------------------------------------------------------------------------

    def search(self, phases: Phases) -> optuna.Study:
        cfg = self.cfg
        self.phases, self.storage = phases, phases.storage
        self.init_name = f"{cfg.study_name}-init"
        self.studies: dict[str, optuna.Study] = {}
        self.main = self._study(cfg.study_name)  # run_study opened it: the offer log is on it
        self.archive = self._replica()
        a = cfg.archive
        pull = "no attraction" if not a.attraction else (
            "attraction" + (f" (weight {a.attraction_weight:g})" if a.attraction_weight < 1 else ""))
        print(f"archive {a.pop_size} models, alpha {a.alpha:g}, {pull}, "
              f"{a.selection} selection, items of {' + '.join(self.resources)}; {len(self.initial)} starting models, "
              f"{cfg.n_trials - len(self.initial)} children; {len(self.names)} tensors to split")
        self._settle()  # what a killed worker scored but did not offer, before anything new
        if cfg.helper:  # the starting models are the primary's: a helper breeds once they are in
            self._wait_for_start()
        else:
            phases.run(name=self.init_name, params=[], candidate=self._initial,
                       n_trials=len(self.initial) + killed_trials(phases.storage, self.init_name))
        self._settle()
        study = phases.run(name=cfg.study_name, params=PARAMS, candidate=self._child,
                           n_trials=cfg.n_trials - len(self.initial), sampler=TrialSeededSampler(cfg.seed))
        self._settle()
        if self.archive.champion is None:
            raise ValueError(f"no model of study {cfg.study_name!r} was scored (every trial failed; see their "
                             f"fail_reason in the dashboard)")
        return study

    def _initial(self, values: dict[str, float], number: int):
        todo = [m for m in self.initial if m not in self.nodes]
        if not todo:
            raise ValueError("every starting model is scored already")
        weights = self._initial_weights(todo[0])
        return self._candidate(number, weights, {"kind": "initial", "id": todo[0], "parents": []})

    def _child(self, values: dict[str, float], number: int):
        cfg = self.cfg
        self._settle()  # the archive as it stands: every offer so far, of every worker
        archive = self.archive
        if not archive.members:
            raise ValueError("the archive is empty: no starting model could be scored")
        a = cfg.archive
        rng = np.random.default_rng([cfg.seed, number, 1])
        i, j = pick_parents(archive.scores, rng, alpha=a.alpha, use_attraction=a.attraction,
                            attraction_weight=a.attraction_weight, selection=a.selection,
                            tournament_size=a.tournament_size)
        first, second = archive.members[i].id, archive.members[j].id
        c = cfg.crossover
        draws = np.random.default_rng([cfg.seed, number, 2])  # the method and DELLA's parameters of trial t
        della = c.method == "della" or (c.method == "mixed" and draws.random() < c.della_probability)
        info = {"kind": "child", "id": f"c{number}", "parents": [first, second],
                "parent_means": [float(np.mean(archive.members[k].scores)) for k in (i, j)],
                "crossover": "della" if della else "slerp", "mutation_std": c.mutation_std,
                "after_offers": archive.n_offers}
        if della:
            info["della"] = draw_della(c.della, draws)
        else:
            split = split_index(values["split"], len(self.names))
            info |= {"split": split, "split_tensor": self.names[split], "w": values["w"]}
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
        """Each COMPLETE trial, once (module docstring): into the lineage; one this process scored
        just now is offered at once, with the live model's weights (what was scored). The trials
        the study held already are offered by _settle, with the rest."""
        info = scored.attrs["breed"]
        self.nodes[info["id"]] = {**info, "study": scored.phase, "trial": scored.number,
                                  "score": float(scored.values[0])}
        if not scored.earlier:
            self._settle(live=(scored.phase, scored.number), weights=self.pool.live_params())

    # -- the offers (evo_breed/_offers.py) --------------------------------------------------------

    def _study(self, name: str) -> optuna.Study | None:
        """A handle on phase `name` (None until some worker created it)."""
        if name not in self.studies:
            try:
                self.studies[name] = optuna.load_study(study_name=name, storage=self.storage)
            except KeyError:
                return None
        return self.studies[name]

    def _replica(self) -> Archive:
        """This worker's archive: run_dir/archive for the primary; for a helper
        run_dir/archive-helper<k>, the first k no running helper holds (a helper sharing the
        primary's run_dir, or several on one machine, never share a replica; a restarted helper
        reuses a dead one's). Rebuilt from the log if it is not a prefix of it (another study's)."""
        cfg = self.cfg
        root = Path(cfg.run_dir) / "archive"
        if cfg.helper:
            for k in itertools.count(1):
                root = Path(cfg.run_dir) / f"archive-helper{k}"
                root.mkdir(parents=True, exist_ok=True)
                handle = open(root / "helper.lock", "a")
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    handle.close()
                    continue
                self._replica_lock = handle  # held for the run; released when this process ends
                break
        archive = Archive(root, capacity=cfg.archive.pop_size, alpha=cfg.archive.alpha)
        log = read_log(self.main)
        applied = {(phase, n) for phase, numbers in archive.offered.items() for n in numbers}
        if applied != set(log[:len(applied)]):
            shutil.rmtree(root / "members")
            (root / "state.json").unlink()
            archive = Archive(root, capacity=cfg.archive.pop_size, alpha=cfg.archive.alpha)
        return archive

    def _complete(self) -> dict[tuple[str, int], FrozenTrial]:
        """Every COMPLETE trial of both phases, (phase, number) -> trial, in phase and number order;
        the lineage learns each."""
        found = {}
        for name in (self.init_name, self.cfg.study_name):
            study = self._study(name)
            for t in sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if study else [],
                            key=lambda t: t.number):
                info = t.user_attrs["breed"]
                self.nodes.setdefault(info["id"], {**info, "study": name, "trial": t.number, "score": float(t.values[0])})
                found[(name, t.number)] = t
        return found

    def _settle(self, live: tuple[str, int] | None = None, weights: dict[str, torch.Tensor] | None = None) -> None:
        """Under the offer lock: the replica catches up with the log, then every COMPLETE trial no
        offer names yet (this worker's `live` one, or a dead worker's) is offered, recorded in the
        log first: a kill after the record leaves only this replica behind, which catches up."""
        with offer_lock(self.storage, self.cfg.study_name):
            log = read_log(self.main)
            trials = self._complete()
            missing = [key for key in log if key not in trials]
            if missing:
                raise ValueError(f"study {self.cfg.study_name!r}: offers name trials that are not COMPLETE: "
                                 f"{missing[:3]}; the study was changed by hand: use another study_name")
            for key in log[self.archive.n_offers:]:
                self._offer(key, trials[key], weights if key == live else None)
            offered = set(log)
            for key in [key for key in trials if key not in offered]:
                record(self.main, len(log), *key)
                log.append(key)
                self._offer(key, trials[key], weights if key == live else None)

    def _offer(self, key: tuple[str, int], trial: FrozenTrial, weights: dict[str, torch.Tensor] | None) -> None:
        """Trial `key` into the replica: with `weights` (the live model's), else with its weights
        made again if it enters (a starting model, or its crossover from its parents)."""
        info = trial.user_attrs["breed"]
        member = Member(id=info["id"], scores=[float(s) for r in self.resources for s in trial.user_attrs["item_scores"][r]],
                        mean=float(trial.values[0]), trial=list(key), parents=list(info["parents"]))
        beat = self.cfg.archive.beat_parents and info["kind"] == "child"
        self.archive.offer(member, weights if weights is not None else (lambda: self._weights_of(info["id"])),
                           must_beat=info["parent_means"] if beat else ())

    def _wait_for_start(self) -> None:
        """A helper: until every starting model is offered, or the primary breeds children already."""
        deadline = time.monotonic() + 60 * self.cfg.helper_wait_minutes
        while True:
            offered = {m.id for m in self.archive.members} | set(self.archive.evicted)
            main = self._study(self.cfg.study_name)
            if set(self.initial) <= offered or main.get_trials(deepcopy=False):
                return
            if time.monotonic() > deadline:
                raise ValueError(f"helper=true: the primary did not score the {len(self.initial)} starting models "
                                 f"within {self.cfg.helper_wait_minutes:g} min (helper_wait_minutes)")
            time.sleep(1.0)
            self._settle()

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

    def _weights_of(self, model_id: str) -> dict[str, torch.Tensor]:
        """Any scored model's weights: a member's from its file, a starting model's from the pool, a
        child's by its crossover again, from its parents' (made the same way if they left)."""
        if any(m.id == model_id for m in self.archive.members):
            return self.archive.weights(model_id)
        if model_id in self.initial:
            return self._initial_weights(model_id)
        node = self.nodes[model_id]
        return self._crossover(node, node["trial"])

    def _crossover(self, info: dict[str, Any], number: int) -> dict[str, torch.Tensor]:
        parent_a, parent_b = (self._weights_of(p) for p in info["parents"])
        seed = zlib.crc32(f"{self.cfg.seed}/{number}".encode())
        if info["crossover"] == "della":
            return della_crossover(self.pool, parent_a, parent_b, info["della"], seed=seed)
        return split_slerp(parent_a, parent_b, self.names, split=info["split"], w=info["w"],
                           mutation_std=info["mutation_std"], seed=seed)

    # -- results ----------------------------------------------------------------------------------

    def best(self, study: optuna.Study) -> Best:
        """The champion (the best search-split score ever offered), from whichever phase it came,
        once the trials the helpers finished last are offered too."""
        self._settle()
        champion = self.archive.champion
        print(f"archive {', '.join(f'{m.id} {m.mean:.3f}' for m in self.archive.members)}; "
              f"champion {champion.id} {champion.mean:.3f}")
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


_CROSSOVER_NAMES = {"slerp": "split-point SLERP", "della": "DELLA", "mixed": "split-point SLERP or DELLA"}


def _crossover_text(node: dict[str, Any]) -> str:
    if "della" not in node:
        return node.get("crossover", "")
    d = node["della"]
    return (f"della (weights {d['weight'][0]:.2f}/{d['weight'][1]:.2f}, densities {d['density'][0]:.2f}/"
            f"{d['density'][1]:.2f}, epsilon {d['epsilon']:.3f}, lambda {d['lambda']:.2f})")


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
             f"{_CROSSOVER_NAMES[cfg.crossover.method]} crossover"
             f"{'; children survive only above both parents' if a.beat_parents else ''}) after Abrantes et al., *Competition and Attraction Improve Model "
             f"Fusion* (GECCO 2025): the best {cfg.objective.fitness} on the search split "
             f"({champion.mean:.4f}) of {len(nodes)} scored models.", "",
             "## Starting models", "", "| name | model |", "|---|---|"]
    lines += [f"| {name} | `{path}` |" for name, path in paths.items()]
    lines += ["", "## Scores (test split)", "", "| model | metric | value |", "|---|---|---|"]
    lines += [f"| {model} | {metric} | {value:.4f} |" for model, row in table.items() for metric, value in row.items()]
    lines += ["", "## Lineage (newest first; SLERP: tensors before the split take w towards parent 2, the rest "
                  "1 - w; DELLA: the parents' task vectors, weights and densities per parent)", "",
              "| model | trial | parents | crossover | split tensor | w | search score |", "|---|---|---|---|---|---|---|"]
    for i in ancestry:
        n = nodes[i]
        lines.append(f"| {i} | {n['study']}#{n['trial']} | {' x '.join(n['parents']) or 'starting model'} | "
                     f"{_crossover_text(n)} | {n.get('split_tensor', '')} | "
                     f"{'' if 'w' not in n else format(n['w'], '.3f')} | {n['score']:.4f} |")
    return "\n".join(lines) + "\n"
