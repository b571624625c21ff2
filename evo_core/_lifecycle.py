"""One study lifecycle for every search: a search plugs in as a small object, the rest is here.

    class MySearch(Search):                           # see evo_ps/_search.py, evo_dfs/_search.py, evo_breed/
        def __init__(self, cfg): ...                  # the validated config; nothing loaded yet
        def check(self): ...                          # what can fail before anything loads
        def check_objective(self, objective): ...     # optional: what needs the objective's metrics too
        tokenizer_path: str                           # whose tokenizer (and VLM processor) prompts the models
        def load(self, tokenizer): ...                # the models, once
        def signature(self) -> dict: ...              # what a resumed study must share with its first run
        def search(self, phases) -> optuna.Study:     # one or more phases.run(...); the main study
        def on_scored(self, scored): ...              # optional (default: nothing): each scored trial, once
        def best(self, study) -> Best:                # optional (default: best_trial(study)): what it reports
        def table_models(self, best):                 # (row name, model, extra columns) for the test table, best last
        def unchanged_model(self, name) -> str | None:   # optional: a row's model is a fixed input (base,
                                                      # a source): its content key; its row is cached
        def export(self, best, study, table) -> list[Path]:   # best model, card, plots: MLflow artifacts
                                                      # (table: row -> metric -> value; with named test
                                                      # sets, rows "<set>/<row>" of every set)

    run_study(cfg, MySearch(cfg), resolved=yaml)      # what `python -m evo_ps` does

What each member may rely on, and nothing else:
- `check_objective(objective)`: called once the objective is built (its `metrics` declared, its
  data read), before any model loads and before the study or MLflow run exist: a setting naming
  the objective's metrics (breeding's `archive.resources`) is checked here, in one line.
- `phases.run(name=, params=, candidate=, n_trials=, ...)` runs one resumable study;
  `candidate(values, number) -> (model, extra)` makes trial `number`'s model (extra: numbers or
  JSON-able values recorded on the trial). A phase without params needs no sampler.
- `on_scored(scored: Scored)`: the loop tells the search each COMPLETE trial of a phase once, in
  order: when the phase starts, every trial the study already holds (an earlier run's, before a
  resume, or another worker's; `earlier=True`), then each trial this process scores, right after
  it is recorded (full evaluation: before the next candidate is made; racing and multi_fidelity:
  after its generation is raced or screened). A failed trial is not told. Breeding keeps its archive this way.
- `best(study) -> Best(trial, label)`: the search's own best, from `trial` (what table_models and
  export get) to `label` (how the final line names it); the default is best_trial(study), "best
  of N trials (trial X)"; breeding's is its champion, from either phase.
- `table_models(best.trial)` yields the test table's rows, the best last (its test outputs are the
  samples kept); a row's model need only be right while it is scored (rows may share one live
  model). No later step relies on what it leaves behind. A row that is not one model (an ensemble
  voting per item) yields an object with `score_row(objective, split) -> per-item scores` instead.
- `unchanged_model(name)`: for a row of table_models whose model is the same in every run (the
  base, a source), a key of its content (model_fingerprint, plus what else the search loads it
  with: dtype, device, ...); None (the default) for a row to score every time. Such rows' scores
  are kept across studies and seeds (evo_core/_row_cache.py, `cache.test_rows`), so the search
  must not yield them differently for the same key.
- `export(best.trial, study, table)` builds or loads the best model itself (PS merges it again,
  DFS sets its path, breeding loads the champion's weights), so it works after `load` alone.
A search subclasses `Search` for the optional members' defaults; run_study refuses, in one line,
an object that lacks a member.

Top to bottom: import the config's `imports` (they register objectives, methods, ...) -> check ->
the servers of `tracking` probed (evo_core/_probes.py: down, wrong password, no such database) ->
a primary takes the study's primary lock, held to its end (_primary.py: a second primary is
refused) -> the objective's data (a bad split fails in seconds, before the models) ->
load (announced and timed: `load    models ...`) -> storage, the main study's signature (a
changed search refuses to resume), MLflow (a helper joins its primary's run) -> the search's
phases (per trial: the search makes a candidate model, the objective scores it item by item,
MLflow logs it, the search is told) -> a helper stops here; the primary waits for the helpers'
running trials (of every phase), and logs the trials no
callback saw -> the search's best: its test table next to the search's baselines, one table per
test set (`objective.test` is one split spec, the split "test", or named sets {name: spec}, the
splits "test.<name>": table_splits), each row announced and timed (`table   ...` lines, with the
items done every PROGRESS_SECONDS while a row is scored: a 7B table takes many minutes) -> export
(`export  ...`: the best model, whole or not at all), then test_table.json, and artifacts. If the
primary dies after starting its MLflow run, that run is closed as FAILED (a helper leaves the
shared run to its primary).
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from ._files import atomic_write_text, writable_dir
from ._objective import TEST_SPLIT, Objective, build_objective, mean_scores, table_splits
from ._plots import plot_history
from ._probes import probe_servers
from ._primary import primary_lock
from ._vlm import vision_language_sources
from ._progress import Progress, progress_lines
from ._fidelity import screen_trials
from ._racing import race_trials
from ._row_cache import TableRowCache
from ._fingerprint import model_fingerprint
from ._secrets import mask_secrets, storage_url_with_env_password
from ._study import (SAMPLERS, ParamSpec, best_trial, make_sampler, open_study, paper_popsize, run_trials, start_point,
                     wait_for_workers)
from ._tracking import Tracker, mlflow_ui_command
from ._paths import sqlite_url_in

# a candidate: the model to score, and extra per-trial metrics (timings, path length, ...)
Candidate = tuple[Any, dict[str, float]]

# while a test-table row is scored or the best model exported, a progress line at most this often
PROGRESS_SECONDS = 30.0


@dataclass(frozen=True)
class Scored:
    """One COMPLETE trial, as the loop tells a search (Search.on_scored)."""

    phase: str                           # the phase's study name
    number: int                          # the trial's number in that study
    values: tuple[float, ...]            # its fitness, one value per objective.fitness key
    item_scores: dict[str, list[float]]  # metric -> its score per item, in split order (the items scored)
    partial: bool                        # racing stopped it early (item_scores cover the first items only),
                                         # or multi_fidelity screened it out (its value an estimate)
    attrs: dict[str, Any]                # all it recorded: the candidate's extra, metrics, timings
    earlier: bool                        # in the study before this process ran the phase: no model of it in memory


@dataclass(frozen=True)
class Best:
    """What a search reports as its result: the trial its test-table row and export stand for, and
    how the final line names it."""

    trial: FrozenTrial
    label: str


class Search(Protocol):
    """The contract between a search and run_study (module docstring). Subclass it for the
    defaults of the optional members, check_objective, on_scored and best."""

    tokenizer_path: str

    def check(self) -> None: ...

    def check_objective(self, objective: Objective) -> None:
        """Check what needs the built objective (its declared metrics); by default nothing."""

    def load(self, tokenizer: Any) -> None: ...

    def signature(self) -> dict[str, Any]: ...

    def search(self, phases: Phases) -> optuna.Study: ...

    def on_scored(self, scored: Scored) -> None:
        """Told each COMPLETE trial once (module docstring); by default nothing is kept."""

    def best(self, study: optuna.Study) -> Best:
        """The main study's best trial (best_trial: never a partial estimate)."""
        trial = best_trial(study)
        return Best(trial, f"best of {len(study.trials)} trials (trial {trial.number})")

    def table_models(self, best: FrozenTrial) -> Iterable[tuple[str, Any, dict[str, float]]]: ...

    def unchanged_model(self, name: str) -> str | None:
        """A content key of table row `name`'s model when it is a fixed input (module docstring);
        by default None: every row is scored every time."""
        return None

    def export(self, best: FrozenTrial, study: optuna.Study, table: dict[str, dict[str, float]]) -> list[Path]: ...


