"""GENOME(+) as a search of the study lifecycle (evo_core/_lifecycle.py).

    run_study(cfg, GenomeSearch(cfg), resolved=yaml)     # what `python -m evo_genome` does

The live model is the base with one PEFT LoRA on it (the experts' layout); every candidate's A and
B are written into it in place (apply_lora: no reload). Three modes, one study each:
  genome   one trial per individual, in the order _evolution.py makes them (initial population,
           then per generation: crossover children and mutants, selection, GENOME+ succession);
           the trial's user attribute `genome` holds its generation, stage, slot, operator, parents
           (expert names or earlier individuals' names, "g<generation>.<stage>.<slot>") and t. The study stops at n_trials evaluations (the
           budget) or after genome.iterations generations, whichever comes first.
  experts  one trial per expert, then their uniform average: the best single expert (picked on
           the search split) and the uniform-average baseline, on the same budget.
  mixing   LoraHub-style: one weight per expert (A = sum w_i A_i, B = sum w_i B_i), searched by
           the lifecycle's sampler (cmaes), from the uniform average.
Resume: before its phase runs, the search replays the study's COMPLETE trials through the seeded
operators (their fitness as stored), so the population after them is rebuilt exactly; a trial a
kill interrupted is FAILed by the study and its individual is scored by the next trial. Nothing is
scored twice, nothing scored is lost (tests/evo_genome/test_genome_cli.py kills a real run).

Each complete population (generation) goes to MLflow: its fitness mean/max/min and diversity (mean
pairwise L2 distance of the weights), as metrics by generation and a plot. The test table: base,
every expert, the ensemble of the top k (GENOME+), the best individual (last). Exports: the best
individual as a PEFT adapter folder (best_model/), the ensemble as ensemble/manifest.json with
its members' adapter folders, answered by `python -m evo_genome.answer`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from evo_core import (Best, ParamSpec, Phases, Scored, Search, atomic_dir, check_device, check_finite,
                      ADAPTER_WEIGHTS, killed_trials, model_fingerprint, published_name, require_models)

from ._adapters import apply_lora, base_shapes, check_fits_base, check_same_shapes, lora_model, read_adapter
from ._config import GenomeConfig
from ._evolution import Evolution, Member, Pending, same_key
from ._operators import ensemble_answer
from ._plots import plot_generations

MANIFEST = "manifest.json"


class GenomeSearch(Search):
    def __init__(self, cfg: GenomeConfig):
        self.cfg = cfg
        self.tokenizer_path = cfg.lora.base
        self.told: set[int] = set()

    # -- before anything loads ------------------------------------------------------------------

    def check(self) -> None:
        """Every adapter read, checked against the others and against the base's weight shapes
        (headers only): one line each, before any model loads or study exists."""
        lora = self.cfg.lora
        require_models({"lora.base": lora.base})
        check_device(lora.device, key="lora.device")
        self.adapters = [read_adapter(folder, name=name) for name, folder in lora.experts.items()]
        check_same_shapes(self.adapters)
        shapes = base_shapes(lora.base)
        for adapter in self.adapters:
            check_fits_base(adapter, shapes, base_name=published_name(lora.base))

    def check_objective(self, objective: Any) -> None:
        """The ensemble asks the objective for outputs and judges votes: a generative objective."""
        if self.ensemble_on and not all(hasattr(objective, m) for m in ("generate", "item_scores")):
            raise ValueError(f"genome.ensemble=true needs an objective that generates text (generate, item_scores); "
                             f"{self.cfg.objective.name!r} does not: set genome.ensemble=false")
        self.objective = objective

    @property
    def ensemble_on(self) -> bool:
        return self.cfg.mode == "genome" and self.cfg.genome.ensemble

    def load(self, tokenizer: Any) -> None:
        from transformers import AutoModelForCausalLM

        lora = self.cfg.lora
        base = AutoModelForCausalLM.from_pretrained(lora.base, dtype=getattr(torch, lora.dtype)).to(lora.device)
        self.peft = lora_model(base, self.adapters[0])
        # the causal LM with the LoRA layers inside: the objectives' fast generation path takes it
        self.model = self.peft.get_base_model()
        self.tokenizer = tokenizer
        self.experts = {a.name: a.weights for a in self.adapters}
        self.zero = {k: torch.zeros_like(v) for k, v in self.adapters[0].weights.items()}
        self.uniform = {k: sum(w[k] for w in self.experts.values()) / len(self.experts) for k in self.zero}

    def signature(self) -> dict[str, Any]:
        cfg = self.cfg
        # genome.iterations is a stopping rule, as n_trials is: a resumed run may go on for more generations
        genome = {k: v for k, v in dataclasses.asdict(cfg.genome).items() if k != "iterations"}
        return {"search": "evo_genome", "mode": cfg.mode, "genome": genome, "seed": cfg.seed,
                "base": cfg.lora.base, "base_hash": model_fingerprint(cfg.lora.base),
                "experts": {a.name: hashlib.sha256((a.folder / ADAPTER_WEIGHTS).read_bytes()).hexdigest()
                            for a in self.adapters},
                "mixing_bound": cfg.mixing_bound, "objective": cfg.objective.name, "fitness": cfg.objective.fitness,
                "search_split": str(cfg.objective.search), "objective_options": dict(cfg.objective.options)}

    # -- the phase ------------------------------------------------------------------------------

    def search(self, phases: Phases) -> optuna.Study:
        cfg = self.cfg
        self.phases = phases
        if cfg.mode == "experts":
            self.rows = [*self.experts, "uniform average"]
            print(f"experts {len(self.experts)} LoRA experts and their uniform average, scored on the search split")
            return phases.run(name=cfg.study_name, params=[], candidate=self._expert,
                              n_trials=len(self.rows) + killed_trials(phases.storage, cfg.study_name))
        if cfg.mode == "mixing":
            b = cfg.mixing_bound
            params = [ParamSpec(f"w_{name}", -b, b) for name in self.experts]
            print(f"mixing  {len(params)} per-expert weights in [-{b:g}, {b:g}] by {cfg.sampler.kind}, "
                  f"from the uniform average; {cfg.n_trials} evaluations")
            return phases.run(name=cfg.study_name, params=params, candidate=self._mixture, n_trials=cfg.n_trials,
                              x0={p.name: 1.0 / len(params) for p in params})
        self.evolution = Evolution(self.experts, cfg.settings(), seed=cfg.seed)
        finished = self._replay()
        g, s = cfg.genome, cfg.settings()
        ops = [name for name, on in (("crossover", g.crossover), ("mutation", g.mutation), ("selection", g.selection),
                                     ("succession", g.succession), ("ensemble", g.ensemble)) if on]
        print(f"genome  {'GENOME+' if g.succession and g.ensemble else 'GENOME'}: N={g.population}, K={g.iterations}, "
              f"operators {', '.join(ops) or 'none'}; budget {cfg.n_trials} evaluations (K generations take about "
              f"{s and self.evolution.expected_evaluations():.0f}); {len(self.experts)} experts; "
              f"{len(self.told)} individuals scored before")
        n_trials = finished if self.evolution.done else cfg.n_trials + killed_trials(phases.storage, cfg.study_name)
        study = phases.run(name=cfg.study_name, params=[], candidate=self._individual, n_trials=n_trials)
        if self.evolution.global_best is None:
            raise ValueError(f"no individual of study {cfg.study_name!r} was scored (every trial failed; see their "
                             f"fail_reason in the dashboard)")
        return study

    def _replay(self) -> int:
        """The study's COMPLETE trials, in order, through the seeded operators: the population after
        them, exactly. -> the study's finished trial count. A trial still RUNNING is a killed
        run's (one worker, and the lifecycle's primary lock keeps a second away): it is failed
        here, so that it is counted (and its individual scored again) at once, not 30 s later
        when its heartbeat goes stale."""
        try:
            study = optuna.load_study(study_name=self.cfg.study_name, storage=self.phases.storage)
        except KeyError:
            return 0
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            study.tell(trial.number, state=TrialState.FAIL)
        trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
        for trial in trials:
            if trial.state != TrialState.COMPLETE:
                continue
            pending = self.evolution.next()
            if pending is None or not same_key(pending, trial.user_attrs.get("genome", {})):
                raise ValueError(f"study {self.cfg.study_name!r}: trial {trial.number} "
                                 f"({trial.user_attrs.get('genome')}) is not the individual the operators make next "
                                 f"({pending and pending.key}); use another study_name / run_dir")
            self.evolution.scored(pending, trial.values[0], trial=trial.number)
            self.told.add(trial.number)
        return sum(t.state in (TrialState.COMPLETE, TrialState.FAIL) for t in trials)

    def _individual(self, values: dict[str, float], number: int):
        pending = self.evolution.next()
        if pending is None:
            raise ValueError("the K generations are done: no individual to score")
        self.scoring = pending
        return self._candidate(f"individual (trial {number})", pending.individual.weights,
                               {"genome": _jsonable(pending.attrs())})

    def _expert(self, values: dict[str, float], number: int):
        done = {t.user_attrs["expert"]["name"] for t in self.phases.studies[-1].get_trials(
            deepcopy=False, states=(TrialState.COMPLETE,))}
        todo = [name for name in self.rows if name not in done]
        if not todo:
            raise ValueError("every expert is scored already")
        weights = self.uniform if todo[0] == "uniform average" else self.experts[todo[0]]
        return self._candidate(todo[0], weights, {"expert": {"name": todo[0]}})  # a trial's extra: numbers or JSON

    def _mixture(self, values: dict[str, float], number: int):
        return self._candidate(f"mixture (trial {number})", self.mix(values), {})

    def mix(self, values: dict[str, float]) -> dict[str, torch.Tensor]:
        """LoraHub: A and B each the weighted sum of the experts' (weights w_<expert>)."""
        return {k: sum(values[f"w_{name}"] * w[k] for name, w in self.experts.items()) for k in self.zero}

    def _candidate(self, label: str, weights: dict[str, torch.Tensor], extra: dict[str, Any]):
        apply_lora(self.peft, weights)
        check_finite(label, self.model)
        return self.model, extra

    def on_scored(self, scored: Scored) -> None:
        """genome: each trial scored in this process moves the population on (the earlier ones
        were replayed before the phase ran); a finished population is logged; after K
        generations the study stops."""
        if self.cfg.mode != "genome" or scored.number in self.told:
            return
        self.told.add(scored.number)
        pending = self.evolution.next()
        assert pending is self.scoring and same_key(pending, scored.attrs["genome"]), "trials are scored in order"
        before = len(self.evolution.history)
        self.evolution.scored(pending, scored.values[0], trial=scored.number)
        for stats in self.evolution.history[before:]:
            self._log_generation(stats)
        if self.evolution.done:
            self.phases.studies[-1].stop()

    def _log_generation(self, stats) -> None:
        tracker = self.phases.tracker
        f = stats.fitness
        metrics = {"population.fitness_mean": sum(f) / len(f), "population.fitness_max": max(f),
                   "population.fitness_min": min(f), "population.diversity": stats.diversity,
                   "population.evaluations": float(stats.evaluations)}
        for name, value in metrics.items():
            tracker.client.log_metric(tracker.run_id, name, value, step=stats.generation)
        print(f"gen     {stats.generation}: fitness mean {metrics['population.fitness_mean']:.3f} "
              f"max {max(f):.3f} min {min(f):.3f}, diversity {stats.diversity:.4g}, {stats.evaluations} evaluations",
              flush=True)

    # -- results --------------------------------------------------------------------------------

    def best(self, study: optuna.Study) -> Best:
        if self.cfg.mode == "experts":  # the best single expert: the uniform average is a row of its own
            trials = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                      if t.user_attrs["expert"]["name"] != "uniform average"]
            trial = max(trials, key=lambda t: (t.values[0], -t.number))
            return Best(trial, f"best expert {trial.user_attrs['expert']['name']} of {len(trials)} on the search split")
        if self.cfg.mode != "genome":
            return super().best(study)
        best = self.evolution.global_best
        trial = study.trials[best.trial]
        return Best(trial, f"best individual {best.name} (trial {best.trial}) of {self.evolution.evaluations} scored "
                           f"({len(self.evolution.history) - 1} generations)")

    def best_weights(self, best: FrozenTrial) -> dict[str, torch.Tensor]:
        """The best candidate's LoRA weights, rebuilt after `load` alone for the modes with params."""
        if self.cfg.mode == "genome":
            return self.evolution.global_best.weights
        if self.cfg.mode == "experts":
            name = best.user_attrs["expert"]["name"]
            return self.uniform if name == "uniform average" else self.experts[name]
        return self.mix(best.params)

    def table_models(self, best: FrozenTrial) -> Iterator[tuple[str, Any, dict[str, float]]]:
        if self.cfg.table_baselines:
            for name, weights in (("base", self.zero), *self.experts.items(), ("uniform average", self.uniform)):
                apply_lora(self.peft, weights)
                yield name, self.model, {}
        if self.ensemble_on:
            yield f"ensemble top-{self.cfg.genome.ensemble_k}", Ensemble(self, self.ensemble_members()), {}
        apply_lora(self.peft, self.best_weights(best))
        yield {"genome": "best individual", "experts": "best expert", "mixing": "best mixture"}[self.cfg.mode], \
            self.model, {}

    def ensemble_members(self) -> list[Member]:
        return self.evolution.top(self.cfg.genome.ensemble_k)

    def export(self, best: FrozenTrial, study: optuna.Study, table: dict[str, dict[str, float]]) -> list[Path]:
        from ._export import model_card, save_adapter, write_manifest

        cfg = self.cfg
        run_dir = Path(cfg.run_dir)
        model_dir = run_dir / "best_model"
        with atomic_dir(model_dir) as tmp:
            save_adapter(self.peft, self.best_weights(best), tmp, base=cfg.lora.base)
            (tmp / "README.md").write_text(model_card(cfg, best, table), encoding="utf-8")
        artifacts = [model_dir / "README.md", model_dir / "adapter_config.json"]
        if self.ensemble_on:
            members = self.ensemble_members()
            with atomic_dir(run_dir / "ensemble") as tmp:
                for k, member in enumerate(members, 1):
                    save_adapter(self.peft, member.weights, tmp / f"member-{k}", base=cfg.lora.base)
                write_manifest(tmp / MANIFEST, members, objective=self.objective, base=cfg.lora.base)
            artifacts.append(run_dir / "ensemble" / MANIFEST)
        if cfg.mode == "genome":
            plot_generations(self.evolution.history, run_dir / "generations.png", fitness=cfg.objective.fitness)
            artifacts.append(run_dir / "generations.png")
        return artifacts


class Ensemble:
    """The test table's ensemble row: the top-k individuals answer each item, one answer wins
    (a majority of the objective's extracted answers, else the most similar output)."""

    def __init__(self, search: GenomeSearch, members: list[Member]):
        self.search, self.members = search, members

    def score_row(self, objective: Any, split: str) -> dict[str, list[float]]:
        per_member = []
        for member in self.members:
            apply_lora(self.search.peft, member.weights)
            per_member.append(objective.generate(self.search.model, split))
        extract = getattr(objective, "predict", None)
        outputs = [ensemble_answer(list(item_outputs), extract=extract) for item_outputs in zip(*per_member)]
        return objective.item_scores(outputs, split)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=float))



__all__ = ["Ensemble", "GenomeSearch", "Pending"]
