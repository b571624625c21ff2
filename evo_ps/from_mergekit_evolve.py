"""A mergekit-evolve config as an evo_ps experiment: the way in for mergekit-evolve users.

    python -m evo_ps.from_mergekit_evolve evol_config.yml --task-search-path ./eval_tasks > conf/experiment/mine.yaml
    python -m evo_ps +experiment=mine

reads the config mergekit-evolve reads (`mergekit-evolve [--task-search-path DIR] [--max-fevals N]
CONFIG`) and writes the equivalent study as an experiment file: the genome's models become the pool,
its merge method and layer granularity the merge and the search space, its tasks the fitness
(`objective=lm_eval`: the weighted sum of the tasks' metrics). docs/lm-eval.md has the table of
every key and what it becomes. A key that has no counterpart here fails in one line naming it,
before anything is written.

Paths in the config (models, --task-search-path) are read as mergekit-evolve reads them, relative to
the working directory (a model path not found there is tried relative to the config's folder), and
written as absolute paths, so the experiment runs from any directory.
"""
from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

# mergekit-evolve's keys (mergekit/evo/config.py, genome.py) and mergekit-evolve's defaults
TOP_KEYS = ("genome", "tasks", "limit", "num_fewshot", "shuffle", "random_init", "apply_chat_template",
            "fewshot_as_multiturn", "task_search_path")
GENOME_KEYS = ("models", "merge_method", "base_model", "tokenizer_source", "layer_granularity", "normalize",
               "allow_negative_weights", "filters", "smooth")
METHODS = ("linear", "task_arithmetic", "ties", "dare_ties")  # mergekit-evolve's, slerp aside (below)
NORMALIZED_BY_DEFAULT = ("ties", "dare_ties", "linear")  # genome.normalize: null means true for these
MAX_FEVALS = 100  # mergekit-evolve's --max-fevals default


class ConversionError(ValueError):
    """A key of the config that evo_ps cannot run as mergekit-evolve would; one line naming it."""


def _model_path(ref: Any, key: str, config_dir: Path) -> str:
    """A mergekit model reference as a pool path: a local directory (absolute) or a hub id."""
    if isinstance(ref, Mapping):  # mergekit's {model: {path: ...}} form
        ref = (ref.get("model") or {}).get("path") if isinstance(ref.get("model"), Mapping) else ref.get("model")
    if not isinstance(ref, str) or not ref:
        raise ConversionError(f"{key}: {ref!r} is not a model path or hub id")
    if "+" in ref:
        raise ConversionError(f"{key}: {ref!r} names a LoRA (model+lora); evo_ps merges whole models: merge the LoRA "
                              f"into its model first (mergekit-yaml) and name that")
    # as mergekit-evolve reads it: relative to the working directory (else to the config's folder)
    for local in (Path(ref), config_dir / ref):
        if local.exists():
            return str(local.resolve())
    if ref.startswith((".", "/")):
        return str(Path(ref).resolve())  # a local path that is not there: the pool says so in one line
    return ref  # a hub id: the pool downloads it, or refuses it offline


def _source_name(path: str, taken: set[str]) -> str:
    name = re.sub(r"[^A-Za-z0-9_]+", "_", Path(path.rstrip("/")).name).strip("_") or "model"
    unique, k = name, 2
    while unique in taken:
        unique, k = f"{name}_{k}", k + 1
    taken.add(unique)
    return unique