REQUIRED_MEMBERS = ("check", "load", "signature", "search", "table_models", "export")
OPTIONAL_MEMBERS = ("check_objective", "on_scored", "best", "unchanged_model")  # Search has their defaults


def missing_members(search: Any) -> list[str]:
    """The members of the Search contract `search` lacks: a required one it does not define (a
    subclass of Search inheriting the bare declaration lacks it too), an optional one if it is not
    a Search."""
    def defines(name: str) -> bool:
        member = getattr(type(search), name, None) or getattr(search, name, None)
        return callable(member) and (name in OPTIONAL_MEMBERS or member is not getattr(Search, name))

    return [name for name in (*REQUIRED_MEMBERS[:4], *OPTIONAL_MEMBERS, *REQUIRED_MEMBERS[4:]) if not defines(name)]


@dataclass
class Phases:
    """Runs a search's phases as resumable Optuna studies on the lifecycle's storage and tracker."""

    cfg: Any
    objective: Objective
    storage: str
    tracker: Tracker
    fitness: list[str] = field(default_factory=list)  # the study's objectives, in order
    studies: list[optuna.Study] = field(default_factory=list)  # every phase's, in the order run
    on_scored: Callable[[Scored], None] = lambda scored: None  # the search's Search.on_scored

    def run(self, *, name: str, params: Sequence[ParamSpec], candidate: Callable[[dict[str, float], int], Candidate],
            n_trials: int, x0: dict[str, float] | None = None, sigma0: float | None = None,
            sampler: optuna.samplers.BaseSampler | None = None, directions: Sequence[str] = ("maximize",)) -> optuna.Study:
        """One study `name` over `params` until it holds `n_trials` finished trials. CMA-ES's first
        trial is its start point x0, as in the paper (Optuna's own sampler would draw trial 0 at random)."""
        cfg = self.cfg
        sampler_given = sampler is not None
        if sampler is None:  # helpers must not replay the primary's random stream
            sampler = make_sampler(cfg.sampler.kind, space=params, seed=None if cfg.helper else cfg.seed,
                                   sigma0=sigma0 or cfg.sampler.sigma0, popsize=cfg.sampler.popsize,
                                   separable=cfg.sampler.separable, x0=x0)
        first = start_point(params, x0) if params and (x0 is not None or cfg.sampler.kind == "cmaes") else None
        study = open_study(name=name, storage_url=self.storage, sampler=sampler, directions=directions,
                           first_trial=first)
        self.studies.append(study)
        for trial in sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number):
            self.on_scored(scored_trial(name, trial, earlier=True))

        def tell(_: optuna.Study, trial: FrozenTrial) -> None:
            if trial.state == TrialState.COMPLETE:
                self.on_scored(scored_trial(name, trial, earlier=False))

        def evaluate(values: dict[str, float], number: int, items: Sequence[int] | None = None) -> dict[str, Any]:
            model, extra = candidate(values, number)
            started = time.perf_counter()
            # items=None: the whole split, and no subset asked of an objective that may not take one
            scores = self.objective.score_items(model, "search", **({} if items is None else {"items": list(items)}))
            # what the evaluation spent (items, generated tokens, ...), if the objective says
            work = self.objective.last_work
            # a whole split as the objective reports one; a race's blocks are averaged (and combined)
            metrics = mean_scores(scores) if items is not None else self.objective.aggregate(scores)
            return {**metrics, **extra, **work, "eval_seconds": time.perf_counter() - started,
                    "item_scores": scores}

        def screen(values: dict[str, float], number: int, items: Sequence[int]) -> dict[str, Any]:
            model, _ = candidate(values, number)
            per_item = self.objective.likelihood_items(model, "search", list(items))
            work = self.objective.last_work
            return {"cheap_value": sum(per_item) / len(per_item),
                    "cheap_tokens": work.get("likelihood_tokens", 0)}

        timeout = cfg.timeout_minutes and 60 * cfg.timeout_minutes
        on_trial = [Progress(n_trials=n_trials, fitness=self.fitness[0]), tell, self.tracker.log_trial]
        ev = cfg.evaluation
        if ev.kind != "full" and (not params or cfg.sampler.kind != "cmaes" or sampler_given):
            raise ValueError(f"evaluation.kind={ev.kind} scores the lifecycle's CMA-ES generations; study {name!r} "
                             f"is searched by its own sampler: use evaluation.kind=full")
        if ev.kind == "multi_fidelity":
            screen_trials(study, space=params, evaluate=evaluate, screen=screen, fitness=self.fitness,
                          n_trials=n_trials, popsize=cfg.sampler.popsize or paper_popsize(len(params)),
                          promote=ev.promote, cheap=ev.cheap, cheap_items=ev.cheap_items, subset=ev.cheap_subset,
                          n_items=self.objective.n_items("search"), min_correlation=ev.min_correlation,
                          min_pairs=ev.min_pairs, timeout=timeout, on_trial=on_trial)
        elif ev.kind == "racing":
            race_trials(study, space=params, evaluate=evaluate, fitness=self.fitness, n_trials=n_trials,
                        popsize=cfg.sampler.popsize or paper_popsize(len(params)), first_block=ev.first_block,
                        block=ev.block, z=ev.z, tolerance=ev.tolerance, n_items=self.objective.n_items("search"),
                        timeout=timeout, on_trial=on_trial)
        else:
            run_trials(study, space=params, evaluate=evaluate, fitness=self.fitness, n_trials=n_trials,
                       timeout=timeout, on_trial=on_trial)
        return study


def scored_trial(phase: str, trial: FrozenTrial, *, earlier: bool) -> Scored:
    """A COMPLETE trial as on_scored is told it."""
    attrs = dict(trial.user_attrs)
    return Scored(phase=phase, number=trial.number, values=tuple(trial.values),
                  item_scores=attrs.get("item_scores", {}), partial=bool(attrs.get("partial", False)), attrs=attrs,
                  earlier=earlier)


def run_study(cfg: Any, search: Search, *, resolved: str) -> dict[str, dict[str, float]]:
    """The whole lifecycle (module docstring) for a validated config (an evo_core StudyConfig);
    returns the test table (model -> metric -> value)."""
    missing = missing_members(search)
    if missing:
        raise ValueError(f"search {type(search).__name__} has no {', '.join(missing)}: a search implements "
                         f"evo_core.Search (subclass it for the defaults of {', '.join(OPTIONAL_MEMBERS)})")
    import_plugins(cfg.imports)
    SAMPLERS.get(cfg.sampler.kind)  # an unknown sampler fails here, not after loading
    search.check()
    probe_servers(cfg.tracking)  # a server that is down, or a wrong password, in seconds: before any model loads
    run_dir = writable_dir(cfg.run_dir, key="run_dir")
    # a user without a password in the URL gets $EVO_STORAGE_PASSWORD (docs/scale-out.md)
    storage = (storage_url_with_env_password(cfg.tracking.storage) if cfg.tracking.storage
               else sqlite_url_in(run_dir / "study.db"))
    # one primary per study, held until it ends (a dead one's lock is released by the OS or server)
    with contextlib.nullcontext() if cfg.helper else primary_lock(
            run_dir=run_dir, storage=storage, study_name=cfg.study_name, shown_storage=mask_secrets(storage)):
        return _run_checked(cfg, search, run_dir=run_dir, storage=storage, resolved=resolved)