def convert(config: Mapping[str, Any], *, config_dir: Path, task_search_path: Sequence[str] = (),
            max_fevals: int = MAX_FEVALS, name: str = "mergekit_evolve") -> dict[str, Any]:
    """The evo_ps experiment (as a dict, Hydra's `_global_` package) of a mergekit-evolve config."""
    if not isinstance(config, Mapping):
        raise ConversionError(f"the config is not a mapping of mergekit-evolve keys ({', '.join(TOP_KEYS)})")
    for key in config:
        if key not in TOP_KEYS:
            raise ConversionError(f"{key}: not a mergekit-evolve config key; known: {', '.join(TOP_KEYS)}")
    genome = config.get("genome")
    if not isinstance(genome, Mapping):
        raise ConversionError("genome: missing; mergekit-evolve's genome holds models, merge_method, base_model, ...")
    for key in genome:
        if key not in GENOME_KEYS:
            raise ConversionError(f"genome.{key}: not a mergekit-evolve genome key; known: {', '.join(GENOME_KEYS)}")
    # what has no counterpart: refused before anything else is read
    if genome.get("smooth"):
        raise ConversionError("genome.smooth: true (parameters interpolated across layers) has no counterpart in "
                              "evo_ps; per-layer groups are independent (space.granularity)")
    if genome.get("filters"):
        raise ConversionError(f"genome.filters: {list(genome['filters'])} (one parameter set per tensor-name filter) "
                              f"has no exact counterpart; the nearest is space.split_components=true (attention, MLP "
                              f"and norms searched apart): drop filters and set it in the experiment")
    if genome.get("tokenizer_source"):
        raise ConversionError("genome.tokenizer_source: evo_ps prompts every model with the base model's tokenizer "
                              "(the pool refuses sources whose vocabularies differ); remove the key")
    if config.get("shuffle"):
        raise ConversionError("shuffle: true (lm-eval datasets shuffled) has no counterpart: evo_ps scores each "
                              "task's validation split in order (objective.options.limit keeps its first items)")
    if config.get("random_init"):
        raise ConversionError("random_init: true has no counterpart: evo_ps starts CMA-ES at the middle of each "
                              "parameter's range (the paper's x0 = 0.5)")
    method = genome.get("merge_method")
    if method not in METHODS:
        hint = (" (evo_ps's slerp merges exactly two sources over a base: write merge=slerp by hand)"
                if method == "slerp" else "")
        raise ConversionError(f"genome.merge_method: {method!r} is not one mergekit-evolve and evo_ps share; "
                              f"known: {', '.join(METHODS)}{hint}")
    models = genome.get("models")
    if not isinstance(models, list) or not models:
        raise ConversionError("genome.models: a list of model paths or hub ids is needed")
    if genome.get("base_model") is None:
        raise ConversionError(f"genome.base_model: evo_ps merges sources over a base model; {method} needs one "
                              f"(mergekit-evolve requires it for ties, dare_ties, task_arithmetic): name it")
    base = _model_path(genome["base_model"], "genome.base_model", config_dir)
    paths = [_model_path(m, f"genome.models[{i}]", config_dir) for i, m in enumerate(models)]
    taken: set[str] = set()
    sources = {_source_name(p, taken): p for p in paths if p != base}
    if not sources:
        raise ConversionError("genome.models: every model is the base model; name the models to merge into it")
    granularity = genome.get("layer_granularity", 0) or 0
    if not isinstance(granularity, int) or granularity < 0:
        raise ConversionError(f"genome.layer_granularity: {granularity!r} must be an integer >= 0")
    normalize = genome.get("normalize")
    normalize = method in NORMALIZED_BY_DEFAULT if normalize is None else bool(normalize)
    tasks = config.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        raise ConversionError("tasks: a list of lm-eval tasks ({name, weight, metric}) is needed")
    tasks = [{"name": t} if isinstance(t, str) else dict(t) for t in tasks]
    for i, task in enumerate(tasks):
        task.setdefault("weight", 1.0)
        task.setdefault("metric", "acc,none")  # mergekit-evolve's default metric
    paths_of_tasks = [*task_search_path, *(config.get("task_search_path") or [])]
    for p in paths_of_tasks:
        if not Path(p).is_dir():
            raise ConversionError(f"task_search_path: {p} is not a folder of task YAMLs")

    space: dict[str, Any] = {"uniform": granularity == 0, "granularity": max(granularity, 1),
                             "split_components": False, "warm_start_trials": 0}
    if genome.get("allow_negative_weights"):
        space["bounds"] = {"weight": [-1.0, 1.0]}
    return {
        "defaults": [{"override /pool": None}, {"override /merge": method},
                     {"override /space": "uniform" if granularity == 0 else "per_layer"},
                     {"override /objective": "lm_eval"}],
        "study_name": name,
        "n_trials": max_fevals,
        "pool": {"base": base, "sources": sources, "dtype": "float32", "device": "cpu"},
        "merge": {"options": {"normalize": normalize}},
        "space": space,
        "objective": {"fitness": "score", "options": {
            "tasks": tasks,
            "task_paths": [str(Path(p).resolve()) for p in paths_of_tasks],
            "limit": config.get("limit"),
            "num_fewshot": config.get("num_fewshot"),
            "apply_chat_template": bool(config.get("apply_chat_template", True)),  # mergekit-evolve's defaults
            "fewshot_as_multiturn": bool(config.get("fewshot_as_multiturn", True)),
        }},
    }


def experiment_yaml(experiment: Mapping[str, Any], *, source: str, task_search_path: Sequence[str]) -> str:
    flags = "".join(f" --task-search-path {p}" for p in task_search_path)
    header = (f"# @package _global_\n"
              f"# Converted from the mergekit-evolve config {source} by\n"
              f"#   python -m evo_ps.from_mergekit_evolve {source}{flags}\n"
              f"# Run: python -m evo_ps +experiment=<this file's name, in conf/experiment/>  (keys: docs/lm-eval.md)\n"
              f"# pool.dtype: mergekit-evolve evaluates in bfloat16 on a GPU; pool.dtype=bfloat16 pool.device=cuda\n")
    return header + yaml.safe_dump(dict(experiment), sort_keys=False, allow_unicode=True, default_flow_style=False)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evo_ps.from_mergekit_evolve", description=__doc__.split("\n")[0])
    parser.add_argument("config", help="a mergekit-evolve config (YAML)")
    parser.add_argument("--task-search-path", action="append", default=[], help="a folder of lm-eval task YAMLs")
    parser.add_argument("--max-fevals", type=int, default=MAX_FEVALS, help="trials (mergekit-evolve's default 100)")
    parser.add_argument("--name", help="the study name (default: the config's file name)")
    args = parser.parse_args(argv)
    path = Path(args.config)
    try:
        if not path.is_file():
            raise ConversionError(f"{path}: no such config file")
        try:
            config = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            raise ConversionError(f"{path}{f':{mark.line + 1}' if mark else ''}: not YAML "
                                  f"({getattr(err, 'problem', None) or err})") from None
        name = args.name or re.sub(r"[^A-Za-z0-9_]+", "_", path.stem)
        experiment = convert(config, config_dir=path.resolve().parent, task_search_path=args.task_search_path,
                             max_fevals=args.max_fevals, name=name)
    except ConversionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    sys.stdout.write(experiment_yaml(experiment, source=str(path), task_search_path=args.task_search_path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