def _run_checked(cfg: Any, search: Search, *, run_dir: Path, storage: str,
                 resolved: str) -> dict[str, dict[str, float]]:
    """run_study after its early checks (a primary holding its lock): data, models, study, MLflow, search."""
    fitness, directions = cfg.fitness, cfg.directions
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)

    # the data first, so that a bad split fails in seconds rather than after minutes of loading
    from transformers import AutoProcessor, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(search.tokenizer_path)
    # a VLM's processor turns images into pixels and its image placeholder into image tokens
    processor = (AutoProcessor.from_pretrained(search.tokenizer_path)
                 if vision_language_sources({"prompting model": search.tokenizer_path}) else None)
    objective = build_objective(cfg.objective, tokenizer, processor=processor)
    if cfg.evaluation.kind != "full" and objective.n_items("search") is None:
        raise ValueError(f"evaluation.kind={cfg.evaluation.kind} scores subsets of items, but objective "
                         f"{cfg.objective.name!r} cannot score a subset (it needs n_items(split) and "
                         f"score_items(..., items=)); use evaluation.kind=full")
    if (cfg.evaluation.kind == "multi_fidelity" and cfg.evaluation.cheap == "likelihood"
            and objective.likelihood_items is None):
        raise ValueError(f"evaluation.cheap=likelihood needs the likelihood of reference answers, which objective "
                         f"{cfg.objective.name!r} does not give (likelihood_items); use evaluation.cheap=subset")
    racing_note(cfg.evaluation, objective.n_items("search"))
    names = [m.name for m in objective.metrics]
    if cfg.objective.fitness not in names:
        raise ValueError(f"objective.fitness {cfg.objective.fitness!r} is not a metric of objective "
                         f"{cfg.objective.name!r}; known: {', '.join(names)}")
    search.check_objective(objective)
    # loading and hashing the models: minutes at 7B, so announced and timed like the table's rows
    with progress_lines("load", "models", every=PROGRESS_SECONDS):
        search.load(tokenizer)

    main = open_study(name=cfg.study_name, storage_url=storage, sampler=optuna.samplers.RandomSampler(),
                      directions=directions)  # a handle on the main study's user attributes
    # how trials were scored is part of what their values mean: a racing study resumes as one
    evaluation = dataclasses.asdict(cfg.evaluation) if cfg.evaluation.kind != "full" else {"kind": "full"}
    signature = search.signature() | {"evaluation": evaluation}
    check_signature(main, signature, mask_secrets(storage))
    tracker = Tracker(mlruns_dir=cfg.tracking.mlruns_dir, experiment=cfg.tracking.experiment, uri=cfg.tracking.uri,
                      server_wait_seconds=cfg.tracking.server_wait_seconds)
    if cfg.helper:
        print(f"helper  joining study {cfg.study_name!r} in {mask_secrets(storage)} (waiting for its primary run if needed)")
        run_id, run_key = primary_run_id(main, mask_secrets(storage), cfg.helper_wait_minutes), None
    else:
        if "mlflow_run_key" not in main.user_attrs:
            # the parent run is tagged with this key before its id can be stored on the study: a
            # primary killed in between finds that run again by its key, rather than starting a second
            main.set_user_attr("mlflow_run_key", uuid.uuid4().hex)
        run_id, run_key = main.user_attrs.get("mlflow_run_id"), main.user_attrs["mlflow_run_key"]
    run_id = tracker.start(run_id=run_id, key=run_key, join=cfg.helper,
                           run_name=f"{cfg.study_name}-seed{cfg.seed}",
                           params={"config": resolved, "seed": cfg.seed, "storage": mask_secrets(storage), **signature})
    if not cfg.helper:  # a new run when the store moved; a helper's own store must not redirect its primary's
        main.set_user_attr("mlflow_run_id", run_id)
    print(f"study   {cfg.study_name!r}, storage {mask_secrets(storage)}")
    print(f"        inspect: optuna-dashboard {mask_secrets(storage)}")
    print(f"mlflow  run {run_id}; browse: {tracker.uri if cfg.tracking.uri else mlflow_ui_command(tracker.mlruns_dir)}")
    if cfg.helper:
        study = search.search(Phases(cfg=cfg, objective=objective, storage=storage, tracker=tracker, fitness=fitness,
                                     on_scored=search.on_scored))
        print(f"helper  done: {len(study.trials)} trials in the study; its primary run writes the table and model")
        return {}
    try:
        return _search_and_report(cfg, search, objective, storage, tracker)
    except BaseException:
        # never left RUNNING; and should MLflow itself be what failed, the original error is the one to see
        with contextlib.suppress(Exception):
            tracker.finish("FAILED")
        raise


def _search_and_report(cfg: Any, search: Search, objective: Objective, storage: str,
                       tracker: Tracker) -> dict[str, dict[str, float]]:
    """The primary's part of run_study after its MLflow run started: search, wait, table, export."""
    run_dir, fitness = Path(cfg.run_dir), cfg.fitness
    phases = Phases(cfg=cfg, objective=objective, storage=storage, tracker=tracker, fitness=fitness,
                    on_scored=search.on_scored)
    study = search.search(phases)
    wait_for_workers(*phases.studies, on_wait=lambda running: print(
        f"waiting for {running} running trial(s) of other workers (a dead worker's trial fails after 30 s)",
        flush=True))
    tracker.log_missing_trials(phases.studies)

    # the final tables: the search's baselines and its best on each test split, that is on the one
    # split "test" (set name "") or on "test.<name>" per named test set, each model on every split
    best = search.best(study)
    sets = {split: split.partition(".")[2] for split in table_splits(cfg.objective.test)}
    tables: dict[str, dict[str, dict[str, float]]] = {split: {} for split in sets}
    sizes = {}
    rows = table_row_cache(cfg, search)
    specs = table_splits(cfg.objective.test)
    for name, model, extra in search.table_models(best.trial):
        unchanged = search.unchanged_model(name) if rows.enabled else None
        for split in sets:
            key = unchanged and rows.key(model=unchanged, split=split, spec=specs[split],
                                         n_items=objective.n_items(split))
            item_scores = rows.get(key) if key else None
            if item_scores is None:
                with progress_lines("table", f"{name} on {split}", every=PROGRESS_SECONDS):
                    item_scores = score_row(objective, model, split)
                if key:
                    rows.put(key, item_scores, label=f"{name} on {split}")
            else:
                print(f"table   {name} on {split}: cached, not scored again ({rows.path(key)})", flush=True)
            scores = objective.aggregate(item_scores)
            sizes[split] = scores.pop("n")
            tables[split][name] = scores | extra
    markdowns = {split: tracker.log_table(table, prefix=split) for split, table in tables.items()}
    # the last row scored is the best merge: its test outputs (and images), if the objective keeps them
    samples = {split: objective.write_samples(split, run_dir / "samples" / name) for split, name in sets.items()}
    with progress_lines("export", "writing best_model", every=PROGRESS_SECONDS):
        artifacts = search.export(best.trial, study, export_table(tables, sets))
    # after the weights: a test_table.json on disk means its model is there too
    table = tables_as_json(tables, sets)
    atomic_write_text(run_dir / "test_table.json", json.dumps(table, indent=2) + "\n")
    plot_history(study, run_dir / "history.png", fitness=fitness[0])
    for artifact in [run_dir / "history.png", *artifacts]:
        tracker.log_artifact(artifact)
    for split, files in samples.items():
        for sample in files:
            tracker.log_artifact(sample, f"samples/{sets[split]}".rstrip("/"))
    tracker.finish()
    for split, name in sets.items():
        print(f"\n{f'test set {name}' if name else 'test split'} ({sizes[split]} items), {best.label}:\n"
              f"{markdowns[split]}")
    print(f"outputs: {run_dir}   mlflow run: {tracker.run_id}")
    return table


def racing_note(evaluation: Any, n_search: int | None) -> None:
    """One line when racing cannot stop any candidate early: the whole search split fits in its first block."""
    if evaluation.kind == "racing" and n_search is not None and n_search <= evaluation.first_block:
        print(f"note    evaluation=racing changes nothing here: the search split has {n_search} items and "
              f"evaluation.first_block={evaluation.first_block}, so every candidate is scored on all of them; "
              f"set evaluation.first_block below {n_search} (racing saves most with blocks of about a fifth of "
              f"the split) or use evaluation=full", flush=True)


def table_row_cache(cfg: Any, search: Search) -> TableRowCache:
    """The row cache of this study's objective and prompting tokenizer (`cache` in the config)."""
    enabled = cfg.cache.test_rows
    return TableRowCache(enabled=enabled, directory=cfg.cache.dir, objective=dataclasses.asdict(cfg.objective),
                        tokenizer=model_fingerprint(search.tokenizer_path) if enabled else "")


def score_row(objective: Objective, model: Any, split: str) -> dict[str, list[float]]:
    """A test-table row's per-item scores: its model's, or, for a row that is not one model (an
    ensemble whose members vote per item), what it scores itself with the objective: an object
    with `score_row(objective, split) -> per-item scores` (evo_genome's ensemble)."""
    own = getattr(model, "score_row", None)
    return own(objective, split) if callable(own) else objective.score_items(model, split)


def tables_as_json(tables: dict[str, dict[str, dict[str, float]]], sets: dict[str, str]) -> dict[str, Any]:
    """What test_table.json holds and run_study returns: the one test split's table {model: {metric:
    value}}, or with named test sets {set: {model: {metric: value}}} (read_test_tables reads both)."""
    return tables[TEST_SPLIT] if TEST_SPLIT in tables else {sets[split]: table for split, table in tables.items()}


def export_table(tables: dict[str, dict[str, dict[str, float]]], sets: dict[str, str]) -> dict[str, dict[str, float]]:
    """The table a search's export (its model card) gets: the one test split's, or with named test
    sets every set's rows, named "<set>/<model>"."""
    return tables[TEST_SPLIT] if TEST_SPLIT in tables else {
        f"{sets[split]}/{name}": row for split, table in tables.items() for name, row in table.items()}


def read_test_tables(path: str | Path) -> dict[str, dict[str, dict[str, float]]]:
    """A run's test_table.json as {set: {model: {metric: value}}}, whichever form it has: the one
    test split's table is the set "test"."""
    data = json.loads(Path(path).read_text())
    one_table = all(isinstance(value, (int, float)) for row in data.values() for value in row.values())
    return {TEST_SPLIT: data} if one_table else data


def import_plugins(modules: Sequence[str]) -> None:
    """Import the modules a config names: importing them registers their objectives, merge methods,
    data sources, ... (the project's own are `objectives` and `zoo`; add yours)."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            raise ValueError(f"imports: cannot import {module!r} ({err})") from None


def check_signature(study: optuna.Study, signature: dict[str, Any], storage: str) -> None:
    """Record what defines the search on a new study; refuse, in one line naming the differences,
    to resume one that was run with something else (its trials would mean something else).
    A key the stored signature lacks was added to signatures after that study started (e.g.
    model_hashes): it is recorded now, and checked from then on."""
    signature = json.loads(json.dumps(signature))  # as stored: tuples are lists
    stored = study.user_attrs.get("signature")
    if stored is not None:
        diff = ", ".join(f"{key} {stored.get(key)!r} (now {signature.get(key)!r})"
                         for key in sorted(stored) if stored[key] != signature.get(key))
        if diff:
            raise ValueError(f"study {study.study_name!r} in {storage} was run with {diff}; use those settings, "
                             f"or another study_name / run_dir")
    if stored != signature:
        study.set_user_attr("signature", signature)


def primary_run_id(main: optuna.Study, storage: str, wait_minutes: float) -> str:
    """The MLflow run id the primary worker stored on the main study, once it has."""
    deadline = time.monotonic() + 60 * wait_minutes
    while (run_id := main.user_attrs.get("mlflow_run_id")) is None:
        if time.monotonic() > deadline:
            raise ValueError(f"helper=true: no primary run opened study {main.study_name!r} in {storage} within "
                             f"{wait_minutes:g} min (helper_wait_minutes); start the same command without "
                             f"helper=true")
        time.sleep(1.0)
    return run_id
